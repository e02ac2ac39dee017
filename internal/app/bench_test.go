package app_test

import (
	"bytes"
	"io"
	"net/http"
	"os"
	"testing"

	"github.com/latchkey/latchkey/internal/app"
	"github.com/latchkey/latchkey/internal/app/apptest"
)

// BenchmarkViewerHTTP compares `{ viewer { apiKey { id } } }` over real HTTP in one
// process: "noauth" with authentication (and so rate limiting and usage recording)
// disabled, "auth" with key authentication only, and "full": key authentication, the
// rate limit and quota check, and the usage event recorded (and written in batches by
// the recorder on the same cores). With auth disabled apiKey is null; with auth it is the
// verifier's cached record, so neither case reads the database on the request path.
func BenchmarkViewerHTTP(b *testing.B) {
	for _, mode := range []string{"noauth", "auth", "full"} {
		b.Run(mode, func(b *testing.B) {
			e := apptest.New(b, benchDialect(), app.Options{DisableAuth: mode == "noauth", DisableGuard: mode == "auth"}, nil)
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
