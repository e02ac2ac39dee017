package live_test

import (
	"context"
	"testing"
	"time"

	"github.com/latchkey/latchkey/internal/data/pubsub"
	"github.com/latchkey/latchkey/internal/domain/live"
	"github.com/latchkey/latchkey/internal/domain/usage"
	"github.com/latchkey/latchkey/internal/platform/viewer"
)

// Operations and warnings reach the tenant's streams with an id each; subscription
// starts do not; on a single instance, tenants nobody watches are not even encoded.
func TestPublishAndWarn(t *testing.T) {
	bus := pubsub.NewLocal()
	t.Cleanup(func() { _ = bus.Close() })
	h := &live.Hub{Bus: bus, SingleInstance: true}
	t.Cleanup(func() { _ = h.Shutdown(context.Background()) })

	h.Publish(usage.Event{TenantID: "ten_1", APIKeyID: "key_1", OperationType: "query", Outcome: usage.OutcomeOK})
	if n := bus.Stats().Published; n != 0 {
		t.Fatalf("%d messages published for an unwatched tenant, want 0", n)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := h.Events(ctx, &viewer.Viewer{APIKeyID: "key_1", TenantID: "ten_1"}, "ten_1", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	h.Publish(usage.Event{TenantID: "ten_1", APIKeyID: "key_1", OperationType: "subscription"})
	h.Publish(usage.Event{TenantID: "ten_1", APIKeyID: "key_1", OwnerID: "cust", OperationType: "query", OperationName: "Q", Outcome: usage.OutcomeOK, LatencyMs: 3})
	h.Warn("ten_1", "key_1", "", live.Warning{Type: "quota.threshold", Scope: "key", Threshold: 80, Limit: 10, Used: 8})
	var got []*live.Event
	for len(got) < 2 {
		select {
		case ev := <-ch:
			got = append(got, ev)
		case <-time.After(5 * time.Second):
			t.Fatalf("got %d events, want 2", len(got))
		}
	}
	op, warn := got[0], got[1]
	if op.ID == "" || op.OperationName != "Q" || op.OwnerID == nil || *op.OwnerID != "cust" || op.LatencyMs != 3 || op.Warning != nil {
		t.Errorf("operation event %+v", op)
	}
	if warn.ID == "" || warn.ID == op.ID || warn.OperationType != "warning" || warn.Outcome != live.OutcomeWarning ||
		warn.OwnerID != nil || warn.Warning == nil || warn.Warning.Threshold != 80 {
		t.Errorf("warning event %+v", warn)
	}
	if n := bus.Stats().Published; n != 2 {
		t.Errorf("%d messages published, want 2 (no subscription start)", n)
	}
}

// BenchmarkPublishUnwatched is the request-path cost of the recorder's OnEvent hook
// on a single instance when nobody watches the tenant.
func BenchmarkPublishUnwatched(b *testing.B) {
	bus := pubsub.NewLocal()
	b.Cleanup(func() { _ = bus.Close() })
	h := &live.Hub{Bus: bus, SingleInstance: true}
	b.Cleanup(func() { _ = h.Shutdown(context.Background()) })
	ev := usage.Event{TenantID: "ten_1", APIKeyID: "key_1", OperationType: "query", Outcome: usage.OutcomeOK}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			h.Publish(ev)
		}
	})
}
