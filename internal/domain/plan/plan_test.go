package plan

import (
	"testing"
	"time"

	"github.com/latchkey/latchkey/internal/data/ratelimit"
)

func TestRateWithin(t *testing.T) {
	lim := func(n, sec int) Limits { return Limits{RateLimit: n, RateWindow: time.Duration(sec) * time.Second} }
	cases := []struct {
		name   string
		l, o   Limits
		within bool
	}{
		{"same", lim(5, 60), lim(5, 60), true},
		{"lower burst, same window", lim(4, 60), lim(5, 60), true},
		{"same burst, longer window", lim(5, 120), lim(5, 60), true},
		{"lower burst, same sustained rate", lim(1, 12), lim(5, 60), true},
		{"higher burst", lim(6, 60), lim(5, 60), false},
		{"same burst, shorter window", lim(5, 30), lim(5, 60), false},
		{"lower burst, faster sustained", lim(2, 10), lim(5, 60), false},
		{"higher burst, slower sustained", lim(10, 3600), lim(5, 60), false},
		{"free plan against a tighter key", Limits{RateLimit: 1000, RateWindow: time.Hour}, lim(5, 60), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.l.RateWithin(tc.o); got != tc.within {
				t.Fatalf("%+v within %+v = %v, want %v", tc.l, tc.o, got, tc.within)
			}
		})
	}
}

func TestQuotaWithin(t *testing.T) {
	day, month := ratelimit.PeriodDay, ratelimit.PeriodMonth
	q := func(n int64, p ratelimit.Period) Limits { return Limits{Quota: n, QuotaPeriod: p} }
	free := fallback // the seeded free plan: 100,000 a month
	cases := []struct {
		name   string
		l, o   Limits
		within bool
	}{
		{"the finding: 100,000 a day on a free plan", q(100_000, day), free.Limits(), false},
		{"31 days of a daily quota fit the month", q(3_225, day), free.Limits(), true},
		{"one more a day does not", q(3_226, day), free.Limits(), false},
		{"the plan's own quota", q(100_000, month), free.Limits(), true},
		{"unlimited against a limited plan", q(0, month), free.Limits(), false},
		{"anything against unlimited", q(0, day), q(0, month), true},
		{"lower monthly", q(40, month), q(50, month), true},
		{"daily within monthly", q(1, day), q(50, month), true},
		{"daily over monthly", q(2, day), q(50, month), false},
		{"lower daily", q(9, day), q(10, day), true},
		{"monthly within 31 days but more than a day's", q(300, month), q(10, day), false},
		{"monthly within a day's", q(10, month), q(10, day), true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.l.QuotaWithin(tc.o); got != tc.within {
				t.Fatalf("%+v within %+v = %v, want %v", tc.l, tc.o, got, tc.within)
			}
		})
	}
}
