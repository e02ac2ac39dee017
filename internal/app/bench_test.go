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
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	client := &http.Client{Transport: tr}
	defer tr.CloseIdleConnections()
	payload := []byte(body)
	b.ReportAllocs()
	b.ResetTimer()
	b.SetParallelism(8)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req, _ := http.NewRequest(http.MethodPost, e.Server.URL+"/query", bytes.NewReader(payload))
			req.Header.Set("Content-Type", "application/json")
			if key != "" {
				req.Header.Set("X-API-Key", key)
			}
			resp, err := client.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				b.Fatalf("HTTP %d", resp.StatusCode)
			}
		}
	})
}
