package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// quotaMargin is how long a Redis quota counter outlives its period, so that instances
// whose clocks are slightly behind still find it.
const quotaMargin = time.Hour

// quotaScript adds ARGV[2] (cost) to the counter KEYS[1] when the sum stays within
// ARGV[1] (limit), and sets its expiry to ARGV[3] seconds (period end + margin). Returns
// {allowed (0 or 1), used}. When the counter does not exist and ARGV[4] is 1 (there is
// a loader to seed it from) it returns {scriptMissing, 1} without changing anything
// (see seed.go); otherwise a missing counter is zero. Counts are exact below 2^53.
const quotaScript = `
local v = redis.call('GET', KEYS[1])
if not v then
  if ARGV[4] == '1' then
    return {-1, 1}
  end
  v = '0'
end
local used = tonumber(v) or 0
local limit = tonumber(ARGV[1])
local cost = tonumber(ARGV[2])
if cost > limit - used then
  return {0, used}
end
if cost > 0 then
  used = redis.call('INCRBY', KEYS[1], cost)
  redis.call('EXPIRE', KEYS[1], ARGV[3])
end
return {1, used}
`

var quotaLua = redis.NewScript(quotaScript)

// RedisQuota counts quotas in Redis, shared by every server instance. Period boundaries
// come from the Go clock: the counter of a period is the Redis key
// prefix + key + ":" + <period start as Unix seconds>, and it expires an hour after the
// period ends. A counter missing from Redis (a restart without persistence, an
// eviction, a new period) is seeded from the loader before it counts, once for every
// instance (SET NX), so a lost counter does not start again from zero. It is safe for
// concurrent use.
type RedisQuota struct {
	client redis.UniversalClient
	prefix string
	now    func() time.Time
	load   Loader
	seeder seeder
}

// NewRedisQuota returns quota counters kept in client under prefix, reading the clock now
// (nil means time.Now). load, if not nil, seeds a counter missing from Redis with what
// was already used in its period (e.g. from stored usage); concurrent callers of this
// RedisQuota missing the same counter share one call. Its error is returned by
// Consume/Peek, and the seed retried next time. With a nil load a missing counter is
// zero.
func NewRedisQuota(client redis.UniversalClient, prefix string, now func() time.Time, load Loader) *RedisQuota {
	if now == nil {
		now = time.Now
	}
	return &RedisQuota{client: client, prefix: prefix, now: now, load: load}
}

func (q *RedisQuota) key(key string, start time.Time) string {
	return q.prefix + key + ":" + strconv.FormatInt(start.Unix(), 10)
}

// counter describes key's counter of the period starting at start, for seeding.
func (q *RedisQuota) counter(key string, start time.Time, ttlSeconds int64) []counterSeed {
	c := counterSeed{key: q.key(key, start), ttl: time.Duration(ttlSeconds) * time.Second}
	if q.load != nil {
		c.load = func(ctx context.Context) (int64, error) { return q.load(ctx, key, start) }
	}
	return []counterSeed{c}
}

// ttlSeconds is how long a counter read or written at now lives: until the period ends,
// plus quotaMargin.
func ttlSeconds(now, end time.Time) int64 {
	return int64(math.Ceil((end.Sub(now) + quotaMargin).Seconds()))
}

// Consume admits cost units of key's quota of limit per period p when they fit (Used+cost
// <= limit) and adds them, in one Redis round trip (EVALSHA; when the server does not know
// the script yet, a second one, EVAL). When the period's counter is missing from Redis
// it is seeded first (a database read through the loader, SET NX, and the script again).
// A denied request consumes nothing. It returns an error wrapping [ErrInvalidLimit] for
// an unknown period or a negative limit or cost (without contacting Redis), an error
// wrapping [ErrUnavailable] (and the cause) when Redis cannot be reached or fails or the
// seed cannot be loaded, or ctx's error when ctx ends while a seed is loaded.
func (q *RedisQuota) Consume(ctx context.Context, key string, limit int64, p Period, cost int64) (QuotaResult, error) {
	if err := checkQuota(limit, p, cost); err != nil {
		return QuotaResult{}, err
	}
	now := q.now()
	start, end := PeriodBounds(p, now)
	ttl := ttlSeconds(now, end)
	counters := q.counter(key, start, ttl)
	seeded := 0
	if q.load != nil {
		seeded = 1
	}
	reply, err := q.seeder.run(ctx, q.client, counters, func() ([]int64, error) {
		reply, err := quotaLua.Run(ctx, q.client, []string{counters[0].key}, limit, cost, ttl, seeded).Int64Slice()
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
		return reply, nil
	})
	if err != nil {
		return QuotaResult{}, err
	}
	if len(reply) != 2 {
		return QuotaResult{}, fmt.Errorf("%w: unexpected script reply %v", ErrUnavailable, reply)
	}
	return quotaResult(reply[0] == 1, reply[1], limit, end), nil
}

// Peek reports key's quota state without consuming (one GET; a missing counter is seeded
// as in Consume); Allowed says whether one more unit would be admitted. It returns the
// same errors as Consume.
func (q *RedisQuota) Peek(ctx context.Context, key string, limit int64, p Period) (QuotaResult, error) {
	if err := checkQuota(limit, p, 0); err != nil {
		return QuotaResult{}, err
	}
	now := q.now()
	start, end := PeriodBounds(p, now)
	counters := q.counter(key, start, ttlSeconds(now, end))
	reply, err := q.seeder.run(ctx, q.client, counters, func() ([]int64, error) {
		used, err := q.client.Get(ctx, counters[0].key).Int64()
		if errors.Is(err, redis.Nil) {
			if q.load == nil {
				return []int64{0}, nil
			}
			return []int64{scriptMissing, 1}, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
		return []int64{used}, nil
	})
	if err != nil {
		return QuotaResult{}, err
	}
	used := reply[0]
	return quotaResult(used < limit, used, limit, end), nil
}
