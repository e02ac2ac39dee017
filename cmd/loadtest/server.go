package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	_ "github.com/lib/pq" // PostgreSQL driver: create, count and drop the run's database
)

// repoRoot returns the directory of the main module's go.mod: `go env GOMOD`, or the
// nearest go.mod above the working directory.
func repoRoot(ctx context.Context) (string, error) {
	if out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output(); err == nil {
		if p := strings.TrimSpace(string(out)); p != "" && p != os.DevNull {
			return filepath.Dir(p), nil
		}
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory: run from the repository")
		}
		dir = parent
	}
}

// buildServer runs `go build -o dir/latchkey .` in root and returns the binary's path.
func buildServer(ctx context.Context, root, dir string) (string, error) {
	bin := filepath.Join(dir, "latchkey")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, ".")
	cmd.Dir = root
	cmd.Stdout = os.Stderr
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build: %w", err)
	}
	return bin, nil
}

// randomHex returns n random bytes in hex.
func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	return hex.EncodeToString(b)
}

// database is the PostgreSQL database created for one run.
type database struct {
	adminURL string // the maintenance connection (CREATE/DROP DATABASE)
	name     string
	url      string // DATABASE_URL of the server
}

// createDatabase creates latchkey_load_<random> through adminURL.
func createDatabase(ctx context.Context, adminURL string) (*database, error) {
	u, err := url.Parse(adminURL)
	if err != nil {
		return nil, fmt.Errorf("LOAD_POSTGRES_URL: %w", err)
	}
	d := &database{adminURL: adminURL, name: "latchkey_load_" + randomHex(6)}
	admin, err := sql.Open("postgres", adminURL)
	if err != nil {
		return nil, err
	}
	defer admin.Close()
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if _, err := admin.ExecContext(cctx, "CREATE DATABASE "+d.name); err != nil {
		return nil, fmt.Errorf("PostgreSQL at %s: %w (start it: see README, Tests)", u.Redacted(), err)
	}
	u.Path = "/" + d.name
	d.url = u.String()
	return d, nil
}

// drop removes the database (with any connection a killed server left behind).
func (d *database) drop() error {
	admin, err := sql.Open("postgres", d.adminURL)
	if err != nil {
		return err
	}
	defer admin.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if _, err := admin.ExecContext(ctx, "DROP DATABASE IF EXISTS "+d.name+" WITH (FORCE)"); err != nil {
		// PostgreSQL before 13 has no FORCE.
		if _, err2 := admin.ExecContext(ctx, "DROP DATABASE IF EXISTS "+d.name); err2 != nil {
			return err
		}
	}
	return nil
}

// usageRows returns the number of usage_logs rows and their count per outcome.
func (d *database) usageRows(ctx context.Context) (int64, map[string]int64, error) {
	db, err := sql.Open("postgres", d.url)
	if err != nil {
		return 0, nil, err
	}
	defer db.Close()
	var total int64
	if err := db.QueryRowContext(ctx, "SELECT count(*) FROM usage_logs").Scan(&total); err != nil {
		return 0, nil, err
	}
	rows, err := db.QueryContext(ctx, "SELECT outcome, count(*) FROM usage_logs GROUP BY outcome")
	if err != nil {
		return 0, nil, err
	}
	defer rows.Close()
	by := map[string]int64{}
	for rows.Next() {
		var o string
		var n int64
		if err := rows.Scan(&o, &n); err != nil {
			return 0, nil, err
		}
		by[o] = n
	}
	return total, by, rows.Err()
}

// freePort returns a TCP port free on 127.0.0.1 at the time of the call.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// serverEnvNames are the server settings: removed from the inherited environment so
// that a developer's shell cannot change what is measured.
var serverEnvNames = []string{
	"PORT", "LISTEN_ADDR", "DATABASE_URL", "REDIS_URL", "REDIS_CLUSTER_URL", "REDIS_SENTINEL_URL", "ADMIN_TOKEN", "ALLOWED_ORIGINS",
	"MAX_BODY_BYTES", "MAX_QUERY_DEPTH", "MAX_QUERY_COMPLEXITY", "PUBLIC_URL",
	"RATE_LIMIT_FAIL_OPEN", "TRUSTED_PROXIES", "MAX_SUBSCRIPTIONS_PER_KEY",
	"WEBHOOK_ALLOW_PRIVATE", "WEBHOOK_ALLOW_HTTP", "WEBHOOK_RETRY_SCHEDULE", "WEBHOOK_WORKERS", "WEBHOOK_PER_TENANT",
	"USAGE_RETENTION", "USAGE_FLUSH_INTERVAL", "LOG_FORMAT", "LOG_LEVEL", "ACCESS_LOG", "METRICS_ADDR",
	"PPROF_ADDR", "AUTH_FAILURES_PER_MINUTE", "VERIFY_FAILURES_PER_MINUTE",
}

// server is one running server process.
type server struct {
	cmd     *exec.Cmd
	baseURL string
	logPath string
	env     []string // the settings given (for the report), NAME=value

	done     chan struct{} // closed when the process has exited
	exitErr  error
	stopOnce sync.Once
	stopErr  error
	stopTook time.Duration
}

// loopbackSettings are the settings every server process of the harness gets: its
// port, bound to loopback only (the harness's traffic never leaves the machine), the
// admin token and JSON logs.
func loopbackSettings(port int, adminToken string) []string {
	return []string{
		"ADMIN_TOKEN=" + adminToken,
		"PORT=" + strconv.Itoa(port),
		"LISTEN_ADDR=127.0.0.1:" + strconv.Itoa(port),
		"LOG_FORMAT=json",
	}
}

// startServer starts bin with args, settings (NAME=value) added to the cleaned
// environment and its output going to logPath, and waits until GET /readyz on port
// answers 200. The stubs of the comparison phase start the same way.
func startServer(ctx context.Context, bin string, args []string, logPath string, port int, settings []string) (*server, error) {
	env := make([]string, 0, len(os.Environ())+len(settings))
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if !slices.Contains(serverEnvNames, name) {
			env = append(env, kv)
		}
	}
	env = append(env, settings...)
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.Dir = filepath.Dir(bin)
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, err
	}
	s := &server{cmd: cmd, baseURL: fmt.Sprintf("http://127.0.0.1:%d", port), logPath: logPath, env: settings, done: make(chan struct{})}
	go func() {
		s.exitErr = cmd.Wait()
		logFile.Close()
		close(s.done)
	}()
	if err := s.waitReady(ctx, 60*time.Second); err != nil {
		s.stop(5 * time.Second)
		return nil, fmt.Errorf("%w\n--- server log (tail) ---\n%s", err, tailFile(logPath, 30))
	}
	return s, nil
}

// waitReady polls /readyz until it answers 200, the process exits or timeout passes.
func (s *server) waitReady(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	c := &http.Client{Timeout: 2 * time.Second}
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.baseURL+"/readyz", nil)
		resp, err := c.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-s.done:
			return fmt.Errorf("server exited during start-up: %v", s.exitErr)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("server not ready after %s (last error: %v)", timeout, err)
		}
	}
}

// alive reports whether the process is still running.
func (s *server) alive() bool {
	select {
	case <-s.done:
		return false
	default:
		return true
	}
}

// stop sends SIGTERM and waits up to grace for the process to exit (graceful shutdown
// flushes the usage queue), then kills it. It returns the process's exit error: nil
// only after a clean exit within grace. Later calls return the first result.
func (s *server) stop(grace time.Duration) error {
	s.stopOnce.Do(func() {
		start := time.Now()
		if !s.alive() {
			s.stopErr = fmt.Errorf("server had already exited: %v", s.exitErr)
			return
		}
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.done:
			s.stopTook = time.Since(start)
			if s.exitErr != nil {
				s.stopErr = fmt.Errorf("server exit after SIGTERM: %v", s.exitErr)
			}
		case <-time.After(grace):
			_ = s.cmd.Process.Kill()
			<-s.done
			s.stopTook = time.Since(start)
			s.stopErr = fmt.Errorf("server still running %s after SIGTERM: killed", grace)
		}
	})
	return s.stopErr
}

// logSummary is what the server logged at WARN and ERROR.
type logSummary struct {
	Lines    int
	Warnings int
	Errors   int
	ByMsg    map[string]int // "LEVEL msg" → count
	Examples []string       // the first few WARN/ERROR lines, verbatim
	Other    []string       // lines that are not JSON (panics, runtime errors)
}

// summarizeLog reads the server's JSON log.
func summarizeLog(path string) logSummary {
	ls := logSummary{ByMsg: map[string]int{}}
	f, err := os.Open(path)
	if err != nil {
		return ls
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		ls.Lines++
		var rec struct {
			Level string `json:"level"`
			Msg   string `json:"msg"`
		}
		if err := json.Unmarshal(line, &rec); err != nil || rec.Level == "" {
			if len(ls.Other) < 20 {
				ls.Other = append(ls.Other, string(line))
			}
			continue
		}
		switch strings.ToUpper(rec.Level) {
		case "WARN", "WARNING":
			ls.Warnings++
		case "ERROR":
			ls.Errors++
		default:
			continue
		}
		ls.ByMsg[strings.ToUpper(rec.Level)+" "+rec.Msg]++
		if len(ls.Examples) < 5 {
			ls.Examples = append(ls.Examples, string(line))
		}
	}
	return ls
}

// merge adds other's counts to ls.
func (ls *logSummary) merge(other logSummary) {
	ls.Lines += other.Lines
	ls.Warnings += other.Warnings
	ls.Errors += other.Errors
	for k, n := range other.ByMsg {
		ls.ByMsg[k] += n
	}
	ls.Examples = append(ls.Examples, other.Examples...)
	ls.Other = append(ls.Other, other.Other...)
}

// describe renders the summary for the table: "0 errors, 0 warnings" or the messages.
func (ls logSummary) describe() string {
	s := fmt.Sprintf("%d errors, %d warnings", ls.Errors, ls.Warnings)
	if len(ls.ByMsg) > 0 {
		keys := make([]string, 0, len(ls.ByMsg))
		for k := range ls.ByMsg {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		parts := make([]string, 0, len(keys))
		for _, k := range keys {
			parts = append(parts, fmt.Sprintf("%q ×%d", k, ls.ByMsg[k]))
		}
		s += ": " + strings.Join(parts, ", ")
	}
	if len(ls.Other) > 0 {
		s += fmt.Sprintf("; %d non-JSON lines", len(ls.Other))
	}
	return s
}

// tailFile returns the last n lines of path.
func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
