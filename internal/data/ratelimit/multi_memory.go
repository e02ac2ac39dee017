package ratelimit

import (
	"context"
	"fmt"
	"hash/maphash"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// checkShards is the number of independently locked parts of a MemoryChecker (a power
// of two). A group's counters all sit in the shard of the group.
const checkShards = 64

// maxInline is how many counters a check handles without allocating its scratch space.
const maxInline = 8

// creditIdle is how long a balance that never refills stays in memory or Redis
// unchanged before it is dropped, when a Seeder can rebuild it from the database (the
// database then long holds its last value).
const creditIdle = 24 * time.Hour

// MemoryChecker is an in-memory [Checker] for a single server instance. It is safe for
// concurrent use. A check locks the shard of its group once, finds the group's counters
// with one lookup, and evaluates and charges all its counters under that lock; with at
// most 8 counters and every counter present it does not allocate (pass a reused dst).
// Each counter costs one map entry, kept until [MemoryChecker.Sweep] finds it idle.
type MemoryChecker struct {
	now     func() time.Time // nil: time.Now (rate limits on the monotonic clock)
	base    time.Time        // TATs are ns since base
	wallOff atomic.Int64     // with now nil: wall clock (Unix ns) minus ns since base
	wallAt  atomic.Int64     // with now nil: ns since base when wallOff is read again
	seed    Seeder
	hseed   maphash.Seed
	periods periodCache
	shards  [checkShards]checkShard
}

type checkShard struct {
	mu     sync.Mutex
	groups map[string]*groupCounters
	peak   int      // largest len(groups) since the map was last rebuilt
	_      [40]byte // keep shards on separate cache lines
}

// groupCounters holds the counters of one group.
type groupCounters struct {
	m    map[counterID]*checkEntry
	peak int // largest len(m) since m was last rebuilt
}

// counterID names a counter within its group.
type counterID struct {
	key   string
	class uint8 // kind and period: see counterClass
}

// counterClass packs a counter's kind and period into the byte that tells apart the
// counters of one key.
func counterClass(k CounterKind, p Period) uint8 {
	c := uint8(k) << 2
	switch p {
	case PeriodDay:
		c |= 1
	case PeriodMonth:
		c |= 2
	}
	return c
}

// classKind and classPeriod unpack a counterClass.
func classKind(c uint8) CounterKind { return CounterKind(c >> 2) }

func classPeriod(c uint8) Period {
	switch c & 3 {
	case 1:
		return PeriodDay
	case 2:
		return PeriodMonth
	}
	return ""
}

type checkEntry struct {
	v       int64         // rate: TAT in ns since base; quota: units used; credits: balance
	start   int64         // quota, credits: Unix ns of the start of the period counted (0: never)
	touched int64         // credits: ns since base of the last seed or change
	ready   bool          // quota, credits: v holds the state of the period at start
	loading chan struct{} // non-nil while a Seeder runs for it; closed when it returns
}

// NewMemoryChecker returns an empty in-memory checker reading the clock now (nil means
// time.Now; rate limits then use the monotonic clock and calendar periods the wall
// clock). seed, if not nil, gives the state of a quota or credits counter on its first
// use in a period (e.g. after a restart); concurrent first uses wait for one call.
// Without it a quota starts from 0 and a balance from its Refill.
func NewMemoryChecker(now func() time.Time, seed Seeder) *MemoryChecker {
	m := &MemoryChecker{now: now, seed: seed, hseed: maphash.MakeSeed()}
	if now == nil {
		m.base = time.Now()
	} else {
		m.base = now()
	}
	for i := range m.shards {
		m.shards[i].groups = make(map[string]*groupCounters)
	}
	return m
}

// instant is one reading of the clock: ns since base (rate limits) and, when a calendar
// period needs it, Unix ns.
type instant struct {
	ns, unix int64
}

// clock reads the clock; the wall clock only when wall is set.
//
// Reading the wall clock costs as much again as the monotonic one, so the wall clock is
// derived from the monotonic one and read again once a second: a step of the system
// clock moves the calendar periods at most a second late.
func (m *MemoryChecker) clock(wall bool) instant {
	if m.now != nil {
		t := m.now()
		return instant{int64(t.Sub(m.base)), t.UnixNano()}
	}
	ns := int64(time.Since(m.base))
	if !wall {
		return instant{ns: ns}
	}
	if ns < m.wallAt.Load() {
		return instant{ns, ns + m.wallOff.Load()}
	}
	t := time.Now()
	ns = int64(t.Sub(m.base))
	m.wallOff.Store(t.UnixNano() - ns)
	m.wallAt.Store(ns + int64(time.Second))
	return instant{ns, t.UnixNano()}
}

func (m *MemoryChecker) shard(group string) *checkShard {
	return &m.shards[maphash.String(m.hseed, group)&(checkShards-1)]
}

// group returns the counters of group, created if need be, with sh locked. The group
// string is cloned: the caller's may point into a larger buffer (a request) that the
// map would otherwise keep alive.
func (sh *checkShard) group(group string) *groupCounters {
	g := sh.groups[group]
	if g == nil {
		g = &groupCounters{m: make(map[counterID]*checkEntry)}
		sh.groups[strings.Clone(group)] = g
		sh.peak = max(sh.peak, len(sh.groups))
	}
	return g
}

// scratch is a check's working space: on the stack for up to maxInline counters. It is
// passed by value (the slices share their arrays), which keeps the arrays on the stack.
type scratch struct {
	plans   []plan
	entries []*checkEntry
	state   []int64
	ends    []int64
}

// id is the counterID of counter i.
func (s scratch) id(counters []Counter, i int) counterID {
	p := &s.plans[i]
	return counterID{key: counters[i].Key, class: counterClass(p.kind, p.period)}
}

// Check evaluates counters of group under one lock and charges them all only when every
// non-advisory one allows; see [Checker]. ctx is only used by the Seeder and while
// waiting for another caller's seed. It returns an error wrapping [ErrInvalidLimit] for
// an invalid group or counter, one wrapping [ErrUnavailable] and the Seeder's error when
// a seed fails, or ctx's error when ctx ends while it waits for another caller's seed.
func (m *MemoryChecker) Check(ctx context.Context, group string, counters []Counter, dst []CounterResult) (Decision, error) {
	var (
		pb [maxInline]plan
		eb [maxInline]*checkEntry
		sb [maxInline]int64
		nb [maxInline]int64
	)
	plans, err := planCounters(pb[:0], group, counters)
	if err != nil {
		return Decision{}, err
	}
	return m.check(ctx, group, counters, scratch{plans, eb[:0], sb[:0], nb[:0]}, dst, false)
}

// Adjust adds delta units to the credits counter c of group (a top-up; a negative delta
// takes away, down to zero at most) and returns its new state; see [Checker]. It
// returns the errors of Check.
func (m *MemoryChecker) Adjust(ctx context.Context, group string, c Counter, delta int64) (CounterResult, error) {
	p, err := adjustPlan(group, &c, delta)
	if err != nil {
		return CounterResult{}, err
	}
	var (
		eb [1]*checkEntry
		sb [1]int64
		nb [1]int64
		rb [1]CounterResult
	)
	d, err := m.check(ctx, group, []Counter{c}, scratch{[]plan{p}, eb[:0], sb[:0], nb[:0]}, rb[:0], true)
	if err != nil {
		return CounterResult{}, err
	}
	return d.Results[0], nil
}

func (m *MemoryChecker) check(ctx context.Context, group string, counters []Counter, s scratch, dst []CounterResult, adjust bool) (Decision, error) {
	n := len(s.plans)
	s.entries = slices.Grow(s.entries, n)[:n]
	s.state = slices.Grow(s.state, n)[:n]
	s.ends = slices.Grow(s.ends, n)[:n]
	wall := false
	for i := range s.plans {
		wall = wall || s.plans[i].periodic()
	}
	sh := m.shard(group)
	sh.mu.Lock()
	var (
		g   *groupCounters
		now instant
	)
	for {
		// Looked up again after a seed: Sweep may have dropped the group meanwhile.
		g = sh.group(group)
		now = m.clock(wall)
		i, start := m.lookup(g, counters, s, now)
		if i < 0 {
			break
		}
		// Unlocks sh; locks it again unless it fails.
		if err := m.seedEntry(ctx, sh, g, group, &counters[i], s.id(counters, i), &s.plans[i], start, now); err != nil {
			return Decision{}, err
		}
	}
	allowed := adjust || allFit(s.plans, s.state)
	res := slices.Grow(dst[:0], n)[:n]
	for i := range s.plans {
		p := &s.plans[i]
		v := s.state[i]
		w := v
		if allowed && p.cost != 0 {
			w = p.after(v)
			e := s.entries[i]
			if e == nil { // a rate limit's first charge
				e = g.insert(s.id(counters, i))
			}
			if p.kind == RateKind {
				e.v = now.ns + w
			} else {
				e.v, e.touched = w, now.ns
			}
		}
		fits := p.fits(v)
		if adjust {
			fits = w >= 1
		}
		p.result(&res[i], v, w, fits, now.unix, s.ends[i])
	}
	sh.mu.Unlock()
	d := Decision{Results: res}
	decide(&d, s.plans)
	return d, nil
}

// lookup finds the entries and states of the counters in g at now, with g's shard
// locked. It returns the index of a counter that must be seeded first, and the start of
// its period, or -1 when every state is known.
func (m *MemoryChecker) lookup(g *groupCounters, counters []Counter, s scratch, now instant) (int, int64) {
	for i := range s.plans {
		p := &s.plans[i]
		id := s.id(counters, i)
		e := g.m[id]
		s.entries[i], s.ends[i] = e, 0
		if p.kind == RateKind {
			s.state[i] = 0
			if e != nil {
				s.state[i] = max(e.v-now.ns, 0)
			}
			continue
		}
		var start int64
		if p.periodic() {
			start, s.ends[i] = m.periods.bounds(p.period, now.unix)
		}
		if e == nil || !e.ready || e.start != start {
			if m.seed != nil || e != nil && e.loading != nil {
				return i, start
			}
			// Nothing to seed from: a quota starts from 0, a balance from its Refill.
			if e == nil {
				e = g.insert(id)
			}
			e.start, e.ready, e.touched = start, true, now.ns
			e.v = 0
			if p.kind == CreditsKind {
				e.v = p.limit
			}
			s.entries[i] = e
		}
		s.state[i] = e.v
	}
	return -1, 0
}

// insert adds an empty entry for id. The key is cloned: the caller's may point into a
// larger buffer (a request) that the map would otherwise keep alive.
func (g *groupCounters) insert(id counterID) *checkEntry {
	e := &checkEntry{}
	g.m[counterID{strings.Clone(id.key), id.class}] = e
	g.peak = max(g.peak, len(g.m))
	return e
}

// seedEntry seeds counter c (id in g) for the period starting at start (Unix ns), or
// waits for the caller seeding it. It is called with sh locked and returns with sh
// locked, unless it returns an error.
func (m *MemoryChecker) seedEntry(ctx context.Context, sh *checkShard, g *groupCounters, group string, c *Counter, id counterID, p *plan, start int64, now instant) error {
	e := g.m[id]
	if e != nil && e.loading != nil {
		ch := e.loading
		sh.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
		sh.mu.Lock()
		return nil
	}
	if e == nil {
		e = g.insert(id)
	}
	// While loading is set, Sweep keeps e, and so its group.
	ch := make(chan struct{})
	e.loading, e.ready, e.start = ch, false, start
	sh.mu.Unlock()
	var periodStart time.Time
	if start != 0 {
		periodStart = time.Unix(0, start).UTC()
	}
	v, err := p.seedValue(m.seed(ctx, group, *c, periodStart))
	sh.mu.Lock()
	e.loading = nil
	close(ch)
	if err != nil {
		sh.mu.Unlock()
		return fmt.Errorf("%w: seed counter %q of group %q: %w", ErrUnavailable, c.Key, group, err)
	}
	// e.start cannot have changed while loading was set.
	e.v, e.ready, e.touched = v, true, now.ns
	return nil
}

// Sweep drops the entries whose loss changes no result: rate limits whose bucket is
// full again, quota and credits counters of periods that have ended, and, when a Seeder
// can rebuild them, balances that never refill left unchanged for a day; and groups
// left without counters. It takes O(n) for n entries, one shard lock at a time; call it
// periodically (for example every minute). Maps that shrank a lot are rebuilt so their
// memory is returned. It cannot fail.
func (m *MemoryChecker) Sweep() {
	for i := range m.shards {
		sh := &m.shards[i]
		sh.mu.Lock()
		now := m.clock(true)
		for name, g := range sh.groups {
			for id, e := range g.m {
				if m.idle(id, e, now) {
					delete(g.m, id)
				}
			}
			if len(g.m) == 0 {
				delete(sh.groups, name)
			} else if n := len(g.m); g.peak > 64 && n < g.peak/4 {
				g.m, g.peak = maps.Clone(g.m), n
			}
		}
		if n := len(sh.groups); sh.peak > 64 && n < sh.peak/4 {
			sh.groups, sh.peak = maps.Clone(sh.groups), n
		}
		sh.mu.Unlock()
	}
}

// idle reports whether entry e of counter id can be forgotten at now.
func (m *MemoryChecker) idle(id counterID, e *checkEntry, now instant) bool {
	switch period := classPeriod(id.class); {
	case classKind(id.class) == RateKind:
		return e.v <= now.ns
	case e.loading != nil:
		return false
	case !e.ready:
		return true // a failed seed
	case period != "":
		start, _ := m.periods.bounds(period, now.unix)
		return e.start < start
	default:
		return m.seed != nil && now.ns-e.touched >= int64(creditIdle)
	}
}

// Len returns the number of counters held (including idle ones not yet swept).
func (m *MemoryChecker) Len() int {
	n := 0
	for i := range m.shards {
		sh := &m.shards[i]
		sh.mu.Lock()
		for _, g := range sh.groups {
			n += len(g.m)
		}
		sh.mu.Unlock()
	}
	return n
}
