package ratelimit

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// TestRedisMatchesMemory runs every scenario against Memory (fake clock, exact) and Redis
// (the Redis server's clock, real sleeps): the decisions and Remaining must be equal, and
// the durations equal within a tolerance for the time that really passes.
func TestRedisMatchesMemory(t *testing.T) {
	forEachRedis(t, func(t *testing.T, client redis.UniversalClient) {
		prefix := testPrefix(t, client)
		const slack = 50 * time.Millisecond
		ctx := context.Background()
		// Load the script so that no step pays for EVAL.
		if _, err := NewRedis(client, prefix).Allow(ctx, "warmup", Limit{Rate: 1, Period: time.Second}, 0); err != nil {
			t.Fatal(err)
		}
		for i, sc := range scenarios {
			t.Run(sc.name, func(t *testing.T) {
				t.Parallel()
				clock := newFakeClock(epoch)
				mem := NewMemory(clock.Now)
				rl := NewRedis(client, prefix)
				key := "scenario" + strconv.Itoa(i)
				start := time.Now()
				for j, s := range sc.steps {
					clock.Set(epoch.Add(s.at))
					want, err := mem.Allow(ctx, key, sc.limit, s.cost)
					if err != nil {
						t.Fatal(err)
					}
					time.Sleep(time.Until(start.Add(s.at)))
					got, err := rl.Allow(ctx, key, sc.limit, s.cost)
					// Redis reads its own clock: on a busy machine the call runs late,
					// and the durations it reports are shorter by that much.
					late := max(time.Since(start.Add(s.at)), 0)
					if err != nil {
						t.Fatalf("step %d: %v", j, err)
					}
					if want != s.want {
						t.Errorf("step %d: memory %+v, scenario says %+v", j, want, s.want)
					}
					if got.Allowed != want.Allowed || got.Limit != want.Limit || got.Remaining != want.Remaining ||
						!nearLate(got.RetryAfter, want.RetryAfter, slack, late) || !nearLate(got.ResetAfter, want.ResetAfter, slack, late) {
						t.Errorf("step %d (at %v, cost %d):\nredis  %+v\nmemory %+v", j, s.at, s.cost, got, want)
					}
				}
			})
		}
	})
}

// nearLate is near for a measurement taken up to late after the instant b describes:
// a countdown then reads up to late less.
func nearLate(a, b, slack, late time.Duration) bool {
	return a >= b-late-slack && a <= b+slack
}

func near(a, b, slack time.Duration) bool {
	d := a - b
	return d <= slack && d >= -slack
}

// TestRedisStoredState checks the key name, the stored TAT and that the key expires when
// its bucket is full again.
func TestRedisStoredState(t *testing.T) {
	client := newRedisClient(t)
	prefix := testPrefix(t, client)
	ctx := context.Background()
	rl := NewRedis(client, prefix)
	limit := Limit{Rate: 10, Period: 10 * time.Second} // T = 1s
	before := time.Now()
	r, err := rl.Allow(ctx, "stored", limit, 3)
	if err != nil || !r.Allowed || r.Remaining != 7 {
		t.Fatalf("Allow: %+v, %v", r, err)
	}
	tat, err := client.Get(ctx, prefix+"stored").Int64()
	if err != nil {
		t.Fatalf("GET %sstored: %v", prefix, err)
	}
	if at := time.Unix(0, tat); at.Before(before.Add(3*time.Second-time.Second)) || at.After(time.Now().Add(3*time.Second+time.Second)) {
		t.Fatalf("stored TAT %v, want about now+3s", at)
	}
	ttl, err := client.PTTL(ctx, prefix+"stored").Result()
	if err != nil || ttl <= 2500*time.Millisecond || ttl > 3*time.Second {
		t.Fatalf("PTTL = %v (%v), want about 3s", ttl, err)
	}
	// A denied check and a cost-0 check write nothing.
	if _, err := rl.Allow(ctx, "stored", limit, 8); err != nil {
		t.Fatal(err)
	}
	if _, err := rl.Allow(ctx, "never", limit, 0); err != nil {
		t.Fatal(err)
	}
	if n, _ := client.Exists(ctx, prefix+"never").Result(); n != 0 {
		t.Fatal("a cost-0 check created the key")
	}
	if again, _ := client.Get(ctx, prefix+"stored").Int64(); again != tat {
		t.Fatalf("a denied check changed the TAT from %d to %d", tat, again)
	}
	// A garbled value counts as an idle key.
	client.Set(ctx, prefix+"garbled", "xyz", time.Minute)
	if r, err := rl.Allow(ctx, "garbled", limit, 10); err != nil || !r.Allowed {
		t.Fatalf("garbled key: %+v, %v", r, err)
	}
}

// TestRedisOneRoundTrip counts the commands the Redis limiter and quota send.
func TestRedisOneRoundTrip(t *testing.T) {
	client := newRedisClient(t)
	prefix := testPrefix(t, client)
	hook := &countHook{}
	client.AddHook(hook)
	ctx := context.Background()
	rl := NewRedis(client, prefix)
	limit := Limit{Rate: 5, Period: time.Minute}
	// Warm up: the first call may also open a connection and load the script.
	if _, err := rl.Allow(ctx, "warm", limit, 1); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		call func() error
		cmd  string
	}{
		{"allow admitted", func() error { _, err := rl.Allow(ctx, "a", limit, 1); return err }, "evalsha"},
		{"allow denied", func() error { _, err := rl.Allow(ctx, "a", limit, 50); return err }, "evalsha"},
		{"allow peek", func() error { _, err := rl.Allow(ctx, "a", limit, 0); return err }, "evalsha"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for range 5 {
				hook.reset()
				if err := c.call(); err != nil {
					t.Fatal(err)
				}
				if names := hook.reset(); len(names) != 1 || names[0] != c.cmd {
					t.Fatalf("commands sent: %v, want exactly one %s", names, c.cmd)
				}
			}
		})
	}
}

// TestRedisTwoInstances has two limiters with their own clients share one limit: of 400
// concurrent requests against 100 per minute exactly 100 are admitted.
func TestRedisTwoInstances(t *testing.T) {
	forEachRedis(t, func(t *testing.T, a redis.UniversalClient) {
		b := anotherClient(t, a)
		prefix := testPrefix(t, a)
		limiters := []Limiter{NewRedis(a, prefix), NewRedis(b, prefix)}
		const n, workers = 100, 400
		limit := Limit{Rate: n, Period: time.Minute}
		var admitted, failed atomic.Int64
		var perInstance [2]atomic.Int64
		var wg sync.WaitGroup
		startGate := make(chan struct{})
		for i := range workers {
			wg.Go(func() {
				<-startGate
				r, err := limiters[i%2].Allow(context.Background(), "shared", limit, 1)
				if err != nil {
					failed.Add(1)
					t.Error(err)
					return
				}
				if r.Allowed {
					admitted.Add(1)
					perInstance[i%2].Add(1)
				} else if r.RetryAfter <= 0 || r.RetryAfter > time.Minute/n {
					t.Errorf("denied with RetryAfter %v", r.RetryAfter)
				}
			})
		}
		close(startGate)
		wg.Wait()
		got := admitted.Load()
		t.Logf("admitted %d (instance A %d, B %d), errors %d", got, perInstance[0].Load(), perInstance[1].Load(), failed.Load())
		if got < n || got > n+n/100 {
			t.Fatalf("admitted %d of %d, want %d (at most 1%% over)", got, workers, n)
		}
		if perInstance[0].Load() == 0 || perInstance[1].Load() == 0 {
			t.Errorf("one instance admitted nothing: the test did not share the limit")
		}
	})
}

// TestRedisUnavailable: a Redis that cannot be reached gives ErrUnavailable, quickly.
func TestRedisUnavailable(t *testing.T) {
	dead := deadClient(t)
	ctx := context.Background()
	cases := []struct {
		name string
		call func() error
	}{
		{"limiter", func() error {
			_, err := NewRedis(dead, "x:").Allow(ctx, "k", Limit{Rate: 1, Period: time.Second}, 1)
			return err
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			start := time.Now()
			err := c.call()
			if !errors.Is(err, ErrUnavailable) {
				t.Fatalf("err = %v, want ErrUnavailable", err)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Fatalf("took %v", d)
			}
		})
	}
	// A cancelled context is reported too, wrapped.
	live := newRedisClient(t)
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	_, err := NewRedis(live, testPrefix(t, live)).Allow(cctx, "k", Limit{Rate: 1, Period: time.Second}, 1)
	if !errors.Is(err, ErrUnavailable) || !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: err = %v, want ErrUnavailable and context.Canceled", err)
	}
}
