// Package plan defines the tenant plans and the limits they give keys by default.
package plan

import (
	"slices"
	"strings"
	"time"

	"github.com/latchkey/latchkey/internal/data/ratelimit"
)

// Plan is a named set of defaults for a tenant's keys.
type Plan struct {
	Name string
	// RateLimit requests per WindowSeconds, for keys without their own limit.
	RateLimit     int
	WindowSeconds int
	// Quota requests per QuotaPeriod (a UTC calendar day or month), for keys without
	// their own quota; 0 means unlimited.
	Quota       int64
	QuotaPeriod ratelimit.Period
}

// Default is the plan of a tenant created without one.
const Default = "free"

var plans = []Plan{
	{Name: "free", RateLimit: 1_000, WindowSeconds: 3600, Quota: 100_000, QuotaPeriod: ratelimit.PeriodMonth},
	{Name: "pro", RateLimit: 100_000, WindowSeconds: 3600, Quota: 10_000_000, QuotaPeriod: ratelimit.PeriodMonth},
}

// Get returns the plan named name and whether it exists.
func Get(name string) (Plan, bool) {
	i := slices.IndexFunc(plans, func(p Plan) bool { return p.Name == name })
	if i < 0 {
		return Plan{}, false
	}
	return plans[i], true
}

// Limits returns the plan's key defaults as the limits of a key without settings of its own.
func (p Plan) Limits() Limits {
	return Limits{
		RateLimit:   p.RateLimit,
		RateWindow:  time.Duration(p.WindowSeconds) * time.Second,
		Quota:       p.Quota,
		QuotaPeriod: p.QuotaPeriod,
	}
}

// Names lists the plan names.
func Names() []string {
	out := make([]string, len(plans))
	for i, p := range plans {
		out[i] = p.Name
	}
	return out
}

// Limits are the limits in force for one key.
type Limits struct {
	RateLimit   int
	RateWindow  time.Duration
	Quota       int64 // 0: unlimited
	QuotaPeriod ratelimit.Period
}

// Effective resolves a key's limits: each setting the key has overrides the plan's.
// quotaPeriod is the stored enum value ("DAY" or "MONTH"). An unknown plan name falls
// back to the default plan.
func Effective(planName string, rateLimit, windowSeconds *int, quota *int64, quotaPeriod *string) Limits {
	p, ok := Get(planName)
	if !ok {
		p, _ = Get(Default)
	}
	l := p.Limits()
	if rateLimit != nil {
		l.RateLimit = *rateLimit
	}
	if windowSeconds != nil {
		l.RateWindow = time.Duration(*windowSeconds) * time.Second
	}
	if quota != nil {
		l.Quota = *quota
	}
	if quotaPeriod != nil {
		l.QuotaPeriod = ratelimit.Period(strings.ToLower(*quotaPeriod))
	}
	return l
}

// DaysPerMonth is how many days a per-day quota counts when it is compared per month:
// the longest month, so a daily quota never admits more in a month than the monthly
// quota it was checked against.
const DaysPerMonth = 31

// PerMonth returns the most requests a quota of quota per period admits in one
// calendar month: a per-day quota counts DaysPerMonth days. 0 (unlimited) stays 0.
func PerMonth(quota int64, period ratelimit.Period) int64 {
	if period == ratelimit.PeriodDay {
		return quota * DaysPerMonth
	}
	return quota
}

// RateWithin reports whether l's rate limit is no looser than o's: its burst is at
// most o's limit and its sustained rate (limit per window) at most o's. Then in any
// stretch of time l admits no more requests than o.
func (l Limits) RateWithin(o Limits) bool {
	w, ow := int64(l.RateWindow/time.Second), int64(o.RateWindow/time.Second)
	return l.RateLimit <= o.RateLimit && int64(l.RateLimit)*ow <= int64(o.RateLimit)*w
}

// QuotaWithin reports whether l's quota is no looser than o's, whatever the periods:
// per month (a per-day quota counts DaysPerMonth days) and, when o's quota is per
// day, also per day (a monthly quota may be spent in one day). A quota of 0 is
// unlimited on either side.
func (l Limits) QuotaWithin(o Limits) bool {
	switch {
	case o.Quota == 0:
		return true
	case l.Quota == 0:
		return false
	case PerMonth(l.Quota, l.QuotaPeriod) > PerMonth(o.Quota, o.QuotaPeriod):
		return false
	case o.QuotaPeriod == ratelimit.PeriodDay && l.Quota > o.Quota:
		return false
	}
	return true
}
