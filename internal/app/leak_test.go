package app_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/latchkey/latchkey/internal/app"
	"github.com/latchkey/latchkey/internal/app/apptest"
	"github.com/latchkey/latchkey/internal/data/testdb"
	"github.com/latchkey/latchkey/internal/platform/config"
)

// Shutdown stops every goroutine the app started: the background workers, the bus
// followers, the live streams and their connections, the store's and Redis's pools.
func TestShutdownLeavesNoGoroutines(t *testing.T) {
	for _, tc := range []struct {
		dialect string
		limits  string // where the limits live: memory, redis or cluster
	}{{"sqlite", "memory"}, {"postgres", "redis"}, {"postgres", "cluster"}} {
		t.Run(tc.dialect+"/"+tc.limits, func(t *testing.T) {
			url := testdb.URL(t, tc.dialect) // created before the snapshot: its pool is the test's
			cfg := config.Config{DatabaseURL: url, AdminToken: "admin-leak-test-token-0123456789", PublicURL: "http://localhost",
				MaxBodyBytes: 1 << 20, MaxQueryDepth: 12, MaxQueryComplexity: 5000, MaxSubscriptionsPerKey: 20}
			useRedis(t, tc.limits)(&cfg)
			before := goleak.IgnoreCurrent()
			a, err := app.New(context.Background(), cfg, app.Options{})
			if err != nil {
				t.Fatal(err)
			}
			a.Start(context.Background())
			srv := httptest.NewServer(a.Handler)
			// Some work: a tenant, a key, a call, a live subscription.
			client := &http.Client{Transport: &http.Transport{}}
			post := func(key, q string) {
				req, _ := http.NewRequest("POST", srv.URL+"/query", strings.NewReader(queryBody(q)))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("X-API-Key", key)
				resp, err := client.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
			}
			post(cfg.AdminToken, `mutation { createTenant(input: {name: "Leak", slug: "leak"}) { id } }`)
			ws, err := apptest.DialWS(srv.URL, apptest.TransportWS, map[string]any{"apiKey": cfg.AdminToken}, nil)
			if err != nil {
				t.Fatal(err)
			}
			_ = ws.Subscribe("1", `subscription { usageStats(apiKeyID: "key_x") { requests } }`, nil)
			_, _ = ws.Next(2 * time.Second)

			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := a.Shutdown(ctx); err != nil {
				t.Fatal(err)
			}
			ws.Close()
			srv.Close()
			client.CloseIdleConnections()
			goleak.VerifyNone(t, before)
		})
	}
}
