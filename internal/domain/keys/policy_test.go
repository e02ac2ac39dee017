package keys

import (
	"errors"
	"testing"
	"time"

	"github.com/latchkey/latchkey/internal/data/ratelimit"
	"github.com/latchkey/latchkey/internal/domain/plan"
	"github.com/latchkey/latchkey/internal/platform/fault"
)

func TestExpiryBound(t *testing.T) {
	now := time.Now()
	in := func(d time.Duration) *time.Time { x := now.Add(d); return &x }
	b := bound{expiresAt: in(time.Minute), why: "is in its rotation grace period"}
	cases := []struct {
		name          string
		next, current *time.Time
		isNew, ok     bool
	}{
		{"new key without expiry", nil, nil, true, false},
		{"new key expiring later", in(time.Hour), nil, true, false},
		{"new key expiring at the bound", in(time.Minute), nil, true, true},
		{"new key expiring sooner", in(time.Second), nil, true, true},
		{"clearing an expiry", nil, in(time.Second), false, false},
		{"extending past the bound", in(time.Hour), in(time.Second), false, false},
		{"extending within the bound", in(time.Minute), in(time.Second), false, true},
		{"tightening a key that outlives the bound", in(time.Hour), in(2 * time.Hour), false, true},
		{"giving a permanent key an expiry past the bound", in(time.Hour), nil, false, true},
		{"leaving a permanent key permanent", nil, nil, false, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := b.checkExpiryBound(tc.next, tc.current, tc.isNew)
			if (err == nil) != tc.ok {
				t.Fatalf("err = %v, want ok=%v", err, tc.ok)
			}
		})
	}
	if err := (bound{}).checkExpiryBound(nil, nil, true); err != nil {
		t.Fatalf("unbound caller: %v", err)
	}
}

func TestLimitsBound(t *testing.T) {
	lim := func(rate, sec int, quota int64, p ratelimit.Period) plan.Limits {
		return plan.Limits{RateLimit: rate, RateWindow: time.Duration(sec) * time.Second, Quota: quota, QuotaPeriod: p}
	}
	locked := lim(5, 60, 50, ratelimit.PeriodMonth)
	b := bound{limits: &locked}
	loose := lim(1000, 3600, 100_000, ratelimit.PeriodMonth)
	cases := []struct {
		name        string
		next        plan.Limits
		current     *plan.Limits
		rate, quota bool
		field       string
	}{
		{"new key at the bound", locked, nil, true, true, ""},
		{"new key with the plan's rate", lim(1000, 3600, 50, ratelimit.PeriodMonth), nil, true, true, "rateLimit"},
		{"new key with a daily quota over the month", lim(5, 60, 2, ratelimit.PeriodDay), nil, true, true, "quota"},
		{"tightening a looser key", lim(900, 3600, 90_000, ratelimit.PeriodMonth), &loose, true, true, ""},
		{"loosening a key past the bound", lim(1000, 3600, 50, ratelimit.PeriodMonth), &locked, true, false, "rateLimit"},
		{"quota not being set", lim(5, 60, 0, ratelimit.PeriodMonth), &loose, true, false, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := b.checkLimitsBound(tc.next, tc.current, tc.rate, tc.quota)
			if tc.field == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			var ae *fault.Error
			if !errors.As(err, &ae) || ae.Code != fault.BadUserInput || ae.Extensions["field"] != tc.field {
				t.Fatalf("err = %#v, want BAD_USER_INPUT on %s", err, tc.field)
			}
		})
	}
}
