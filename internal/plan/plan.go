// Package plan defines the tenant plans and the limits they give keys by default.
package plan

import "slices"

// Plan is a named set of defaults for a tenant's keys.
type Plan struct {
	Name string
	// RateLimit requests per WindowSeconds, for keys without their own limit.
	RateLimit     int
	WindowSeconds int
}

// Default is the plan of a tenant created without one.
const Default = "free"

var plans = []Plan{
	{Name: "free", RateLimit: 1_000, WindowSeconds: 3600},
	{Name: "pro", RateLimit: 100_000, WindowSeconds: 3600},
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
