// Package plan holds the tenant plans, which are data (the plans table, seeded with
// free and pro by a migration): the limits they give keys by default and the caps of
// tenants as a whole.
package plan

import (
	"context"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/latchkey/latchkey/ent"
	"github.com/latchkey/latchkey/ent/schema/rule"
	"github.com/latchkey/latchkey/internal/data/ratelimit"
	"github.com/latchkey/latchkey/internal/platform/limitspec"
)

// Plan is a named set of limits (a row of the plans table): the defaults of its
// tenants' keys, the caps of each tenant as a whole and the most keys a tenant holds.
type Plan struct {
	Name string
	// RateLimit requests per WindowSeconds, for keys without their own limit.
	RateLimit     int
	WindowSeconds int
	// Quota requests per QuotaPeriod (a UTC calendar day or month), for keys without
	// their own quota; 0 means unlimited. The tenant's quota counts per QuotaPeriod too.
	Quota       int64
	QuotaPeriod ratelimit.Period
	// TenantRateLimit requests per TenantWindowSeconds and TenantQuota requests per
	// QuotaPeriod bound all of a tenant's keys together; 0: no cap.
	TenantRateLimit     int
	TenantWindowSeconds int
	TenantQuota         int64
	// MaxKeys bounds a tenant's unrevoked keys; 0: no limit.
	MaxKeys int
	// KeyLimits are the named limits of keys without named limits of their own.
	KeyLimits []limitspec.Named
}

// Default is the plan of a tenant created without one.
const Default = "free"

// fallback is the plan of a tenant whose plan is unknown when even the default plan
// is missing from the catalog: the seeded free plan's limits.
var fallback = Plan{Name: Default, RateLimit: 1_000, WindowSeconds: 3600, Quota: 100_000, QuotaPeriod: ratelimit.PeriodMonth}

// Catalog holds every plan in memory, loaded from the database at start and again
// after each change (on every instance, through the instance bus), so that requests
// never read plans from the database. It is safe for concurrent use.
type Catalog struct {
	client *ent.Client
	mu     sync.RWMutex
	plans  map[string]Plan
	// OnChange, when set, is called after a committed change of a plan (after this
	// instance reloaded): it tells the other instances and drops cached keys, whose
	// limits were resolved with the old plan.
	OnChange func()
}

// NewCatalog returns an empty catalog reading plans through client; call Load.
func NewCatalog(client *ent.Client) *Catalog {
	return &Catalog{client: client, plans: map[string]Plan{}}
}

// Load (re)reads every plan. It returns the database's error and keeps the plans it
// had then.
func (c *Catalog) Load(ctx context.Context) error {
	rows, err := c.client.Plan.Query().All(rule.SystemContext(ctx))
	if err != nil {
		return err
	}
	plans := make(map[string]Plan, len(rows))
	for _, r := range rows {
		plans[r.Name] = Of(r)
	}
	c.mu.Lock()
	c.plans = plans
	c.mu.Unlock()
	return nil
}

// Of converts a stored plan.
func Of(r *ent.Plan) Plan {
	return Plan{
		Name: r.Name, RateLimit: r.KeyRateLimit, WindowSeconds: r.KeyRateLimitWindowSeconds,
		Quota: r.KeyQuota, QuotaPeriod: ratelimit.Period(strings.ToLower(r.QuotaPeriod.String())),
		TenantRateLimit: r.TenantRateLimit, TenantWindowSeconds: r.TenantRateLimitWindowSeconds,
		TenantQuota: r.TenantQuota, MaxKeys: r.MaxKeys, KeyLimits: r.KeyLimits,
	}
}

// Get returns the plan named name and whether it exists.
func (c *Catalog) Get(name string) (Plan, bool) {
	if c == nil {
		return Plan{}, false
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	p, ok := c.plans[name]
	return p, ok
}

// Resolve returns the plan named name, or the default plan for an unknown name.
func (c *Catalog) Resolve(name string) Plan {
	if p, ok := c.Get(name); ok {
		return p
	}
	if p, ok := c.Get(Default); ok {
		return p
	}
	return fallback
}

// Names lists the plan names, sorted.
func (c *Catalog) Names() []string {
	if c == nil {
		return nil
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make([]string, 0, len(c.plans))
	for n := range c.plans {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
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

// Limits are the limits in force for one key.
type Limits struct {
	RateLimit   int
	RateWindow  time.Duration
	Quota       int64 // 0: unlimited
	QuotaPeriod ratelimit.Period
}

// Effective resolves a key's limits on plan p: each setting the key has overrides the
// plan's. quotaPeriod is the stored enum value ("DAY" or "MONTH").
func (p Plan) Effective(rateLimit, windowSeconds *int, quota *int64, quotaPeriod *string) Limits {
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
