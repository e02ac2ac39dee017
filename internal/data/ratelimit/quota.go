package ratelimit

import (
	"context"
	"fmt"
	"hash/maphash"
	"strings"
	"sync"
	"time"
)

// Period is a UTC calendar period of a quota.
type Period string

// The quota periods.
const (
	PeriodDay   Period = "day"
	PeriodMonth Period = "month"
)

// Valid reports whether p is a known period.
func (p Period) Valid() bool {
	return p == PeriodDay || p == PeriodMonth
}

// PeriodBounds returns the UTC start and end (exclusive) of the period containing t.
// It returns no error: for an unknown period both times are zero (check [Period.Valid]).
func PeriodBounds(p Period, t time.Time) (start, end time.Time) {
	t = t.UTC()
	y, m, d := t.Date()
	switch p {
	case PeriodDay:
		return time.Date(y, m, d, 0, 0, 0, 0, time.UTC), time.Date(y, m, d+1, 0, 0, 0, 0, time.UTC)
	case PeriodMonth:
		return time.Date(y, m, 1, 0, 0, 0, 0, time.UTC), time.Date(y, m+1, 1, 0, 0, 0, 0, time.UTC)
	}
	return time.Time{}, time.Time{}
}

// QuotaResult is the state of a quota after one Consume or Peek.
type QuotaResult struct {
	Allowed   bool
	Used      int64     // units used in the current period, including this request if allowed
	Remaining int64     // limit - Used, never negative
	ResetAt   time.Time // end of the current period
}

// Quota consumes cost units of a per-period quota; a denied request consumes nothing.
// Counters start from zero at each period boundary (UTC).
//
// Implementations return an error wrapping [ErrInvalidLimit] for an unknown period or a
// negative limit or cost, and one wrapping [ErrUnavailable] when their store (or, for
// MemoryQuota, its seed loader) fails; an exhausted quota is not an error (Allowed is
// false).
type Quota interface {
	// Consume admits cost units when Used+cost <= limit and then adds them to Used.
	Consume(ctx context.Context, key string, limit int64, p Period, cost int64) (QuotaResult, error)
	// Peek reports the state without consuming; its Allowed says whether one more unit
	// would be admitted.
	Peek(ctx context.Context, key string, limit int64, p Period) (QuotaResult, error)
}

// checkQuota validates the arguments common to every quota.
func checkQuota(limit int64, p Period, cost int64) error {
	if !p.Valid() {
		return fmt.Errorf("%w: unknown quota period %q", ErrInvalidLimit, string(p))
	}
	if limit < 0 || cost < 0 {
		return fmt.Errorf("%w: quota %d, cost %d", ErrInvalidLimit, limit, cost)
	}
	return nil
}

func quotaResult(allowed bool, used, limit int64, end time.Time) QuotaResult {
	return QuotaResult{Allowed: allowed, Used: used, Remaining: max(limit-used, 0), ResetAt: end}
}

// quotaShards is the number of independently locked parts of a MemoryQuota.
const quotaShards = 32

// MemoryQuota counts quotas in memory, for a single server instance. It is safe for
// concurrent use. It holds one entry per key and period kind, replaced at each new period.
type MemoryQuota struct {
	now    func() time.Time
	load   Loader
	seed   maphash.Seed
	shards [quotaShards]quotaShard
}

type quotaShard struct {
	mu sync.Mutex
	m  map[quotaKey]*quotaEntry
}

type quotaKey struct {
	key string
	p   Period
}

type quotaEntry struct {
	start   int64 // Unix seconds of the start of the period counted
	used    int64
	seeded  bool          // used holds the load for start
	loading chan struct{} // non-nil while load runs; closed when it returns
}

// NewMemoryQuota returns in-memory quota counters reading the clock now (nil means
// time.Now). load, if not nil, is called once per key and period on first use to seed the
// counter with what was already used (e.g. from stored usage after a restart); concurrent
// first uses wait for one call. Its error is returned by Consume/Peek, and the seed retried
// next time.
func NewMemoryQuota(now func() time.Time, load Loader) *MemoryQuota {
	if now == nil {
		now = time.Now
	}
	q := &MemoryQuota{now: now, load: load, seed: maphash.MakeSeed()}
	for i := range q.shards {
		q.shards[i].m = make(map[quotaKey]*quotaEntry)
	}
	return q
}

// Consume admits cost units of key's quota of limit per period p when they fit (Used+cost
// <= limit) and adds them; a denied request consumes nothing. It returns an error wrapping
// [ErrInvalidLimit] for an unknown period or a negative limit or cost, an error wrapping
// [ErrUnavailable] and load's error when seeding the counter failed, or ctx's error when
// ctx ends while waiting for another caller's seeding.
func (q *MemoryQuota) Consume(ctx context.Context, key string, limit int64, p Period, cost int64) (QuotaResult, error) {
	return q.apply(ctx, key, limit, p, cost, true)
}

// Peek reports key's quota state without consuming; Allowed says whether one more unit
// would be admitted. It returns the same errors as Consume.
func (q *MemoryQuota) Peek(ctx context.Context, key string, limit int64, p Period) (QuotaResult, error) {
	return q.apply(ctx, key, limit, p, 1, false)
}

func (q *MemoryQuota) apply(ctx context.Context, key string, limit int64, p Period, cost int64, consume bool) (QuotaResult, error) {
	if err := checkQuota(limit, p, cost); err != nil {
		return QuotaResult{}, err
	}
	start, end := PeriodBounds(p, q.now())
	sh := &q.shards[maphash.String(q.seed, key)&(quotaShards-1)]
	e, err := q.lock(ctx, sh, quotaKey{key, p}, start)
	if err != nil {
		return QuotaResult{}, err
	}
	allowed := cost <= limit-e.used
	if allowed && consume {
		e.used += cost
	}
	res := quotaResult(allowed, e.used, limit, end)
	sh.mu.Unlock()
	return res, nil
}

// lock returns k's entry for the period starting at start, seeded, with sh.mu held.
// On error sh.mu is not held.
func (q *MemoryQuota) lock(ctx context.Context, sh *quotaShard, k quotaKey, start time.Time) (*quotaEntry, error) {
	unix := start.Unix()
	sh.mu.Lock()
	for {
		e := sh.m[k]
		if e == nil {
			e = &quotaEntry{}
			sh.m[quotaKey{strings.Clone(k.key), k.p}] = e
			e.start, e.used, e.seeded = unix, 0, q.load == nil
		} else if e.start != unix && e.loading == nil {
			// A new period: start again from zero (and a new seed).
			e.start, e.used, e.seeded = unix, 0, q.load == nil
		}
		if e.start == unix && e.seeded {
			return e, nil
		}
		if ch := e.loading; ch != nil {
			// Another caller is seeding (this period or, at a boundary, the previous one).
			sh.mu.Unlock()
			select {
			case <-ch:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			sh.mu.Lock()
			continue
		}
		ch := make(chan struct{})
		e.loading = ch
		sh.mu.Unlock()
		n, err := q.load(ctx, k.key, start)
		sh.mu.Lock()
		e.loading = nil
		close(ch)
		if err != nil {
			sh.mu.Unlock()
			return nil, fmt.Errorf("%w: load quota usage of %q: %w", ErrUnavailable, k.key, err)
		}
		// e.start cannot change while loading is set.
		e.used, e.seeded = max(n, 0), true
		return e, nil
	}
}

// Sweep drops the counters of periods that have ended (never one being seeded). It takes
// O(n) for n counters; call it periodically. It cannot fail.
func (q *MemoryQuota) Sweep() {
	now := q.now()
	day, _ := PeriodBounds(PeriodDay, now)
	month, _ := PeriodBounds(PeriodMonth, now)
	for i := range q.shards {
		sh := &q.shards[i]
		sh.mu.Lock()
		for k, e := range sh.m {
			current := day.Unix()
			if k.p == PeriodMonth {
				current = month.Unix()
			}
			if e.loading == nil && e.start < current {
				delete(sh.m, k)
			}
		}
		sh.mu.Unlock()
	}
}

// Len returns the number of counters held (one per key and period kind in use).
func (q *MemoryQuota) Len() int {
	n := 0
	for i := range q.shards {
		sh := &q.shards[i]
		sh.mu.Lock()
		n += len(sh.m)
		sh.mu.Unlock()
	}
	return n
}
