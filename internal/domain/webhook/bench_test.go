package webhook_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/latchkey/latchkey/ent/webhookdelivery"
	"github.com/latchkey/latchkey/internal/data/store"
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

// fairnessScenario is one case of BenchmarkTenantFairness: slowTenants tenants, each
// with slowHooks endpoints that hold every request until the iteration ends (or the
// dispatcher's Timeout cuts it), and a backlog of events queued to all of them.
type fairnessScenario struct {
	name        string
	dialect     string
	cfg         func(*webhook.Config)
	slowTenants int
	slowHooks   int // endpoints per slow tenant
	events      int // events queued per slow tenant (each goes to every one of its endpoints)
	// saturated is how many of the slow tenants' requests are held once the dispatcher
	// has taken all it will take for them: the benchmark waits for it before it
	// queues tenant B's delivery.
	saturated int
}

// runFairness runs one iteration of sc and returns how long tenant B's delivery took
// from its commit to its endpoint receiving it, and how many of the slow tenants'
// requests were still held at that moment.
func runFairness(b *testing.B, s *store.Store, sc fairnessScenario) (time.Duration, int64) {
	c := s.Client
	hold := make(chan struct{})
	var held atomic.Int64
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Read the body first: the server notices the dispatcher hanging up (its
		// Timeout) only once the body is consumed.
		_, _ = io.Copy(io.Discard, r.Body)
		held.Add(1)
		defer held.Add(-1)
		select {
		case <-hold:
		case <-r.Context().Done(): // the dispatcher gave up (Timeout)
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer slow.Close()
	arrived := make(chan time.Time, 1)
	fast := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case arrived <- time.Now():
		default:
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer fast.Close()

	var slowTenants []string
	for range sc.slowTenants {
		tid := newTenant(b, c)
		slowTenants = append(slowTenants, tid)
		for h := range sc.slowHooks {
			newWebhook(b, c, tid, fmt.Sprintf("%s/%s/%d", slow.URL, tid, h))
		}
		tx, err := c.Tx(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		for e := range sc.events {
			if _, err := webhook.Enqueue(context.Background(), tx.Client(),
				webhook.Event{Type: webhook.EventAPIKeyUpdated, TenantID: tid, Data: map[string]int{"n": e}}, ""); err != nil {
				b.Fatal(err)
			}
		}
		if err := tx.Commit(); err != nil {
			b.Fatal(err)
		}
	}
	tenantB := newTenant(b, c)
	newWebhook(b, c, tenantB, fast.URL)

	cfg := webhook.Config{Policy: localPolicy}
	if sc.cfg != nil {
		sc.cfg(&cfg)
	}
	d := webhook.NewDispatcher(c, s.Dialect, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	defer func() {
		cancel()
		close(hold)
		<-done
		// The next iteration starts from an empty queue.
		c.WebhookDelivery.Update().
			Where(webhookdelivery.TenantIDIn(slowTenants...), webhookdelivery.StatusEQ(webhookdelivery.StatusPending)).
			SetStatus(webhookdelivery.StatusFailed).ClearNextAttemptAt().ExecX(sysCtx())
	}()
	deadline := time.Now().Add(30 * time.Second)
	for held.Load() < int64(sc.saturated) {
		if time.Now().After(deadline) {
			b.Fatalf("%s: %d slow requests held after 30s, want %d", sc.name, held.Load(), sc.saturated)
		}
		time.Sleep(time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // let the dispatcher settle into waiting

	if _, err := webhook.Enqueue(context.Background(), c, webhook.Event{Type: webhook.EventWebhookTest, TenantID: tenantB}, ""); err != nil {
		b.Fatal(err)
	}
	start := time.Now() // committed
	d.Wake()
	var at time.Time
	select {
	case at = <-arrived:
	case <-time.After(5 * time.Minute):
		b.Fatalf("%s: tenant B's delivery not received within 5 minutes", sc.name)
	}
	return at.Sub(start), held.Load()
}

// BenchmarkTenantFairness measures how long other tenants' slow endpoints delay a
// tenant's delivery: the slow tenants' endpoints hold every request (past the
// dispatcher's 15 s Timeout) with a backlog queued, and tenant B's single delivery to a
// fast endpoint is committed once the dispatcher has taken all it will for them.
// tenantB_delay_ms is from B's commit to B's endpoint receiving it; held_at_arrival is
// how many slow requests were still held then. Scenarios, default configuration unless
// named:
//
//   - one_tenant_4_slow: the finding, 4 slow endpoints and 32 queued deliveries (before
//     per-tenant fairness: 29.9 s, two rounds of timeouts);
//   - one_tenant_16_slow: enough slow endpoints to take every worker without PerTenant;
//   - one_tenant_16_slow_20k_queued: the same with 20,000 deliveries queued, which the
//     look for tenants with nothing in flight scans past;
//   - four_tenants_16_slow: four such tenants; PerTenant holds three at 16, Reserve
//     stops the fourth at 8 free workers;
//   - workers16_no_tenant_limits: the finding with 16 workers, PerTenant = Workers and
//     no Reserve: only the claim order is left, so B waits for the first of the slow
//     tenant's sends to time out (about 15 s).
//
// Run: go test -run '^$' -bench BenchmarkTenantFairness -benchtime 5x ./internal/webhook/
func BenchmarkTenantFairness(b *testing.B) {
	scenarios := []fairnessScenario{
		{name: "one_tenant_4_slow", dialect: "postgres", slowTenants: 1, slowHooks: 4, events: 8, saturated: 16},
		{name: "one_tenant_4_slow", dialect: "sqlite", slowTenants: 1, slowHooks: 4, events: 8, saturated: 16},
		{name: "one_tenant_16_slow", dialect: "postgres", slowTenants: 1, slowHooks: 16, events: 8, saturated: 16},
		{name: "one_tenant_16_slow_20k_queued", dialect: "postgres", slowTenants: 1, slowHooks: 16, events: 1250, saturated: 16},
		{name: "one_tenant_16_slow_20k_queued", dialect: "sqlite", slowTenants: 1, slowHooks: 16, events: 1250, saturated: 16},
		{name: "four_tenants_16_slow", dialect: "postgres", slowTenants: 4, slowHooks: 16, events: 2, saturated: 56},
		{name: "four_tenants_16_slow", dialect: "sqlite", slowTenants: 4, slowHooks: 16, events: 2, saturated: 56},
		{
			name: "workers16_no_tenant_limits", dialect: "postgres", slowTenants: 1, slowHooks: 4, events: 8, saturated: 16,
			cfg: func(c *webhook.Config) { c.Workers, c.PerTenant, c.Reserve = 16, 16, -1 },
		},
	}
	for _, sc := range scenarios {
		b.Run(sc.name+"/"+sc.dialect, func(b *testing.B) {
			s := openStore(b, sc.dialect)
			var sum time.Duration
			var heldSum int64
			for range b.N {
				delay, held := runFairness(b, s, sc)
				sum += delay
				heldSum += held
			}
			b.ReportMetric(float64(sum.Microseconds())/1000/float64(b.N), "tenantB_delay_ms")
			b.ReportMetric(float64(heldSum)/float64(b.N), "held_at_arrival")
			b.ReportMetric(0, "ns/op") // the wall time of a whole scenario means nothing
		})
	}
}
