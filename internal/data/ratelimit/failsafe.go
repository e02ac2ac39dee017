package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"
)

// failLogEvery is the least time between two failure logs of a FailSafe.
const failLogEvery = 10 * time.Second

// FailSafe wraps a Limiter and decides what happens when it fails (its store is down):
// FailOpen=true admits the request (Result{Allowed: true, Limit: burst, Remaining: -1}
// where -1 means unknown), FailOpen=false returns an error wrapping [ErrUnavailable].
// It never panics (a panicking or missing Limiter counts as a failure), counts failures
// ([FailSafe.Failures]) and logs them with log/slog at most once per 10 s.
//
// Errors wrapping [ErrInvalidLimit] are the caller's, not the store's: they are returned
// unchanged and not counted, and so is the error of a call whose context ended (the
// caller went away; nobody waits for the answer, and the store may be fine). Use a
// FailSafe by pointer; do not copy it after first use.
type FailSafe struct {
	Limiter  Limiter
	FailOpen bool
	// Logger receives the failure logs; nil means slog.Default().
	Logger *slog.Logger

	failures atomic.Uint64
	logged   atomic.Uint64 // failures counted when the last log was written
	lastLog  atomic.Int64  // Unix ns of the last log; 0 before the first
	now      func() time.Time
}

// Allow checks the limit with the wrapped Limiter. When that fails it admits (FailOpen)
// or returns an error wrapping [ErrUnavailable] and the cause. Errors wrapping
// [ErrInvalidLimit] are returned unchanged, and so is ctx's error once ctx has ended.
func (f *FailSafe) Allow(ctx context.Context, key string, limit Limit, cost int) (Result, error) {
	if f == nil {
		return Result{}, fmt.Errorf("%w: nil FailSafe", ErrUnavailable)
	}
	res, err := f.call(ctx, key, limit, cost)
	if err == nil {
		return res, nil
	}
	if errors.Is(err, ErrInvalidLimit) {
		return Result{}, err
	}
	if ctxErr := ctx.Err(); ctxErr != nil {
		return Result{}, ctxErr
	}
	f.failures.Add(1)
	f.log(ctx, err)
	if f.FailOpen {
		return Result{Allowed: true, Limit: limit.burst(), Remaining: -1}, nil
	}
	if !errors.Is(err, ErrUnavailable) {
		err = fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return Result{}, err
}

// call runs the inner limiter, turning a panic or a missing limiter into an error.
func (f *FailSafe) call(ctx context.Context, key string, limit Limit, cost int) (res Result, err error) {
	if f.Limiter == nil {
		return Result{}, errors.New("ratelimit: FailSafe has no Limiter")
	}
	defer func() {
		if p := recover(); p != nil {
			res, err = Result{}, fmt.Errorf("ratelimit: limiter panicked: %v", p)
		}
	}()
	return f.Limiter.Allow(ctx, key, limit, cost)
}

// Failures returns how many checks have failed so far (not counting invalid limits).
func (f *FailSafe) Failures() uint64 {
	if f == nil {
		return 0
	}
	return f.failures.Load()
}

// log writes err unless a failure was logged less than failLogEvery ago.
func (f *FailSafe) log(ctx context.Context, err error) {
	now := time.Now
	if f.now != nil {
		now = f.now
	}
	t := now().UnixNano()
	last := f.lastLog.Load()
	if last != 0 && t-last < int64(failLogEvery) {
		return
	}
	if !f.lastLog.CompareAndSwap(last, t) {
		return // another goroutine is logging this one
	}
	total := f.failures.Load()
	since := total - f.logged.Swap(total)
	logger := f.Logger
	if logger == nil {
		logger = slog.Default()
	}
	msg := "rate limiter store unavailable, denying requests (fail closed)"
	if f.FailOpen {
		msg = "rate limiter store unavailable, admitting requests (fail open)"
	}
	logger.ErrorContext(ctx, msg, "err", err, "failures", since, "failures_total", total)
}
