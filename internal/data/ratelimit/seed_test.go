package ratelimit

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestRedisQuotaSeedsMissingCounters: a counter missing from Redis (first use in a
// period, or lost with a Redis restart) is seeded from the loader before it counts;
// a present counter costs one round trip and no load.
func TestRedisQuotaSeedsMissingCounters(t *testing.T) {
	client := newRedisClient(t)
	prefix := testPrefix(t, client)
	ctx := context.Background()
	if err := quotaLua.Load(ctx, client).Err(); err != nil { // EVALSHA from the first call
		t.Fatal(err)
	}
	hook := &countHook{}
	client.AddHook(hook)
	now := time.Now().UTC()
	start, end := PeriodBounds(PeriodDay, now)
	var stored, loads atomic.Int64 // what the database holds; loader calls
	q := NewRedisQuota(client, prefix, func() time.Time { return now }, func(_ context.Context, key string, periodStart time.Time) (int64, error) {
		loads.Add(1)
		if key != "k" || !periodStart.Equal(start) {
			t.Errorf("load(%q, %v), want k and %v", key, periodStart, start)
		}
		return stored.Load(), nil
	})
	redisKey := prefix + "k:" + strconv.FormatInt(start.Unix(), 10)
	consume := func(wantAllowed bool, wantUsed, wantLoads int64, wantCmds ...string) {
		t.Helper()
		hook.reset()
		r, err := q.Consume(ctx, "k", 10, PeriodDay, 1)
		if err != nil || r.Allowed != wantAllowed || r.Used != wantUsed || !r.ResetAt.Equal(end) {
			t.Fatalf("Consume = %+v, %v; want allowed %v, used %d", r, err, wantAllowed, wantUsed)
		}
		if loads.Load() != wantLoads {
			t.Fatalf("%d loads, want %d", loads.Load(), wantLoads)
		}
		if cmds := hook.reset(); !slices.Equal(cmds, wantCmds) {
			t.Fatalf("commands %v, want %v", cmds, wantCmds)
		}
	}

	stored.Store(7)
	consume(true, 8, 1, "evalsha", "exists", "set", "evalsha") // first use: seeded, then counted
	consume(true, 9, 1, "evalsha")                             // steady state: one round trip, no load
	ttl, err := client.TTL(ctx, redisKey).Result()
	if want := end.Sub(now) + quotaMargin; err != nil || !near(ttl, want, 3*time.Second) {
		t.Fatalf("TTL = %v (%v), want about %v", ttl, err, want)
	}

	// Redis loses the counter (a restart without persistence); the database has the
	// 9 units used so far.
	if err := client.Del(ctx, redisKey).Err(); err != nil {
		t.Fatal(err)
	}
	stored.Store(9)
	consume(true, 10, 2, "evalsha", "exists", "set", "evalsha")
	consume(false, 10, 2, "evalsha")
	if ttl, err := client.TTL(ctx, redisKey).Result(); err != nil || ttl <= 0 {
		t.Fatalf("seeded key TTL = %v, %v; want an expiry", ttl, err)
	}

	// Peek seeds a missing counter too.
	if err := client.Del(ctx, redisKey).Err(); err != nil {
		t.Fatal(err)
	}
	stored.Store(10)
	hook.reset()
	r, err := q.Peek(ctx, "k", 10, PeriodDay)
	if err != nil || r.Allowed || r.Used != 10 || loads.Load() != 3 {
		t.Fatalf("Peek of a lost counter = %+v, %v (%d loads); want used 10 from the database", r, err, loads.Load())
	}
	if cmds := hook.reset(); !slices.Equal(cmds, []string{"get", "exists", "set", "get"}) {
		t.Fatalf("Peek commands %v", cmds)
	}
}

// TestRedisQuotaSeedAcrossInstances: two instances find the counter missing at once;
// each reads the database at most once, one seed wins (SET NX), and the shared quota
// stays exact: of 200 concurrent requests against a quota of 50 with 20 already used,
// exactly 30 are admitted.
func TestRedisQuotaSeedAcrossInstances(t *testing.T) {
	a, b := newRedisClient(t), newRedisClient(t)
	prefix := testPrefix(t, a)
	var loads atomic.Int64
	gate := make(chan struct{})
	load := func(context.Context, string, time.Time) (int64, error) {
		loads.Add(1)
		<-gate // every request arrives while the seed is being read
		return 20, nil
	}
	quotas := []Quota{NewRedisQuota(a, prefix, nil, load), NewRedisQuota(b, prefix, nil, load)}
	const limit, workers = 50, 200
	var admitted atomic.Int64
	var wg sync.WaitGroup
	var started sync.WaitGroup
	for i := range workers {
		wg.Add(1)
		started.Add(1)
		go func() {
			defer wg.Done()
			started.Done()
			r, err := quotas[i%2].Consume(context.Background(), "shared", limit, PeriodMonth, 1)
			if err != nil {
				t.Error(err)
				return
			}
			if r.Allowed {
				admitted.Add(1)
			}
			if r.Used > limit {
				t.Errorf("over the quota: %+v", r)
			}
		}()
	}
	started.Wait()
	time.Sleep(50 * time.Millisecond) // let them reach the seed (not needed for correctness)
	close(gate)
	wg.Wait()
	if admitted.Load() != limit-20 {
		t.Fatalf("admitted %d, want %d", admitted.Load(), limit-20)
	}
	if n := loads.Load(); n < 1 || n > 2 {
		t.Fatalf("%d database reads for one counter on two instances, want 1 or 2 (one per instance at most)", n)
	}
	if r, err := quotas[0].Peek(context.Background(), "shared", limit, PeriodMonth); err != nil || r.Used != limit {
		t.Fatalf("Peek = %+v, %v", r, err)
	}
}

// TestRedisQuotaSeedFailure: when the seed cannot be read the check fails with
// ErrUnavailable and writes nothing; the next check reads it again.
func TestRedisQuotaSeedFailure(t *testing.T) {
	client := newRedisClient(t)
	prefix := testPrefix(t, client)
	ctx := context.Background()
	errDB := errors.New("database down")
	var fail atomic.Bool
	fail.Store(true)
	q := NewRedisQuota(client, prefix, nil, func(context.Context, string, time.Time) (int64, error) {
		if fail.Load() {
			return 0, errDB
		}
		return 4, nil
	})
	if _, err := q.Consume(ctx, "k", 5, PeriodDay, 1); !errors.Is(err, ErrUnavailable) || !errors.Is(err, errDB) {
		t.Fatalf("Consume with a failing loader: %v, want ErrUnavailable wrapping the cause", err)
	}
	if _, err := q.Peek(ctx, "k", 5, PeriodDay); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Peek with a failing loader: %v", err)
	}
	start, _ := PeriodBounds(PeriodDay, time.Now())
	if n, _ := client.Exists(ctx, prefix+"k:"+strconv.FormatInt(start.Unix(), 10)).Result(); n != 0 {
		t.Fatal("a failed seed wrote the counter")
	}
	fail.Store(false)
	if r, err := q.Consume(ctx, "k", 5, PeriodDay, 1); err != nil || !r.Allowed || r.Used != 5 {
		t.Fatalf("Consume after recovery = %+v, %v", r, err)
	}
	// A caller whose context ends while another's seed is read gives up with its error.
	block := make(chan struct{})
	defer close(block)
	q2 := NewRedisQuota(client, prefix, nil, func(context.Context, string, time.Time) (int64, error) {
		<-block
		return 0, nil
	})
	go q2.Consume(context.Background(), "slow", 5, PeriodDay, 1)
	time.Sleep(20 * time.Millisecond)
	cctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if _, err := q2.Consume(cctx, "slow", 5, PeriodDay, 1); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("waiting for a seed with an ending context: %v", err)
	}
}
