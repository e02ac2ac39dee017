package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"time"
)

// One check of several limits.
//
// A Checker charges one operation against every limit it must respect (the key's rate
// limit and quota, its owner's, its tenant's, the key's named limits, its credit
// balance) atomically: when any enforced counter denies, nothing is charged; when all
// allow, all are charged. The counters of one check belong to one group (a tenant), and
// a group's counters are kept together (one lock in memory, one Redis Cluster slot), so
// that one critical section or one script sees and changes them all.

// CounterKind says how a [Counter] counts.
type CounterKind uint8

// The counter kinds.
const (
	// RateKind is a GCRA rate limit (Counter.Limit), as [Limiter].
	RateKind CounterKind = iota + 1
	// QuotaKind counts units per UTC calendar period (Counter.Quota per Counter.Period),
	// as [Quota].
	QuotaKind
	// CreditsKind is a balance that a charge spends, reset to Counter.Refill at each
	// Counter.Period boundary (never, for an empty Period), and topped up by
	// [Checker.Adjust].
	CreditsKind
)

// String names the kind ("rate", "quota", "credits").
func (k CounterKind) String() string {
	switch k {
	case RateKind:
		return "rate"
	case QuotaKind:
		return "quota"
	case CreditsKind:
		return "credits"
	}
	return fmt.Sprintf("CounterKind(%d)", uint8(k))
}

// Counter is one limit charged by a check.
//
// Key names the counter within its group ("key:key_1", "owner:cust_9", "tenant",
// "named:key_1:tokens", "credits:key_1"): one Key is one counter of one kind (and one
// period), whatever check it appears in, and it appears at most once in a check.
//
// An advisory counter is charged like the others when the check is allowed, but never
// denies it: a tenant's management calls count against its caps but are never refused
// by them. An advisory charge empties a rate bucket at most (it does not run it into
// debt: enforced checks then wait at most as long as after a full burst), spends a
// balance down to zero at most, and counts quota units in full (Used may exceed Quota).
type Counter struct {
	Kind CounterKind
	Key  string
	// Limit is a RateKind counter's limit.
	Limit Limit
	// Quota is a QuotaKind counter's units per Period (> 0).
	Quota int64
	// Period is a QuotaKind counter's calendar period (day or month) and a CreditsKind
	// counter's refill period (day, month, or "" for never).
	Period Period
	// Refill is a CreditsKind counter's balance at the start of each Period, and the
	// balance of a counter the database holds nothing for.
	Refill int64
	// Cost is the units charged. A cost of 0 charges nothing and answers whether one unit
	// would pass.
	Cost int64
	// Advisory counters count when the check is charged but never deny it.
	Advisory bool
}

// CounterResult is the state of one counter after a check (after its charge, when the
// check was allowed).
type CounterResult struct {
	// Allowed says whether the counter itself had room for the cost (for a cost of 0, for
	// one unit). An advisory counter that had no room did not deny the check.
	Allowed bool
	// Limit is the burst of a rate limit, the quota, or a balance's Refill.
	Limit int64
	// Remaining is how many units of cost 1 would still pass now: for a balance, the
	// balance (never negative).
	Remaining int64
	// Used is a quota's units counted in the period, or for a balance Refill minus the
	// balance (at least 0; top-ups are not spending). Rate limits report 0.
	Used int64
	// ResetAfter is how long until the rate bucket is full again, or until the period
	// ends (0 for a balance that never refills).
	ResetAfter time.Duration
	// RetryAfter is, when the counter had no room, how long until the cost would fit: for
	// a rate limit never earlier than the truth (at least the Limit's Period for a cost
	// above the burst); for a quota or a refilling balance the end of the period; 0 when
	// no wait helps (a balance that never refills). It is 0 when Allowed.
	RetryAfter time.Duration
	// ResetAt is the end of a quota's or refilling balance's period; zero otherwise.
	ResetAt time.Time
}

// Decision is the outcome of a check.
type Decision struct {
	// Allowed says whether every enforced (non-advisory) counter had room; only then
	// was anything charged.
	Allowed bool
	// Results holds one result per counter, in the order of the counters.
	Results []CounterResult
	// RetryAfter is, when denied, the largest RetryAfter of the denying counters: the
	// limit that resets latest. It is 0 when a denying counter never resets (a balance
	// that never refills): no wait helps.
	RetryAfter time.Duration
	// Binding is, when denied, the index of the denying counter that resets latest (the
	// first of equals; the first that never resets, if any); -1 when allowed.
	Binding int
}

// Denied reports whether counter i denied the check (had no room and is enforced).
func (d Decision) Denied(counters []Counter, i int) bool {
	return !d.Results[i].Allowed && !counters[i].Advisory
}

// Checker checks several limits of one group atomically.
type Checker interface {
	// Check evaluates counters of group (a tenant id: non-empty, no braces; at most 64
	// counters) atomically and charges them all only when every non-advisory one allows. The results are
	// appended to dst[:0] (pass a reused slice to avoid an allocation). A denial is not
	// an error. It returns an error wrapping [ErrInvalidLimit] for an invalid group or
	// counter (nothing is read or charged), one wrapping [ErrUnavailable] when the store
	// or the seeder fails (wrapping ctx's error too when ctx ended first: the caller
	// went away, not an outage), or ctx's error while it waits for another caller's
	// seed.
	Check(ctx context.Context, group string, counters []Counter, dst []CounterResult) (Decision, error)
	// Adjust adds delta units to the CreditsKind counter c (a top-up; a negative delta
	// takes away, down to zero at most) and returns its new state, whose Allowed says
	// whether one unit would pass. A missing counter is seeded first. c.Cost and
	// c.Advisory are ignored. Errors are those of Check.
	Adjust(ctx context.Context, group string, c Counter, delta int64) (CounterResult, error)
}

// Seeder returns the stored state of counter c of group for the period starting at
// periodStart (the zero time for a balance that never refills): for a QuotaKind counter
// the units already used (negative counts as 0), for a CreditsKind counter the balance,
// or a negative value or an error wrapping [ErrNoBalance] when the database holds none,
// so that the counter starts from c.Refill. It is called when memory or Redis does not
// hold a quota or credits counter (a new period, a restarted process or Redis, an
// eviction), never on the steady-state path. Any other error fails the check with
// [ErrUnavailable]; the seed is tried again on the next check.
type Seeder func(ctx context.Context, group string, c Counter, periodStart time.Time) (int64, error)

// ErrNoBalance is what a [Seeder] returns (wrapped) for a credits counter the database
// holds no balance for: the counter starts from its Refill.
var ErrNoBalance = errors.New("ratelimit: no stored balance")

// maxCounters bounds the counters of one check (a Lua script unpacks their keys).
const maxCounters = 64

// maxUnits bounds costs, quotas, balances and deltas so that every count stays exact in
// Lua (doubles are exact below 2^53) with room for sums.
const maxUnits = int64(1) << 50

// plan is one validated counter with its derived parameters.
type plan struct {
	kind     CounterKind
	g        gcra   // RateKind
	limit    int64  // QuotaKind: the quota; CreditsKind: the refill
	cost     int64  // charged when the check is allowed (Adjust: minus the delta)
	test     int64  // units that must fit: max(cost, 1)
	advisory bool   //
	period   Period // QuotaKind, CreditsKind ("" for never)
}

// periodic reports whether the counter restarts at calendar period boundaries.
func (p *plan) periodic() bool { return p.kind != RateKind && p.period != "" }

// planCounters validates group and counters and appends their plans to dst.
func planCounters(dst []plan, group string, counters []Counter) ([]plan, error) {
	if err := checkGroup(group); err != nil {
		return nil, err
	}
	if len(counters) > maxCounters {
		return nil, fmt.Errorf("%w: %d counters in one check, at most %d", ErrInvalidLimit, len(counters), maxCounters)
	}
	n := len(dst)
	dst = slices.Grow(dst, len(counters))[:n+len(counters)]
	for i := range counters {
		c := &counters[i]
		if err := planCounter(&dst[n+i], c); err != nil {
			return nil, fmt.Errorf("counter %d (%q): %w", i, c.Key, err)
		}
		for j := range i {
			if counters[j].Key == c.Key && storageClass(&counters[j]) == storageClass(c) {
				return nil, fmt.Errorf("%w: counter %q appears twice in one check", ErrInvalidLimit, c.Key)
			}
		}
	}
	return dst, nil
}

// storageClass is what, besides its Key, tells counters apart in storage: the period of
// a periodic counter.
func storageClass(c *Counter) Period {
	if c.Kind == RateKind {
		return ""
	}
	return c.Period
}

// checkGroup validates a group: it becomes a Redis Cluster hash tag, so it must not be
// empty (an empty tag hashes the whole key) nor contain a brace (it would end the tag).
func checkGroup(group string) error {
	if group == "" || strings.IndexByte(group, '{') >= 0 || strings.IndexByte(group, '}') >= 0 {
		return fmt.Errorf("%w: group %q must be non-empty and without braces", ErrInvalidLimit, group)
	}
	return nil
}

// planCounter validates counter c into p (written in place: a check plans on its stack).
func planCounter(p *plan, c *Counter) error {
	if c.Key == "" {
		return fmt.Errorf("%w: empty counter key", ErrInvalidLimit)
	}
	if c.Cost < 0 || c.Cost > maxUnits {
		return fmt.Errorf("%w: cost %d outside 0..%d", ErrInvalidLimit, c.Cost, maxUnits)
	}
	p.kind, p.cost, p.test, p.advisory = c.Kind, c.Cost, max(c.Cost, 1), c.Advisory
	switch c.Kind {
	case RateKind:
		g, err := c.Limit.params(0)
		if err != nil {
			return err
		}
		p.g, p.limit, p.period = g, 0, ""
	case QuotaKind:
		if !c.Period.Valid() {
			return fmt.Errorf("%w: unknown quota period %q", ErrInvalidLimit, string(c.Period))
		}
		if c.Quota <= 0 || c.Quota > maxUnits {
			return fmt.Errorf("%w: quota %d outside 1..%d", ErrInvalidLimit, c.Quota, maxUnits)
		}
		p.g, p.limit, p.period = gcra{}, c.Quota, c.Period
	case CreditsKind:
		if c.Period != "" && !c.Period.Valid() {
			return fmt.Errorf("%w: unknown refill period %q", ErrInvalidLimit, string(c.Period))
		}
		if c.Refill < 0 || c.Refill > maxUnits {
			return fmt.Errorf("%w: refill %d outside 0..%d", ErrInvalidLimit, c.Refill, maxUnits)
		}
		p.g, p.limit, p.period = gcra{}, c.Refill, c.Period
	default:
		return fmt.Errorf("%w: unknown counter kind %d", ErrInvalidLimit, c.Kind)
	}
	return nil
}

// adjustPlan validates an Adjust and returns it as the plan of an advisory charge of
// -delta.
func adjustPlan(group string, c *Counter, delta int64) (plan, error) {
	if err := checkGroup(group); err != nil {
		return plan{}, err
	}
	if c.Kind != CreditsKind {
		return plan{}, fmt.Errorf("%w: Adjust needs a credits counter, not %s", ErrInvalidLimit, c.Kind)
	}
	if delta < -maxUnits || delta > maxUnits {
		return plan{}, fmt.Errorf("%w: delta %d outside ±%d", ErrInvalidLimit, delta, maxUnits)
	}
	cc := *c
	cc.Cost, cc.Advisory = 0, true
	var p plan
	if err := planCounter(&p, &cc); err != nil {
		return plan{}, err
	}
	p.cost = -delta
	return p, nil
}

// The state of a counter is one int64 v: for a rate limit how far its TAT is ahead of now
// (ns, >= 0), for a quota the units used in the period, for a balance the balance. The
// functions below are the whole semantics; the Lua script in multi_redis.go mirrors
// them operation for operation.

// fits reports whether p's units fit a counter in state v.
func (p *plan) fits(v int64) bool {
	switch p.kind {
	case RateKind:
		return p.test <= int64(p.g.burst) && v+p.test*p.g.interval <= p.g.tolerance
	case QuotaKind:
		return p.test <= p.limit-v
	default:
		return p.test <= v
	}
}

// after returns the state that charging p's cost leaves a counter in state v in.
func (p *plan) after(v int64) int64 {
	if p.cost == 0 {
		return v
	}
	switch p.kind {
	case RateKind:
		// cost*T <= room, without overflow; past it only an advisory charge comes here.
		if room := p.g.tolerance - v; room > 0 && p.cost <= room/p.g.interval {
			return v + p.cost*p.g.interval
		}
		return max(v, p.g.tolerance)
	case QuotaKind:
		return v + p.cost
	default:
		n := v - p.cost
		if p.cost > 0 && n < 0 {
			n = 0
		}
		return n
	}
}

// seedValue turns what a Seeder answered into the initial state of p's counter.
func (p *plan) seedValue(n int64, err error) (int64, error) {
	if p.kind == CreditsKind && (errors.Is(err, ErrNoBalance) || err == nil && n < 0) {
		return p.limit, nil
	}
	if err != nil {
		return 0, err
	}
	return max(n, 0), nil
}

// result writes p's CounterResult to r: v and w are its state before and after the
// check, fits its own verdict, now the time of the check and end its period's end (Unix
// ns both; end is 0 without a period).
func (p *plan) result(r *CounterResult, v, w int64, fits bool, now, end int64) {
	*r = CounterResult{Allowed: fits}
	switch p.kind {
	case RateKind:
		g := &p.g
		r.Limit = int64(g.burst)
		r.Remaining = max((g.tolerance-w)/g.interval, 0)
		r.ResetAfter = time.Duration(w)
		if !fits {
			if p.test > int64(g.burst) {
				r.RetryAfter = max(g.period, r.ResetAfter)
			} else {
				r.RetryAfter = time.Duration(max(w+p.test*g.interval-g.tolerance, 0))
			}
		}
		return
	case QuotaKind:
		r.Limit, r.Used, r.Remaining = p.limit, w, max(p.limit-w, 0)
	default:
		r.Limit, r.Remaining, r.Used = p.limit, max(w, 0), max(p.limit-w, 0)
	}
	if end != 0 {
		r.ResetAt = time.Unix(0, end).UTC()
		r.ResetAfter = time.Duration(end - now)
		if !fits {
			r.RetryAfter = r.ResetAfter
		}
	}
}

// decide fills d from the counters' results.
func decide(d *Decision, plans []plan) {
	d.Allowed, d.Binding, d.RetryAfter = true, -1, 0
	forever := false // a denying counter that no wait helps binds
	for i := range plans {
		p := &plans[i]
		r := &d.Results[i]
		if r.Allowed || p.advisory {
			continue
		}
		switch {
		case forever:
		case p.kind == CreditsKind && !p.periodic():
			forever, d.Binding, d.RetryAfter = true, i, 0
		case d.Allowed || r.RetryAfter > d.RetryAfter:
			d.Binding, d.RetryAfter = i, r.RetryAfter
		}
		d.Allowed = false
	}
}

// allFit reports whether every enforced counter fits, given their states.
func allFit(plans []plan, state []int64) bool {
	for i := range plans {
		if !plans[i].advisory && !plans[i].fits(state[i]) {
			return false
		}
	}
	return true
}

// periodCache remembers the bounds of the current day and month, so that a check does
// not compute calendar dates. The zero value is ready to use.
type periodCache struct {
	day, month atomic.Pointer[[2]int64]
}

// bounds returns the start and end (Unix ns) of the period p containing unix (Unix ns).
func (c *periodCache) bounds(p Period, unix int64) (start, end int64) {
	slot := &c.day
	if p == PeriodMonth {
		slot = &c.month
	}
	if b := slot.Load(); b != nil && b[0] <= unix && unix < b[1] {
		return b[0], b[1]
	}
	s, e := PeriodBounds(p, time.Unix(0, unix))
	b := [2]int64{s.UnixNano(), e.UnixNano()}
	slot.Store(&b)
	return b[0], b[1]
}
