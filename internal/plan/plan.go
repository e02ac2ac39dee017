// Package plan defines the tenant plans and the limits they give keys by default.
package plan

import "slices"

// Plan is a named set of defaults for a tenant's keys.
type Plan struct {
	Name string
	// RateLimit requests per WindowSeconds, for keys without their own limit.
	RateLimit     int
	WindowSeconds int
	// Quota requests per QuotaPeriod ("day" or "month", UTC calendar), for keys without
	// their own quota; 0 means unlimited.
	Quota       int64
	QuotaPeriod string
}

// Default is the plan of a tenant created without one.
const Default = "free"

var plans = []Plan{
	{Name: "free", RateLimit: 1_000, WindowSeconds: 3600, Quota: 100_000, QuotaPeriod: "month"},
	{Name: "pro", RateLimit: 100_000, WindowSeconds: 3600, Quota: 10_000_000, QuotaPeriod: "month"},
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
