package ratelimit

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// gcraScript applies one GCRA check atomically.
//
// KEYS[1] holds the key's TAT as Unix time in nanoseconds (a decimal string). ARGV: the
// emission interval T (ns), the burst, the cost, the tolerance Burst*T (ns). The clock is
// the Redis server's (TIME), so all instances agree. Lua numbers are doubles, exact for
// integers below 2^53: the absolute TAT (about 1.8e18 ns) is therefore split into seconds
// and nanoseconds and only its offset from now (at most the tolerance, exact up to about
// 104 days) is computed with. The key expires when its bucket is full again.
//
// Returns {allowed (0 or 1), ahead}: ahead is how far the TAT was ahead of now before the
// check (ns, >= 0); the caller derives the rest of the result from it exactly as the
// memory limiter does.
const gcraScript = `
redis.replicate_commands()
local now = redis.call('TIME')
local sec = tonumber(now[1])
local nsec = tonumber(now[2]) * 1000
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local tolerance = tonumber(ARGV[4])

local ahead = 0
local tat = redis.call('GET', KEYS[1])
if tat then
  local n = string.len(tat)
  if n > 9 then
    local s = tonumber(string.sub(tat, 1, n - 9))
    local ns = tonumber(string.sub(tat, n - 8))
    if s and ns then
      ahead = (s - sec) * 1000000000 + (ns - nsec)
      if ahead < 0 then ahead = 0 end
    end
  end
end

local step = cost * interval
if cost > burst or ahead + step > tolerance then
  return {0, ahead}
end
if step > 0 then
  local next = ahead + step
  local ns = nsec + next
  local s = sec + math.floor(ns / 1000000000)
  ns = ns % 1000000000
  redis.call('SET', KEYS[1], string.format('%d%09d', s, ns), 'PX', math.ceil(next / 1000000))
end
return {1, ahead}
`

var gcraLua = redis.NewScript(gcraScript)

// Redis is a GCRA [Limiter] whose state lives in Redis, so several server instances share
// one exact limit. It is safe for concurrent use.
type Redis struct {
	client redis.UniversalClient
	prefix string
}

// NewRedis returns a limiter storing each key's state at prefix+key in client. Each Redis
// key expires when its bucket is full again.
func NewRedis(client redis.UniversalClient, prefix string) *Redis {
	return &Redis{client: client, prefix: prefix}
}

// Allow checks and consumes cost units of key's limit in exactly one Redis round trip
// (EVALSHA; only when the server does not know the script yet, a second one, EVAL). A
// denied check consumes nothing. It returns an error wrapping [ErrInvalidLimit] for an
// invalid limit or cost (without contacting Redis), and an error wrapping
// [ErrUnavailable] (and the client's error) when Redis cannot be reached or fails.
func (r *Redis) Allow(ctx context.Context, key string, limit Limit, cost int) (Result, error) {
	g, err := limit.params(cost)
	if err != nil {
		return Result{}, err
	}
	reply, err := gcraLua.Run(ctx, r.client, []string{r.prefix + key}, g.interval, g.burst, cost, g.tolerance).Int64Slice()
	if err != nil {
		return Result{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	if len(reply) != 2 {
		return Result{}, fmt.Errorf("%w: unexpected script reply %v", ErrUnavailable, reply)
	}
	return g.result(max(reply[1], 0), cost, reply[0] == 1), nil
}
