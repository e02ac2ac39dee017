package webhook

import (
	"fmt"
	"testing"
	"time"

	"github.com/latchkey/latchkey/internal/data/ratelimit"
	"github.com/latchkey/latchkey/internal/platform/viewer"
)

// Limit events keep their deterministic ids (other instances derive the same ones)
// and are queued once per limit and window however often the limit refuses.
func TestLimitEventIDsAndDedupe(t *testing.T) {
	l := &LimitEvents{}
	v := &viewer.Viewer{TenantID: "ten_1", APIKeyID: "key_1", OwnerID: "cust-1"}
	for range 3 {
		l.RateLimited(v, "named:search", 10, time.Minute, time.Second)
		l.QuotaExceeded(v, "owner", 100, ratelimit.PeriodDay, time.Time{})
		l.Threshold(v, EventCreditsThreshold, "key", 80, 100, 80, time.Unix(1700000000, 0), time.Time{})
	}
	now := time.Now().UTC()
	day, _ := ratelimit.PeriodBounds(ratelimit.PeriodDay, now)
	want := []string{
		fmt.Sprintf("msg_rl_named_search_key_1_%d", now.Truncate(time.Minute).Unix()),
		fmt.Sprintf("msg_quota_owner_ten_1_cust_1_%d", day.Unix()),
		"msg_ct_key_key_1_1700000000_80",
	}
	if len(l.queue) != len(want) {
		t.Fatalf("%d events queued, want %d", len(l.queue), len(want))
	}
	for _, id := range want {
		if got := (<-l.queue).id; got != id {
			t.Errorf("event id %q, want %q", got, id)
		}
	}
}

// The dedupe map sweeps expired entries only when it has doubled since the last
// sweep, and never forgets a live one.
func TestLimitEventsSweep(t *testing.T) {
	l := &LimitEvents{}
	now := time.Now()
	for i := range 3 * minSweep {
		until := now.Add(-time.Second) // expired at once
		if i%2 == 0 {
			until = now.Add(time.Hour)
		}
		if !l.first(limitKey{kind: "rl", who: fmt.Sprint(i)}, now, until) {
			t.Fatalf("key %d deduplicated on first sight", i)
		}
	}
	if n := len(l.sent); n > 2*minSweep+1 {
		t.Errorf("%d entries kept, want the live ones and at most one sweep's growth", n)
	}
	for i := 0; i < 3*minSweep; i += 2 {
		if l.first(limitKey{kind: "rl", who: fmt.Sprint(i)}, now, now.Add(time.Hour)) {
			t.Fatalf("live key %d was forgotten", i)
		}
	}
}
