// Package plan defines the tenant plans and the limits they give keys by default.
package plan

import (
	"slices"
	"strings"
	"time"

	"github.com/latchkey/latchkey/internal/ratelimit"
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
	l := Limits{
		RateLimit:   p.RateLimit,
		RateWindow:  time.Duration(p.WindowSeconds) * time.Second,
		Quota:       p.Quota,
		QuotaPeriod: p.QuotaPeriod,
	}
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
