package live

import (
	"context"
	"testing"
	"time"

	"github.com/latchkey/latchkey/internal/data/pubsub"
	"github.com/latchkey/latchkey/internal/domain/usage"
	"github.com/latchkey/latchkey/internal/platform/viewer"
)

// The registry keeps what it did not publish and replays, to a new watch, the events
// of its tenants since the watch started, once and in order.
func TestRegistryReplay(t *testing.T) {
	r := newRegistry(time.Hour)
	r.allUntil = 0 // past the start-up window
	start := time.Now()
	ev := func(tenant, name string, at time.Time) *usage.Event {
		return &usage.Event{TenantID: tenant, OperationName: name, At: at}
	}
	for _, e := range []*usage.Event{
		ev("ten_1", "before", start.Add(-time.Second)),
		ev("ten_1", "first", start),
		ev("ten_2", "other tenant", start),
		ev("ten_1", "second", start.Add(time.Millisecond)),
	} {
		if r.admit(e) {
			t.Fatalf("%s admitted with nobody watching", e.OperationName)
		}
	}
	var got []string
	publish := func(e usage.Event) { got = append(got, e.OperationName) }
	r.receive(announcement{Instance: "other", Tenants: []string{"ten_1"}, Since: start.UnixNano()}, publish)
	if len(got) != 2 || got[0] != "first" || got[1] != "second" {
		t.Fatalf("replayed %q, want [first second]", got)
	}
	// Watched now: admitted; a second announcement replays nothing again.
	if !r.admit(ev("ten_1", "third", time.Now())) || r.admit(ev("ten_2", "x", time.Now())) {
		t.Fatal("admit after the announcement: want ten_1 only")
	}
	got = nil
	r.receive(announcement{Instance: "third", Tenants: []string{"ten_1"}, Since: start.UnixNano()}, publish)
	if len(got) != 0 {
		t.Fatalf("replayed %q twice", got)
	}
	// An instance's own announcements are ignored; refreshes replay nothing.
	r.receive(announcement{Instance: r.instance, Tenants: []string{"ten_3"}, Since: start.UnixNano()}, publish)
	r.receive(announcement{Instance: "other", Tenants: []string{"ten_2"}}, publish)
	if r.admit(ev("ten_3", "own", time.Now())) || !r.admit(ev("ten_2", "y", time.Now())) || len(got) != 0 {
		t.Fatalf("own announcement or refresh: replayed %q", got)
	}
	if s := r.suppressed.Load(); s != 6 {
		t.Errorf("suppressed = %d, want 6", s)
	}
	if n := r.replayed.Load(); n != 2 {
		t.Errorf("replayed = %d, want 2", n)
	}
	// Announcements expire.
	r.remote["ten_1"] = time.Now().UnixNano()
	r.prune()
	if r.watched("ten_1") || !r.watched("ten_2") {
		t.Error("prune: want ten_1 forgotten and ten_2 kept")
	}
}

// Two hubs on one bus behave as two instances: events of a tenant nobody watches are
// not published once the start-up window has passed; a stream opened on one hub gets
// the other's operations from the moment it opened, and the announcement expires.
func TestWatchedOnly(t *testing.T) {
	const refresh = 100 * time.Millisecond
	bus := pubsub.NewLocal()
	t.Cleanup(func() { _ = bus.Close() })
	a := &Hub{Bus: bus, WatchRefresh: refresh}
	b := &Hub{Bus: bus, WatchRefresh: refresh}
	for _, h := range []*Hub{a, b} {
		t.Cleanup(func() { _ = h.Shutdown(context.Background()) })
	}
	op := func(name string) usage.Event {
		return usage.Event{TenantID: "ten_1", APIKeyID: "key_1", OperationType: "query", OperationName: name, Outcome: usage.OutcomeOK, At: time.Now()}
	}
	a.Publish(op("start-up")) // within the start-up window: published
	b.Publish(op("start-up"))
	time.Sleep(refresh + refresh/2 + 20*time.Millisecond)
	published := bus.Stats().Published
	a.Publish(op("unwatched"))
	a.Warn("ten_1", "key_1", "", Warning{Type: "quota.threshold"})
	if got := bus.Stats().Published; got != published {
		t.Fatalf("%d messages published for a tenant nobody watches", got-published)
	}
	time.Sleep(replaySlack + 10*time.Millisecond) // so that the watch below does not replay it

	ctx, cancel := context.WithCancel(context.Background())
	ch, err := b.Events(ctx, &viewer.Viewer{APIKeyID: "key_1", TenantID: "ten_1"}, "ten_1", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	opened := time.Now()
	a.Publish(op("right after")) // before or after a heard of the watch: delivered either way
	select {
	case ev := <-ch:
		if ev.OperationName != "right after" {
			t.Fatalf("first event %q, want the operation served right after the stream opened", ev.OperationName)
		}
		t.Logf("delivered %v after the stream opened; a's stats %+v", time.Since(opened), a.WatchStats())
	case <-time.After(2 * time.Second):
		t.Fatal("the operation served on a never reached the stream on b")
	}
	a.Publish(op("later"))
	if ev := <-ch; ev.OperationName != "later" {
		t.Fatalf("got %q, want later", ev.OperationName)
	}

	// The stream ends; its announcement expires after three refreshes.
	cancel()
	deadline := time.Now().Add(watchTTLRefreshes*refresh + time.Second)
	for a.wantedTenant("ten_1") {
		if time.Now().After(deadline) {
			t.Fatal("the watch of a closed stream never expired")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// BenchmarkPublishUnwatchedShared is the request-path cost of the recorder's OnEvent
// hook on a shared bus when no instance watches the tenant.
func BenchmarkPublishUnwatchedShared(b *testing.B) {
	bus := pubsub.NewLocal()
	b.Cleanup(func() { _ = bus.Close() })
	h := &Hub{Bus: bus}
	b.Cleanup(func() { _ = h.Shutdown(context.Background()) })
	h.init()
	h.reg.allUntil = 0
	ev := usage.Event{TenantID: "ten_1", APIKeyID: "key_1", OperationType: "query", Outcome: usage.OutcomeOK}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			h.Publish(ev)
		}
	})
}
