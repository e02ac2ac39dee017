package app_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/latchkey/latchkey/internal/app"
	"github.com/latchkey/latchkey/internal/app/apptest"
	"github.com/latchkey/latchkey/internal/platform/tracing"
)

// BenchmarkViewerHTTP compares `{ viewer { apiKey { id } } }` over real HTTP in one
// process: "noauth" with authentication (and so rate limiting and usage recording)
// disabled, "auth" with key authentication only, and "full": key authentication, the
// rate limit and quota check, and the usage event recorded (and written in batches by
// the recorder on the same cores). With auth disabled apiKey is null; with auth it is the
// verifier's cached record, so neither case reads the database on the request path.
//
// "full" has tracing off, as without OTEL_* variables: no instrumentation is
// installed. "full-noop-tracer" installs every span (HTTP, operation, resolvers,
// database) on OpenTelemetry's no-op provider; "full-traced" records and exports
// (to a discarding exporter, in batches) every span of every request.
func BenchmarkViewerHTTP(b *testing.B) {
	for _, mode := range []string{"noauth", "auth", "full", "full-noop-tracer", "full-traced"} {
		b.Run(mode, func(b *testing.B) {
			opts := app.Options{DisableAuth: mode == "noauth", DisableGuard: mode == "auth"}
			switch mode {
			case "full-noop-tracer":
				opts.Tracing = tracing.WithProvider(noop.NewTracerProvider())
			case "full-traced":
				tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(tracetest.NewNoopExporter()))
				b.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
				opts.Tracing = tracing.WithProvider(tp)
			}
			e := apptest.New(b, benchDialect(), opts, nil)
			key := ""
			if mode != "noauth" {
				var out struct {
					CreateApiKey struct{ Secret string }
				}
				e.MustDo(e.AdminToken, `mutation($t: ID!) { createApiKey(input: {tenantID: $t, name: "bench", scopes: [], rateLimit: 1000000000, rateLimitWindowSeconds: 3600, quota: 1000000000000, quotaPeriod: MONTH}) { secret } }`,
					map[string]any{"t": e.Tenant("bench")}, &out)
				key = out.CreateApiKey.Secret
			}
			benchQuery(b, e, key, `{"query":"{ viewer { apiKey { id } } }"}`)
		})
	}
}

// benchDialect is the store of the HTTP benchmarks: BENCH_DIALECT (default sqlite).
func benchDialect() string {
	if d := os.Getenv("BENCH_DIALECT"); d != "" {
		return d
	}
	return "sqlite"
}

func benchQuery(b *testing.B, e *apptest.Env, key, body string) {
	var header [][2]string
	if key != "" {
		header = append(header, [2]string{"X-API-Key", key})
	}
	benchPost(b, e, "/query", header, body, nil)
}

// benchPost sends body to path from 8 goroutines per core until b is done; every
// answer must be 200 and contain want (if set).
func benchPost(b *testing.B, e *apptest.Env, path string, header [][2]string, body string, want []byte) {
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	client := &http.Client{Transport: tr}
	defer tr.CloseIdleConnections()
	payload := []byte(body)
	b.ReportAllocs()
	b.ResetTimer()
	b.SetParallelism(8)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req, _ := http.NewRequest(http.MethodPost, e.Server.URL+path, bytes.NewReader(payload))
			req.Header.Set("Content-Type", "application/json")
			for _, h := range header {
				req.Header.Set(h[0], h[1])
			}
			resp, err := client.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			got, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || want != nil && !bytes.Contains(got, want) {
				b.Fatalf("HTTP %d %s", resp.StatusCode, got)
			}
		}
	})
}

// BenchmarkVerifyHTTP is POST /v1/keys/verify of a valid consumer key over real HTTP
// in one process: authentication of the verifying key, the consumer key's lookup,
// its rate limit and quota, the usage event recorded and written in batches.
func BenchmarkVerifyHTTP(b *testing.B) {
	e := apptest.New(b, benchDialect(), app.Options{}, nil)
	var tenant struct{ CreateTenant struct{ ID string } }
	e.MustDo(e.AdminToken, `mutation { createPlan(input: {name: "bench", keyRateLimit: 1000000000, keyRateLimitWindowSeconds: 3600}) { name } }`, nil, &struct{}{})
	e.MustDo(e.AdminToken, `mutation { createTenant(input: {name: "bench", slug: "bench", plan: "bench"}) { id } }`, nil, &tenant)
	tid := tenant.CreateTenant.ID // a plan without tenant-wide caps
	_, verifier := e.Key(e.AdminToken, tid, "keys:verify")
	var out struct {
		CreateApiKey struct{ Secret string }
	}
	e.MustDo(e.AdminToken, `mutation($t: ID!) { createApiKey(input: {tenantID: $t, name: "customer", kind: CONSUMER, scopes: [], rateLimit: 1000000000, rateLimitWindowSeconds: 3600, quota: 1000000000000, quotaPeriod: MONTH}) { secret } }`,
		map[string]any{"t": tid}, &out)
	benchPost(b, e, "/v1/keys/verify", [][2]string{{"Authorization", "Bearer " + verifier}},
		`{"key":"`+out.CreateApiKey.Secret+`","permissions":[],"tag":"bench"}`, []byte(`"code":"VALID"`))
}
