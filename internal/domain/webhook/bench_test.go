package webhook_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/latchkey/latchkey/internal/domain/webhook"
)

// BenchmarkDeliveryThroughput measures the dispatcher on PostgreSQL against a local
// receiver, with 2,000 deliveries (200 events to 10 webhooks) per phase:
//
//   - deliveries/s: a backlog of 2,000 committed deliveries drained by one dispatcher
//     with the default configuration (16 workers, 4 per endpoint), until every attempt
//     is recorded;
//   - p50/p99_commit_to_attempt_ms: events committed one transaction at a time at
//     500 deliveries/s (50 events/s), from each commit to the receiver getting the
//     delivery's first attempt.
//
// Run: go test -run '^$' -bench BenchmarkDeliveryThroughput -benchtime 1x ./internal/webhook/
func BenchmarkDeliveryThroughput(b *testing.B) {
	const (
		hooks        = 10
		events       = 200
		total        = hooks * events
		eventsPerSec = 50
	)
	s := openStore(b, "postgres")
	c := s.Client

	var mu sync.Mutex
	first := map[string]time.Time{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		now := time.Now()
		key := r.URL.Path + " " + r.Header.Get("webhook-id")
		mu.Lock()
		if _, ok := first[key]; !ok {
			first[key] = now
		}
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()

	var delivered atomic.Int64
	cfg := webhook.Config{
		Policy: localPolicy,
		OnAttempt: func(r webhook.AttemptResult) {
			if r.Outcome == webhook.OutcomeDelivered {
				delivered.Add(1)
			}
		},
	}
	waitDelivered := func(n int64) {
		deadline := time.Now().Add(2 * time.Minute)
		for delivered.Load() < n {
			if time.Now().After(deadline) {
				b.Fatalf("only %d of %d deliveries after 2 minutes", delivered.Load(), n)
			}
			time.Sleep(time.Millisecond)
		}
	}

	var sumRate, sumP50, sumP99 float64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		tid := newTenant(b, c)
		for h := range hooks {
			newWebhook(b, c, tid, fmt.Sprintf("%s/i%d/h%d", srv.URL, i, h))
		}
		delivered.Store(0)
		b.StartTimer()

		// Phase 1: drain a committed backlog.
		tx, err := c.Tx(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		for e := range events {
			if _, err := webhook.Enqueue(context.Background(), tx.Client(),
				webhook.Event{Type: webhook.EventAPIKeyUpdated, TenantID: tid, Data: map[string]int{"n": e}}, ""); err != nil {
				b.Fatal(err)
			}
		}
		if err := tx.Commit(); err != nil {
			b.Fatal(err)
		}
		d := webhook.NewDispatcher(c, s.Dialect, cfg)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		start := time.Now()
		go func() { done <- d.Run(ctx) }()
		waitDelivered(total)
		sumRate += float64(total) / time.Since(start).Seconds()

		// Phase 2: paced commits, latency from commit to first attempt.
		committed := make(map[string]time.Time, events)
		tick := time.NewTicker(time.Second / eventsPerSec)
		for e := range events {
			<-tick.C
			id := fmt.Sprintf("msg_bench_%d_%d", i, e)
			tx, err := c.Tx(context.Background())
			if err != nil {
				b.Fatal(err)
			}
			if _, err := webhook.Enqueue(context.Background(), tx.Client(),
				webhook.Event{Type: webhook.EventAPIKeyRevoked, TenantID: tid}, id); err != nil {
				b.Fatal(err)
			}
			if err := tx.Commit(); err != nil {
				b.Fatal(err)
			}
			committed[id] = time.Now()
			d.Wake()
		}
		tick.Stop()
		waitDelivered(2 * total)
		cancel()
		<-done

		b.StopTimer()
		var lat []time.Duration
		mu.Lock()
		for key, at := range first {
			var path, id string
			fmt.Sscanf(key, "%s %s", &path, &id)
			if c, ok := committed[id]; ok {
				lat = append(lat, at.Sub(c))
			}
		}
		mu.Unlock()
		if len(lat) != total {
			b.Fatalf("%d paced deliveries measured, want %d", len(lat), total)
		}
		slices.Sort(lat)
		sumP50 += float64(lat[len(lat)/2].Microseconds()) / 1000
		sumP99 += float64(lat[len(lat)*99/100].Microseconds()) / 1000
		b.StartTimer()
	}
	b.StopTimer()
	n := float64(b.N)
	b.ReportMetric(sumRate/n, "deliveries/s")
	b.ReportMetric(sumP50/n, "p50_commit_to_attempt_ms")
	b.ReportMetric(sumP99/n, "p99_commit_to_attempt_ms")
}
