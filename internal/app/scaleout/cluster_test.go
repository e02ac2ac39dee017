package scaleout

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/latchkey/latchkey/internal/data/testdb"
)

// Timeouts of the harness.
const (
	readyTimeout    = 30 * time.Second // start-up, migrations included
	shutdownTimeout = 20 * time.Second // SIGTERM to exit
	requestTimeout  = 10 * time.Second // one HTTP request
)

// defaultRedisURL is the Redis the test uses when TEST_REDIS_URL is unset.
const defaultRedisURL = "redis://127.0.0.1:6379/0"

// logBuffer collects a process's output; it is safe for concurrent use.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// server is one running latchkey process.
type server struct {
	name string
	base string // http://127.0.0.1:PORT
	cmd  *exec.Cmd
	logs *logBuffer

	exited  chan struct{} // closed when the process has exited and been reaped
	waitErr error         // cmd.Wait's result, set before exited is closed
}

// startServer starts the server binary with env (plus PORT and LISTEN_ADDR on a free
// loopback port) and returns without waiting for it to be ready. The process is
// killed at the end of the test if it is still running, and its output is logged
// when the test failed (or SCALEOUT_LOGS is set).
func startServer(t *testing.T, name string, env []string) *server {
	t.Helper()
	port := freePort(t)
	s := &server{
		name:   name,
		base:   "http://127.0.0.1:" + port,
		logs:   &logBuffer{},
		exited: make(chan struct{}),
	}
	s.cmd = exec.Command(serverBinary)
	// A clean environment: nothing from the developer's shell changes the configuration.
	// LISTEN_ADDR keeps the server on loopback; PORT still sets the printed public URL.
	s.cmd.Env = append([]string{"PORT=" + port, "LISTEN_ADDR=127.0.0.1:" + port}, env...)
	s.cmd.Stdout = s.logs
	s.cmd.Stderr = s.logs
	setProcAttr(s.cmd)
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		s.waitErr = s.cmd.Wait()
		close(s.exited)
	}()
	t.Cleanup(func() {
		if !s.hasExited() {
			_ = s.cmd.Process.Kill()
			<-s.exited
		}
		if t.Failed() || os.Getenv("SCALEOUT_LOGS") != "" {
			t.Logf("output of %s (%s):\n%s", s.name, s.base, s.logs)
		}
	})
	return s
}

func (s *server) hasExited() bool {
	select {
	case <-s.exited:
		return true
	default:
		return false
	}
}

// waitReady polls GET /readyz until it answers 200.
func (s *server) waitReady(ctx context.Context, client *http.Client) error {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.base+"/readyz", nil)
		if err != nil {
			return err
		}
		if resp, err := client.Do(req); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-s.exited:
			return fmt.Errorf("%s exited before it was ready: %v", s.name, s.waitErr)
		case <-ctx.Done():
			return fmt.Errorf("%s: GET /readyz did not answer 200 within %v", s.name, readyTimeout)
		case <-tick.C:
		}
	}
}

// terminate sends SIGTERM and waits up to shutdownTimeout for the process to exit.
// It returns an error when the process had to be killed or did not exit with status 0.
func (s *server) terminate() error {
	if s.hasExited() {
		return fmt.Errorf("%s had already exited: %v", s.name, s.waitErr)
	}
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return fmt.Errorf("%s: SIGTERM: %w", s.name, err)
	}
	timer := time.NewTimer(shutdownTimeout)
	defer timer.Stop()
	select {
	case <-s.exited:
	case <-timer.C:
		_ = s.cmd.Process.Kill()
		<-s.exited
		return fmt.Errorf("%s did not exit within %v of SIGTERM (killed)", s.name, shutdownTimeout)
	}
	if s.waitErr != nil {
		return fmt.Errorf("%s exited after SIGTERM with %v, want status 0", s.name, s.waitErr)
	}
	return nil
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	defer l.Close()
	return strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}

// instances is how many server processes the test runs.
const instances = 3

// cluster is the server processes sharing one database and one Redis, and the
// client state of the test that drives them.
type cluster struct {
	admin   string // ADMIN_TOKEN of every process
	dbURL   string
	servers []*server
	client  *http.Client

	// ops counts the authenticated non-admin operations that got a GraphQL answer
	// (HTTP 200 or 429), plus subscriptions started: each must leave one usage row.
	ops atomic.Int64
}

// newCluster creates a fresh database, checks Redis and starts the ready servers.
// Everything is stopped and removed at the end of the test.
func newCluster(t *testing.T) *cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()

	dbURL, dropDB, err := testdb.CreatePostgres(ctx, os.Getenv("TEST_POSTGRES_URL"))
	if err != nil {
		t.Fatalf("scale-out test needs PostgreSQL: %v", err)
	}
	t.Cleanup(dropDB) // registered first: runs after the processes are gone
	redisURL := os.Getenv("TEST_REDIS_URL")
	if redisURL == "" {
		redisURL = defaultRedisURL
	}
	if err := pingRedis(ctx, redisURL); err != nil {
		t.Fatalf("scale-out test needs Redis: %v", err)
	}

	transport := &http.Transport{MaxIdleConnsPerHost: 64, IdleConnTimeout: 30 * time.Second}
	t.Cleanup(transport.CloseIdleConnections)
	c := &cluster{
		admin:  "adm_" + randomHex(t, 16),
		dbURL:  dbURL,
		client: &http.Client{Transport: transport, Timeout: requestTimeout},
	}
	env := []string{
		"DATABASE_URL=" + dbURL,
		"REDIS_URL=" + redisURL,
		"ADMIN_TOKEN=" + c.admin,
		"LOG_FORMAT=json",
		"WEBHOOK_ALLOW_PRIVATE=true",
		"WEBHOOK_ALLOW_HTTP=true",
		"WEBHOOK_RETRY_SCHEDULE=200ms,500ms",
	}
	// All start at once on the empty database: migrations must serialize themselves.
	for i := range instances {
		c.servers = append(c.servers, startServer(t, fmt.Sprintf("process-%d", i+1), env))
	}
	errs := make(chan error, len(c.servers))
	for _, s := range c.servers {
		go func() { errs <- s.waitReady(ctx, c.client) }()
	}
	for range c.servers {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// pingRedis checks that the Redis at rawURL answers PING.
func pingRedis(ctx context.Context, rawURL string) error {
	opts, err := redis.ParseURL(rawURL)
	if err != nil {
		return fmt.Errorf("TEST_REDIS_URL %q: %w", rawURL, err)
	}
	rdb := redis.NewClient(opts)
	defer rdb.Close()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("Redis at %s does not answer PING (%v); start it (see README: Tests) or set TEST_REDIS_URL", opts.Addr, err)
	}
	return nil
}

func randomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// gqlError is one entry of a GraphQL response's errors.
type gqlError struct {
	Message    string         `json:"message"`
	Extensions map[string]any `json:"extensions"`
}

// gqlResponse is an HTTP GraphQL answer.
type gqlResponse struct {
	Status int
	Header http.Header
	Body   []byte
	Data   json.RawMessage
	Errors []gqlError
}

// code returns the first error's extensions.code, or "".
func (r *gqlResponse) code() string {
	if len(r.Errors) == 0 {
		return ""
	}
	s, _ := r.Errors[0].Extensions["code"].(string)
	return s
}

// query POSTs a GraphQL operation to s with key. It is safe to call from any
// goroutine. Answers with HTTP 200 or 429 to non-admin keys are counted in c.ops.
func (c *cluster) query(ctx context.Context, s *server, key, query string, vars map[string]any) (*gqlResponse, error) {
	body, err := json.Marshal(map[string]any{"query": query, "variables": vars})
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.base+"/query", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-API-Key", key)
	resp, err := c.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s.name, err)
	}
	defer resp.Body.Close()
	r := &gqlResponse{Status: resp.StatusCode, Header: resp.Header}
	r.Body, err = io.ReadAll(resp.Body)
	if key != c.admin && (r.Status == http.StatusOK || r.Status == http.StatusTooManyRequests) {
		c.ops.Add(1)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: read body: %w", s.name, err)
	}
	var payload struct {
		Data   json.RawMessage `json:"data"`
		Errors []gqlError      `json:"errors"`
	}
	if err := json.Unmarshal(r.Body, &payload); err != nil {
		return r, fmt.Errorf("%s: HTTP %d, not a GraphQL response: %q", s.name, r.Status, r.Body)
	}
	r.Data, r.Errors = payload.Data, payload.Errors
	return r, nil
}

// mustQuery runs an operation that must succeed (HTTP 200, no errors) and decodes
// its data into out (when out is not nil).
func (c *cluster) mustQuery(t *testing.T, s *server, key, query string, vars map[string]any, out any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	r, err := c.query(ctx, s, key, query, vars)
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != http.StatusOK || len(r.Errors) > 0 {
		t.Fatalf("%s: %s\n-> HTTP %d %s", s.name, query, r.Status, r.Body)
	}
	if out != nil {
		if err := json.Unmarshal(r.Data, out); err != nil {
			t.Fatalf("%s: decode %s: %v", s.name, r.Data, err)
		}
	}
}

// createTenant creates a tenant as the platform admin and returns its id.
func (c *cluster) createTenant(t *testing.T, name, slug string) string {
	t.Helper()
	var out struct {
		CreateTenant struct{ ID string } `json:"createTenant"`
	}
	c.mustQuery(t, c.servers[0], c.admin,
		`mutation($name: String!, $slug: String!) { createTenant(input: {name: $name, slug: $slug}) { id } }`,
		map[string]any{"name": name, "slug": slug}, &out)
	return out.CreateTenant.ID
}

// tenantScopes are the scopes of every key the test creates.
var tenantScopes = []string{"usage:read", "keys:read", "webhooks:write", "webhooks:read"}

// createKey creates a key of tenantID as the platform admin, limited to rate
// requests per window seconds and without quota, and returns its id and secret.
func (c *cluster) createKey(t *testing.T, tenantID, name string, rate, window int) (id, secret string) {
	t.Helper()
	var out struct {
		CreateAPIKey struct {
			APIKey struct{ ID string } `json:"apiKey"`
			Secret string              `json:"secret"`
		} `json:"createApiKey"`
	}
	c.mustQuery(t, c.servers[0], c.admin, `mutation($tenant: ID!, $name: String!, $scopes: [String!]!, $rate: Int!, $window: Int!) {
		createApiKey(input: {tenantID: $tenant, name: $name, scopes: $scopes, rateLimit: $rate, rateLimitWindowSeconds: $window, quota: 0}) {
			apiKey { id } secret
		}
	}`, map[string]any{"tenant": tenantID, "name": name, "scopes": tenantScopes, "rate": rate, "window": window}, &out)
	if out.CreateAPIKey.APIKey.ID == "" || out.CreateAPIKey.Secret == "" {
		t.Fatalf("createApiKey returned no id or secret")
	}
	return out.CreateAPIKey.APIKey.ID, out.CreateAPIKey.Secret
}

// postgresDSN returns dbURL with sslmode=disable added for a loopback server that
// names no sslmode, as the server itself does.
func postgresDSN(dbURL string) (string, error) {
	u, err := url.Parse(dbURL)
	if err != nil {
		return "", err
	}
	q := u.Query()
	if q.Get("sslmode") == "" {
		switch h := u.Hostname(); {
		case h == "localhost", net.ParseIP(h) != nil && net.ParseIP(h).IsLoopback():
			q.Set("sslmode", "disable")
			u.RawQuery = q.Encode()
		}
	}
	return u.String(), nil
}

// metric returns the value of a counter or gauge without labels on s's /metrics
// (platform admins only).
func (c *cluster) metric(t *testing.T, s *server, name string) float64 {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, s.base+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-API-Key", c.admin)
	resp, err := c.client.Do(req)
	if err != nil {
		t.Fatalf("%s: GET /metrics: %v", s.name, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("%s: GET /metrics: HTTP %d %v", s.name, resp.StatusCode, err)
	}
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: metric %s: %q", s.name, name, v)
			}
			return f
		}
	}
	t.Fatalf("%s: no metric %s", s.name, name)
	return 0
}
