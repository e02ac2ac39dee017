package admission

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/latchkey/latchkey/ent"
	"github.com/latchkey/latchkey/ent/apikey"
	"github.com/latchkey/latchkey/ent/schema/rule"
	"github.com/latchkey/latchkey/internal/data/ratelimit"
	"github.com/latchkey/latchkey/internal/domain/usage"
	"github.com/latchkey/latchkey/internal/platform/fault"
	"github.com/latchkey/latchkey/internal/platform/limitspec"
	"github.com/latchkey/latchkey/internal/platform/viewer"
)

// The limits of one check, as counters of the limit store. A counter's Key says whose
// limit it is; Scope is what a refusal names (extensions.limitScope).
//
//	key:<id>@<def>      the key's rate limit                 scope key
//	quota:<quota key>   the key's quota (its rotation chain)  scope key
//	owner:<owner>@<def> the owner's rate limit               scope owner
//	ownerq:<owner id>   the owner's quota                    scope owner
//	tenant@<def>        the tenant's rate limit              scope tenant
//	tenantq             the tenant's quota                   scope tenant
//	named:<id>:<name>@<def> a named limit of the key         scope named:<name>
//	credits:<key>       the credit balance (its chain)        scope credits
//
// <def> is the rate limit's definition (rate/window in ms): see rateKey. Every key of
// a check belongs to the tenant's group (one Redis Cluster slot).
type counters struct {
	list   []ratelimit.Counter
	scopes []string
}

// scratch is the working memory of one check, pooled: the counters and their results
// escape to the limit store's interface, so on the stack they would be allocated on
// every request. Nothing refers to it once Admit returns.
type scratch struct {
	c      counters
	list   [8]ratelimit.Counter
	scopes [8]string
	res    [8]ratelimit.CounterResult
}

var scratchPool = sync.Pool{New: func() any { return new(scratch) }}

func getScratch() *scratch {
	s := scratchPool.Get().(*scratch)
	s.c = counters{list: s.list[:0], scopes: s.scopes[:0]}
	return s
}

// put returns s to the pool, dropping its references (key strings) first.
func (s *scratch) put() {
	clear(s.c.list)
	clear(s.c.scopes)
	s.c = counters{}
	scratchPool.Put(s)
}

func (c *counters) add(scope string, ctr ratelimit.Counter) {
	c.list = append(c.list, ctr)
	c.scopes = append(c.scopes, scope)
}

// countersOf appends to c the limits that req charges. Tenant caps are advisory for a
// management key (its calls count against them but are never refused by them: a
// tenant can always revoke). It returns a BAD_USER_INPUT fault for a charge of a named
// limit the key does not have, or out of its range.
func countersOf(c *counters, req *Request, cost int64, quotaCost int64) error {
	v := req.Viewer
	if v.RateLimit > 0 {
		c.add("key", ratelimit.Counter{Kind: ratelimit.RateKind, Key: rateKey("key:", v.APIKeyID, v.RateLimit, v.RateWindow),
			Limit: ratelimit.Limit{Rate: v.RateLimit, Period: v.RateWindow}, Cost: cost})
	}
	if v.Quota > 0 {
		c.add("key", ratelimit.Counter{Kind: ratelimit.QuotaKind, Key: "quota:" + v.QuotaKey,
			Quota: v.Quota, Period: ratelimit.Period(v.QuotaPeriod), Cost: quotaCost})
	}
	if v.OwnerID != "" && v.OwnerRateLimit > 0 {
		c.add("owner", ratelimit.Counter{Kind: ratelimit.RateKind, Key: rateKey("owner:", v.OwnerID, v.OwnerRateLimit, v.OwnerRateWindow),
			Limit: ratelimit.Limit{Rate: v.OwnerRateLimit, Period: v.OwnerRateWindow}, Cost: cost})
	}
	if v.OwnerID != "" && v.OwnerQuota > 0 {
		c.add("owner", ratelimit.Counter{Kind: ratelimit.QuotaKind, Key: "ownerq:" + v.OwnerID,
			Quota: v.OwnerQuota, Period: ratelimit.Period(v.OwnerQuotaPeriod), Cost: quotaCost})
	}
	advisory := !v.Consumer
	if v.TenantRateLimit > 0 {
		c.add("tenant", ratelimit.Counter{Kind: ratelimit.RateKind, Key: rateKey("tenant", "", v.TenantRateLimit, v.TenantRateWindow),
			Limit: ratelimit.Limit{Rate: v.TenantRateLimit, Period: v.TenantRateWindow}, Cost: cost, Advisory: advisory})
	}
	if v.TenantQuota > 0 {
		period := ratelimit.Period(v.QuotaPeriod)
		if !period.Valid() {
			period = ratelimit.PeriodMonth
		}
		c.add("tenant", ratelimit.Counter{Kind: ratelimit.QuotaKind, Key: "tenantq",
			Quota: v.TenantQuota, Period: period, Cost: quotaCost, Advisory: advisory})
	}
	for _, ch := range req.Charges {
		n := namedLimit(v.Named, ch.Name)
		if n == nil {
			return fault.BadInput("charges", "the key has no limit named %q", ch.Name)
		}
		if ch.Cost < 0 || ch.Cost > n.Limit {
			return fault.BadInput("charges", "the charge of %q must be between 0 and its limit %d", ch.Name, n.Limit)
		}
		window := time.Duration(n.WindowSeconds) * time.Second
		c.add("named:"+ch.Name, ratelimit.Counter{Kind: ratelimit.RateKind, Key: rateKey("named:", v.APIKeyID+":"+ch.Name, n.Limit, window),
			Limit: ratelimit.Limit{Rate: n.Limit, Period: window}, Cost: int64(ch.Cost)})
	}
	if v.CreditsKey != "" {
		c.add("credits", creditsCounter(v, cost))
	}
	return nil
}

// rateKey names a rate limit's counter after its holder and its definition: a changed
// limit (a key's, an owner's, a plan's) starts a fresh window at once instead of
// carrying the old limit's debt over (3 used of 3 per hour would otherwise block a
// limit raised to 100 per hour for a whole interval).
// The holder is kind+id ("key:" and a key's id); the name is built in one allocation.
func rateKey(kind, id string, rate int, window time.Duration) string {
	var buf [96]byte
	b := append(append(append(buf[:0], kind...), id...), '@')
	b = strconv.AppendInt(b, int64(rate), 10)
	b = append(b, '/')
	return string(strconv.AppendInt(b, int64(window/time.Millisecond), 10))
}

func creditsCounter(v *viewer.Viewer, cost int64) ratelimit.Counter {
	return ratelimit.Counter{Kind: ratelimit.CreditsKind, Key: "credits:" + v.CreditsKey,
		Refill: v.CreditsRefill, Period: ratelimit.Period(v.CreditsPeriod), Cost: cost}
}

func namedLimit(named []limitspec.Named, name string) *limitspec.Named {
	for i := range named {
		if named[i].Name == name {
			return &named[i]
		}
	}
	return nil
}

// refusal is the error of a check denied by counter i.
func refusal(c *counters, i int, d ratelimit.Decision, cost int64) (*fault.Error, usage.Outcome) {
	ctr, scope := c.list[i], c.scopes[i]
	secs := ceilSeconds(d.RetryAfter)
	var e *fault.Error
	var outcome usage.Outcome
	switch ctr.Kind {
	case ratelimit.RateKind:
		if cost > int64(ctr.Limit.Rate) {
			e = fault.New(fault.BadUserInput, fmt.Sprintf("operation cost %d exceeds the %s limit of %d requests per %s: split it", cost, scope, ctr.Limit.Rate, ctr.Limit.Period)).
				With("reason", "cost_exceeds_limit").With("cost", cost).With("limit", ctr.Limit.Rate)
		} else {
			e = fault.New(fault.RateLimited, fmt.Sprintf("%s rate limit of %d requests per %s exceeded (operation cost %d)", scope, ctr.Limit.Rate, ctr.Limit.Period, cost)).
				With("retryAfterSeconds", secs).With("cost", cost)
		}
		outcome = usage.OutcomeRateLimited
	case ratelimit.QuotaKind:
		e = fault.New(fault.QuotaExceeded, fmt.Sprintf("%s quota of %d requests per %s exhausted", scope, ctr.Quota, ctr.Period)).
			With("retryAfterSeconds", secs).With("resetAt", d.Results[i].ResetAt.UTC().Format(time.RFC3339))
		outcome = usage.OutcomeQuotaExceeded
	default:
		e = fault.New(fault.QuotaExceeded, "the key's credits are spent").With("reason", "credits")
		if secs > 0 {
			e = e.With("retryAfterSeconds", secs).With("resetAt", d.Results[i].ResetAt.UTC().Format(time.RFC3339))
		}
		outcome = usage.OutcomeUsageExceeded
	}
	return e.With("limitScope", scope), outcome
}

// Seeder seeds the counters that memory or Redis no longer holds from the database:
// quotas from the stored usage (rollups), credit balances from the keys' rows.
func Seeder(client *ent.Client) ratelimit.Seeder {
	return func(ctx context.Context, group string, c ratelimit.Counter, periodStart time.Time) (int64, error) {
		name, id, _ := strings.Cut(c.Key, ":")
		switch name {
		case "quota":
			return usage.ChainUsed(ctx, client, id, periodStart)
		case "ownerq":
			return usage.OwnerUsed(ctx, client, group, id, periodStart)
		case "tenantq":
			return usage.TenantUsed(ctx, client, group, periodStart)
		case "credits":
			k, err := client.ApiKey.Query().Where(apikey.ID(id)).
				Select(apikey.FieldCreditsRemaining, apikey.FieldCreditsPeriodStart).Only(rule.SystemContext(ctx))
			switch {
			case ent.IsNotFound(err):
				return 0, ratelimit.ErrNoBalance
			case err != nil:
				return 0, err
			case k.CreditsRemaining == nil:
				return 0, ratelimit.ErrNoBalance
			}
			// A balance of an earlier refill period has been refilled since.
			if c.Period != "" && (k.CreditsPeriodStart == nil || !k.CreditsPeriodStart.Equal(periodStart)) {
				return 0, ratelimit.ErrNoBalance
			}
			return *k.CreditsRemaining, nil
		}
		return 0, errors.New("admission: no seed for counter " + c.Key)
	}
}
