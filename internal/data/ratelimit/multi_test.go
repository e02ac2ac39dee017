package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// checkers returns a memory checker on clock and Redis checkers (one server, the test
// cluster) whose clocks are moved to the same instant, all with seed.
func checkers(t *testing.T, clock *fakeClock, seed Seeder) map[string]Checker {
	impls := map[string]Checker{"memory": NewMemoryChecker(clock.Now, seed)}
	for name, client := range map[string]redis.UniversalClient{"redis": newRedisClient(t), "cluster": newRedisClusterClient(t)} {
		r, err := NewRedisChecker(client, testPrefix(t, client), seed)
		if err != nil {
			t.Fatal(err)
		}
		r.shift = time.Until(clock.Now())
		impls[name] = r
	}
	return impls
}

func TestCheckAdjust(t *testing.T) {
	ctx := context.Background()
	for name, c := range checkers(t, newFakeClock(epoch), nil) {
		t.Run(name, func(t *testing.T) {
			bal := creditsC("credits:k1", 10, "", 0)
			adjust := func(delta, want int64) {
				t.Helper()
				r, err := c.Adjust(ctx, "g", bal, delta)
				if err != nil || r.Remaining != want || r.Allowed != (want >= 1) || r.Limit != 10 {
					t.Fatalf("Adjust(%d) = %+v, %v; want balance %d", delta, r, err, want)
				}
			}
			adjust(0, 10) // a missing counter starts from its Refill
			adjust(5, 15)
			d, err := c.Check(ctx, "g", []Counter{with(bal, 12)}, nil)
			if err != nil || !d.Allowed || d.Results[0].Remaining != 3 {
				t.Fatalf("Check after a top-up: %+v, %v", d, err)
			}
			adjust(-2, 1)
			adjust(-20, 0) // down to zero, not below
			if d, _ := c.Check(ctx, "g", []Counter{with(bal, 1)}, nil); d.Allowed {
				t.Fatalf("an empty balance admitted: %+v", d)
			}
			adjust(1, 1)
			if _, err := c.Adjust(ctx, "g", kQuota, 1); !errors.Is(err, ErrInvalidLimit) {
				t.Fatalf("Adjust of a quota: %v, want ErrInvalidLimit", err)
			}
			if _, err := c.Adjust(ctx, "g", bal, maxUnits+1); !errors.Is(err, ErrInvalidLimit) {
				t.Fatalf("Adjust beyond the bound: %v, want ErrInvalidLimit", err)
			}
		})
	}
}

func TestCheckInvalid(t *testing.T) {
	ctx := context.Background()
	ok := rateC("ok", 1, time.Second, 1)
	tooMany := make([]Counter, maxCounters+1)
	for i := range tooMany {
		tooMany[i] = rateC("r"+strconv.Itoa(i), 1, time.Second, 1)
	}
	cases := []struct {
		name     string
		group    string
		counters []Counter
	}{
		{"empty group", "", []Counter{ok}},
		{"group with a brace", "a}b", []Counter{ok}},
		{"group with an opening brace", "a{b", []Counter{ok}},
		{"unknown kind", "g", []Counter{{Kind: 9, Key: "x", Cost: 1}}},
		{"zero kind", "g", []Counter{{Key: "x", Cost: 1}}},
		{"empty key", "g", []Counter{rateC("", 1, time.Second, 1)}},
		{"negative cost", "g", []Counter{rateC("r", 1, time.Second, -1)}},
		{"cost too large", "g", []Counter{quotaC("q", 10, PeriodDay, maxUnits+1)}},
		{"invalid rate", "g", []Counter{rateC("r", 0, time.Second, 1)}},
		{"zero quota", "g", []Counter{quotaC("q", 0, PeriodDay, 1)}},
		{"quota without a period", "g", []Counter{quotaC("q", 1, "", 1)}},
		{"quota per week", "g", []Counter{quotaC("q", 1, "week", 1)}},
		{"credits per week", "g", []Counter{creditsC("c", 1, "week", 1)}},
		{"negative refill", "g", []Counter{creditsC("c", -1, "", 1)}},
		{"the same counter twice", "g", []Counter{ok, ok}},
		{"the same quota twice", "g", []Counter{kQuota, with(kQuota, 2)}},
		{"one invalid among valid ones", "g", []Counter{ok, kQuota, quotaC("q", -5, PeriodDay, 1)}},
		{"too many counters", "g", tooMany},
	}
	client := newRedisClient(t)
	hook := &countHook{}
	client.AddHook(hook)
	r, err := NewRedisChecker(client, testPrefix(t, client), nil)
	if err != nil {
		t.Fatal(err)
	}
	impls := map[string]Checker{"memory": NewMemoryChecker(nil, nil), "redis": r}
	for name, c := range impls {
		for _, tc := range cases {
			t.Run(name+"/"+tc.name, func(t *testing.T) {
				hook.reset()
				if _, err := c.Check(ctx, tc.group, tc.counters, nil); !errors.Is(err, ErrInvalidLimit) {
					t.Fatalf("err = %v, want ErrInvalidLimit", err)
				}
				if cmds := hook.reset(); len(cmds) != 0 {
					t.Fatalf("an invalid check sent %v", cmds)
				}
			})
		}
	}
	// Two counters with one key but different storage are fine.
	for name, c := range impls {
		if _, err := c.Check(ctx, "g", []Counter{kRate, kQuota, quotaC("key:k1", 9, PeriodMonth, 1)}, nil); err != nil {
			t.Fatalf("%s: rate, day and month quota of one key: %v", name, err)
		}
	}
	if _, err := NewRedisChecker(client, "lk{x}:", nil); err == nil {
		t.Fatal("a prefix with braces was accepted")
	}
}

// TestCheckConcurrentExact: concurrent checks admit exactly what the limits allow, and
// a check that any counter denies charges none of the others.
func TestCheckConcurrentExact(t *testing.T) {
	client := newRedisClient(t)
	other := newRedisClient(t) // a second instance
	prefix := testPrefix(t, client)
	r1, _ := NewRedisChecker(client, prefix, nil)
	r2, _ := NewRedisChecker(other, prefix, nil)
	cluster, otherCluster := newRedisClusterClient(t), newRedisClusterClient(t)
	clusterPrefix := testPrefix(t, cluster)
	c1, _ := NewRedisChecker(cluster, clusterPrefix, nil)
	c2, _ := NewRedisChecker(otherCluster, clusterPrefix, nil)
	cases := map[string][]Checker{
		"memory":  {NewMemoryChecker(nil, nil)},
		"redis":   {r1, r2},
		"cluster": {c1, c2},
	}
	const workers = 500
	for name, impls := range cases {
		t.Run(name, func(t *testing.T) {
			run := func(group string, counters []Counter) int64 {
				var admitted atomic.Int64
				var wg sync.WaitGroup
				gate := make(chan struct{})
				for i := range workers {
					wg.Go(func() {
						<-gate
						d, err := impls[i%len(impls)].Check(context.Background(), group, counters, nil)
						if err != nil {
							t.Error(err)
							return
						}
						if d.Allowed {
							admitted.Add(1)
						}
					})
				}
				close(gate)
				wg.Wait()
				return admitted.Load()
			}
			if n := run("one", []Counter{rateC("key:k", 100, time.Hour, 1)}); n != 100 {
				t.Fatalf("rate limit of 100: admitted %d of %d", n, workers)
			}
			all := []Counter{rateC("key:k", 1000, time.Hour, 1), quotaC("tenant", 300, PeriodDay, 1), creditsC("credits:k", 120, PeriodMonth, 1)}
			if n := run("three", all); n != 120 {
				t.Fatalf("credits of 120 among three limits: admitted %d of %d", n, workers)
			}
			for i := range all {
				all[i].Cost = 0
			}
			d, err := impls[0].Check(context.Background(), "three", all, nil)
			if err != nil {
				t.Fatal(err)
			}
			if got := d.Results; got[0].Remaining != 880 || got[1].Used != 120 || got[2].Remaining != 0 {
				t.Fatalf("after 120 admitted checks the others are charged exactly 120 each: %+v", got)
			}
		})
	}
}

// TestCheckSeeding: missing quota and credits counters are seeded once per period from
// the Seeder, and never on the steady-state path.
func TestCheckSeeding(t *testing.T) {
	clock := newFakeClock(epoch)
	var mu sync.Mutex
	calls := map[string]int{}
	seed := func(_ context.Context, group string, c Counter, start time.Time) (int64, error) {
		mu.Lock()
		defer mu.Unlock()
		calls[group+"/"+c.Key+"@"+start.Format(time.RFC3339)]++
		switch c.Key {
		case "key:k1":
			return 3, nil // used
		case "credits:k1":
			return 7, nil // balance
		case "credits:k2":
			return 0, fmt.Errorf("no row: %w", ErrNoBalance)
		}
		return -1, nil
	}
	ctx := context.Background()
	counters := []Counter{kRate, kQuota, kCredits, creditsC("credits:k2", 4, "", 1), creditsC("credits:k3", 6, "", 1)}
	for name, c := range checkers(t, clock, seed) {
		t.Run(name, func(t *testing.T) {
			mu.Lock()
			clear(calls)
			mu.Unlock()
			d, err := c.Check(ctx, "g", counters, nil)
			if err != nil || !d.Allowed {
				t.Fatalf("first check: %+v, %v", d, err)
			}
			if got := [4]int64{d.Results[1].Used, d.Results[2].Remaining, d.Results[3].Remaining, d.Results[4].Remaining}; got != [4]int64{4, 4, 3, 5} {
				t.Fatalf("seeded states (quota used, balances) = %v, want [4 4 3 5]", got)
			}
			if d, err := c.Check(ctx, "g", counters, nil); err != nil || d.Results[1].Used != 5 {
				t.Fatalf("second check: %+v, %v", d, err)
			}
			// The next day: the day's quota is a new counter, seeded again; the month's
			// balance goes on (1 left: the check is denied, nothing charged).
			next := 9*time.Hour + time.Minute
			clock.Advance(next)
			if r, ok := c.(*RedisChecker); ok {
				r.shift += next
			}
			d, err = c.Check(ctx, "g", counters, nil)
			clock.Advance(-next)
			if err != nil || d.Allowed || d.Binding != 2 || d.Results[1].Used != 3 || d.Results[2].Remaining != 1 {
				t.Fatalf("next day: %+v, %v", d, err)
			}
			mu.Lock()
			want := map[string]int{
				"g/key:k1@2026-03-14T00:00:00Z":     1,
				"g/key:k1@2026-03-15T00:00:00Z":     1,
				"g/credits:k1@2026-03-01T00:00:00Z": 1,
				"g/credits:k2@0001-01-01T00:00:00Z": 1,
				"g/credits:k3@0001-01-01T00:00:00Z": 1,
			}
			if fmt.Sprint(calls) != fmt.Sprint(want) {
				t.Errorf("seeder calls %v, want %v", calls, want)
			}
			mu.Unlock()
		})
	}
}

// TestCheckSeedFailure: a failing seed fails the check with ErrUnavailable and charges
// nothing; the next check seeds again.
func TestCheckSeedFailure(t *testing.T) {
	errDB := errors.New("database down")
	var fail atomic.Bool
	seed := func(context.Context, string, Counter, time.Time) (int64, error) {
		if fail.Load() {
			return 0, errDB
		}
		return 1, nil
	}
	ctx := context.Background()
	for name, c := range checkers(t, newFakeClock(epoch), seed) {
		t.Run(name, func(t *testing.T) {
			fail.Store(true)
			counters := []Counter{kRate, kQuota}
			if _, err := c.Check(ctx, "g", counters, nil); !errors.Is(err, ErrUnavailable) || !errors.Is(err, errDB) {
				t.Fatalf("check with a failing seed: %v, want ErrUnavailable wrapping the cause", err)
			}
			fail.Store(false)
			d, err := c.Check(ctx, "g", counters, nil)
			if err != nil || !d.Allowed || d.Results[0].Remaining != 1 || d.Results[1].Used != 2 {
				t.Fatalf("after recovery: %+v, %v (the failed check must have charged nothing)", d, err)
			}
		})
	}
}

// TestCheckConcurrentSeed: many checks find a counter missing at once: the seed is read
// once per instance, and the totals are exact.
func TestCheckConcurrentSeed(t *testing.T) {
	client, other := newRedisClient(t), newRedisClient(t)
	prefix := testPrefix(t, client)
	var loads atomic.Int64
	gate := make(chan struct{})
	seed := func(_ context.Context, _ string, c Counter, _ time.Time) (int64, error) {
		loads.Add(1)
		<-gate // every check arrives while the seed is being read
		if c.Kind == QuotaKind {
			return 20, nil
		}
		return 40, nil
	}
	r1, _ := NewRedisChecker(client, prefix, seed)
	r2, _ := NewRedisChecker(other, prefix, seed)
	cluster, otherCluster := newRedisClusterClient(t), newRedisClusterClient(t)
	clusterPrefix := testPrefix(t, cluster)
	c1, _ := NewRedisChecker(cluster, clusterPrefix, seed)
	c2, _ := NewRedisChecker(otherCluster, clusterPrefix, seed)
	cases := []struct {
		name      string
		impls     []Checker
		instances int64
	}{
		{"memory", []Checker{NewMemoryChecker(nil, seed)}, 1},
		{"redis", []Checker{r1, r2}, 2},
		{"cluster", []Checker{c1, c2}, 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			loads.Store(0)
			gate = make(chan struct{})
			counters := []Counter{quotaC("tenant", 50, PeriodMonth, 1), creditsC("credits:k", 100, "", 2)}
			var admitted atomic.Int64
			var wg, started sync.WaitGroup
			for i := range 200 {
				started.Add(1)
				wg.Go(func() {
					started.Done()
					d, err := tc.impls[i%len(tc.impls)].Check(context.Background(), "g", counters, nil)
					if err != nil {
						t.Error(err)
						return
					}
					if d.Allowed {
						admitted.Add(1)
					}
				})
			}
			started.Wait()
			time.Sleep(50 * time.Millisecond)
			close(gate)
			wg.Wait()
			// 30 quota units left, 40 credits at 2 each: the credits bind at 20.
			if admitted.Load() != 20 {
				t.Fatalf("admitted %d, want 20", admitted.Load())
			}
			if n := loads.Load(); n < 2 || n > 2*tc.instances {
				t.Fatalf("%d seed reads for two counters on %d instances", n, tc.instances)
			}
			for i := range counters {
				counters[i].Cost = 0
			}
			d, err := tc.impls[0].Check(context.Background(), "g", counters, nil)
			if err != nil || d.Results[0].Used != 40 || d.Results[1].Remaining != 0 {
				t.Fatalf("state after: %+v, %v", d, err)
			}
		})
	}
}
