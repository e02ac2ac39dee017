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
// {allowed (0 or 1), used}. Counts are exact below 2^53.
const quotaScript = `
local used = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
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
// period ends. It is safe for concurrent use.
type RedisQuota struct {
	client redis.UniversalClient
	prefix string
	now    func() time.Time
}

// NewRedisQuota returns quota counters kept in client under prefix, reading the clock now
// (nil means time.Now).
func NewRedisQuota(client redis.UniversalClient, prefix string, now func() time.Time) *RedisQuota {
	if now == nil {
		now = time.Now
	}
	return &RedisQuota{client: client, prefix: prefix, now: now}
}

func (q *RedisQuota) key(key string, start time.Time) string {
	return q.prefix + key + ":" + strconv.FormatInt(start.Unix(), 10)
}

// Consume admits cost units of key's quota of limit per period p when they fit (Used+cost
// <= limit) and adds them, in one Redis round trip (EVALSHA; when the server does not know
// the script yet, a second one, EVAL). A denied request consumes nothing. It returns an
// error wrapping [ErrInvalidLimit] for an unknown period or a negative limit or cost
// (without contacting Redis), and an error wrapping [ErrUnavailable] (and the client's
// error) when Redis cannot be reached or fails.
func (q *RedisQuota) Consume(ctx context.Context, key string, limit int64, p Period, cost int64) (QuotaResult, error) {
	if err := checkQuota(limit, p, cost); err != nil {
		return QuotaResult{}, err
	}
	now := q.now()
	start, end := PeriodBounds(p, now)
	ttl := int64(math.Ceil((end.Sub(now) + quotaMargin).Seconds()))
	reply, err := quotaLua.Run(ctx, q.client, []string{q.key(key, start)}, limit, cost, ttl).Int64Slice()
	if err != nil {
		return QuotaResult{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	if len(reply) != 2 {
		return QuotaResult{}, fmt.Errorf("%w: unexpected script reply %v", ErrUnavailable, reply)
	}
	return quotaResult(reply[0] == 1, reply[1], limit, end), nil
}

// Peek reports key's quota state without consuming (one GET); Allowed says whether one
// more unit would be admitted. It returns the same errors as Consume.
func (q *RedisQuota) Peek(ctx context.Context, key string, limit int64, p Period) (QuotaResult, error) {
	if err := checkQuota(limit, p, 0); err != nil {
		return QuotaResult{}, err
	}
	start, end := PeriodBounds(p, q.now())
	used, err := q.client.Get(ctx, q.key(key, start)).Int64()
	if errors.Is(err, redis.Nil) {
		used, err = 0, nil
	}
	if err != nil {
		return QuotaResult{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return quotaResult(used < limit, used, limit, end), nil
}
