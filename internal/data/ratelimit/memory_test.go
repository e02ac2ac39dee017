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
)

const ms = time.Millisecond

// step is one check of a scenario: at (offset from the scenario's start), cost, and the
// expected result.
type step struct {
	at   time.Duration
	cost int
	want Result
}

func ok(limit, remaining int, reset time.Duration) Result {
	return Result{Allowed: true, Limit: limit, Remaining: remaining, ResetAfter: reset}
}

func denied(limit, remaining int, retry, reset time.Duration) Result {
	return Result{Limit: limit, Remaining: remaining, RetryAfter: retry, ResetAfter: reset}
}

// scenarios are checked exactly against Memory with a fake clock, and against Redis (with
// its own clock) within a tolerance: no step is within 60 ms of a boundary.
var scenarios = []struct {
	name  string
	limit Limit
	steps []step
}{
	{
		name:  "burst of N then one every W/N",
		limit: Limit{Rate: 4, Period: 2 * time.Second}, // T = 500ms
		steps: []step{
			{0, 1, ok(4, 3, 500*ms)},
			{0, 1, ok(4, 2, 1000*ms)},
			{0, 1, ok(4, 1, 1500*ms)},
			{0, 1, ok(4, 0, 2000*ms)},
			{0, 1, denied(4, 0, 500*ms, 2000*ms)},
			{250 * ms, 1, denied(4, 0, 250*ms, 1750*ms)},
			{600 * ms, 1, ok(4, 0, 1900*ms)},
			{700 * ms, 2, denied(4, 0, 800*ms, 1800*ms)},
			{700 * ms, 0, ok(4, 0, 1800*ms)},
			{1700 * ms, 0, ok(4, 2, 800*ms)},
			{2600 * ms, 0, ok(4, 4, 0)},
			{2600 * ms, 4, ok(4, 0, 2000*ms)},
		},
	},
	{
		name:  "cost above one and above the burst",
		limit: Limit{Rate: 10, Period: time.Hour}, // T = 6m
		steps: []step{
			{0, 3, ok(10, 7, 18*time.Minute)},
			{0, 5, ok(10, 2, 48*time.Minute)},
			{0, 3, denied(10, 2, 6*time.Minute, 48*time.Minute)},
			{0, 11, denied(10, 2, time.Hour, 48*time.Minute)},
			{0, 2, ok(10, 0, time.Hour)},
			{0, 1, denied(10, 0, 6*time.Minute, time.Hour)},
			{0, 11, denied(10, 0, time.Hour, time.Hour)},
		},
	},
	{
		name:  "explicit burst below the rate",
		limit: Limit{Rate: 2, Period: time.Second, Burst: 3}, // T = 500ms, tolerance 1.5s
		steps: []step{
			{0, 1, ok(3, 2, 500*ms)},
			{0, 1, ok(3, 1, 1000*ms)},
			{0, 1, ok(3, 0, 1500*ms)},
			{0, 1, denied(3, 0, 500*ms, 1500*ms)},
			{600 * ms, 1, ok(3, 0, 1400*ms)},
			{700 * ms, 1, denied(3, 0, 300*ms, 1300*ms)},
			{700 * ms, 4, denied(3, 0, 1300*ms, 1300*ms)},
		},
	},
	{
		name:  "period not divisible by the rate",
		limit: Limit{Rate: 3, Period: time.Second}, // T = 333333333ns
		steps: []step{
			{0, 1, ok(3, 2, 333333333)},
			{0, 1, ok(3, 1, 666666666)},
			{0, 1, ok(3, 0, 999999999)},
			{0, 1, denied(3, 0, 333333333, 999999999)},
			{200 * ms, 1, denied(3, 0, 133333333, 799999999)},
			{400 * ms, 1, ok(3, 0, 933333332)},
			{1400 * ms, 0, ok(3, 3, 0)},
		},
	},
}

func TestMemoryScenarios(t *testing.T) {
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			clock := newFakeClock(epoch)
			m := NewMemory(clock.Now)
			for i, s := range sc.steps {
				clock.Set(epoch.Add(s.at))
				got, err := m.Allow(context.Background(), "k", sc.limit, s.cost)
				if err != nil {
					t.Fatalf("step %d: %v", i, err)
				}
				if got != s.want {
					t.Errorf("step %d (at %v, cost %d):\n got %+v\nwant %+v", i, s.at, s.cost, got, s.want)
				}
			}
		})
	}
}

// TestMemoryBurstExact checks the contract for many rates and windows: N at once pass,
// N+1 is denied with RetryAfter W/N, one more passes after W/N, the full burst is back
// after W, and the reported values agree with what happens.
func TestMemoryBurstExact(t *testing.T) {
	cases := []struct {
		n int
		w time.Duration
	}{
		{1, time.Second},
		{3, time.Second},
		{7, time.Minute},
		{100, time.Minute},
		{1000, time.Hour},
		{5000, 24 * time.Hour},
		{60, time.Second},
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("%d per %v", c.n, c.w), func(t *testing.T) {
			clock := newFakeClock(epoch)
			m := NewMemory(clock.Now)
			ctx := context.Background()
			limit := Limit{Rate: c.n, Period: c.w}
			T := c.w / time.Duration(c.n)
			for i := range c.n {
				r, _ := m.Allow(ctx, "k", limit, 1)
				if !r.Allowed || r.Remaining != c.n-i-1 || r.ResetAfter != time.Duration(i+1)*T || r.Limit != c.n {
					t.Fatalf("request %d of the burst: %+v", i+1, r)
				}
			}
			r, _ := m.Allow(ctx, "k", limit, 1)
			if r.Allowed || r.RetryAfter != T || r.Remaining != 0 {
				t.Fatalf("request N+1: %+v, want denied with RetryAfter %v", r, T)
			}
			clock.Advance(r.RetryAfter - 1)
			if r, _ := m.Allow(ctx, "k", limit, 1); r.Allowed {
				t.Fatalf("1ns before RetryAfter: admitted %+v", r)
			}
			clock.Advance(1)
			if r, _ := m.Allow(ctx, "k", limit, 1); !r.Allowed || r.Remaining != 0 {
				t.Fatalf("after W/N: %+v, want one more admitted", r)
			}
			r, _ = m.Allow(ctx, "k", limit, 0)
			clock.Advance(r.ResetAfter)
			r, _ = m.Allow(ctx, "k", limit, 0)
			if r.Remaining != c.n || r.ResetAfter != 0 {
				t.Fatalf("after ResetAfter: %+v, want full", r)
			}
			// A burst at epoch leaves the bucket full again W later, to the nanosecond.
			clock.Set(epoch)
			m.Allow(ctx, "k2", limit, c.n)
			clock.Set(epoch.Add(c.w - 1))
			if r, _ := m.Allow(ctx, "k2", limit, 0); r.Remaining == c.n && T*time.Duration(c.n) == c.w {
				t.Fatalf("1ns before W: already full %+v", r)
			}
			clock.Set(epoch.Add(c.w))
			for i := range c.n {
				if r, _ := m.Allow(ctx, "k2", limit, 1); !r.Allowed {
					t.Fatalf("W after a burst, request %d: %+v", i+1, r)
				}
			}
		})
	}
}

func TestInvalidLimits(t *testing.T) {
	client := newRedisClient(t)
	limiters := map[string]Limiter{
		"memory":   NewMemory(nil),
		"redis":    NewRedis(client, testPrefix(t, client)),
		"failsafe": &FailSafe{Limiter: NewMemory(nil), FailOpen: true},
	}
	cases := []struct {
		name  string
		limit Limit
		cost  int
	}{
		{"zero rate", Limit{Rate: 0, Period: time.Second}, 1},
		{"negative rate", Limit{Rate: -1, Period: time.Second}, 1},
		{"zero period", Limit{Rate: 1}, 1},
		{"negative burst", Limit{Rate: 1, Period: time.Second, Burst: -1}, 1},
		{"negative cost", Limit{Rate: 1, Period: time.Second}, -1},
		{"over one per ns", Limit{Rate: 2, Period: 1}, 1},
		{"tolerance overflow", Limit{Rate: 1, Period: time.Duration(1) << 62, Burst: 4}, 1},
	}
	for name, l := range limiters {
		for _, c := range cases {
			t.Run(name+"/"+c.name, func(t *testing.T) {
				_, err := l.Allow(context.Background(), "k", c.limit, c.cost)
				if !errors.Is(err, ErrInvalidLimit) {
					t.Fatalf("err = %v, want ErrInvalidLimit", err)
				}
			})
		}
	}
}

func TestMemorySweep(t *testing.T) {
	clock := newFakeClock(epoch)
	m := NewMemory(clock.Now)
	ctx := context.Background()
	limit := Limit{Rate: 10, Period: 10 * time.Second} // T = 1s
	for i := range 1000 {
		cost := 1
		if i%2 == 0 {
			cost = 5
		}
		m.Allow(ctx, "key"+strconv.Itoa(i), limit, cost)
	}
	if n := m.Len(); n != 1000 {
		t.Fatalf("Len = %d, want 1000", n)
	}
	clock.Advance(time.Second) // the cost-1 buckets are full again
	m.Sweep()
	if n := m.Len(); n != 500 {
		t.Fatalf("after 1s: Len = %d, want 500", n)
	}
	if r, _ := m.Allow(ctx, "key0", limit, 0); r.Remaining != 6 || r.ResetAfter != 4*time.Second {
		t.Fatalf("kept key: %+v", r)
	}
	clock.Advance(4 * time.Second)
	m.Sweep()
	if n := m.Len(); n != 0 {
		t.Fatalf("after 5s: Len = %d, want 0", n)
	}
	// A swept key behaves as a fresh one.
	if r, _ := m.Allow(ctx, "key0", limit, 10); !r.Allowed || r.Remaining != 0 {
		t.Fatalf("swept key: %+v", r)
	}
}

func TestMemoryZeroAllocs(t *testing.T) {
	m := NewMemory(nil)
	ctx := context.Background()
	key := "lk_live_0123456789abcdef"
	limit := Limit{Rate: 1000000, Period: time.Second}
	m.Allow(ctx, key, limit, 1)
	if n := testing.AllocsPerRun(1000, func() { m.Allow(ctx, key, limit, 1) }); n != 0 {
		t.Fatalf("Allow allocates %v times per call, want 0", n)
	}
	denyLimit := Limit{Rate: 1, Period: time.Hour}
	m.Allow(ctx, "deny", denyLimit, 1)
	if n := testing.AllocsPerRun(1000, func() { m.Allow(ctx, "deny", denyLimit, 1) }); n != 0 {
		t.Fatalf("denied Allow allocates %v times per call, want 0", n)
	}
}

func TestMemoryConcurrent(t *testing.T) {
	m := NewMemory(nil)
	const n, workers = 100, 400
	var admitted atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			r, err := m.Allow(context.Background(), "shared", Limit{Rate: n, Period: time.Minute}, 1)
			if err != nil {
				t.Error(err)
			}
			if r.Allowed {
				admitted.Add(1)
			}
		})
	}
	wg.Wait()
	if got := admitted.Load(); got != n {
		t.Fatalf("admitted %d, want %d", got, n)
	}
}
