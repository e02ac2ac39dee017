// Package admission decides, for a caller and a cost, whether an operation may run: the
// caller's rate limit and quota, and what happens when their store is down (the
// fail-open policy), in one place. It also records what happened: one usage event per
// operation, admitted or refused, and the limit webhooks of refusals.
//
// Every entry point calls it the same way: Admit before anything runs, then Done with
// the outcome. The GraphQL interceptor (graph/gqlserver) is one; the transport only
// turns a decision into HTTP status and headers.
package admission

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"time"

	"github.com/latchkey/latchkey/internal/data/ratelimit"
	"github.com/latchkey/latchkey/internal/domain/usage"
	"github.com/latchkey/latchkey/internal/platform/fault"
	"github.com/latchkey/latchkey/internal/platform/metrics"
	"github.com/latchkey/latchkey/internal/platform/reqctx"
	"github.com/latchkey/latchkey/internal/platform/viewer"
)

// Events is told about refusals by limit (limit webhooks). Implementations must not block.
type Events interface {
	RateLimited(v *viewer.Viewer, retryAfter time.Duration)
	QuotaExceeded(v *viewer.Viewer, resetAt time.Time)
}

// Service admits operations. Its fields are set once, before use.
type Service struct {
	// Limiter and Quota hold the counters (memory or Redis); nil disables them.
	Limiter ratelimit.Limiter
	Quota   ratelimit.Quota
	// FailOpen admits operations when the limiter or the quota store cannot be
	// reached (RATE_LIMIT_FAIL_OPEN); otherwise they are refused with INTERNAL
	// (reason rate_limiter_unavailable or quota_unavailable).
	FailOpen bool
	// Recorder stores the usage events (nil: nothing is recorded).
	Recorder *usage.Recorder
	// Metrics, when set, counts operations and refusals.
	Metrics *metrics.Metrics
	// Events, when set, is told about refusals by limit.
	Events Events
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Request is one operation to admit.
type Request struct {
	Viewer *viewer.Viewer
	// Cost is what the operation charges the rate limit (at least 1); a quota
	// counts 1 per operation.
	Cost int
	// CheckOnly checks the limits without charging them (a verification of cost 0).
	CheckOnly bool
	// Event describes the operation for its usage event (name, type, root fields);
	// Admit fills in the caller, the client IP and the time.
	Event usage.Event
}

// Decision is the answer to one Request. Call Done once the operation has ended.
type Decision struct {
	// Err is nil when the operation may run; otherwise it is the refusal to answer
	// with: RATE_LIMITED or QUOTA_EXCEEDED (with retryAfterSeconds), BAD_USER_INPUT
	// (reason cost_exceeds_limit: more than the whole limit), INTERNAL (reason
	// rate_limiter_unavailable or quota_unavailable, when failing closed).
	Err *fault.Error
	// Limit is the rate limit that applied, for the RateLimit headers (nil: none).
	Limit *reqctx.Limit
	// Quota is the quota state after the operation (nil: no quota applied).
	Quota *ratelimit.QuotaResult
	// QuotaLimit is the quota's size per period (with Quota).
	QuotaLimit int64

	svc      *Service
	ev       usage.Event
	start    time.Time
	recorded bool
}

// Exempt reports whether v is neither limited nor recorded: platform admins, and
// anonymous callers (who only introspect).
func Exempt(v *viewer.Viewer) bool { return v == nil || v.TenantID == "" }

func (s *Service) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// Admit checks req against its caller's rate limit and quota. A refused operation is
// recorded at once (Done does nothing more for it); nothing is charged for it. It
// never returns nil.
func (s *Service) Admit(ctx context.Context, req Request) *Decision {
	d := &Decision{svc: s, start: s.now()}
	v := req.Viewer
	if Exempt(v) {
		d.recorded = true // nothing to record
		return d
	}
	d.ev = req.Event
	d.ev.TenantID, d.ev.APIKeyID, d.ev.IP, d.ev.At = v.TenantID, v.APIKeyID, reqctx.ClientIP(ctx), d.start
	d.ev.Uncharged = req.CheckOnly
	cost := max(req.Cost, 1)
	if req.CheckOnly {
		cost = 0
	}
	if err, outcome := s.check(ctx, v, cost, d); err != nil {
		d.Err = err
		d.ev.Uncharged = d.ev.Uncharged || outcome == usage.OutcomeError // refused before any limit charged
		d.Done(outcome)
	}
	return d
}

// Record records one operation of v that was decided without Admit (a verification
// refused before its limits): its usage event with outcome, charging nothing.
func (s *Service) Record(ctx context.Context, v *viewer.Viewer, ev usage.Event, outcome usage.Outcome) {
	d := &Decision{svc: s, start: s.now(), ev: ev}
	d.ev.TenantID, d.ev.APIKeyID, d.ev.IP, d.ev.At = v.TenantID, v.APIKeyID, reqctx.ClientIP(ctx), d.start
	d.ev.Uncharged = true
	d.Done(outcome)
}

// check applies the rate limit and the quota; it returns the refusal and its outcome.
func (s *Service) check(ctx context.Context, v *viewer.Viewer, cost int, d *Decision) (*fault.Error, usage.Outcome) {
	if s.Limiter != nil && v.RateLimit > 0 {
		limit := ratelimit.Limit{Rate: v.RateLimit, Period: v.RateWindow}
		if cost > v.RateLimit && cost > 0 {
			// More than the whole burst: no wait would ever admit it, so it is the
			// request that is wrong, not its timing. Nothing is charged; the state
			// is reported all the same.
			if res, err := s.Limiter.Allow(ctx, v.APIKeyID, limit, 0); err == nil {
				d.Limit = &reqctx.Limit{Name: "default", Quota: limit.Rate, Window: limit.Period, Remaining: max(res.Remaining, 0), Reset: res.ResetAfter}
			}
			return fault.New(fault.BadUserInput, fmt.Sprintf("operation cost %d exceeds the key's limit of %d requests per %s: split it", cost, limit.Rate, limit.Period)).
				With("reason", "cost_exceeds_limit").With("cost", cost).With("limit", limit.Rate), usage.OutcomeRateLimited
		}
		res, err := s.Limiter.Allow(ctx, v.APIKeyID, limit, cost)
		switch {
		case err != nil && !errors.Is(err, ratelimit.ErrInvalidLimit) && s.FailOpen:
			slog.WarnContext(ctx, "rate limiter unavailable, admitting (fail open)", "err", err)
		case err != nil:
			slog.ErrorContext(ctx, "rate limiter unavailable", "err", err)
			return fault.New(fault.Internal, "rate limiter unavailable, try again").With("reason", "rate_limiter_unavailable"), usage.OutcomeError
		default:
			d.Limit = &reqctx.Limit{Name: "default", Quota: limit.Rate, Window: limit.Period, Remaining: max(res.Remaining, 0), Reset: res.ResetAfter}
			if cost == 0 && res.Remaining < 1 {
				// A check without charging answers whether one unit would pass now.
				interval := limit.Period / time.Duration(limit.Rate)
				res.Allowed, res.RetryAfter = false, max(res.ResetAfter+interval-time.Duration(limit.Rate)*interval, interval)
			}
			if !res.Allowed {
				secs := ceilSeconds(res.RetryAfter)
				if s.Events != nil {
					s.Events.RateLimited(v, res.RetryAfter)
				}
				return fault.New(fault.RateLimited, fmt.Sprintf("rate limit of %d requests per %s exceeded (operation cost %d)", limit.Rate, limit.Period, cost)).
					With("retryAfterSeconds", secs).With("cost", cost), usage.OutcomeRateLimited
			}
		}
	}
	if s.Quota != nil && v.Quota > 0 {
		var res ratelimit.QuotaResult
		var err error
		if cost == 0 {
			res, err = s.Quota.Peek(ctx, v.QuotaKey, v.Quota, ratelimit.Period(v.QuotaPeriod))
		} else {
			res, err = s.Quota.Consume(ctx, v.QuotaKey, v.Quota, ratelimit.Period(v.QuotaPeriod), 1)
		}
		if err == nil {
			d.Quota, d.QuotaLimit = &res, v.Quota
		}
		switch {
		case err != nil && s.FailOpen:
			slog.WarnContext(ctx, "quota store unavailable, admitting (fail open)", "err", err)
		case err != nil:
			slog.ErrorContext(ctx, "quota store unavailable", "err", err)
			return fault.New(fault.Internal, "quota store unavailable, try again").With("reason", "quota_unavailable"), usage.OutcomeError
		case !res.Allowed:
			secs := ceilSeconds(res.ResetAt.Sub(s.now()))
			if s.Events != nil {
				s.Events.QuotaExceeded(v, res.ResetAt)
			}
			return fault.New(fault.QuotaExceeded, fmt.Sprintf("quota of %d requests per %s exhausted", v.Quota, v.QuotaPeriod)).
				With("retryAfterSeconds", secs).With("resetAt", res.ResetAt.UTC().Format(time.RFC3339)), usage.OutcomeQuotaExceeded
		}
	}
	return nil, ""
}

// Done records the operation's usage event with outcome and the time since Admit. Only
// the first call records; it does nothing for exempt callers.
func (d *Decision) Done(outcome usage.Outcome) {
	if d == nil || d.recorded {
		return
	}
	d.recorded = true
	ev := d.ev
	ev.Outcome = outcome
	ev.LatencyMs = int(d.svc.now().Sub(d.start).Milliseconds())
	if m := d.svc.Metrics; m != nil {
		m.Operations.WithLabelValues(ev.OperationType, string(ev.Outcome)).Inc()
		m.OperationSeconds.WithLabelValues(ev.OperationType).Observe(float64(ev.LatencyMs) / 1000)
		if ev.Outcome == usage.OutcomeRateLimited || ev.Outcome == usage.OutcomeQuotaExceeded {
			m.RateLimited.WithLabelValues(string(ev.Outcome)).Inc()
		}
	}
	d.svc.Recorder.Record(ev)
}

// ceilSeconds rounds up, so that a Retry-After is never earlier than the real reset.
func ceilSeconds(d time.Duration) int {
	if d <= 0 {
		return 0
	}
	return int(math.Ceil(d.Seconds()))
}
