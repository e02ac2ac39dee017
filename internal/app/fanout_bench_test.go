package app_test

import (
	"encoding/json"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/latchkey/latchkey/internal/app"
	"github.com/latchkey/latchkey/internal/app/apptest"
	"github.com/latchkey/latchkey/internal/platform/config"
)

// BenchmarkFanout opens 5,000 live usageEvents subscriptions on one instance (one per
// WebSocket connection, as dashboards do), then sends one operation every 250 ms and
// measures the time from each operation to its message arriving at every subscriber,
// and the memory one idle subscription costs. The 5,000 clients run in the same process
// on the same two cores as the server (each delivery costs a client read and decode as
// well as the server's encode and write), so both numbers are upper bounds.
//
//	go test -run '^$' -bench Fanout -benchtime 1x ./internal/app
func BenchmarkFanout(b *testing.B) {
	const subscribers, operations = 5000, 20
	e := apptest.New(b, "sqlite", app.Options{}, func(c *config.Config) { c.MaxSubscriptionsPerKey = subscribers })
	var out struct {
		CreateApiKey struct{ Secret string }
	}
	e.MustDo(e.AdminToken, `mutation($t: ID!) { createApiKey(input: {tenantID: $t, name: "fanout", scopes: ["usage:read"], rateLimit: 100000000, rateLimitWindowSeconds: 60, quota: 0}) { secret } }`,
		map[string]any{"t": e.Tenant("fanout")}, &out)
	key := out.CreateApiKey.Secret

	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	clients := make([]*apptest.WSClient, subscribers)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for i := range clients {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, err := e.DialWS(apptest.TransportWS, map[string]any{"apiKey": key}, nil)
			if err != nil {
				b.Error(err)
				return
			}
			if err := c.Subscribe("1", `subscription { usageEvents { operationName at } }`, nil); err != nil {
				b.Error(err)
			}
			clients[i] = c
		}()
	}
	wg.Wait()
	if b.Failed() {
		return
	}
	waitForB(b, 30*time.Second, func() bool { return e.App.Live.Active() == subscribers })
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	perSub := float64(after.HeapInuse+after.StackInuse-before.HeapInuse-before.StackInuse) / subscribers

	b.ResetTimer()
	var mu sync.Mutex
	var lat []time.Duration
	for _, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; n < operations; {
				m, err := c.Next(20 * time.Second)
				if err != nil {
					b.Error(err)
					return
				}
				if !m.IsData() {
					continue
				}
				var ev struct {
					Data struct {
						UsageEvents struct{ At time.Time } `json:"usageEvents"`
					} `json:"data"`
				}
				_ = json.Unmarshal(m.Payload, &ev)
				d := time.Since(ev.Data.UsageEvents.At)
				mu.Lock()
				lat = append(lat, d)
				mu.Unlock()
				n++
			}
		}()
	}
	for i := range operations {
		e.MustDo(key, fmt.Sprintf("query Op%d { viewer { isAdmin } }", i), nil, &struct{}{})
		time.Sleep(250 * time.Millisecond)
	}
	wg.Wait()
	b.StopTimer()
	slices.Sort(lat)
	if len(lat) == 0 {
		b.Fatal("no deliveries")
	}
	q := func(p float64) float64 { return float64(lat[int(float64(len(lat)-1)*p)].Microseconds()) / 1000 }
	b.ReportMetric(float64(len(lat)), "deliveries")
	b.ReportMetric(q(0.5), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
	b.ReportMetric(perSub/1024, "KiB/subscription")
	for _, c := range clients {
		c.Close()
	}
}

func waitForB(b *testing.B, d time.Duration, cond func() bool) {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			b.Fatalf("condition not met within %v", d)
		}
		time.Sleep(250 * time.Millisecond)
	}
}
