package ratelimit

import (
	"context"
	"hash/maphash"
	"strings"
	"sync"
	"time"
)

// memShards is the number of independently locked parts of a Memory (a power of two).
const memShards = 64

// Memory is an in-memory GCRA [Limiter] for a single server instance. It is safe for
// concurrent use. Each key costs one map entry (the key and an int64), kept until
// [Memory.Sweep] finds its bucket full again.
type Memory struct {
	now    func() time.Time // nil: the monotonic clock
	base   time.Time        // TATs are nanoseconds since base
	seed   maphash.Seed
	shards [memShards]memShard
}

type memShard struct {
	mu   sync.Mutex
	tat  map[string]int64 // key -> TAT in ns since Memory.base
	peak int              // largest len(tat) since the map was last rebuilt
	_    [40]byte         // keep shards on separate cache lines
}

// NewMemory returns an empty in-memory limiter reading the clock now (nil means
// time.Now; with time.Now the limiter uses the monotonic clock, so wall-clock jumps do not
// affect it).
func NewMemory(now func() time.Time) *Memory {
	m := &Memory{now: now, seed: maphash.MakeSeed()}
	if now == nil {
		m.base = time.Now()
	} else {
		m.base = now()
	}
	for i := range m.shards {
		m.shards[i].tat = make(map[string]int64)
	}
	return m
}

// clock returns the current time in ns since base.
func (m *Memory) clock() int64 {
	if m.now == nil {
		return int64(time.Since(m.base)) // monotonic only: cheaper than time.Now
	}
	return int64(m.now().Sub(m.base))
}

func (m *Memory) shard(key string) *memShard {
	return &m.shards[maphash.String(m.seed, key)&(memShards-1)]
}

// Allow checks and consumes cost units of key's limit. A denied check consumes nothing.
// It never fails for an outage; it returns an error wrapping [ErrInvalidLimit] when limit
// or cost is invalid. ctx is not used. A check that finds the key (the usual case) does
// not allocate.
func (m *Memory) Allow(_ context.Context, key string, limit Limit, cost int) (Result, error) {
	g, err := limit.params(cost)
	if err != nil {
		return Result{}, err
	}
	now := m.clock()
	sh := m.shard(key)
	sh.mu.Lock()
	tat, found := sh.tat[key]
	ahead := max(tat-now, 0)
	if !found {
		ahead = 0
	}
	allowed := g.admit(ahead, cost)
	if allowed && cost > 0 {
		next := now + ahead + int64(cost)*g.interval
		if found {
			sh.tat[key] = next
		} else {
			// Clone: the caller's string may point into a larger buffer (a request) that
			// the map would otherwise keep alive.
			sh.tat[strings.Clone(key)] = next
			sh.peak = max(sh.peak, len(sh.tat))
		}
	}
	sh.mu.Unlock()
	return g.result(ahead, cost, allowed), nil
}

// Sweep drops the entries of keys whose bucket is full again (idle keys): forgetting them
// changes no result. It takes O(n) for n keys, one shard lock at a time; call it
// periodically (for example every minute). Maps that shrank a lot are rebuilt so their
// memory is returned. It cannot fail.
func (m *Memory) Sweep() {
	for i := range m.shards {
		sh := &m.shards[i]
		sh.mu.Lock()
		now := m.clock()
		for k, tat := range sh.tat {
			if tat <= now {
				delete(sh.tat, k)
			}
		}
		if n := len(sh.tat); sh.peak > 64 && n < sh.peak/4 {
			fresh := make(map[string]int64, n)
			for k, v := range sh.tat {
				fresh[k] = v
			}
			sh.tat, sh.peak = fresh, n
		}
		sh.mu.Unlock()
	}
}

// Len returns the number of keys held (including idle ones not yet swept).
func (m *Memory) Len() int {
	n := 0
	for i := range m.shards {
		sh := &m.shards[i]
		sh.mu.Lock()
		n += len(sh.tat)
		sh.mu.Unlock()
	}
	return n
}
