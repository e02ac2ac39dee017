package app_test

import (
	"bytes"
	"io"
	"net/http"
	"testing"

	"github.com/latchkey/latchkey/internal/app"
	"github.com/latchkey/latchkey/internal/apptest"
)

// BenchmarkViewerHTTP compares `{ viewer { apiKey { id } } }` over real HTTP with key
// authentication against the same query with authentication disabled, in one process.
// With auth disabled apiKey is null; with auth it is the verifier's cached record, so
// neither case reads the database and the difference is the cost of authentication.
func BenchmarkViewerHTTP(b *testing.B) {
	for _, mode := range []string{"noauth", "auth"} {
		b.Run(mode, func(b *testing.B) {
			e := apptest.New(b, "sqlite", app.Options{DisableAuth: mode == "noauth"}, nil)
			key := ""
			if mode == "auth" {
				_, key = e.Key(e.AdminToken, e.Tenant("bench"), "keys:read")
			}
			benchQuery(b, e, key, `{"query":"{ viewer { apiKey { id } } }"}`)
		})
	}
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
