package ratelimit

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// newTestRedisChecker returns a Redis checker under a fresh prefix.
func newTestRedisChecker(t *testing.T, client redis.UniversalClient, seed Seeder) *RedisChecker {
	t.Helper()
	r, err := NewRedisChecker(client, testPrefix(t, client), seed)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestRedisCheckMatchesMemory runs every check scenario against the memory checker (fake
// clock, exact) and the Redis checker (the Redis server's clock, moved to the same
// instant, real sleeps): the decisions, counts and period ends must be equal, and the
// durations equal within a tolerance for the time that really passes.
func TestRedisCheckMatchesMemory(t *testing.T) {
	forEachRedis(t, func(t *testing.T, client redis.UniversalClient) {
		prefix := testPrefix(t, client)
		const slack = 50 * time.Millisecond
		ctx := context.Background()
		if err := checkLua.Load(ctx, client).Err(); err != nil { // no step pays for EVAL
			t.Fatal(err)
		}
		for i, sc := range checkScenarios {
			t.Run(sc.name, func(t *testing.T) {
				t.Parallel()
				clock := newFakeClock(epoch)
				mem := NewMemoryChecker(clock.Now, nil)
				rc, err := NewRedisChecker(client, prefix, nil)
				if err != nil {
					t.Fatal(err)
				}
				group := "scenario" + strconv.Itoa(i)
				start := time.Now()
				rc.shift = epoch.Sub(start)
				for j, s := range sc.steps {
					clock.Set(epoch.Add(s.at))
					want, err := mem.Check(ctx, group, s.counters, nil)
					if err != nil {
						t.Fatal(err)
					}
					checkStepWant(t, j, s, want)
					time.Sleep(time.Until(start.Add(s.at)))
					got, err := rc.Check(ctx, group, s.counters, nil)
					late := max(time.Since(start.Add(s.at)), 0)
					if err != nil {
						t.Fatalf("step %d: %v", j, err)
					}
					if got.Allowed != want.Allowed || got.Binding != want.Binding || !nearLate(got.RetryAfter, want.RetryAfter, slack, late) {
						t.Errorf("step %d: redis allowed %v, binding %d, retry %v; memory %v, %d, %v",
							j, got.Allowed, got.Binding, got.RetryAfter, want.Allowed, want.Binding, want.RetryAfter)
					}
					for k := range want.Results {
						g, w := got.Results[k], want.Results[k]
						if g.Allowed != w.Allowed || g.Limit != w.Limit || g.Remaining != w.Remaining || g.Used != w.Used || !g.ResetAt.Equal(w.ResetAt) ||
							!nearLate(g.RetryAfter, w.RetryAfter, slack, late) || !nearLate(g.ResetAfter, w.ResetAfter, slack, late) {
							t.Errorf("step %d, counter %d (at %v):\nredis  %+v\nmemory %+v", j, k, s.at, g, w)
						}
					}
				}
			})
		}
	})
}

// TestRedisCheckKeys checks the Redis keys of a check: their names (the group as the
// hash tag, one slot for all), values and expiries; and that a denied or cost-0 check
// writes nothing.
func TestRedisCheckKeys(t *testing.T) {
	forEachRedis(t, func(t *testing.T, client redis.UniversalClient) {
		ctx := context.Background()
		hook := &countHook{}
		client.AddHook(hook)
		for _, seeded := range []bool{false, true} {
			var seed Seeder
			if seeded {
				seed = func(context.Context, string, Counter, time.Time) (int64, error) { return -1, nil }
			}
			rc := newTestRedisChecker(t, client, seed)
			rc.shift = time.Until(epoch) // 2026-03-14T15:09:26.5Z
			counters := []Counter{
				rateC("key:key_1", 10, 10*time.Second, 3), // T = 1s
				quotaC("key:key_1", 100, PeriodDay, 1),
				quotaC("tenant", 1000, PeriodMonth, 1),
				creditsC("credits:key_1", 50, PeriodMonth, 5),
				creditsC("credits:key_2", 50, "", 5),
			}
			d, err := rc.Check(ctx, "ten_1", counters, nil)
			if err != nil || !d.Allowed {
				t.Fatalf("check: %+v, %v", d, err)
			}
			p := rc.prefix + "{ten_1}:"
			want := []struct {
				key   string
				value string // "" for the TAT
				ttl   time.Duration
			}{
				{p + "key:key_1", "", 3 * time.Second},
				{p + "key:key_1:2026-03-14", "1", utc("2026-03-15T00:00:00Z").Sub(epoch) + quotaMargin},
				{p + "tenant:2026-03", "1", utc("2026-04-01T00:00:00Z").Sub(epoch) + quotaMargin},
				{p + "credits:key_1:2026-03", "45", utc("2026-04-01T00:00:00Z").Sub(epoch) + quotaMargin},
				{p + "credits:key_2", "45", -1},
			}
			if seeded {
				want[4].ttl = creditIdle
			}
			slot := keySlot(want[0].key)
			for _, w := range want {
				v, err := client.Get(ctx, w.key).Result()
				if err != nil {
					t.Fatalf("seeded %v: GET %s: %v", seeded, w.key, err)
				}
				if w.value == "" {
					tat, _ := strconv.ParseInt(v, 10, 64)
					if at := time.Unix(0, tat); !near(at.Sub(time.Now().Add(rc.shift)), 3*time.Second, time.Second) {
						t.Errorf("TAT %v is not about now+3s", at)
					}
				} else if v != w.value {
					t.Errorf("%s = %q, want %q", w.key, v, w.value)
				}
				ttl, err := client.PTTL(ctx, w.key).Result()
				if w.ttl < 0 && ttl != -1 || w.ttl > 0 && (err != nil || !near(ttl, w.ttl, 2*time.Second)) {
					t.Errorf("PTTL %s = %v (%v), want %v", w.key, ttl, err, w.ttl)
				}
				if s := keySlot(w.key); s != slot {
					t.Errorf("%s is in slot %d, %s in %d", w.key, s, want[0].key, slot)
				}
			}
			// The keys the script was given are exactly these.
			if got := hook.evalKeys(); !slices.Equal(got, []string{want[0].key, want[1].key, want[2].key, want[3].key, want[4].key}) {
				t.Errorf("script keys %v", got)
			}
			// A denied check and a cost-0 check write nothing.
			before := dump(t, client, want[0].key, want[1].key, want[3].key)
			counters[3].Cost = 46
			if d, _ := rc.Check(ctx, "ten_1", counters, nil); d.Allowed {
				t.Fatal("46 credits of 45 admitted")
			}
			for i := range counters {
				counters[i].Cost = 0
			}
			if d, _ := rc.Check(ctx, "ten_1", counters, nil); !d.Allowed {
				t.Fatalf("cost 0 denied: %+v", d)
			}
			if after := dump(t, client, want[0].key, want[1].key, want[3].key); !slices.Equal(before, after) {
				t.Fatalf("a denied or cost-0 check wrote: %v -> %v", before, after)
			}
		}
	})
}

func dump(t *testing.T, client redis.UniversalClient, keys ...string) []string {
	t.Helper()
	vals, err := client.MGet(context.Background(), keys...).Result()
	if err != nil {
		t.Fatal(err)
	}
	out := make([]string, len(vals))
	for i, v := range vals {
		out[i], _ = v.(string)
	}
	return out
}

// evalKeys returns the keys of the last EVALSHA or EVAL sent.
func (h *countHook) evalKeys() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.lastKeys
}

// TestRedisCheckRoundTrips counts the commands of a check: one EVALSHA in the steady
// state, whatever the number of counters; a missing counter costs EXISTS and SET NX and
// the script again.
func TestRedisCheckRoundTrips(t *testing.T) {
	forEachRedis(t, func(t *testing.T, client redis.UniversalClient) {
		ctx := context.Background()
		if err := checkLua.Load(ctx, client).Err(); err != nil {
			t.Fatal(err)
		}
		hook := &countHook{}
		client.AddHook(hook)
		var seeds int
		rc := newTestRedisChecker(t, client, func(context.Context, string, Counter, time.Time) (int64, error) {
			seeds++
			return 2, nil
		})
		one := []Counter{rateC("key:k", 100, time.Second, 1)}
		five := benchFive()
		wantCmds := func(name string, counters []Counter, want ...string) {
			t.Helper()
			hook.reset()
			if _, err := rc.Check(ctx, "ten_1", counters, nil); err != nil {
				t.Fatal(err)
			}
			if got := hook.reset(); !slices.Equal(got, want) {
				t.Fatalf("%s: commands %v, want %v", name, got, want)
			}
		}
		wantCmds("one rate limit", one, "evalsha")
		wantCmds("five counters, the tenant quota missing", five, "evalsha", "exists", "set", "evalsha")
		for range 3 {
			wantCmds("five counters", five, "evalsha")
			wantCmds("one rate limit", one, "evalsha")
		}
		denied := slices.Clone(five)
		denied[0].Cost = 1000
		wantCmds("denied", denied, "evalsha")
		if seeds != 1 {
			t.Fatalf("%d seeds, want 1", seeds)
		}
		hook.reset()
		if _, err := rc.Adjust(ctx, "ten_1", creditsC("credits:k", 10, "", 0), 5); err != nil {
			t.Fatal(err)
		}
		if got := hook.reset(); !slices.Equal(got, []string{"evalsha", "exists", "set", "evalsha"}) {
			t.Fatalf("Adjust of a missing balance: %v", got)
		}
	})
}

// TestRedisCheckPeriodBoundary moves the Redis clock to just before the end of a month:
// quota and credits counters start again in the new period, under new keys.
func TestRedisCheckPeriodBoundary(t *testing.T) {
	forEachRedis(t, func(t *testing.T, client redis.UniversalClient) {
		ctx := context.Background()
		rc := newTestRedisChecker(t, client, nil)
		boundary := utc("2026-04-01T00:00:00Z")
		start := time.Now()
		rc.shift = boundary.Add(-200 * time.Millisecond).Sub(start)
		counters := []Counter{quotaC("q", 3, PeriodDay, 2), creditsC("c", 5, PeriodMonth, 4)}
		d, err := rc.Check(ctx, "g", counters, nil)
		if err != nil || !d.Allowed || d.Results[0].Used != 2 || d.Results[1].Remaining != 1 ||
			!d.Results[0].ResetAt.Equal(boundary) || !d.Results[1].ResetAt.Equal(boundary) || d.Results[1].ResetAfter > 200*time.Millisecond {
			t.Fatalf("before the boundary: %+v, %v", d, err)
		}
		if d, _ := rc.Check(ctx, "g", counters, nil); d.Allowed || d.RetryAfter > 200*time.Millisecond || d.RetryAfter <= 0 {
			t.Fatalf("spent before the boundary: %+v", d)
		}
		time.Sleep(time.Until(start.Add(300 * time.Millisecond)))
		d, err = rc.Check(ctx, "g", counters, nil)
		if err != nil || !d.Allowed || d.Results[0].Used != 2 || d.Results[1].Remaining != 1 ||
			!d.Results[0].ResetAt.Equal(utc("2026-04-02T00:00:00Z")) || !d.Results[1].ResetAt.Equal(utc("2026-05-01T00:00:00Z")) {
			t.Fatalf("after the boundary: %+v, %v", d, err)
		}
		p := rc.prefix + "{g}:"
		for _, k := range []string{"q:2026-03-31", "q:2026-04-01", "c:2026-03", "c:2026-04"} {
			if n, _ := client.Exists(ctx, p+k).Result(); n != 1 {
				t.Errorf("no key %s", p+k)
			}
		}
	})
}

// TestRedisCheckWrongPeriod: an instance whose clock is a day behind Redis's names
// yesterday's counters; the script refuses them and the check is made again on the
// Redis clock's period.
func TestRedisCheckWrongPeriod(t *testing.T) {
	forEachRedis(t, func(t *testing.T, client redis.UniversalClient) {
		ctx := context.Background()
		if err := checkLua.Load(ctx, client).Err(); err != nil {
			t.Fatal(err)
		}
		hook := &countHook{}
		client.AddHook(hook)
		rc := newTestRedisChecker(t, client, nil)
		rc.shift = time.Until(epoch)
		rc.now = func() time.Time { return time.Now().Add(rc.shift - 24*time.Hour) }
		d, err := rc.Check(ctx, "g", []Counter{kQuota}, nil)
		if err != nil || !d.Allowed || !d.Results[0].ResetAt.Equal(utc("2026-03-15T00:00:00Z")) {
			t.Fatalf("check: %+v, %v", d, err)
		}
		if got := hook.reset(); !slices.Equal(got, []string{"evalsha", "evalsha"}) {
			t.Fatalf("commands %v, want two EVALSHA", got)
		}
		if keys := hook.evalKeys(); len(keys) != 1 || !strings.HasSuffix(keys[0], ":2026-03-14") {
			t.Fatalf("second script call named %v", keys)
		}
	})
}

func TestRedisCheckUnavailable(t *testing.T) {
	ctx := context.Background()
	dead, err := NewRedisChecker(deadClient(t), "x:", nil)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := dead.Check(ctx, "g", []Counter{kRate, kQuota}, nil); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Check: %v, want ErrUnavailable", err)
	}
	if _, err := dead.Adjust(ctx, "g", kCredits, 1); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Adjust: %v, want ErrUnavailable", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("took %v", d)
	}
	// Invalid counters are the caller's error, even with Redis down.
	if _, err := dead.Check(ctx, "g", []Counter{quotaC("q", 0, PeriodDay, 1)}, nil); !errors.Is(err, ErrInvalidLimit) {
		t.Fatalf("invalid with Redis down: %v", err)
	}
	live := newTestRedisChecker(t, newRedisClient(t), nil)
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := live.Check(cctx, "g", []Counter{kRate}, nil); !errors.Is(err, ErrUnavailable) || !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v, want ErrUnavailable and context.Canceled", err)
	}
}

// keySlot is the Redis Cluster slot of key: CRC16 (XMODEM) of its hash tag, mod 16384.
func keySlot(key string) int {
	if s := strings.IndexByte(key, '{'); s >= 0 {
		if e := strings.IndexByte(key[s+1:], '}'); e > 0 {
			key = key[s+1 : s+1+e]
		}
	}
	var crc uint16
	for i := 0; i < len(key); i++ {
		crc ^= uint16(key[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return int(crc) % 16384
}

func TestKeySlot(t *testing.T) {
	// Values from the Redis Cluster specification and redis-cli CLUSTER KEYSLOT.
	for key, want := range map[string]int{"123456789": 0x31C3 % 16384, "foo": 12182, "{user1000}.following": 3443, "{user1000}.followers": 3443} {
		if got := keySlot(key); got != want {
			t.Errorf("keySlot(%q) = %d, want %d", key, got, want)
		}
	}
}
