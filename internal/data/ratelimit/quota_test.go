package ratelimit

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func utc(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		panic(err)
	}
	return t
}

func TestPeriodBounds(t *testing.T) {
	plus5 := time.FixedZone("+05", 5*3600)
	cases := []struct {
		name       string
		p          Period
		t          time.Time
		start, end string
	}{
		{"day, midday", PeriodDay, utc("2026-03-14T15:09:26Z"), "2026-03-14T00:00:00Z", "2026-03-15T00:00:00Z"},
		{"day, at its start", PeriodDay, utc("2026-03-14T00:00:00Z"), "2026-03-14T00:00:00Z", "2026-03-15T00:00:00Z"},
		{"day, last nanosecond", PeriodDay, utc("2026-03-14T23:59:59.999999999Z"), "2026-03-14T00:00:00Z", "2026-03-15T00:00:00Z"},
		{"day, month end", PeriodDay, utc("2026-04-30T12:00:00Z"), "2026-04-30T00:00:00Z", "2026-05-01T00:00:00Z"},
		{"day, year end", PeriodDay, utc("2025-12-31T23:00:00Z"), "2025-12-31T00:00:00Z", "2026-01-01T00:00:00Z"},
		{"day, leap day", PeriodDay, utc("2028-02-29T08:00:00Z"), "2028-02-29T00:00:00Z", "2028-03-01T00:00:00Z"},
		{"day, other zone is UTC's previous day", PeriodDay, time.Date(2026, 3, 15, 2, 0, 0, 0, plus5), "2026-03-14T00:00:00Z", "2026-03-15T00:00:00Z"},
		{"month, middle", PeriodMonth, utc("2026-03-14T15:09:26Z"), "2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z"},
		{"month, first instant", PeriodMonth, utc("2026-03-01T00:00:00Z"), "2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z"},
		{"month, 31st", PeriodMonth, utc("2026-01-31T23:59:59.999999999Z"), "2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z"},
		{"month, 30-day month", PeriodMonth, utc("2026-04-30T10:00:00Z"), "2026-04-01T00:00:00Z", "2026-05-01T00:00:00Z"},
		{"month, December to January", PeriodMonth, utc("2025-12-31T23:59:59Z"), "2025-12-01T00:00:00Z", "2026-01-01T00:00:00Z"},
		{"month, leap February", PeriodMonth, utc("2028-02-29T23:00:00Z"), "2028-02-01T00:00:00Z", "2028-03-01T00:00:00Z"},
		{"month, common February", PeriodMonth, utc("2027-02-28T23:00:00Z"), "2027-02-01T00:00:00Z", "2027-03-01T00:00:00Z"},
		{"month, century not leap", PeriodMonth, utc("2100-02-28T00:00:00Z"), "2100-02-01T00:00:00Z", "2100-03-01T00:00:00Z"},
		{"month, other zone is UTC's previous month", PeriodMonth, time.Date(2026, 4, 1, 3, 0, 0, 0, plus5), "2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			start, end := PeriodBounds(c.p, c.t)
			if !start.Equal(utc(c.start)) || !end.Equal(utc(c.end)) || start.Location() != time.UTC || end.Location() != time.UTC {
				t.Fatalf("PeriodBounds(%s, %v) = %v, %v; want %s, %s", c.p, c.t, start, end, c.start, c.end)
			}
		})
	}
	if s, e := PeriodBounds("week", epoch); !s.IsZero() || !e.IsZero() {
		t.Fatalf("unknown period: %v, %v", s, e)
	}
}

// quotaImpls returns the quota implementations to run a behaviour test against, all on
// the given clock.
func quotaImpls(t *testing.T, clock *fakeClock) map[string]Quota {
	client := newRedisClient(t)
	return map[string]Quota{
		"memory": NewMemoryQuota(clock.Now, nil),
		"redis":  NewRedisQuota(client, testPrefix(t, client), clock.Now, nil),
	}
}

type quotaStep struct {
	at   string // clock, RFC 3339
	cost int64  // -1: Peek
	want QuotaResult
}

func qok(used, remaining int64, reset string) QuotaResult {
	return QuotaResult{Allowed: true, Used: used, Remaining: remaining, ResetAt: utc(reset)}
}

func qdenied(used, remaining int64, reset string) QuotaResult {
	return QuotaResult{Used: used, Remaining: remaining, ResetAt: utc(reset)}
}

func TestQuotaScenarios(t *testing.T) {
	cases := []struct {
		name  string
		limit int64
		p     Period
		steps []quotaStep
	}{
		{"day: denial consumes nothing, refill at midnight", 5, PeriodDay, []quotaStep{
			{"2026-01-31T23:59:58Z", 3, qok(3, 2, "2026-02-01T00:00:00Z")},
			{"2026-01-31T23:59:58Z", 3, qdenied(3, 2, "2026-02-01T00:00:00Z")},
			{"2026-01-31T23:59:59Z", 2, qok(5, 0, "2026-02-01T00:00:00Z")},
			{"2026-01-31T23:59:59.999999999Z", 1, qdenied(5, 0, "2026-02-01T00:00:00Z")},
			{"2026-01-31T23:59:59.999999999Z", -1, qdenied(5, 0, "2026-02-01T00:00:00Z")},
			{"2026-02-01T00:00:00Z", -1, qok(0, 5, "2026-02-02T00:00:00Z")},
			{"2026-02-01T00:00:00Z", 1, qok(1, 4, "2026-02-02T00:00:00Z")},
		}},
		{"month: December to January", 3, PeriodMonth, []quotaStep{
			{"2025-12-01T00:00:00Z", 1, qok(1, 2, "2026-01-01T00:00:00Z")},
			{"2025-12-15T00:00:00Z", 2, qok(3, 0, "2026-01-01T00:00:00Z")},
			{"2025-12-31T23:59:59Z", 1, qdenied(3, 0, "2026-01-01T00:00:00Z")},
			{"2026-01-01T00:00:00Z", 3, qok(3, 0, "2026-02-01T00:00:00Z")},
		}},
		{"month: leap February", 10, PeriodMonth, []quotaStep{
			{"2028-02-28T12:00:00Z", 10, qok(10, 0, "2028-03-01T00:00:00Z")},
			{"2028-02-29T23:59:59Z", 1, qdenied(10, 0, "2028-03-01T00:00:00Z")},
			{"2028-03-01T00:00:00Z", 4, qok(4, 6, "2028-04-01T00:00:00Z")},
		}},
		{"peek does not consume", 2, PeriodDay, []quotaStep{
			{"2026-03-14T10:00:00Z", -1, qok(0, 2, "2026-03-15T00:00:00Z")},
			{"2026-03-14T10:00:00Z", -1, qok(0, 2, "2026-03-15T00:00:00Z")},
			{"2026-03-14T10:00:00Z", 1, qok(1, 1, "2026-03-15T00:00:00Z")},
			{"2026-03-14T10:00:00Z", -1, qok(1, 1, "2026-03-15T00:00:00Z")},
			{"2026-03-14T10:00:00Z", 1, qok(2, 0, "2026-03-15T00:00:00Z")},
			{"2026-03-14T10:00:00Z", -1, qdenied(2, 0, "2026-03-15T00:00:00Z")},
		}},
		{"cost zero and cost above the limit", 4, PeriodDay, []quotaStep{
			{"2026-03-14T10:00:00Z", 0, qok(0, 4, "2026-03-15T00:00:00Z")},
			{"2026-03-14T10:00:00Z", 5, qdenied(0, 4, "2026-03-15T00:00:00Z")},
			{"2026-03-14T10:00:00Z", 4, qok(4, 0, "2026-03-15T00:00:00Z")},
			{"2026-03-14T10:00:00Z", 0, qok(4, 0, "2026-03-15T00:00:00Z")},
		}},
		{"zero limit denies", 0, PeriodMonth, []quotaStep{
			{"2026-03-14T10:00:00Z", 1, qdenied(0, 0, "2026-04-01T00:00:00Z")},
			{"2026-03-14T10:00:00Z", -1, qdenied(0, 0, "2026-04-01T00:00:00Z")},
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			clock := newFakeClock(epoch)
			for name, q := range quotaImpls(t, clock) {
				t.Run(name, func(t *testing.T) {
					ctx := context.Background()
					for i, s := range c.steps {
						clock.Set(utc(s.at))
						var got QuotaResult
						var err error
						if s.cost < 0 {
							got, err = q.Peek(ctx, "k", c.limit, c.p)
						} else {
							got, err = q.Consume(ctx, "k", c.limit, c.p, s.cost)
						}
						if err != nil {
							t.Fatalf("step %d: %v", i, err)
						}
						if got != s.want {
							t.Errorf("step %d (at %s, cost %d):\n got %+v\nwant %+v", i, s.at, s.cost, got, s.want)
						}
					}
				})
			}
		})
	}
}

func TestQuotaInvalid(t *testing.T) {
	for name, q := range quotaImpls(t, newFakeClock(epoch)) {
		cases := []struct {
			name  string
			limit int64
			p     Period
			cost  int64
		}{
			{"unknown period", 10, "week", 1},
			{"empty period", 10, "", 1},
			{"negative limit", -1, PeriodDay, 1},
			{"negative cost", 10, PeriodDay, -1},
		}
		for _, c := range cases {
			t.Run(name+"/"+c.name, func(t *testing.T) {
				if _, err := q.Consume(context.Background(), "k", c.limit, c.p, c.cost); !errors.Is(err, ErrInvalidLimit) {
					t.Fatalf("Consume: %v, want ErrInvalidLimit", err)
				}
				if c.cost >= 0 {
					if _, err := q.Peek(context.Background(), "k", c.limit, c.p); !errors.Is(err, ErrInvalidLimit) {
						t.Fatalf("Peek: %v, want ErrInvalidLimit", err)
					}
				}
			})
		}
	}
}

func TestMemoryQuotaLoad(t *testing.T) {
	clock := newFakeClock(utc("2026-03-31T23:00:00Z"))
	var mu sync.Mutex
	calls := map[string]int{}
	failNext := map[string]bool{"broken": true}
	loadErr := errors.New("database down")
	load := func(ctx context.Context, key string, start time.Time) (int64, error) {
		mu.Lock()
		defer mu.Unlock()
		calls[key+"@"+start.Format(time.DateOnly)]++
		if failNext[key] {
			failNext[key] = false
			return 0, loadErr
		}
		if key == "negative" {
			return -5, nil
		}
		return 7, nil
	}
	q := NewMemoryQuota(clock.Now, load)
	ctx := context.Background()

	// Seeded once, then counted in memory.
	for i := range 3 {
		r, err := q.Consume(ctx, "k", 10, PeriodMonth, 1)
		if err != nil || !r.Allowed || r.Used != int64(8+i) {
			t.Fatalf("consume %d: %+v, %v", i, r, err)
		}
	}
	if r, _ := q.Peek(ctx, "k", 10, PeriodMonth); r.Used != 10 || r.Allowed {
		t.Fatalf("peek: %+v", r)
	}
	// The day counter of the same key is seeded separately.
	if r, _ := q.Consume(ctx, "k", 10, PeriodDay, 1); r.Used != 8 {
		t.Fatalf("day counter: %+v", r)
	}
	// A new period is seeded again, once.
	clock.Set(utc("2026-04-01T00:00:01Z"))
	for range 2 {
		q.Consume(ctx, "k", 10, PeriodMonth, 1)
	}
	if r, _ := q.Peek(ctx, "k", 10, PeriodMonth); r.Used != 9 {
		t.Fatalf("new month: %+v, want 7 seeded + 2", r)
	}
	// Errors are returned and the seed retried.
	_, err := q.Consume(ctx, "broken", 10, PeriodMonth, 1)
	if !errors.Is(err, loadErr) || !errors.Is(err, ErrUnavailable) {
		t.Fatalf("load failure: %v", err)
	}
	if r, err := q.Consume(ctx, "broken", 10, PeriodMonth, 1); err != nil || r.Used != 8 {
		t.Fatalf("after load failure: %+v, %v", r, err)
	}
	// A negative seed counts as nothing used.
	if r, _ := q.Peek(ctx, "negative", 10, PeriodDay); r.Used != 0 {
		t.Fatalf("negative seed: %+v", r)
	}
	want := map[string]int{
		"k@2026-03-01": 1, "k@2026-03-31": 1, "k@2026-04-01": 1,
		"broken@2026-04-01": 2, "negative@2026-04-01": 1,
	}
	mu.Lock()
	defer mu.Unlock()
	if len(calls) != len(want) {
		t.Fatalf("load calls %v, want %v", calls, want)
	}
	for k, n := range want {
		if calls[k] != n {
			t.Fatalf("load calls %v, want %v", calls, want)
		}
	}
}

// TestMemoryQuotaConcurrentSeed: concurrent first uses wait for one load and then share the
// counter exactly.
func TestMemoryQuotaConcurrentSeed(t *testing.T) {
	var calls atomic.Int64
	release := make(chan struct{})
	q := NewMemoryQuota(nil, func(ctx context.Context, key string, start time.Time) (int64, error) {
		calls.Add(1)
		<-release
		return 10, nil
	})
	var admitted atomic.Int64
	var wg sync.WaitGroup
	for range 400 {
		wg.Go(func() {
			r, err := q.Consume(context.Background(), "k", 100, PeriodDay, 1)
			if err != nil {
				t.Error(err)
			}
			if r.Allowed {
				admitted.Add(1)
			}
		})
	}
	time.Sleep(50 * time.Millisecond)
	close(release)
	wg.Wait()
	if calls.Load() != 1 || admitted.Load() != 90 {
		t.Fatalf("load called %d times, admitted %d; want 1 and 90", calls.Load(), admitted.Load())
	}
	// A waiter whose context ends gives up with its error.
	block := make(chan struct{})
	defer close(block)
	q2 := NewMemoryQuota(nil, func(ctx context.Context, key string, start time.Time) (int64, error) {
		<-block
		return 0, nil
	})
	go q2.Consume(context.Background(), "k", 1, PeriodDay, 1)
	time.Sleep(20 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := q2.Consume(ctx, "k", 1, PeriodDay, 1); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("waiting with an ending context: %v", err)
	}
}

func TestMemoryQuotaSweep(t *testing.T) {
	clock := newFakeClock(utc("2026-03-31T12:00:00Z"))
	q := NewMemoryQuota(clock.Now, nil)
	ctx := context.Background()
	for i := range 10 {
		q.Consume(ctx, "d"+strconv.Itoa(i), 10, PeriodDay, 1)
		q.Consume(ctx, "m"+strconv.Itoa(i), 10, PeriodMonth, 1)
	}
	q.Sweep()
	if q.Len() != 20 {
		t.Fatalf("Len = %d, want 20", q.Len())
	}
	clock.Set(utc("2026-04-01T00:00:00Z"))
	q.Sweep()
	if q.Len() != 0 {
		t.Fatalf("after the period: Len = %d, want 0", q.Len())
	}
	clock.Set(utc("2026-04-01T10:00:00Z"))
	q.Consume(ctx, "d0", 10, PeriodDay, 1)
	q.Consume(ctx, "m0", 10, PeriodMonth, 1)
	clock.Set(utc("2026-04-02T10:00:00Z"))
	q.Sweep()
	if q.Len() != 1 {
		t.Fatalf("next day: Len = %d, want 1 (the month counter)", q.Len())
	}
}

// TestRedisQuotaKeys checks the key name and its expiry (period end + margin).
func TestRedisQuotaKeys(t *testing.T) {
	client := newRedisClient(t)
	prefix := testPrefix(t, client)
	now := time.Now().UTC()
	q := NewRedisQuota(client, prefix, func() time.Time { return now }, nil)
	ctx := context.Background()
	if _, err := q.Consume(ctx, "k", 10, PeriodDay, 2); err != nil {
		t.Fatal(err)
	}
	start, end := PeriodBounds(PeriodDay, now)
	key := prefix + "k:" + strconv.FormatInt(start.Unix(), 10)
	if n, err := client.Get(ctx, key).Int64(); err != nil || n != 2 {
		t.Fatalf("GET %s = %d, %v; want 2", key, n, err)
	}
	ttl, err := client.TTL(ctx, key).Result()
	want := end.Sub(now) + quotaMargin
	if err != nil || !near(ttl, want, 3*time.Second) {
		t.Fatalf("TTL = %v (%v), want about %v", ttl, err, want)
	}
}

// TestRedisQuotaTwoInstances: two quota stores with their own clients share one quota;
// 400 concurrent requests against 100 admit exactly 100.
func TestRedisQuotaTwoInstances(t *testing.T) {
	a, b := newRedisClient(t), newRedisClient(t)
	prefix := testPrefix(t, a)
	quotas := []Quota{NewRedisQuota(a, prefix, nil, nil), NewRedisQuota(b, prefix, nil, nil)}
	const n, workers = 100, 400
	var admitted atomic.Int64
	var per [2]atomic.Int64
	var wg sync.WaitGroup
	gate := make(chan struct{})
	for i := range workers {
		wg.Go(func() {
			<-gate
			r, err := quotas[i%2].Consume(context.Background(), "shared", n, PeriodMonth, 1)
			if err != nil {
				t.Error(err)
				return
			}
			if r.Allowed {
				admitted.Add(1)
				per[i%2].Add(1)
			}
			if r.Used > n || r.Remaining < 0 {
				t.Errorf("result over the quota: %+v", r)
			}
		})
	}
	close(gate)
	wg.Wait()
	t.Logf("admitted %d (instance A %d, B %d)", admitted.Load(), per[0].Load(), per[1].Load())
	if got := admitted.Load(); got < n || got > n+n/100 {
		t.Fatalf("admitted %d of %d, want %d", got, workers, n)
	}
	if r, err := quotas[1].Peek(context.Background(), "shared", n, PeriodMonth); err != nil || r.Used != n || r.Allowed {
		t.Fatalf("peek after: %+v, %v", r, err)
	}
	if per[0].Load() == 0 || per[1].Load() == 0 {
		t.Errorf("one instance admitted nothing")
	}
}
