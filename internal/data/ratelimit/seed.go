package ratelimit

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/singleflight"
)

// Loader returns what key used since periodStart according to the stored usage: the
// seed of a counter that memory or Redis no longer holds (after a restart of the
// process, or of a Redis without persistence, or an eviction). Its error is returned,
// wrapped in [ErrUnavailable], by the check that needed the seed.
type Loader func(ctx context.Context, key string, periodStart time.Time) (int64, error)

// Redis counters that a database can rebuild.
//
// A counter script never treats a missing counter key as zero: it changes nothing and
// replies {scriptMissing, i}, i being the 1-based index in KEYS of the first missing
// counter (the check script of multi_redis.go lists every missing one: {scriptMissing,
// i, j, ...}, so that one round seeds them all). The caller (seeder.run, or
// RedisChecker.Check through seeder.seed) then reads the counter's value from the
// database and writes it with SET NX and the counter's expiry, so that when several
// callers or instances seed at once the first write wins and every one of them goes on
// counting on that same key; then it runs the script again. The steady state (counter present)
// costs the script's round trip and nothing else. What the database does not hold yet
// (usage recorded but not written, at most one flush interval of it) is lost once,
// when the counter is rebuilt.

// scriptMissing is the first element of a counter script's reply when a counter is
// missing.
const scriptMissing = -1

// maxSeedRounds bounds how often one call seeds before giving up (a counter that
// vanishes again right after being seeded: an evicting Redis under memory pressure).
const maxSeedRounds = 3

// seedTimeout bounds one seed: the database read and the SET NX.
const seedTimeout = 5 * time.Second

// counterSeed is one counter a script uses: its Redis key, the expiry a seeded key
// gets, and how to read its value from the database (nil: it starts from zero).
type counterSeed struct {
	key  string
	ttl  time.Duration
	load func(ctx context.Context) (int64, error)
}

// seeder rebuilds missing counters. In one process, concurrent callers that miss the
// same counter share one database read, and a caller that comes after the counter was
// seeded reads nothing. The zero value is ready to use.
type seeder struct {
	flight singleflight.Group
}

// run calls eval until its reply does not report a missing counter, seeding the
// missing one of counters in between. It returns eval's reply, eval's error, or an
// error wrapping [ErrUnavailable] when seeding failed (the database or Redis) or the
// counter was still missing after maxSeedRounds seeds, or ctx's error.
func (s *seeder) run(ctx context.Context, client redis.UniversalClient, counters []counterSeed, eval func() ([]int64, error)) ([]int64, error) {
	for round := 0; ; round++ {
		reply, err := eval()
		if err != nil {
			return nil, err
		}
		if len(reply) == 0 || reply[0] != scriptMissing {
			return reply, nil
		}
		if len(reply) != 2 || reply[1] < 1 || int(reply[1]) > len(counters) {
			return nil, fmt.Errorf("%w: unexpected script reply %v", ErrUnavailable, reply)
		}
		c := counters[reply[1]-1]
		if round == maxSeedRounds {
			return nil, fmt.Errorf("%w: counter %s still missing after %d seeds", ErrUnavailable, c.key, round)
		}
		if err := s.seed(ctx, client, c); err != nil {
			return nil, err
		}
	}
}

// seed writes c's value from the database with SET NX, sharing the work with the
// concurrent callers seeding the same key. The work goes on when ctx ends (the others
// may still wait for it); the caller then returns ctx's error.
func (s *seeder) seed(ctx context.Context, client redis.UniversalClient, c counterSeed) error {
	done := s.flight.DoChan(c.key, func() (any, error) {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), seedTimeout)
		defer cancel()
		// Callers that found the counter missing just before the previous seed of this
		// process wrote it come here after it: no database read for them.
		if exists, err := client.Exists(sctx, c.key).Result(); err != nil {
			return nil, fmt.Errorf("%w: seed counter %s: %w", ErrUnavailable, c.key, err)
		} else if exists == 1 {
			return nil, nil
		}
		var n int64
		if c.load != nil {
			var err error
			if n, err = c.load(sctx); err != nil {
				return nil, fmt.Errorf("%w: load the usage of counter %s: %w", ErrUnavailable, c.key, err)
			}
		}
		if err := client.SetNX(sctx, c.key, max(n, 0), c.ttl).Err(); err != nil {
			return nil, fmt.Errorf("%w: seed counter %s: %w", ErrUnavailable, c.key, err)
		}
		return nil, nil
	})
	select {
	case r := <-done:
		return r.Err
	case <-ctx.Done():
		return ctx.Err()
	}
}
