package ratelimit

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/latchkey/latchkey/internal/data/testdb"
)

type panicLimiter struct{}

func (panicLimiter) Allow(context.Context, string, Limit, int) (Result, error) { panic("boom") }

type errLimiter struct{ err error }

func (l errLimiter) Allow(context.Context, string, Limit, int) (Result, error) {
	return Result{}, l.err
}

// syncBuffer is a log sink safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) lines() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.FieldsFunc(s.b.String(), func(r rune) bool { return r == '\n' })
}

func TestFailSafe(t *testing.T) {
	dead := deadClient(t)
	live := newRedisClient(t)
	prefix := testPrefix(t, live)
	limit := Limit{Rate: 5, Period: time.Minute}
	plain := errors.New("plain failure")
	cases := []struct {
		name     string
		inner    Limiter
		failOpen bool
		isErr    error // an error the result must wrap as well as ErrUnavailable
	}{
		{"dead redis, fail closed", NewRedis(dead, prefix), false, nil},
		{"dead redis, fail open", NewRedis(dead, prefix), true, nil},
		{"panicking limiter, fail closed", panicLimiter{}, false, nil},
		{"panicking limiter, fail open", panicLimiter{}, true, nil},
		{"no limiter, fail closed", nil, false, nil},
		{"no limiter, fail open", nil, true, nil},
		{"plain error, fail closed", errLimiter{plain}, false, plain},
		{"plain error, fail open", errLimiter{plain}, true, nil},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var logs syncBuffer
			f := &FailSafe{Limiter: c.inner, FailOpen: c.failOpen, Logger: slog.New(slog.NewTextHandler(&logs, nil))}
			ctx := context.Background()
			for n := 1; n <= 3; n++ {
				start := time.Now()
				r, err := f.Allow(ctx, "k", limit, 1)
				if d := time.Since(start); d > 2*time.Second {
					t.Fatalf("check %d took %v", n, d)
				}
				if c.failOpen {
					if err != nil || r != (Result{Allowed: true, Limit: 5, Remaining: -1}) {
						t.Fatalf("fail open: %+v, %v", r, err)
					}
				} else {
					if !errors.Is(err, ErrUnavailable) || r.Allowed {
						t.Fatalf("fail closed: %+v, %v, want ErrUnavailable", r, err)
					}
					if c.isErr != nil && !errors.Is(err, c.isErr) {
						t.Fatalf("err %v does not wrap %v", err, c.isErr)
					}
				}
				if got := f.Failures(); got != uint64(n) {
					t.Fatalf("Failures() = %d, want %d", got, n)
				}
			}
			if l := logs.lines(); len(l) != 1 {
				t.Fatalf("logged %d lines, want 1 (at most once per 10s):\n%s", len(l), strings.Join(l, "\n"))
			}
			// Recovery: the store is back.
			f.Limiter = NewRedis(live, prefix)
			key := "recovered" + string(rune('a'+i))
			r, err := f.Allow(ctx, key, limit, 1)
			if err != nil || !r.Allowed || r.Remaining != 4 {
				t.Fatalf("after recovery: %+v, %v", r, err)
			}
			if got := f.Failures(); got != 3 {
				t.Fatalf("Failures() after recovery = %d, want 3", got)
			}
		})
	}
}

func TestFailSafeLogsAtMostEvery10s(t *testing.T) {
	clock := newFakeClock(epoch)
	var logs syncBuffer
	f := &FailSafe{Limiter: errLimiter{errors.New("down")}, Logger: slog.New(slog.NewTextHandler(&logs, nil)), now: clock.Now}
	ctx := context.Background()
	limit := Limit{Rate: 1, Period: time.Second}
	steps := []struct {
		advance time.Duration
		lines   int
	}{
		{0, 1}, {time.Second, 1}, {8 * time.Second, 1}, {999 * time.Millisecond, 1},
		{time.Millisecond, 2}, {time.Second, 2}, {time.Minute, 3},
	}
	for i, s := range steps {
		clock.Advance(s.advance)
		f.Allow(ctx, "k", limit, 1)
		if l := logs.lines(); len(l) != s.lines {
			t.Fatalf("step %d: %d lines, want %d:\n%s", i, len(l), s.lines, strings.Join(l, "\n"))
		}
	}
	l := logs.lines()
	if !strings.Contains(l[1], "failures=4 ") || !strings.Contains(l[1], "failures_total=5") {
		t.Errorf("second log line should count the 4 failures since the first: %s", l[1])
	}
	if f.Failures() != 7 {
		t.Errorf("Failures() = %d, want 7", f.Failures())
	}
	// Concurrent failures never panic or race, and log once per 10s.
	var wg sync.WaitGroup
	for range 100 {
		wg.Go(func() { f.Allow(ctx, "k", limit, 1) })
	}
	wg.Wait()
	if len(logs.lines()) != 3 || f.Failures() != 107 {
		t.Errorf("after 100 concurrent failures: %d lines, %d failures", len(logs.lines()), f.Failures())
	}
}

func TestFailSafePassesThrough(t *testing.T) {
	f := &FailSafe{Limiter: NewMemory(nil), FailOpen: true}
	ctx := context.Background()
	limit := Limit{Rate: 2, Period: time.Hour}
	for i, want := range []Result{ok(2, 1, 30*time.Minute), ok(2, 0, time.Hour), denied(2, 0, 30*time.Minute, time.Hour)} {
		r, err := f.Allow(ctx, "k", limit, 1)
		if err != nil || !near(r.ResetAfter, want.ResetAfter, time.Second) || !near(r.RetryAfter, want.RetryAfter, time.Second) ||
			r.Allowed != want.Allowed || r.Remaining != want.Remaining {
			t.Fatalf("check %d: %+v, %v; want %+v", i, r, err, want)
		}
	}
	if _, err := f.Allow(ctx, "k", Limit{}, 1); !errors.Is(err, ErrInvalidLimit) {
		t.Fatalf("invalid limit: %v", err)
	}
	if f.Failures() != 0 {
		t.Fatalf("Failures() = %d, want 0", f.Failures())
	}
	var nilSafe *FailSafe
	if _, err := nilSafe.Allow(ctx, "k", limit, 1); !errors.Is(err, ErrUnavailable) || nilSafe.Failures() != 0 {
		t.Fatalf("nil FailSafe: %v", err)
	}
}

// A call whose caller went away before the store answered (a client that closed its
// connection) carries the context's error: it is no outage, so a FailSafe neither
// counts it nor logs it nor admits it.
func TestCallerGoneIsNoOutage(t *testing.T) {
	// The call's read gives up after a second, well after the caller went away.
	client := redis.NewClient(&redis.Options{Addr: testdb.SilentRedisAddr(t), ReadTimeout: time.Second, MaxRetries: -1})
	t.Cleanup(func() { client.Close() })
	gone := func() context.Context {
		ctx, cancel := context.WithCancel(context.Background())
		t.Cleanup(cancel)
		time.AfterFunc(50*time.Millisecond, cancel)
		return ctx
	}
	for _, failOpen := range []bool{false, true} {
		var logs syncBuffer
		f := &FailSafe{Limiter: NewRedis(client, "gone:"), FailOpen: failOpen, Logger: slog.New(slog.NewTextHandler(&logs, nil))}
		r, err := f.Allow(gone(), "k", Limit{Rate: 5, Period: time.Minute}, 1)
		if !errors.Is(err, context.Canceled) || r.Allowed {
			t.Errorf("failOpen=%v: %+v, %v; want context.Canceled, not admitted", failOpen, r, err)
		}
		if f.Failures() != 0 || len(logs.lines()) != 0 {
			t.Errorf("failOpen=%v: %d failures counted, logged %q", failOpen, f.Failures(), logs.lines())
		}
	}
}
