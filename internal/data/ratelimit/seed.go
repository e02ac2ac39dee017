package ratelimit

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/singleflight"
)

// Redis counters that a database can rebuild.
//
// A counter script never treats a missing counter key as zero: it changes nothing and
// replies {scriptMissing, i, j, ...}, the 1-based indexes in KEYS of every missing
// counter, so that one round seeds them all. The caller (RedisChecker.Check through
// seeder.seed) then reads the counter's value from the
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

// quotaMargin is how long a Redis quota counter outlives its period, so that instances
// whose clocks are slightly behind still find it.
const quotaMargin = time.Hour
