package ratelimit

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"
)

func rateC(key string, n int, per time.Duration, cost int64) Counter {
	return Counter{Kind: RateKind, Key: key, Limit: Limit{Rate: n, Period: per}, Cost: cost}
}

func quotaC(key string, n int64, p Period, cost int64) Counter {
	return Counter{Kind: QuotaKind, Key: key, Quota: n, Period: p, Cost: cost}
}

func creditsC(key string, refill int64, p Period, cost int64) Counter {
	return Counter{Kind: CreditsKind, Key: key, Refill: refill, Period: p, Cost: cost}
}

func advisory(c Counter) Counter {
	c.Advisory = true
	return c
}

// checkStep is one check of a scenario: at (offset from the scenario's start), the
// counters, and what the memory checker (fake clock, exact) must answer.
type checkStep struct {
	at        time.Duration
	counters  []Counter
	allowed   bool
	remaining []int64       // each counter's Remaining after the check
	used      []int64       // each counter's Used, when not nil
	retry     time.Duration // Decision.RetryAfter; -1: the time until the scenario's day ends
	binding   int           // Decision.Binding
}

// untilDayEnd and untilMonthEnd are how long a check at epoch+at waits for a reset.
func untilDayEnd(at time.Duration) time.Duration {
	_, end := PeriodBounds(PeriodDay, epoch.Add(at))
	return end.Sub(epoch.Add(at))
}

func untilMonthEnd(at time.Duration) time.Duration {
	_, end := PeriodBounds(PeriodMonth, epoch.Add(at))
	return end.Sub(epoch.Add(at))
}

var (
	kRate    = rateC("key:k1", 2, time.Second, 1) // T = 500ms, burst 2
	kQuota   = quotaC("key:k1", 5, PeriodDay, 1)
	kCredits = creditsC("credits:k1", 10, PeriodMonth, 3)
	tRate    = rateC("tenant", 2, time.Second, 1)
	tQuota   = quotaC("tenant", 2, PeriodDay, 1)
	k10      = rateC("key:k2", 10, time.Second, 1)
)

func with(c Counter, cost int64) Counter {
	c.Cost = cost
	return c
}

// checkScenarios are checked exactly against the memory checker with a fake clock, and
// against Redis (with its own clock, shifted to the same instant) within a tolerance:
// no step is within 50 ms of a boundary.
var checkScenarios = []struct {
	name  string
	steps []checkStep
}{
	{"one denying counter charges none of the others", []checkStep{
		{0, []Counter{kRate, kQuota, kCredits}, true, []int64{1, 4, 7}, []int64{0, 1, 3}, 0, -1},
		{0, []Counter{kRate, kQuota, kCredits}, true, []int64{0, 3, 4}, []int64{0, 2, 6}, 0, -1},
		{0, []Counter{kRate, kQuota, kCredits}, false, []int64{0, 3, 4}, []int64{0, 2, 6}, 500 * ms, 0},
		{600 * ms, []Counter{kRate, kQuota, kCredits}, true, []int64{0, 2, 1}, []int64{0, 3, 9}, 0, -1},
		// Two deny: the answer is the one that resets latest (the credits, next month).
		{600 * ms, []Counter{kRate, kQuota, kCredits}, false, []int64{0, 2, 1}, nil, untilMonthEnd(600 * ms), 2},
		{600 * ms, []Counter{kQuota, with(kCredits, 1)}, true, []int64{1, 0}, []int64{4, 10}, 0, -1},
	}},
	{"cost 0 answers whether one unit would pass and charges nothing", []checkStep{
		{0, []Counter{rateC("r", 1, time.Second, 0), quotaC("q", 1, PeriodDay, 0)}, true, []int64{1, 1}, []int64{0, 0}, 0, -1},
		{0, []Counter{rateC("r", 1, time.Second, 1), quotaC("q", 1, PeriodDay, 1)}, true, []int64{0, 0}, []int64{0, 1}, 0, -1},
		{0, []Counter{rateC("r", 1, time.Second, 0)}, false, []int64{0}, nil, time.Second, 0},
		{0, []Counter{quotaC("q", 1, PeriodDay, 0)}, false, []int64{0}, []int64{1}, -1, 0},
		{0, []Counter{creditsC("c", 0, "", 0)}, false, []int64{0}, nil, 0, 0},
		{1100 * ms, []Counter{rateC("r", 1, time.Second, 0)}, true, []int64{1}, nil, 0, -1},
	}},
	{"advisory counters count but never deny", []checkStep{
		{0, []Counter{advisory(tRate), advisory(tQuota)}, true, []int64{1, 1}, []int64{0, 1}, 0, -1},
		{0, []Counter{advisory(tRate), advisory(tQuota)}, true, []int64{0, 0}, []int64{0, 2}, 0, -1},
		// Over both caps: charged all the same (the bucket only down to empty).
		{0, []Counter{advisory(tRate), advisory(tQuota)}, true, []int64{0, 0}, []int64{0, 3}, 0, -1},
		{0, []Counter{tRate, k10}, false, []int64{0, 10}, nil, 500 * ms, 0},
		{0, []Counter{tQuota, k10}, false, []int64{0, 10}, []int64{3, 0}, -1, 0},
		// The bucket was emptied, not run into debt: one unit is back after T.
		{550 * ms, []Counter{tRate, k10}, true, []int64{0, 9}, nil, 0, -1},
	}},
	{"credits spend, deny without charging, refill period", []checkStep{
		{0, []Counter{creditsC("c", 5, PeriodDay, 2)}, true, []int64{3}, []int64{2}, 0, -1},
		{0, []Counter{creditsC("c", 5, PeriodDay, 2)}, true, []int64{1}, []int64{4}, 0, -1},
		{0, []Counter{creditsC("c", 5, PeriodDay, 2)}, false, []int64{1}, []int64{4}, -1, 0},
		{0, []Counter{creditsC("c", 5, PeriodDay, 1)}, true, []int64{0}, []int64{5}, 0, -1},
		{0, []Counter{creditsC("c", 5, PeriodDay, 0)}, false, []int64{0}, []int64{5}, -1, 0},
		{0, []Counter{creditsC("never", 3, "", 2)}, true, []int64{1}, []int64{2}, 0, -1},
		// A balance that never refills gives no time to wait for.
		{0, []Counter{creditsC("never", 3, "", 2)}, false, []int64{1}, []int64{2}, 0, 0},
		// and binds when another limit denies too.
		{0, []Counter{rateC("hourly", 1, time.Hour, 1)}, true, []int64{0}, nil, 0, -1},
		{0, []Counter{rateC("hourly", 1, time.Hour, 1), creditsC("never", 3, "", 2)}, false, []int64{0, 1}, nil, 0, 1},
		{0, []Counter{creditsC("never", 3, "", 2), rateC("hourly", 1, time.Hour, 1)}, false, []int64{1, 0}, nil, 0, 0},
	}},
	{"the denial that resets latest is the answer", []checkStep{
		{0, []Counter{rateC("slow", 1, 10*time.Second, 1), quotaC("q", 1, PeriodDay, 1), rateC("fast", 1, time.Second, 1)}, true, []int64{0, 0, 0}, nil, 0, -1},
		{0, []Counter{rateC("slow", 1, 10*time.Second, 1), quotaC("q", 1, PeriodDay, 1), rateC("fast", 1, time.Second, 1)}, false, []int64{0, 0, 0}, nil, -1, 1},
		{0, []Counter{rateC("fast", 1, time.Second, 1), rateC("slow", 1, 10*time.Second, 1)}, false, []int64{0, 0}, nil, 10 * time.Second, 1},
		{0, []Counter{rateC("fast", 1, time.Second, 1), rateC("slow", 1, 10*time.Second, 2)}, false, []int64{0, 0}, nil, 10 * time.Second, 1},
	}},
	{"named limits of a key, each with its own window", []checkStep{
		{0, []Counter{rateC("named:k1:requests", 100, 100*time.Second, 1), quotaC("named:k1:tokens", 10000, PeriodDay, 4000)}, true, []int64{99, 6000}, nil, 0, -1},
		{0, []Counter{rateC("named:k1:requests", 100, 100*time.Second, 1), quotaC("named:k1:tokens", 10000, PeriodDay, 4000)}, true, []int64{98, 2000}, nil, 0, -1},
		{0, []Counter{rateC("named:k1:requests", 100, 100*time.Second, 1), quotaC("named:k1:tokens", 10000, PeriodDay, 4000)}, false, []int64{98, 2000}, nil, -1, 1},
		{0, []Counter{rateC("named:k1:requests", 100, 100*time.Second, 1), quotaC("named:k1:tokens", 10000, PeriodDay, 2000)}, true, []int64{97, 0}, nil, 0, -1},
	}},
}

// checkStepWant checks the answer d to step j of a scenario.
func checkStepWant(t *testing.T, j int, s checkStep, d Decision) {
	t.Helper()
	retry := s.retry
	if retry == -1 {
		retry = untilDayEnd(s.at)
	}
	if d.Allowed != s.allowed || d.RetryAfter != retry || d.Binding != s.binding {
		t.Errorf("step %d: allowed %v, retry %v, binding %d; want %v, %v, %d\n%+v", j, d.Allowed, d.RetryAfter, d.Binding, s.allowed, retry, s.binding, d.Results)
	}
	if !d.Allowed && !d.Denied(s.counters, d.Binding) {
		t.Errorf("step %d: the binding counter %d did not deny", j, d.Binding)
	}
	for i, r := range d.Results {
		if r.Remaining != s.remaining[i] || s.used != nil && r.Used != s.used[i] {
			t.Errorf("step %d, counter %d (%s %s): remaining %d, used %d; want %d, %v", j, i, s.counters[i].Kind, s.counters[i].Key, r.Remaining, r.Used, s.remaining[i], s.used)
		}
	}
}

func TestMemoryCheckScenarios(t *testing.T) {
	for _, sc := range checkScenarios {
		t.Run(sc.name, func(t *testing.T) {
			clock := newFakeClock(epoch)
			m := NewMemoryChecker(clock.Now, nil)
			for j, s := range sc.steps {
				clock.Set(epoch.Add(s.at))
				d, err := m.Check(context.Background(), "ten_1", s.counters, nil)
				if err != nil {
					t.Fatalf("step %d: %v", j, err)
				}
				checkStepWant(t, j, s, d)
			}
		})
	}
}

// TestMemoryCheckMatchesLimiter checks a rate counter against the single Limiter (the
// same GCRA) through the Limiter's scenarios.
func TestMemoryCheckMatchesLimiter(t *testing.T) {
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			clock := newFakeClock(epoch)
			m := NewMemoryChecker(clock.Now, nil)
			for i, s := range sc.steps {
				clock.Set(epoch.Add(s.at))
				d, err := m.Check(context.Background(), "g", []Counter{{Kind: RateKind, Key: "k", Limit: sc.limit, Cost: int64(s.cost)}}, nil)
				if err != nil {
					t.Fatal(err)
				}
				r := d.Results[0]
				want := s.want
				if s.cost == 0 { // a check of cost 0 asks about one unit
					continue
				}
				if r.Allowed != want.Allowed || r.Limit != int64(want.Limit) || r.Remaining != int64(want.Remaining) ||
					r.RetryAfter != want.RetryAfter || r.ResetAfter != want.ResetAfter {
					t.Errorf("step %d: %+v, Limiter says %+v", i, r, want)
				}
			}
		})
	}
}

// TestMemoryCheckPeriodBoundary: quotas start again and balances refill at the UTC period
// boundary, to the nanosecond.
func TestMemoryCheckPeriodBoundary(t *testing.T) {
	clock := newFakeClock(utc("2026-03-31T23:59:59.999999999Z"))
	m := NewMemoryChecker(clock.Now, nil)
	ctx := context.Background()
	counters := []Counter{quotaC("q", 3, PeriodDay, 2), creditsC("c", 5, PeriodMonth, 4)}
	d, err := m.Check(ctx, "g", counters, nil)
	if err != nil || !d.Allowed || d.Results[0].Used != 2 || d.Results[1].Remaining != 1 ||
		!d.Results[1].ResetAt.Equal(utc("2026-04-01T00:00:00Z")) || d.Results[1].ResetAfter != 1 {
		t.Fatalf("before the boundary: %+v, %v", d, err)
	}
	if d, _ := m.Check(ctx, "g", counters, nil); d.Allowed || d.RetryAfter != 1 {
		t.Fatalf("spent: %+v", d)
	}
	clock.Advance(1)
	d, err = m.Check(ctx, "g", counters, nil)
	if err != nil || !d.Allowed || d.Results[0].Used != 2 || d.Results[1].Remaining != 1 ||
		!d.Results[0].ResetAt.Equal(utc("2026-04-02T00:00:00Z")) || !d.Results[1].ResetAt.Equal(utc("2026-05-01T00:00:00Z")) {
		t.Fatalf("after the boundary: %+v, %v", d, err)
	}
}

func TestMemoryCheckSeedWaitEndsWithContext(t *testing.T) {
	block := make(chan struct{})
	defer close(block)
	m := NewMemoryChecker(nil, func(context.Context, string, Counter, time.Time) (int64, error) {
		<-block
		return 0, nil
	})
	go m.Check(context.Background(), "g", []Counter{kQuota}, nil)
	time.Sleep(20 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := m.Check(ctx, "g", []Counter{kQuota}, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("waiting for a seed with an ending context: %v", err)
	}
	// Other groups, and counters of the group not being seeded, are not held up.
	if _, err := m.Check(context.Background(), "g", []Counter{kRate}, nil); err != nil {
		t.Fatal(err)
	}
}

func TestMemoryCheckSweep(t *testing.T) {
	clock := newFakeClock(utc("2026-03-14T10:00:00Z"))
	seeded := NewMemoryChecker(clock.Now, func(context.Context, string, Counter, time.Time) (int64, error) { return -1, nil })
	plain := NewMemoryChecker(clock.Now, nil)
	ctx := context.Background()
	counters := []Counter{
		rateC("r", 10, time.Second, 1), quotaC("d", 5, PeriodDay, 1), quotaC("m", 5, PeriodMonth, 1),
		creditsC("c", 5, "", 1), creditsC("cd", 5, PeriodDay, 1),
	}
	for _, m := range []*MemoryChecker{seeded, plain} {
		for i := range 100 {
			if _, err := m.Check(ctx, "g"+strconv.Itoa(i), counters, nil); err != nil {
				t.Fatal(err)
			}
		}
	}
	steps := []struct {
		advance       time.Duration
		seeded, plain int
	}{
		{0, 500, 500},
		{time.Second, 400, 400},                  // full buckets
		{14 * time.Hour, 200, 200},               // next day: day quotas and daily credits
		{10*time.Hour - 2*time.Second, 200, 200}, // the balance changed 24h ago, less a second
		{time.Second, 100, 200},                  // unchanged for a day: dropped when a seeder can rebuild it
		{20 * 24 * time.Hour, 0, 100},            // next month
		{365 * 24 * time.Hour, 0, 100},           // never refilled, no seeder: kept
		{-400 * 24 * time.Hour, 0, 100},          // a clock going back drops nothing more
	}
	for i, s := range steps {
		clock.Advance(s.advance)
		seeded.Sweep()
		plain.Sweep()
		if seeded.Len() != s.seeded || plain.Len() != s.plain {
			t.Fatalf("step %d (%v): %d and %d entries, want %d and %d", i, clock.Now(), seeded.Len(), plain.Len(), s.seeded, s.plain)
		}
	}
	// The swept balances come back from the seeder (here: their Refill).
	d, err := seeded.Check(ctx, "g1", []Counter{with(counters[3], 0)}, nil)
	if err != nil || d.Results[0].Remaining != 5 {
		t.Fatalf("swept balance: %+v, %v", d, err)
	}
	d, err = plain.Check(ctx, "g1", []Counter{with(counters[3], 0)}, nil)
	if err != nil || d.Results[0].Remaining != 4 {
		t.Fatalf("kept balance: %+v, %v", d, err)
	}
}

func TestMemoryCheckNoAllocation(t *testing.T) {
	m := NewMemoryChecker(nil, nil)
	ctx := context.Background()
	counters := []Counter{
		rateC("named:key_1:requests", 1e9, time.Second, 1), rateC("named:key_1:tokens", 1e9, time.Second, 1),
		rateC("tenant", 1e9, time.Second, 1), quotaC("tenant", maxUnits, PeriodMonth, 1), creditsC("credits:key_1", maxUnits, PeriodDay, 1),
	}
	dst := make([]CounterResult, 0, len(counters))
	if _, err := m.Check(ctx, "ten_1", counters, dst); err != nil {
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(1000, func() {
		d, _ := m.Check(ctx, "ten_1", counters, dst)
		dst = d.Results
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per check of five present counters, want 0", allocs)
	}
}
