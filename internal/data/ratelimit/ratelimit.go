// Package ratelimit limits request rates with GCRA (the generic cell rate algorithm),
// counts calendar quotas (requests per UTC day or month) and keeps credit balances.
//
// A [Limiter] checks one rate limit, in memory (one server instance: [NewMemory]) or in
// Redis (several instances share one exact limit: [NewRedis]). The memory and
// Redis limiters compute the same results for the same sequence of requests: both keep a
// theoretical arrival time (TAT) per key in integer nanoseconds and apply the same integer
// arithmetic, the Redis one inside a Lua script that reads the Redis server clock so that
// every instance agrees on the time.
//
// Quota and credit counters are durable through the database: a counter that memory or
// Redis does not hold (after a restart, or a restart of a Redis without persistence) is
// seeded by a [Seeder] from the stored usage before it counts, so it loses at most the usage not
// yet written (one flush interval of the usage recorder), never the whole period. The
// Redis mechanism (seed.go) serves any counter a database can rebuild.
//
// A [Checker] ([NewMemoryChecker], [NewRedisChecker]) checks several limits of one group
// (a tenant) at once: rate limits, quotas and credit balances, charged all together or
// not at all, in one critical section in memory or one Lua script in Redis (multi.go).
//
// GCRA in short: a key limited to Rate per Period has an emission interval
// T = Period/Rate (truncated to a whole nanosecond) and a tolerance of Burst*T. A request
// of cost c at time now is admitted when max(TAT, now) + c*T - now <= Burst*T, and then
// moves TAT to max(TAT, now) + c*T. Memory per key is one int64.
package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Limit is "Rate requests per Period", admitting up to Burst at once (Burst 0 means Rate).
// A key limited to N per window admits exactly N in a burst, then refills smoothly at one
// request every Period/N.
//
// Rate and Period must be positive, Period/Rate at least one nanosecond, and Burst not
// negative; otherwise checks fail with an error wrapping [ErrInvalidLimit].
type Limit struct {
	Rate   int
	Period time.Duration
	Burst  int
}

// Result of one check.
type Result struct {
	Allowed bool
	// Limit is the burst size (the most that can be admitted at once).
	Limit int
	// Remaining is how many requests of cost 1 would still be admitted right now (after
	// this one, if allowed). A FailSafe that admitted without asking the store sets it to -1
	// (unknown).
	Remaining int
	// RetryAfter is, when denied, how long until `cost` would be admitted; it is never
	// earlier than the truth, and 0 when allowed. A cost above the burst can never be
	// admitted: RetryAfter is then at least the limit's Period (compare cost with Limit to
	// tell this case apart).
	RetryAfter time.Duration
	// ResetAfter is how long until the bucket is full again (Remaining == Limit).
	ResetAfter time.Duration
}

// Limiter checks and consumes `cost` units for key. A denied check consumes nothing.
// A cost of 0 consumes nothing and reports the state.
//
// Implementations return an error wrapping [ErrInvalidLimit] for an invalid limit or a
// negative cost, and one wrapping [ErrUnavailable] when their store cannot be reached; a
// denial is not an error (Result.Allowed is false).
type Limiter interface {
	Allow(ctx context.Context, key string, limit Limit, cost int) (Result, error)
}

// ErrUnavailable is returned (wrapped) when the backing store cannot be reached and the
// limiter fails closed. A call whose context ended before the store answered returns it
// too, wrapping ctx's error as well: that says nothing about the store (the caller went
// away), so [FailSafe] passes it through uncounted, and callers tell it by ctx.Err().
var ErrUnavailable = errors.New("ratelimit: store unavailable")

// ErrInvalidLimit is returned (wrapped) for a limit, quota, period or cost that cannot be
// applied: a non-positive Rate or Period, a negative Burst, limit or cost, an unknown
// Period. It is a caller's bug, not an outage: [FailSafe] passes it through unchanged.
var ErrInvalidLimit = errors.New("ratelimit: invalid limit")

// maxTolerance bounds Burst*T so that TAT arithmetic cannot overflow int64.
const maxTolerance = int64(1) << 61

// gcra holds the integer parameters of one limit.
type gcra struct {
	interval  int64 // emission interval T in ns: the time one unit of cost occupies
	tolerance int64 // Burst*T in ns: how far TAT may run ahead of now
	burst     int
	period    time.Duration
}

// params validates l and cost and derives the GCRA parameters.
func (l Limit) params(cost int) (gcra, error) {
	if l.Rate <= 0 || l.Period <= 0 || l.Burst < 0 {
		return gcra{}, fmt.Errorf("%w: rate %d per %s, burst %d", ErrInvalidLimit, l.Rate, l.Period, l.Burst)
	}
	if cost < 0 {
		return gcra{}, fmt.Errorf("%w: negative cost %d", ErrInvalidLimit, cost)
	}
	interval := int64(l.Period) / int64(l.Rate)
	if interval == 0 {
		return gcra{}, fmt.Errorf("%w: rate %d per %s is more than one per nanosecond", ErrInvalidLimit, l.Rate, l.Period)
	}
	burst := l.burst()
	if int64(burst) > maxTolerance/interval {
		return gcra{}, fmt.Errorf("%w: burst %d of %s each is too long", ErrInvalidLimit, burst, time.Duration(interval))
	}
	return gcra{interval: interval, tolerance: int64(burst) * interval, burst: burst, period: l.Period}, nil
}

// burst is Burst, or Rate when Burst is 0.
func (l Limit) burst() int {
	if l.Burst > 0 {
		return l.Burst
	}
	return l.Rate
}

// admit reports whether cost is admitted when TAT is ahead of now by ahead (>= 0) ns.
func (g gcra) admit(ahead int64, cost int) bool {
	return cost <= g.burst && ahead+int64(cost)*g.interval <= g.tolerance
}

// result builds the Result of a check decided as allowed, where ahead (>= 0) is how far
// TAT was ahead of now before the check.
func (g gcra) result(ahead int64, cost int, allowed bool) Result {
	r := Result{Allowed: allowed, Limit: g.burst}
	if allowed {
		ahead += int64(cost) * g.interval
	}
	r.ResetAfter = time.Duration(ahead)
	// Remaining k is the largest k with ahead + k*T <= Burst*T. Clamped at 0: ahead can
	// exceed the tolerance when a key's limit was lowered.
	r.Remaining = int(max((g.tolerance-ahead)/g.interval, 0))
	if !allowed {
		if cost > g.burst {
			r.RetryAfter = max(g.period, r.ResetAfter)
		} else {
			r.RetryAfter = time.Duration(ahead + int64(cost)*g.interval - g.tolerance)
		}
	}
	return r
}
