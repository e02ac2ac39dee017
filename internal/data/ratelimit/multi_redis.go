package ratelimit

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// checkScript evaluates and charges the counters of one check atomically, on the Redis
// server's clock; or of several checks of the same counters one after the other (see
// below), as if each were its own call at the same instant.
//
// KEYS[i] is counter i. ARGV[1..5]: a shift of the clock in seconds and nanoseconds (0
// but in tests), the margin in seconds a period's counter outlives the period, 1 when a
// missing quota or credits counter must be seeded by the caller (0: it starts from 0 or
// from its refill), and the idle expiry in seconds of a balance that never refills (0:
// none). Then 5 arguments per counter (counter i's at 5i+1..5i+5): flags (2 × kind, 0
// rate, 1 quota, 2 credits, + 1 if advisory), cost, and
//
//	rate:    interval T (ns), burst, tolerance (ns)
//	quota:   quota, period start, period end (Unix s)
//	credits: refill, period start, period end (Unix s; 0, 0 for never)
//
// The units that must fit are max(cost, 1). Further checks of the same counters may
// follow, n costs each (check c's cost of counter i at 5n+5+(c-2)n+i): the script
// evaluates the checks in order, each on the state the previous ones left, and writes
// each changed counter once at the end. Replies (a decision per check, concatenated):
//
//	{-2, sec, nsec}   the Redis clock is outside a counter's period: the caller chose
//	                  the period with its own clock, and must choose again with this one
//	{-1, i, ...}      counters i are missing and must be seeded (nothing was changed)
//	{ok, sec, nsec, v1, ..., vn}
//	                  ok is 1 when every enforced counter fitted (and all were charged),
//	                  0 otherwise (nothing was charged); vi is counter i's state before
//	                  the check: how far the TAT was ahead of now (ns), units used, or
//	                  the balance.
//
// A -2 or -1 reply answers every check of the call: nothing was changed. A decision
// is 3+n numbers, so the reply of m checks is m(3+n) long.
//
// The evaluation mirrors plan.fits and plan.after in multi.go. Counts are exact below
// 2^53; TATs are stored as in gcraScript (Unix ns as a decimal string, offsets from now
// only are computed with), and numbers are written with string.format('%d') so that
// large ones are not written in exponent form. The script converts ARGV in place and
// reads all keys with one MGET. The Redis CPU a check costs is mostly the script call
// itself: about 6.6 µs for one rate counter on the reference machine, of which the
// call is 1.1, TIME 0.5, the MGET and SET 1.9, the Lua the rest. Checks of one hot key
// merged into one call share the call, TIME and the commands, and add 0.5–1.5 µs each.
const checkScript = `
redis.replicate_commands()
local t = redis.call('TIME')
local A = ARGV
local sec = tonumber(t[1]) + tonumber(A[1])
local nsec = tonumber(t[2]) * 1000 + tonumber(A[2])
if nsec >= 1000000000 then
  sec = sec + 1
  nsec = nsec - 1000000000
end
local n = #KEYS
local m = 1 + (#A - 5 - 5 * n) / n
for j = 3, #A do
  A[j] = tonumber(A[j])
end
for o = 5, 5 * n, 5 do
  local e = A[o + 5]
  if A[o + 1] >= 2 and e > 0 and (sec < A[o + 4] or sec >= e) then
    return {-2, sec, nsec}
  end
end

local v = redis.call('MGET', unpack(KEYS))
local missing
for i = 1, n do
  local o = 5 * i
  local s = v[i]
  if A[o + 1] < 2 then
    local ahead = 0
    if s then
      local l = string.len(s)
      if l > 9 then
        local ts = tonumber(string.sub(s, 1, l - 9))
        local tns = tonumber(string.sub(s, l - 8))
        if ts and tns then
          ahead = (ts - sec) * 1000000000 + (tns - nsec)
          if ahead < 0 then ahead = 0 end
        end
      end
    end
    v[i] = ahead
  elseif s then
    v[i] = tonumber(s) or 0
  elseif A[4] == 1 then
    missing = missing or {-1}
    missing[#missing + 1] = i
  elseif A[o + 1] < 4 then
    v[i] = 0
  else
    v[i] = A[o + 3]
  end
end
if missing then
  return missing
end

-- cost is check c's cost of counter i: the first check's among its counter's
-- arguments, the others' after all of them.
local function cost(c, i)
  if c == 1 then return A[5 * i + 2] end
  return A[5 + 5 * n + (c - 2) * n + i]
end

local out = {}
local w = {}
for c = 1, m do
  local ok = 1
  for i = 1, n do
    local o = 5 * i
    local f = A[o + 1]
    if f % 2 == 0 then
      local x = v[i]
      local test = cost(c, i)
      if test < 1 then test = 1 end
      local fits
      if f < 2 then
        fits = test <= A[o + 4] and x + test * A[o + 3] <= A[o + 5]
      elseif f < 4 then
        fits = test <= A[o + 3] - x
      else
        fits = test <= x
      end
      if not fits then
        ok = 0
        break
      end
    end
  end
  local r = #out
  out[r + 1] = ok
  out[r + 2] = sec
  out[r + 3] = nsec
  for i = 1, n do
    out[r + 3 + i] = v[i]
  end
  if ok == 1 then
    for i = 1, n do
      local o = 5 * i
      local k = cost(c, i)
      if k ~= 0 then
        local f = A[o + 1]
        local x = v[i]
        local y
        if f < 2 then
          local step = k * A[o + 3]
          if step <= A[o + 5] - x then
            y = x + step
          else
            y = math.max(x, A[o + 5])
          end
        elseif f < 4 then
          y = x + k
        else
          y = x - k
          if k > 0 and y < 0 then y = 0 end
        end
        v[i] = y
        w[i] = true
      end
    end
  end
end

local margin = A[3]
local idle = A[5]
for i = 1, n do
  if w[i] then
    local o = 5 * i
    local f = A[o + 1]
    local y = v[i]
    if f < 2 then
      local ns = nsec + y
      local s = sec + math.floor(ns / 1000000000)
      ns = ns % 1000000000
      redis.call('SET', KEYS[i], string.format('%d%09d', s, ns), 'PX', math.ceil(y / 1000000))
    else
      local e = A[o + 5]
      if e > 0 then
        redis.call('SET', KEYS[i], string.format('%d', y), 'EX', e - sec + margin)
      elseif idle > 0 then
        redis.call('SET', KEYS[i], string.format('%d', y), 'EX', idle)
      else
        redis.call('SET', KEYS[i], string.format('%d', y))
      end
    end
  end
end
return out
`

var checkLua = redis.NewScript(checkScript)

// The layout of checkScript's arguments: a header, then a fixed number per counter, of
// which one is the cost.
const (
	scriptHeaderArgs  = 5
	scriptCounterArgs = 5
	scriptCostArg     = 1 // within a counter's arguments
)

// Replies of checkScript that are not a decision.
const (
	scriptWrongPeriod = -2
	// scriptHeaderReply is the length of a decision's head (ok, sec, nsec); the
	// counters' states follow it.
	scriptHeaderReply = 3
	// scriptMissing (seed.go) is -1.
)

// maxPeriodRounds bounds how often one check chooses its periods again (the clock of
// this instance and Redis's disagreeing about the period, at a boundary).
const maxPeriodRounds = 3

// RedisChecker is a [Checker] whose counters live in Redis, shared by every server
// instance; it is safe for concurrent use. A check is one Lua script (EVALSHA; EVAL only
// when the server does not know it yet) that reads the Redis server's clock and
// evaluates and charges every counter in one round trip. Checks that arrive while a
// round trip is in flight go together in the next one, as a pipeline (see coalescer).
//
// Counter c of group g is the Redis key prefix + "{" + g + "}:" + c.Key, followed for a
// quota or a refilling balance by ":" + the start of its period ("2026-03-14" for a day,
// "2026-03" for a month). The group is a Redis Cluster hash tag: all keys of one check
// sit in one slot. A rate limit's key holds its TAT and expires when its bucket is full
// again; a quota's or refilling balance's expires an hour after its period ends; a
// balance that never refills expires after a day unchanged when a Seeder can rebuild it,
// and never otherwise.
//
// A missing quota or credits counter (a new period, a Redis restart, an eviction) is
// seeded through the Seeder: the script reports it missing and changes nothing, the
// checker reads the seed and writes it with SET NX (the first writer wins, so every
// instance goes on from the same value), and runs the script again. Concurrent checks
// of one process share one seed read (see seed.go).
type RedisChecker struct {
	client redis.UniversalClient
	co     coalescer // concurrent checks share round trips
	solo   bool      // benchmarks: one round trip per check, no coalescing
	prefix string
	seed   Seeder
	seeder seeder
	// periods caches the current day's and month's bounds for the keys' labels.
	periods periodCache
	// shift moves the clock: the script adds it to the Redis clock, and this instance to
	// its own. Tests use it to place a check at a period boundary; it is 0 otherwise.
	shift time.Duration
	// now is this instance's clock, used to choose the periods a check's keys name
	// (the script verifies them against the Redis clock). nil means time.Now.
	now func() time.Time
}

// NewRedisChecker returns a checker keeping its counters in client under prefix. seed,
// if not nil, gives the state of a missing quota or credits counter; without it a quota
// starts from 0 and a balance from its Refill. It returns an error when prefix contains
// a brace, which would take the place of the group as the hash tag.
func NewRedisChecker(client redis.UniversalClient, prefix string, seed Seeder) (*RedisChecker, error) {
	if strings.ContainsAny(prefix, "{}") {
		return nil, fmt.Errorf("ratelimit: key prefix %q must not contain braces", prefix)
	}
	return &RedisChecker{client: client, co: coalescer{client: client, script: checkLua}, prefix: prefix, seed: seed}, nil
}

// clock is this instance's idea of the Redis clock.
func (r *RedisChecker) clock() time.Time {
	if r.now != nil {
		return r.now()
	}
	return time.Now().Add(r.shift)
}

// Check evaluates counters of group and charges them all only when every non-advisory
// one allows, in one Redis round trip (a second only when the server does not know the
// script yet; more to seed a missing counter, or at a period boundary when this
// instance's clock and Redis's disagree). See [Checker]. It returns an error wrapping
// [ErrInvalidLimit] for an invalid group or counter (without contacting Redis), one
// wrapping [ErrUnavailable] (and the cause) when Redis or the Seeder fails, or ctx's
// error when ctx ends while it waits for a seed.
func (r *RedisChecker) Check(ctx context.Context, group string, counters []Counter, dst []CounterResult) (Decision, error) {
	var pb [maxInline]plan
	plans, err := planCounters(pb[:0], group, counters)
	if err != nil {
		return Decision{}, err
	}
	if len(plans) == 0 {
		return Decision{Allowed: true, Results: dst[:0], Binding: -1}, nil
	}
	return r.check(ctx, group, counters, plans, dst, false)
}

// Adjust adds delta units to the credits counter c of group (a top-up; a negative delta
// takes away, down to zero at most) and returns its new state, in one round trip like
// Check. See [Checker]. It returns the errors of Check.
func (r *RedisChecker) Adjust(ctx context.Context, group string, c Counter, delta int64) (CounterResult, error) {
	p, err := adjustPlan(group, &c, delta)
	if err != nil {
		return CounterResult{}, err
	}
	d, err := r.check(ctx, group, []Counter{c}, []plan{p}, nil, true)
	if err != nil {
		return CounterResult{}, err
	}
	return d.Results[0], nil
}

// call is one check's script call, rebuilt when the periods are chosen again.
type call struct {
	keys []string
	args []any
	ends []int64 // Unix ns of each counter's period end (0: none)
	ttls []time.Duration
}

func (r *RedisChecker) check(ctx context.Context, group string, counters []Counter, plans []plan, dst []CounterResult, adjust bool) (Decision, error) {
	var cl call
	r.build(&cl, group, counters, plans, r.clock())
	var reply []int64
	for periods, seeds := 0, 0; ; {
		var err error
		if r.solo {
			reply, err = checkLua.Run(ctx, r.client, cl.keys, cl.args...).Int64Slice()
		} else {
			reply, err = r.co.run(ctx, cl.keys, cl.args)
		}
		if err != nil {
			return Decision{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
		if len(reply) >= 3 && reply[0] == scriptWrongPeriod {
			if periods++; periods > maxPeriodRounds {
				return Decision{}, fmt.Errorf("%w: no agreement on the period with the Redis clock", ErrUnavailable)
			}
			r.build(&cl, group, counters, plans, time.Unix(reply[1], reply[2]))
			continue
		}
		if len(reply) >= 2 && reply[0] == scriptMissing {
			if seeds == maxSeedRounds {
				return Decision{}, fmt.Errorf("%w: counters still missing after %d seeds", ErrUnavailable, seeds)
			}
			seeds++
			if err := r.seedMissing(ctx, group, counters, plans, &cl, reply[1:]); err != nil {
				return Decision{}, err
			}
			continue
		}
		break
	}
	n := len(plans)
	if len(reply) != scriptHeaderReply+n || reply[0] < 0 || reply[0] > 1 {
		return Decision{}, fmt.Errorf("%w: unexpected script reply %v", ErrUnavailable, reply)
	}
	allowed := reply[0] == 1
	now := reply[1]*int64(time.Second) + reply[2]
	res := append(dst[:0], make([]CounterResult, n)...)
	for i := range plans {
		p := &plans[i]
		v := reply[scriptHeaderReply+i]
		w := v
		if allowed {
			w = p.after(v)
		}
		fits := p.fits(v)
		if adjust {
			fits = w >= 1
		}
		p.result(&res[i], v, w, fits, now, cl.ends[i])
	}
	d := Decision{Results: res}
	decide(&d, plans)
	if !adjust && d.Allowed != allowed {
		return Decision{}, fmt.Errorf("%w: the script and the checker disagree on %v", ErrUnavailable, reply)
	}
	return d, nil
}

// build fills cl with the keys and arguments of a check whose periods are those
// containing at.
func (r *RedisChecker) build(cl *call, group string, counters []Counter, plans []plan, at time.Time) {
	n := len(plans)
	cl.keys = cl.keys[:0]
	cl.ends = cl.ends[:0]
	cl.ttls = cl.ttls[:0]
	if cl.args == nil {
		cl.args = make([]any, 0, scriptHeaderArgs+scriptCounterArgs*n)
	}
	cl.args = cl.args[:0]
	seed, idle := 0, int64(0)
	if r.seed != nil {
		seed, idle = 1, int64(creditIdle/time.Second)
	}
	shift := r.shift.Nanoseconds()
	cl.args = append(cl.args, floorDiv(shift, int64(time.Second)), shift-floorDiv(shift, int64(time.Second))*int64(time.Second),
		int64(quotaMargin/time.Second), seed, idle)
	base := r.prefix + "{" + group + "}:"
	unix := at.UnixNano()
	for i := range plans {
		p := &plans[i]
		key := base + counters[i].Key
		var start, end int64
		if p.periodic() {
			start, end = r.periods.bounds(p.period, unix)
			key += ":" + periodLabel(p.period, start)
		}
		cl.keys = append(cl.keys, key)
		cl.ends = append(cl.ends, end)
		ttl := time.Duration(0)
		if end != 0 {
			ttl = time.Duration(end-unix) + quotaMargin
		} else if p.kind == CreditsKind {
			ttl = creditIdle
		}
		cl.ttls = append(cl.ttls, ttl)
		flags := 2 * (int(p.kind) - int(RateKind))
		if p.advisory {
			flags++
		}
		cl.args = append(cl.args, flags, p.cost)
		switch p.kind {
		case RateKind:
			cl.args = append(cl.args, p.g.interval, p.g.burst, p.g.tolerance)
		default:
			cl.args = append(cl.args, p.limit, start/int64(time.Second), end/int64(time.Second))
		}
	}
}

// seedMissing seeds the counters the script reported missing (1-based indexes).
func (r *RedisChecker) seedMissing(ctx context.Context, group string, counters []Counter, plans []plan, cl *call, missing []int64) error {
	for _, idx := range missing {
		i := int(idx) - 1
		if i < 0 || i >= len(plans) || plans[i].kind == RateKind {
			return fmt.Errorf("%w: unexpected missing counter %d", ErrUnavailable, idx)
		}
		p, c := &plans[i], counters[i]
		var periodStart time.Time
		if cl.ends[i] != 0 {
			s, _ := PeriodBounds(p.period, time.Unix(0, cl.ends[i]-1))
			periodStart = s
		}
		cs := counterSeed{key: cl.keys[i], ttl: cl.ttls[i], load: func(ctx context.Context) (int64, error) {
			return p.seedValue(r.seed(ctx, group, c, periodStart))
		}}
		if err := r.seeder.seed(ctx, r.client, cs); err != nil {
			return err
		}
	}
	return nil
}

// periodLabel names the period of p starting at start (Unix ns) in a Redis key:
// "2026-03-14" for a day, "2026-03" for a month. The two cannot be mistaken for each
// other, even on the first day of a month.
func periodLabel(p Period, start int64) string {
	y, m, d := time.Unix(0, start).UTC().Date()
	b := make([]byte, 0, 10)
	b = strconv.AppendInt(b, int64(y), 10)
	b = append(b, '-', byte('0'+m/10), byte('0'+m%10))
	if p == PeriodDay {
		b = append(b, '-', byte('0'+d/10), byte('0'+d%10))
	}
	return string(b)
}

// floorDiv is a/b rounded towards minus infinity (b > 0).
func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && a < 0 {
		q--
	}
	return q
}
