package app_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/latchkey/latchkey/internal/app"
	"github.com/latchkey/latchkey/internal/app/apptest"
	"github.com/latchkey/latchkey/internal/domain/keys"
	"github.com/latchkey/latchkey/internal/platform/config"
	"github.com/latchkey/latchkey/internal/platform/logging"
)

// /metrics on the main listener answers platform admins only, in Prometheus format,
// with the metrics operators need.
func TestMetricsEndpoint(t *testing.T) {
	e := apptest.New(t, "sqlite", app.Options{}, nil)
	_, key := e.Key(e.AdminToken, e.Tenant("metrics"), "keys:read")
	e.MustDo(key, viewerQ, nil, &struct{}{})
	e.Do("lk_live_nope", viewerQ, nil)
	get := func(cred string) (*http.Response, string) {
		req, _ := http.NewRequest("GET", e.Server.URL+"/metrics", nil)
		if cred != "" {
			req.Header.Set("Authorization", "Bearer "+cred)
		}
		resp, err := e.Server.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	for _, cred := range []string{"", key} {
		if resp, _ := get(cred); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("metrics with %q: HTTP %d", cred, resp.StatusCode)
		}
	}
	resp, body := get(e.AdminToken)
	if resp.StatusCode != 200 {
		t.Fatalf("HTTP %d", resp.StatusCode)
	}
	for _, want := range []string{
		`latchkey_operations_total{outcome="ok",type="query"} 1`,
		`latchkey_auth_failures_total{reason="malformed key"} 1`,
		"latchkey_operation_duration_seconds_bucket",
		"latchkey_verify_cache_hits_total", "latchkey_verify_cache_misses_total",
		"latchkey_usage_queue_depth", "latchkey_usage_events_dropped_total", "latchkey_usage_batches_total",
		"latchkey_usage_fold_lag_seconds", "latchkey_usage_fold_errors_total",
		"latchkey_webhook_queue_oldest_seconds", "latchkey_webhook_pending",
		"latchkey_subscriptions_active", "go_sql_max_open_connections", "go_goroutines",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

// Runtime profiles are served only on PPROF_ADDR's own listener, never on the API's,
// not even to a platform admin.
func TestPprofNotOnMainListener(t *testing.T) {
	e := apptest.New(t, "sqlite", app.Options{}, nil)
	for _, path := range []string{"/debug/pprof/", "/debug/pprof/profile?seconds=1", "/debug/pprof/cmdline"} {
		req, _ := http.NewRequest("GET", e.Server.URL+path, nil)
		req.Header.Set("Authorization", "Bearer "+e.AdminToken)
		resp, err := e.Server.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s on the API: HTTP %d %.200s", path, resp.StatusCode, body)
		}
	}
}

// Every response carries X-Request-ID (a valid incoming one is kept); every log line
// of a request carries it; logs never contain a key, only its display prefix.
func TestRequestIDAndLogs(t *testing.T) {
	var buf bytes.Buffer
	logger, _ := logging.New(&syncWriter{w: &buf}, "json", "info")
	prev := slog.Default()
	slog.SetDefault(logger)
	defer slog.SetDefault(prev)

	e := apptest.New(t, "sqlite", app.Options{}, func(c *config.Config) { c.AccessLog = "all" })
	_, key := e.Key(e.AdminToken, e.Tenant("logs"), "keys:read")
	req, _ := http.NewRequest("POST", e.Server.URL+"/query", strings.NewReader(`{"query":"{ viewer { isAdmin } }"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-API-Key", key)
	req.Header.Set("X-Request-ID", "trace-123")
	if r := e.Send(req); r.Header.Get("X-Request-ID") != "trace-123" {
		t.Fatalf("X-Request-ID = %q", r.Header.Get("X-Request-ID"))
	}
	if r := e.Do(key, viewerQ, nil); len(r.Header.Get("X-Request-ID")) != 16 {
		t.Fatalf("generated X-Request-ID = %q", r.Header.Get("X-Request-ID"))
	}
	e.Do("", viewerQ, nil)
	logs := buf.String()
	if !strings.Contains(logs, `"request_id":"trace-123"`) || !strings.Contains(logs, `"key":"`+key[:14]+`"`) {
		t.Fatalf("access log lacks the request id or key prefix:\n%s", logs)
	}
	if strings.Contains(logs, key) || strings.Contains(logs, e.AdminToken) {
		t.Fatal("a secret reached the logs")
	}
	for _, line := range strings.Split(strings.TrimSpace(logs), "\n") {
		if strings.Contains(line, `"msg":"request"`) && !strings.Contains(line, `"request_id"`) {
			t.Fatalf("request line without id: %s", line)
		}
	}
}

// The default access log (ACCESS_LOG=errors) has a line for each failed request and
// none for a served one: those are in the request log already.
func TestAccessLogErrorsOnly(t *testing.T) {
	var buf bytes.Buffer
	logger, _ := logging.New(&syncWriter{w: &buf}, "json", "info")
	prev := slog.Default()
	slog.SetDefault(logger)
	defer slog.SetDefault(prev)

	e := apptest.New(t, "sqlite", app.Options{}, nil)
	_, key := e.Key(e.AdminToken, e.Tenant("quiet"), "keys:read")
	if r := e.Do(key, viewerQ, nil); r.Status != 200 {
		t.Fatalf("HTTP %d %s", r.Status, r.Raw)
	}
	if r := e.Do("lk_live_notakey", viewerQ, nil); r.Status != 401 {
		t.Fatalf("HTTP %d %s", r.Status, r.Raw)
	}
	var lines []string
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		if strings.Contains(line, `"msg":"request"`) {
			lines = append(lines, line)
		}
	}
	if len(lines) != 1 || !strings.Contains(lines[0], `"status":401`) {
		t.Fatalf("access log lines %q, want only the 401", lines)
	}
}

// /metrics spends the failure budget of the client that sent the unknown credentials,
// like /query: one client's guesses do not lock out a platform admin elsewhere.
func TestMetricsFailureBudgetPerClient(t *testing.T) {
	e := apptest.New(t, "sqlite", app.Options{}, func(c *config.Config) {
		c.AuthFailuresPerMinute = 5
		c.TrustedProxies = "127.0.0.1/32"
	})
	admin, err := keys.MintAdmin(context.Background(), e.App.Store.Client, "scraper", "test") // not cached yet
	if err != nil {
		t.Fatal(err)
	}
	get := func(cred, from string) int {
		req, _ := http.NewRequest("GET", e.Server.URL+"/metrics", nil)
		req.Header.Set("Authorization", "Bearer "+cred)
		req.Header.Set("X-Forwarded-For", from)
		resp, err := e.Server.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for range 7 {
		fake, _ := keys.Generate(keys.KindLive) // valid checksum, unknown: a database read
		get(fake, "203.0.113.1")
	}
	if status := get(admin, "203.0.113.2"); status != http.StatusOK {
		t.Fatalf("an admin key from another client after 7 guesses from one: HTTP %d", status)
	}
}
