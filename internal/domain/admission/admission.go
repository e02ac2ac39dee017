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
	"log/slog"
	"math"
	"time"

	"github.com/latchkey/latchkey/internal/data/ratelimit"
	"github.com/latchkey/latchkey/internal/domain/live"
	"github.com/latchkey/latchkey/internal/domain/usage"
	"github.com/latchkey/latchkey/internal/platform/fault"
	"github.com/latchkey/latchkey/internal/platform/limitspec"
	"github.com/latchkey/latchkey/internal/platform/metrics"
	"github.com/latchkey/latchkey/internal/platform/reqctx"
	"github.com/latchkey/latchkey/internal/platform/viewer"
)

// Events is told about refusals by a limit and about quotas and balances crossing 80 %
// and 100 % (the limit webhooks). Implementations must not block.
type Events interface {
	RateLimited(v *viewer.Viewer, scope string, limit int, window, retryAfter time.Duration)
	QuotaExceeded(v *viewer.Viewer, scope string, quota int64, period ratelimit.Period, resetAt time.Time)
	Threshold(v *viewer.Viewer, typ, scope string, percent int, limit, used int64, periodStart, resetAt time.Time)
}

// Warner streams early warnings to live subscribers (live.Hub).
type Warner interface {
	Warn(tenantID, apiKeyID, ownerID string, w live.Warning)
}

// Service admits operations. Its fields are set once, before use.
type Service struct {
	// Checker holds every limit's counter (memory or Redis) and checks all the limits
	// of an operation at once; nil: nothing is limited.
	Checker ratelimit.Checker
	// FailOpen admits operations when the limit store cannot be reached
	// (RATE_LIMIT_FAIL_OPEN); otherwise they are refused with INTERNAL (reason
	// rate_limiter_unavailable).
	FailOpen bool
	// Recorder stores the usage events (nil: nothing is recorded).
	Recorder *usage.Recorder
	// Metrics, when set, counts operations and refusals.
	Metrics *metrics.Metrics
	// Events, when set, is told about refusals and thresholds (webhooks); Live about
	// thresholds (live subscribers).
	Events Events
	Live   Warner
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Request is one operation to admit.
type Request struct {
	Viewer *viewer.Viewer
	// Cost is what the operation charges the rate limits and the credits (at least
	// 1); a quota counts 1 per operation.
	Cost int
	// CheckOnly checks the limits without charging them (a verification of cost 0).
	CheckOnly bool
	// Charges are named limits of the key to charge too (verifications).
	Charges []limitspec.Charge
	// Event describes the operation for its usage event (name, type, root fields);
	// Admit fills in the caller, the client IP and the time.
	Event usage.Event
	// At is when the operation began, if the caller already read the clock (zero: Admit
	// reads it); the usage event's time and latency count from it.
	At time.Time
}

// Decision is the answer to one Request. Call Done once the operation has ended.
type Decision struct {
	// Err is nil when the operation may run; otherwise it is the refusal to answer
	// with, with extensions.limitScope naming the limit (key, owner, tenant,
	// named:<name>, credits): RATE_LIMITED or QUOTA_EXCEEDED (reason credits for a
	// spent balance) with retryAfterSeconds, BAD_USER_INPUT (reason
	// cost_exceeds_limit: more than a whole limit, or an unknown named limit), INTERNAL
	// (reason rate_limiter_unavailable, when failing closed; reason canceled when the
	// caller's context ended while its check waited, whatever the fail-open policy).
	Err *fault.Error
	// Scope names the limit that refused (with Err) and Outcome is what was recorded.
	Scope   string
	Outcome usage.Outcome
	// RetryAfter is how long until the refused operation could pass (0: unknown, or
	// never for a balance that does not refill).
	RetryAfter time.Duration
	// Limit is the rate limit with the least remaining, for the RateLimit headers
	// (nil: none applied).
	Limit *reqctx.Limit
	// Quota is the quota with the least remaining after the operation (nil: none
	// applied), QuotaLimit its size and QuotaPeriod its period.
	Quota       *ratelimit.QuotaResult
	QuotaLimit  int64
	QuotaPeriod ratelimit.Period
	// Credits is the key's balance after the operation (nil: no credits).
	Credits *int64

	svc      *Service
	ev       usage.Event
	start    time.Time
	recorded bool
	// limit, quota and credits hold what Limit, Quota and Credits point to, in the
	// Decision's own allocation.
	limit   reqctx.Limit
	quota   ratelimit.QuotaResult
	credits int64
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

// Admit checks req against every limit of its caller at once: the key's rate limit
// and quota, its owner's, its tenant's, the named limits it charges and its credits.
// Nothing is charged unless every enforced limit has room. A refused operation is
// recorded at once (Done does nothing more for it). It never returns nil.
func (s *Service) Admit(ctx context.Context, req Request) *Decision {
	d := &Decision{svc: s, start: req.At}
	if d.start.IsZero() {
		d.start = s.now()
	}
	v := req.Viewer
	if Exempt(v) {
		d.recorded = true // nothing to record
		return d
	}
	d.ev = req.Event
	d.ev.TenantID, d.ev.APIKeyID, d.ev.OwnerID, d.ev.IP, d.ev.At = v.TenantID, v.APIKeyID, v.OwnerID, reqctx.ClientIP(ctx), d.start
	d.ev.Uncharged = req.CheckOnly
	if s.Checker == nil {
		return d
	}
	cost, quotaCost := int64(max(req.Cost, 1)), int64(1)
	if req.CheckOnly {
		cost, quotaCost = 0, 0
	}
	sc := getScratch()
	defer sc.put()
	c := &sc.c
	if err := countersOf(c, &req, cost, quotaCost); err != nil {
		var fe *fault.Error
		errors.As(err, &fe)
		d.Err, d.ev.Uncharged = fe, true
		d.Done(usage.OutcomeError)
		return d
	}
	if len(c.list) == 0 {
		return d
	}
	dec, err := s.Checker.Check(ctx, v.TenantID, c.list, sc.res[:0])
	if err != nil && ctx.Err() != nil {
		// The caller went away while its check waited (a client that closed its
		// connection): nobody reads the answer and the store may be fine, so neither
		// an error log nor failing open (as ratelimit.FailSafe does). The check may
		// still have charged, as a call whose reply was lost would.
		d.Err, d.ev.Uncharged = fault.New(fault.Internal, "request canceled").With("reason", "canceled"), true
		d.Done(usage.OutcomeError)
		return d
	}
	if err != nil && !errors.Is(err, ratelimit.ErrInvalidLimit) && s.FailOpen {
		slog.WarnContext(ctx, "limit store unavailable, admitting (fail open)", "err", err)
		return d
	}
	if err != nil {
		slog.ErrorContext(ctx, "limit store unavailable", "err", err)
		d.Err, d.ev.Uncharged = fault.New(fault.Internal, "rate limiter unavailable, try again").With("reason", "rate_limiter_unavailable"), true
		d.Done(usage.OutcomeError)
		return d
	}
	d.report(c, dec)
	if !dec.Allowed {
		i := dec.Binding
		d.Err, d.Outcome = refusal(c, i, dec, cost)
		d.Scope, d.RetryAfter = c.scopes[i], dec.RetryAfter
		s.announceRefusal(v, c, i, dec)
		d.Done(d.Outcome)
		return d
	}
	if !req.CheckOnly {
		s.announceThresholds(v, c, dec, quotaCost, cost)
		if v.CreditsKey != "" && d.Credits != nil {
			d.ev.Credits = &usage.CreditsState{KeyID: v.CreditsKey, Remaining: *d.Credits,
				PeriodStart: creditsPeriodStart(ratelimit.Period(v.CreditsPeriod), d.start)}
		}
	}
	return d
}

// report fills the limit states of d from a check: the rate limit and the quota with
// the least remaining, and the credits.
func (d *Decision) report(c *counters, dec ratelimit.Decision) {
	for i, ctr := range c.list {
		r := dec.Results[i]
		switch ctr.Kind {
		case ratelimit.RateKind:
			if d.Limit == nil || r.Remaining < int64(d.Limit.Remaining) {
				name := c.scopes[i]
				if name == "key" {
					name = "default"
				}
				d.limit = reqctx.Limit{Name: name, Quota: ctr.Limit.Rate, Window: ctr.Limit.Period, Remaining: int(max(r.Remaining, 0)), Reset: r.ResetAfter}
				d.Limit = &d.limit
			}
		case ratelimit.QuotaKind:
			if d.Quota == nil || r.Remaining < d.Quota.Remaining {
				d.quota = ratelimit.QuotaResult{Allowed: r.Allowed, Used: r.Used, Remaining: max(r.Remaining, 0), ResetAt: r.ResetAt}
				d.Quota = &d.quota
				d.QuotaLimit, d.QuotaPeriod = ctr.Quota, ctr.Period
			}
		case ratelimit.CreditsKind:
			d.credits = max(r.Remaining, 0)
			d.Credits = &d.credits
		}
	}
}

// announceRefusal fires the limit webhook of the counter that refused.
func (s *Service) announceRefusal(v *viewer.Viewer, c *counters, i int, dec ratelimit.Decision) {
	if s.Events == nil {
		return
	}
	ctr := c.list[i]
	switch ctr.Kind {
	case ratelimit.RateKind:
		s.Events.RateLimited(v, c.scopes[i], ctr.Limit.Rate, ctr.Limit.Period, dec.RetryAfter)
	case ratelimit.QuotaKind:
		s.Events.QuotaExceeded(v, c.scopes[i], ctr.Quota, ctr.Period, dec.Results[i].ResetAt)
	case ratelimit.CreditsKind:
		s.Events.QuotaExceeded(v, c.scopes[i], v.CreditsGranted, ratelimit.Period(v.CreditsPeriod), dec.Results[i].ResetAt)
	}
}

// thresholds are the percentages of a quota or a balance that are announced.
var thresholds = [...]int{80, 100}

// announceThresholds tells Events and Live about every quota and balance this charge
// took across 80 % or 100 % (each once per period: Events deduplicates).
func (s *Service) announceThresholds(v *viewer.Viewer, c *counters, dec ratelimit.Decision, quotaCost, cost int64) {
	if s.Events == nil && s.Live == nil {
		return
	}
	for i, ctr := range c.list {
		r := dec.Results[i]
		var typ string
		var limit, charged int64
		switch ctr.Kind {
		case ratelimit.QuotaKind:
			typ, limit, charged = "quota.threshold", ctr.Quota, quotaCost
		case ratelimit.CreditsKind:
			typ, limit, charged = "credits.threshold", v.CreditsGranted, cost
		default:
			continue
		}
		if limit <= 0 || charged <= 0 {
			continue
		}
		before := r.Used - charged
		for _, pct := range thresholds {
			mark := int64(pct) * limit
			if before*100 < mark && r.Used*100 >= mark {
				var start time.Time
				if ctr.Kind == ratelimit.QuotaKind {
					start, _ = ratelimit.PeriodBounds(ctr.Period, s.now())
				} else {
					start = creditsPeriodStart(ctr.Period, s.now())
				}
				if s.Events != nil {
					s.Events.Threshold(v, typ, c.scopes[i], pct, limit, r.Used, start, r.ResetAt)
				}
				if s.Live != nil {
					var reset *time.Time
					if !r.ResetAt.IsZero() {
						at := r.ResetAt // a copy: &r.ResetAt would move every r to the heap
						reset = &at
					}
					s.Live.Warn(v.TenantID, v.APIKeyID, v.OwnerID, live.Warning{Type: typ, Scope: c.scopes[i], Threshold: pct, Limit: limit, Used: r.Used, ResetAt: reset})
				}
			}
		}
	}
}

// creditsPeriodStart is the start of the refill period p containing now (UTC): the
// Unix epoch for a balance that never refills.
func creditsPeriodStart(p ratelimit.Period, now time.Time) time.Time {
	if !p.Valid() {
		return time.Unix(0, 0).UTC()
	}
	start, _ := ratelimit.PeriodBounds(p, now)
	return start
}

// Record records one operation of v that was decided without Admit (a verification
// refused before its limits): its usage event with outcome, charging nothing.
func (s *Service) Record(ctx context.Context, v *viewer.Viewer, ev usage.Event, outcome usage.Outcome) {
	d := &Decision{svc: s, start: s.now(), ev: ev}
	d.ev.TenantID, d.ev.APIKeyID, d.ev.OwnerID, d.ev.IP, d.ev.At = v.TenantID, v.APIKeyID, v.OwnerID, reqctx.ClientIP(ctx), d.start
	d.ev.Uncharged = true
	d.Done(outcome)
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
		m.Operation(ev.OperationType, string(ev.Outcome), float64(ev.LatencyMs)/1000)
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
