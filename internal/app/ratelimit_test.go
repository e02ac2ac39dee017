package app_test

import (
	"context"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	"github.com/latchkey/latchkey/ent/usagelog"
	"github.com/latchkey/latchkey/internal/app"
	"github.com/latchkey/latchkey/internal/app/apptest"
	"github.com/latchkey/latchkey/internal/data/store"
	"github.com/latchkey/latchkey/internal/data/testdb"
	"github.com/latchkey/latchkey/internal/platform/config"
)

func redisURL() string {
	if u := os.Getenv("TEST_REDIS_URL"); u != "" {
		return u
	}
	return "redis://127.0.0.1:6379/0"
}

// redisModes are the shared limit stores the Redis tests of the app run on: one Redis
// server (TEST_REDIS_URL), a Redis Cluster (TEST_REDIS_CLUSTER_URL, see
// scripts/redis-cluster.sh) and the master Redis Sentinel names
// (TEST_REDIS_SENTINEL_URL, see scripts/redis-sentinel.sh).
var redisModes = []string{"redis", "cluster", "sentinel"}

// useRedis returns a config change that keeps the limits in mode's store: "redis",
// "cluster" or "memory" (no change). A cluster that cannot be reached fails the test.
func useRedis(t testing.TB, mode string) func(*config.Config) {
	t.Helper()
	switch mode {
	case "redis":
		return func(c *config.Config) { c.RedisURL = redisURL() }
	case "cluster":
		u := testdb.RedisClusterURL(t)
		return func(c *config.Config) { c.RedisClusterURL = u }
	case "sentinel":
		u := testdb.RedisSentinelURL(t)
		return func(c *config.Config) { c.RedisSentinelURL = u }
	case "memory":
		return func(*config.Config) {}
	}
	t.Fatalf("unknown limit store %q", mode)
	return nil
}

// limitedKey creates a key limited to rate per window seconds and returns its id and secret.
func limitedKey(t *testing.T, e *apptest.Env, tid string, rate, window int, extra string) (string, string) {
	t.Helper()
	var out struct {
		CreateApiKey struct {
			APIKey struct{ ID string } `json:"apiKey"`
			Secret string
		}
	}
	e.MustDo(e.AdminToken, `mutation($t: ID!, $r: Int, $w: Int) { createApiKey(input: {tenantID: $t, name: "limited", scopes: ["keys:read", "keys:write", "usage:read"], rateLimit: $r, rateLimitWindowSeconds: $w`+extra+`}) { apiKey { id } secret } }`,
		map[string]any{"t": tid, "r": rate, "w": window}, &out)
	return out.CreateApiKey.APIKey.ID, out.CreateApiKey.Secret
}

func TestRateLimitBurstHeadersAndDenial(t *testing.T) {
	for _, mode := range append([]string{"memory"}, redisModes...) {
		t.Run(mode, func(t *testing.T) {
			e := apptest.New(t, "sqlite", app.Options{}, useRedis(t, mode))
			tid := e.Tenant("limited")
			id, key := limitedKey(t, e, tid, 5, 60, "")
			for i := range 5 {
				r := e.Do(key, viewerQ, nil)
				if r.Status != 200 || r.Code() != "" {
					t.Fatalf("request %d: HTTP %d %s", i+1, r.Status, r.Raw)
				}
				if got := r.Header.Get("RateLimit-Policy"); got != `"default";q=5;w=60` {
					t.Fatalf("RateLimit-Policy = %q", got)
				}
				wantR := `"default";r=` + strconv.Itoa(4-i) + ";t="
				if got := r.Header.Get("RateLimit"); !strings.HasPrefix(got, wantR) {
					t.Fatalf("request %d: RateLimit = %q, want prefix %q", i+1, got, wantR)
				}
				if r.Header.Get("X-RateLimit-Limit") != "5" || r.Header.Get("X-RateLimit-Remaining") != strconv.Itoa(4-i) {
					t.Fatalf("X-RateLimit headers: %v", r.Header)
				}
				if reset, _ := strconv.ParseInt(r.Header.Get("X-RateLimit-Reset"), 10, 64); reset < time.Now().Unix() {
					t.Fatalf("X-RateLimit-Reset = %d", reset)
				}
			}
			// The sixth operation is denied before anything runs: the mutation does not happen.
			r := e.Do(key, `mutation($id: ID!) { updateApiKey(id: $id, input: {name: "changed"}) { name } }`, map[string]any{"id": id})
			if r.Status != http.StatusTooManyRequests || r.Code() != "RATE_LIMITED" {
				t.Fatalf("6th: HTTP %d %s", r.Status, r.Raw)
			}
			retry, _ := strconv.Atoi(r.Header.Get("Retry-After"))
			if retry < 12 || retry > 13 { // one request per 60/5 = 12 s
				t.Fatalf("Retry-After = %q", r.Header.Get("Retry-After"))
			}
			if got := r.Errors[0].Extensions["retryAfterSeconds"]; got != float64(retry) {
				t.Fatalf("retryAfterSeconds = %v, Retry-After = %d", got, retry)
			}
			if r.Header.Get("X-RateLimit-Remaining") != "0" {
				t.Fatalf("remaining on denial: %v", r.Header)
			}
			if k := e.App.Store.Client.ApiKey.GetX(sysCtx(), id); k.Name != "limited" {
				t.Fatalf("denied mutation ran: name = %q", k.Name)
			}
		})
	}
}

// An operation costs the sum of its root fields (1 each unless marked) plus marked
// nested fields; usage costs 5, usageLogs 10.
func TestRateLimitCost(t *testing.T) {
	e := apptest.New(t, "sqlite", app.Options{}, nil)
	tid := e.Tenant("cost")
	_, key := limitedKey(t, e, tid, 10, 3600, "")
	from := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
	to := time.Now().Add(time.Minute).UTC().Format(time.RFC3339)
	q := `{ viewer { isAdmin } a: viewer { isAdmin } usage(from: "` + from + `", to: "` + to + `", interval: HOUR) { requests } }`
	r := e.Do(key, q, nil) // 1 + 1 + 5 = 7
	if r.Code() != "" || r.Header.Get("X-RateLimit-Remaining") != "3" {
		t.Fatalf("after cost 7: HTTP %d remaining %q %s", r.Status, r.Header.Get("X-RateLimit-Remaining"), r.Raw)
	}
	r = e.Do(key, `{ usage(from: "`+from+`", to: "`+to+`", interval: HOUR) { requests } }`, nil) // 5 > 3
	if r.Status != 429 || r.Errors[0].Extensions["cost"] != float64(5) {
		t.Fatalf("cost 5 with 3 left: HTTP %d %s", r.Status, r.Raw)
	}
	if r := e.Do(key, viewerQ, nil); r.Status != 200 {
		t.Fatalf("cost 1 with 3 left: HTTP %d %s", r.Status, r.Raw)
	}
	// The request log costs 10.
	if r := e.Do(key, `{ usageLogs(first: 1) { totalCount } }`, nil); r.Status != 429 || r.Errors[0].Extensions["cost"] != float64(10) {
		t.Fatalf("usageLogs with a limit of 10 and 2 left: HTTP %d %s", r.Status, r.Raw)
	}
}

func TestQuota(t *testing.T) {
	forEachDialect(t, func(t *testing.T, e *apptest.Env) {
		tid := e.Tenant("quota")
		id, key := limitedKey(t, e, tid, 1000, 60, `, quota: 3, quotaPeriod: DAY`)
		for i := range 3 {
			if r := e.Do(key, viewerQ, nil); r.Status != 200 {
				t.Fatalf("request %d: HTTP %d %s", i+1, r.Status, r.Raw)
			}
		}
		r := e.Do(key, viewerQ, nil)
		if r.Status != 429 || r.Code() != "QUOTA_EXCEEDED" {
			t.Fatalf("4th: HTTP %d %s", r.Status, r.Raw)
		}
		midnight := time.Now().UTC().Truncate(24 * time.Hour).Add(24 * time.Hour)
		if retry, _ := strconv.Atoi(r.Header.Get("Retry-After")); time.Now().Add(time.Duration(retry) * time.Second).Before(midnight) {
			t.Fatalf("Retry-After %d ends before the period does", retry)
		}
		var out struct {
			Node struct {
				QuotaUsage struct {
					Limit, Used, Remaining int
					Period                 string
					ResetAt                time.Time
				}
			}
		}
		e.MustDo(e.AdminToken, `query($id: ID!) { node(id: $id) { ... on ApiKey { quotaUsage { limit used remaining period resetAt } } } }`, map[string]any{"id": id}, &out)
		q := out.Node.QuotaUsage
		if q.Limit != 3 || q.Used != 3 || q.Remaining != 0 || q.Period != "DAY" || !q.ResetAt.Equal(midnight) {
			t.Fatalf("quotaUsage = %+v", q)
		}
	})
}

// Two instances sharing PostgreSQL and Redis (one server, or a cluster) admit exactly N
// of M > N concurrent requests.
func TestSharedLimitAcrossInstances(t *testing.T) {
	for _, mode := range redisModes {
		t.Run(mode, func(t *testing.T) { testSharedLimitAcrossInstances(t, useRedis(t, mode)) })
	}
}

func testSharedLimitAcrossInstances(t *testing.T, store func(*config.Config)) {
	dbURL := testdb.URL(t, "postgres")
	share := func(c *config.Config) { c.DatabaseURL = dbURL; store(c) }
	a := apptest.New(t, "sqlite", app.Options{}, share)
	b := apptest.New(t, "sqlite", app.Options{}, func(c *config.Config) { share(c); c.AdminToken = a.AdminToken })
	_, key := limitedKey(t, a, a.Tenant("shared"), 40, 3600, "")
	var ok, denied atomic.Int64
	var wg sync.WaitGroup
	for i := range 120 {
		wg.Add(1)
		go func(e *apptest.Env) {
			defer wg.Done()
			switch r := e.Do(key, viewerQ, nil); r.Status {
			case 200:
				ok.Add(1)
			case 429:
				denied.Add(1)
			default:
				t.Errorf("HTTP %d %s", r.Status, r.Raw)
			}
		}([]*apptest.Env{a, b}[i%2])
	}
	wg.Wait()
	if ok.Load() != 40 || denied.Load() != 80 {
		t.Fatalf("admitted %d, denied %d; want 40 and 80", ok.Load(), denied.Load())
	}
}

func TestRedisUnavailable(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := "redis://" + ln.Addr().String()
	ln.Close()
	for _, tc := range []struct {
		name     string
		failOpen bool
		cluster  bool
	}{{"failOpen=false", false, false}, {"failOpen=true", true, false}, {"cluster/failOpen=false", false, true}, {"cluster/failOpen=true", true, true}} {
		failOpen := tc.failOpen
		t.Run(tc.name, func(t *testing.T) {
			e := apptest.New(t, "sqlite", app.Options{}, func(c *config.Config) {
				if tc.cluster {
					c.RedisClusterURL = dead
				} else {
					c.RedisURL = dead + "/0"
				}
				c.RateLimitFailOpen = failOpen
			})
			_, key := limitedKey(t, e, e.Tenant("deadredis"), 5, 60, `, quota: 0`)
			r := e.Do(key, viewerQ, nil)
			if failOpen {
				if r.Status != 200 || r.Code() != "" {
					t.Fatalf("fail open: HTTP %d %s", r.Status, r.Raw)
				}
				return
			}
			if r.Status != http.StatusServiceUnavailable || r.Code() != "INTERNAL" {
				t.Fatalf("fail closed: HTTP %d %s", r.Status, r.Raw)
			}
			assertNoLeak(t, r.Raw)
		})
	}
}

// The recorder stores one event per operation, allowed or denied, with its outcome,
// and usage() answers from the rollups.
func TestUsageRecordedAndQueried(t *testing.T) {
	forEachDialect(t, func(t *testing.T, e *apptest.Env) {
		tid := e.Tenant("usage")
		id, key := limitedKey(t, e, tid, 4, 3600, "")
		_, other := e.Key(e.AdminToken, tid, "usage:read")
		e.MustDo(key, viewerQ, nil, &viewerResp{})                                                          // ok
		expectCode(t, e.Do(key, `{ webhooks { totalCount } }`, nil), "FORBIDDEN")                           // forbidden
		expectCode(t, e.Do(key, `{ node(id: "key_01zzzzzzzzzzzzzzzzzzzzzzzz") { id } }`, nil), "NOT_FOUND") // error
		e.MustDo(key, viewerQ, nil, &viewerResp{})                                                          // ok, the 4th
		expectCode(t, e.Do(key, viewerQ, nil), "RATE_LIMITED")                                              // rate limited
		if err := e.App.Recorder.Flush(context.Background()); err != nil {
			t.Fatal(err)
		}
		logs := e.App.Store.Client.UsageLog.Query().Where(usagelog.APIKeyID(id)).Order(usagelog.ByID()).AllX(sysCtx())
		var outcomes []string
		for _, l := range logs {
			outcomes = append(outcomes, l.Outcome)
			if l.TenantID != tid || l.OperationType != "query" || len(l.RootFields) == 0 || l.IP == "" {
				t.Fatalf("usage row: %+v", l)
			}
		}
		if got := strings.Join(outcomes, ","); got != "ok,forbidden,error,ok,rate_limited" {
			t.Fatalf("outcomes = %s", got)
		}
		var out struct {
			Usage []struct {
				Start                                        time.Time
				Requests, Errors, RateLimited, QuotaExceeded int
				P50Ms, P99Ms                                 float64
			}
		}
		from := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
		to := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
		e.MustDo(other, `query($id: ID) { usage(apiKeyID: $id, from: "`+from+`", to: "`+to+`", interval: DAY) { start requests errors rateLimited quotaExceeded p50Ms p99Ms } }`,
			map[string]any{"id": id}, &out)
		var sum [3]int
		for _, b := range out.Usage {
			sum[0] += b.Requests
			sum[1] += b.Errors
			sum[2] += b.RateLimited
		}
		if sum != [3]int{5, 2, 1} {
			t.Fatalf("usage buckets %+v: requests/errors/rateLimited = %v, want [5 2 1]", out.Usage, sum)
		}
		expectCode(t, e.Do(other, `{ usage(from: "`+to+`", to: "`+from+`", interval: DAY) { requests } }`, nil), "BAD_USER_INPUT")
	})
}

// X-Forwarded-For counts only from trusted proxies.
func TestClientIPFromTrustedProxy(t *testing.T) {
	for _, tc := range []struct {
		trusted, want string
	}{
		{"", "127.0.0.1"},
		{"127.0.0.0/8", "203.0.113.9"},
	} {
		e := apptest.New(t, "sqlite", app.Options{}, func(c *config.Config) { c.TrustedProxies = tc.trusted })
		id, key := e.Key(e.AdminToken, e.Tenant("ip-test"))
		req, _ := http.NewRequest("POST", e.Server.URL+"/query", strings.NewReader(`{"query":"{ viewer { isAdmin } }"}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-API-Key", key)
		req.Header.Set("X-Forwarded-For", "198.51.100.1, 203.0.113.9")
		e.Send(req)
		if err := e.App.Recorder.Flush(context.Background()); err != nil {
			t.Fatal(err)
		}
		l := e.App.Store.Client.UsageLog.Query().Where(usagelog.APIKeyID(id)).OnlyX(sysCtx())
		if l.IP != tc.want {
			t.Fatalf("trusted %q: ip = %q, want %q", tc.trusted, l.IP, tc.want)
		}
	}
}

func TestAuthFailuresCounted(t *testing.T) {
	e := apptest.New(t, "sqlite", app.Options{}, nil)
	e.Do("lk_live_bogus", viewerQ, nil)
	e.Do("", viewerQ, nil)
	if n := testutil.ToFloat64(e.App.Metrics.AuthFailures.WithLabelValues("malformed key")); n != 1 {
		t.Fatalf("malformed key failures = %v", n)
	}
	if n := testutil.ToFloat64(e.App.Metrics.AuthFailures.WithLabelValues("missing credential")); n != 1 {
		t.Fatalf("missing credential failures = %v", n)
	}
	if c := e.App.Store.Client.UsageLog.Query().CountX(sysCtx()); c != 0 {
		t.Fatalf("unauthenticated calls stored %d usage rows", c)
	}
}

// Graceful shutdown under load: every operation served is stored.
func TestGracefulShutdownStoresEveryOperation(t *testing.T) {
	for _, d := range testdb.Dialects {
		t.Run(d, func(t *testing.T) {
			dbURL := testdb.URL(t, d)
			cfg := config.Config{DatabaseURL: dbURL, AdminToken: "admin-token-for-shutdown-test", Addr: "127.0.0.1:0",
				MaxBodyBytes: 1 << 20, MaxQueryDepth: 12, MaxQueryComplexity: 5000, UsageRetention: 720 * time.Hour}
			a, err := app.New(context.Background(), cfg, app.Options{})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			addr := make(chan string, 1)
			done := make(chan error, 1)
			go func() { done <- a.ListenAndServe(ctx, func(ad net.Addr) { addr <- ad.String() }) }()
			base := "http://" + <-addr
			env := &apptest.Env{T: t, Server: nil, AdminToken: cfg.AdminToken}
			_ = env
			key := createKeyOver(t, base, cfg.AdminToken)

			var served atomic.Int64
			var wg sync.WaitGroup
			stop := make(chan struct{})
			client := &http.Client{Timeout: 5 * time.Second}
			for range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						select {
						case <-stop:
							return
						default:
						}
						req, _ := http.NewRequest("POST", base+"/query", strings.NewReader(`{"query":"{ viewer { isAdmin } }"}`))
						req.Header.Set("Content-Type", "application/json")
						req.Header.Set("X-API-Key", key)
						resp, err := client.Do(req)
						if err != nil {
							return // the server is going away
						}
						resp.Body.Close()
						if resp.StatusCode == 200 || resp.StatusCode == 429 {
							served.Add(1)
						}
					}
				}()
			}
			time.Sleep(700 * time.Millisecond)
			cancel() // what SIGTERM does in server.go
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			close(stop)
			wg.Wait()

			st, err := store.Open(context.Background(), dbURL)
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			stored := st.Client.UsageLog.Query().CountX(sysCtx())
			if served.Load() < 50 || int64(stored) != served.Load() {
				t.Fatalf("served %d operations, stored %d usage rows", served.Load(), stored)
			}
		})
	}
}

func createKeyOver(t *testing.T, base, admin string) string {
	t.Helper()
	do := func(q string) string {
		req, _ := http.NewRequest("POST", base+"/query", strings.NewReader(q))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-API-Key", admin)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var sb strings.Builder
		_, _ = bufioCopy(&sb, resp)
		return sb.String()
	}
	body := do(`{"query":"mutation { createTenant(input: {name: \"Load\", slug: \"load\"}) { id } }"}`)
	i := strings.Index(body, "ten_")
	tid := body[i : i+len("ten_")+26]
	body = do(`{"query":"mutation { createApiKey(input: {tenantID: \"` + tid + `\", name: \"load\", scopes: [], rateLimit: 1000000, rateLimitWindowSeconds: 60}) { secret } }"}`)
	i = strings.Index(body, "lk_live_")
	return body[i : i+len("lk_live_")+38]
}

// Rotating a key does not refill its quota: the new key counts on the same quota.
func TestQuotaSurvivesRotation(t *testing.T) {
	for _, mode := range append([]string{"memory"}, redisModes...) {
		t.Run(mode, func(t *testing.T) {
			e := apptest.New(t, "sqlite", app.Options{}, useRedis(t, mode))
			id, key := limitedKey(t, e, e.Tenant("rotquota"), 1000, 60, `, quota: 3, quotaPeriod: DAY`)
			for range 2 {
				e.MustDo(key, viewerQ, nil, &struct{}{})
			}
			var rot struct{ RotateApiKey struct{ Secret string } }
			e.MustDo(e.AdminToken, `mutation($id: ID!) { rotateApiKey(id: $id) { secret } }`, map[string]any{"id": id}, &rot)
			next := rot.RotateApiKey.Secret
			e.MustDo(next, viewerQ, nil, &struct{}{})
			if r := e.Do(next, viewerQ, nil); r.Code() != "QUOTA_EXCEEDED" {
				t.Fatalf("4th request across the rotation: HTTP %d %s", r.Status, r.Raw)
			}
		})
	}
}

// forgetRedisKeys deletes every Redis key that names one of ids from the store of cfg
// (one server, or every master of a cluster), as a restart of a Redis without
// persistence would (only this test's keys: other tests share the server). It returns
// how many it deleted.
func forgetRedisKeys(t *testing.T, cfg config.Config, ids ...string) int {
	t.Helper()
	ctx := context.Background()
	var deleted atomic.Int64
	forget := func(ctx context.Context, client *redis.Client) error {
		for _, id := range ids {
			iter := client.Scan(ctx, 0, "*"+id+"*", 1000).Iterator()
			for iter.Next(ctx) {
				n, err := client.Del(ctx, iter.Val()).Result()
				if err != nil {
					return err
				}
				deleted.Add(n)
			}
			if err := iter.Err(); err != nil {
				return err
			}
		}
		return nil
	}
	if cfg.RedisClusterURL != "" {
		opt, err := redis.ParseClusterURL(cfg.RedisClusterURL)
		if err != nil {
			t.Fatal(err)
		}
		client := redis.NewClusterClient(opt)
		defer client.Close()
		if err := client.ForEachMaster(ctx, forget); err != nil {
			t.Fatal(err)
		}
		return int(deleted.Load())
	}
	var client *redis.Client
	if cfg.RedisSentinelURL != "" {
		opt, err := redis.ParseFailoverURL(cfg.RedisSentinelURL)
		if err != nil {
			t.Fatal(err)
		}
		client = redis.NewFailoverClient(opt) // the current master
	} else {
		opt, err := redis.ParseURL(cfg.RedisURL)
		if err != nil {
			t.Fatal(err)
		}
		client = redis.NewClient(opt)
	}
	defer client.Close()
	if err := forget(ctx, client); err != nil {
		t.Fatal(err)
	}
	return int(deleted.Load())
}

// The quota counters in Redis are lost when a Redis without persistence restarts:
// they are seeded again from the stored usage (of the whole rotation chain), so the
// quota goes on counting what was used instead of starting again from zero.
func TestQuotaSurvivesRedisRestart(t *testing.T) {
	for _, d := range testdb.Dialects {
		for _, mode := range redisModes {
			t.Run(d+"/"+mode, func(t *testing.T) { testQuotaSurvivesRedisRestart(t, d, useRedis(t, mode)) })
		}
	}
}

func testQuotaSurvivesRedisRestart(t *testing.T, d string, store func(*config.Config)) {
	e := apptest.New(t, d, app.Options{}, store)
	id, key := limitedKey(t, e, e.Tenant("redisrestart"), 1000, 60, `, quota: 5, quotaPeriod: DAY`)
	for i := range 2 {
		if r := e.Do(key, viewerQ, nil); r.Status != 200 {
			t.Fatalf("request %d: HTTP %d %s", i+1, r.Status, r.Raw)
		}
	}
	var rot struct {
		RotateApiKey struct {
			Secret string
			APIKey struct{ ID string } `json:"apiKey"`
		}
	}
	e.MustDo(e.AdminToken, `mutation($id: ID!) { rotateApiKey(id: $id) { secret apiKey { id } } }`, map[string]any{"id": id}, &rot)
	next, nextID := rot.RotateApiKey.Secret, rot.RotateApiKey.APIKey.ID
	if r := e.Do(next, viewerQ, nil); r.Status != 200 {
		t.Fatalf("request 3 (rotated key): HTTP %d %s", r.Status, r.Raw)
	}
	// The usage batch is written (within a flush interval), then Redis loses
	// everything about these keys.
	if err := e.App.Recorder.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := forgetRedisKeys(t, e.App.Config, id, nextID); n == 0 {
		t.Fatal("no Redis key named the keys: the test does not simulate the loss")
	}
	for i := range 2 {
		if r := e.Do(next, viewerQ, nil); r.Status != 200 {
			t.Fatalf("request %d after the loss: HTTP %d %s", 4+i, r.Status, r.Raw)
		}
	}
	if r := e.Do(next, viewerQ, nil); r.Status != 429 || r.Code() != "QUOTA_EXCEEDED" {
		t.Fatalf("6th request against a quota of 5, after Redis lost its counter: HTTP %d %s", r.Status, r.Raw)
	}
	// quotaUsage reads the counter too, and seeds it when it is missing.
	if err := e.App.Recorder.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	forgetRedisKeys(t, e.App.Config, id, nextID)
	var out struct {
		Node struct{ QuotaUsage struct{ Used, Remaining int } }
	}
	e.MustDo(e.AdminToken, `query($id: ID!) { node(id: $id) { ... on ApiKey { quotaUsage { used remaining } } } }`, map[string]any{"id": nextID}, &out)
	if q := out.Node.QuotaUsage; q.Used != 5 || q.Remaining != 0 {
		t.Fatalf("quotaUsage after another loss = %+v, want 5 used", q)
	}
}

// REDIS_URL and REDIS_CLUSTER_URL together: the server does not start (config.FromEnv
// refuses them too, and any two of the three Redis settings).
func TestRedisAndRedisClusterRefused(t *testing.T) {
	cfg := config.Config{DatabaseURL: testdb.URL(t, "sqlite"), AdminToken: "admin-token-for-two-redis-urls",
		RedisURL: "redis://127.0.0.1:6379/0", RedisClusterURL: testdb.DefaultRedisClusterURL}
	a, err := app.New(context.Background(), cfg, app.Options{})
	if err == nil {
		_ = a.Shutdown(context.Background())
		t.Fatal("app.New accepted REDIS_URL and REDIS_CLUSTER_URL together")
	}
	if !strings.Contains(err.Error(), "REDIS_URL, REDIS_CLUSTER_URL and REDIS_SENTINEL_URL") {
		t.Fatalf("err = %v, want it to name the variables", err)
	}
}

// The failed-credential throttle is shared by the instances of one Redis or cluster:
// each client spends one budget of unknown credentials wherever its requests land
// (in a cluster the clients' budgets sit on different nodes), then gets 429.
func TestFailedCredentialBudgetAcrossInstances(t *testing.T) {
	for _, mode := range redisModes {
		t.Run(mode, func(t *testing.T) {
			dbURL := testdb.URL(t, "postgres")
			share := func(c *config.Config) {
				c.DatabaseURL = dbURL
				useRedis(t, mode)(c)
				c.AuthFailuresPerMinute = 5
				c.TrustedProxies = "127.0.0.1/32"
			}
			a := apptest.New(t, "sqlite", app.Options{}, share)
			b := apptest.New(t, "sqlite", app.Options{}, func(c *config.Config) { share(c); c.AdminToken = a.AdminToken })
			guess := func(e *apptest.Env, from string) *apptest.Response {
				req, _ := http.NewRequest("POST", e.Server.URL+"/query", strings.NewReader(`{"query":"{ viewer { isAdmin } }"}`))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("X-API-Key", mustGenerate()) // valid checksum, unknown: a database read
				req.Header.Set("X-Forwarded-For", from)
				return e.Send(req)
			}
			// Fresh clients (benchmarking addresses, random per run: the budgets of
			// other runs on the same Redis are not these).
			seed := time.Now().UnixNano()
			for c := range 6 {
				from := "198.18." + strconv.Itoa(int(seed>>8+int64(c))%256) + "." + strconv.Itoa(int(seed+int64(c)*37)%256)
				for i := range 5 {
					if r := guess([]*apptest.Env{a, b}[i%2], from); r.Status != http.StatusUnauthorized {
						t.Fatalf("client %s, unknown key %d: HTTP %d %s", from, i+1, r.Status, r.Raw)
					}
				}
				for _, e := range []*apptest.Env{a, b} {
					if r := guess(e, from); r.Status != http.StatusTooManyRequests || r.Header.Get("Retry-After") == "" {
						t.Fatalf("client %s after 5 unknown keys on two instances: HTTP %d %s", from, r.Status, r.Raw)
					}
				}
			}
		})
	}
}
