package httpapi

import (
	"context"
	"errors"

	"fmt"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"

	"github.com/latchkey/latchkey/internal/apierr"
	"github.com/latchkey/latchkey/internal/data/ratelimit"
	"github.com/latchkey/latchkey/internal/domain/keys"
	"github.com/latchkey/latchkey/internal/domain/usage"
	"github.com/latchkey/latchkey/internal/platform/metrics"
	"github.com/latchkey/latchkey/internal/platform/viewer"
)

// Guard limits and records every authenticated GraphQL operation: it computes the
// operation's cost from the @rateLimit directives, checks the key's rate limit and
// quota before anything executes, sets the rate-limit headers, and records one usage
// event per operation, allowed or denied.
type Guard struct {
	Limiter  ratelimit.Limiter
	Quota    ratelimit.Quota
	Recorder *usage.Recorder
	// QuotaFailOpen admits operations when the quota store fails (RATE_LIMIT_FAIL_OPEN).
	QuotaFailOpen bool
	// Metrics, when set, counts operations and denials.
	Metrics *metrics.Metrics
	// Checker re-validates the key of operations on long-lived WebSocket connections,
	// so a key revoked after connection_init cannot start new operations.
	Checker interface {
		Recheck(ctx context.Context, v *viewer.Viewer) error
	}
	// OnDenied, when set, is told about every denied operation (webhook events).
	OnDenied func(ctx context.Context, v *viewer.Viewer, outcome usage.Outcome, retryAfter time.Duration)
	// PerItem names fields charged per item of one of their list arguments
	// ("Query.nodes" → "ids"), for generated fields that cannot carry @rateLimit.
	PerItem map[string]string
	Now     func() time.Time

	costs map[string]int // "Type.field" → cost of fields marked @rateLimit
}

// init reads the @rateLimit costs of schema once.
func (g *Guard) init(schema *ast.Schema) {
	g.costs = directiveCosts(schema)
}

// costOf returns the cost of op: root fields cost 1 unless marked, nested fields only
// when marked with @rateLimit; a field listed in PerItem costs that much per item of
// its list argument. Fragments are bounded by the document budget (see docBudget).
func (g *Guard) costOf(op *ast.OperationDefinition, vars map[string]any) int {
	return g.selectionCost(op.SelectionSet, true, vars)
}

func (g *Guard) selectionCost(set ast.SelectionSet, root bool, vars map[string]any) int {
	total := 0
	for _, sel := range set {
		switch s := sel.(type) {
		case *ast.Field:
			if s.Definition == nil || s.Name == "__typename" {
				continue
			}
			coord := s.ObjectDefinition.Name + "." + s.Name
			c, marked := g.costs[coord]
			if !marked && root {
				c = 1
			}
			if arg, ok := g.PerItem[coord]; ok {
				if items, ok := s.ArgumentMap(vars)[arg].([]any); ok {
					c *= max(len(items), 1)
				}
			}
			total += c + g.selectionCost(s.SelectionSet, false, vars)
		case *ast.InlineFragment:
			total += g.selectionCost(s.SelectionSet, root, vars)
		case *ast.FragmentSpread:
			if s.Definition != nil {
				total += g.selectionCost(s.Definition.SelectionSet, root, vars)
			}
		}
	}
	return total
}

// directiveCosts reads every @rateLimit(cost:) of the schema.
func directiveCosts(schema *ast.Schema) map[string]int {
	costs := map[string]int{}
	for _, def := range schema.Types {
		for _, f := range def.Fields {
			d := f.Directives.ForName("rateLimit")
			if d == nil {
				continue
			}
			cost := 1
			if a := d.Arguments.ForName("cost"); a != nil {
				if n, err := strconv.Atoi(a.Value.Raw); err == nil {
					cost = n
				}
			} else if dd := schema.Directives["rateLimit"]; dd != nil {
				if a := dd.Arguments.ForName("cost"); a != nil && a.DefaultValue != nil {
					if n, err := strconv.Atoi(a.DefaultValue.Raw); err == nil {
						cost = n
					}
				}
			}
			costs[def.Name+"."+f.Name] = cost
		}
	}
	return costs
}

func (g *Guard) now() time.Time {
	if g.Now != nil {
		return g.Now()
	}
	return time.Now()
}

// Around is the gqlgen AroundOperations middleware.
func (g *Guard) Around(ctx context.Context, next graphql.OperationHandler) graphql.ResponseHandler {
	v := viewer.FromContext(ctx)
	if v != nil && g.Checker != nil && onWebSocket(ctx) {
		// Verified once at connection_init: a key revoked since then (on any
		// instance) must not start another operation on the open connection.
		if err := g.Checker.Recheck(ctx, v); err != nil {
			e := apierr.New(apierr.Internal, "temporarily unavailable")
			var ae *keys.AuthError
			if errors.As(err, &ae) {
				e = ae.APIError()
			}
			return graphql.OneShot(&graphql.Response{Errors: gqlerror.List{e.GQL()}})
		}
	}
	if v == nil || v.TenantID == "" {
		// Anonymous introspection and platform admins are neither limited nor recorded.
		return next(ctx)
	}
	start := g.now()
	rc := graphql.GetOperationContext(ctx)
	op := rc.Operation
	ev := usage.Event{
		TenantID:      v.TenantID,
		APIKeyID:      v.APIKeyID,
		OperationName: rc.OperationName,
		IP:            ClientIP(ctx),
		At:            start,
	}
	if op != nil {
		if ev.OperationName == "" {
			ev.OperationName = op.Name
		}
		ev.OperationType = string(op.Operation)
		for _, sel := range op.SelectionSet {
			if f, ok := sel.(*ast.Field); ok {
				ev.RootFields = append(ev.RootFields, f.Name)
			}
		}
	}
	if denied := g.check(ctx, v, op, rc.Variables, &ev); denied != nil {
		ev.LatencyMs = int(g.now().Sub(start).Milliseconds())
		g.record(ev)
		return graphql.OneShot(&graphql.Response{Errors: gqlerror.List{denied}})
	}
	if op != nil && op.Operation == ast.Subscription {
		// A subscription is one operation, counted when it is admitted: its first
		// response may come much later (or never).
		ev.Outcome = usage.OutcomeOK
		g.record(ev)
		return next(ctx)
	}
	handler := next(ctx)
	recorded := false
	return func(ctx context.Context) *graphql.Response {
		resp := handler(ctx)
		if !recorded {
			recorded = true
			ev.LatencyMs = int(g.now().Sub(start).Milliseconds())
			ev.Outcome = outcomeOf(resp)
			g.record(ev)
		}
		return resp
	}
}

// check applies the rate limit and the quota. It returns the error to answer with when
// the operation is denied, after setting the status and headers.
func (g *Guard) check(ctx context.Context, v *viewer.Viewer, op *ast.OperationDefinition, vars map[string]any, ev *usage.Event) *gqlerror.Error {
	if g.Limiter != nil && v.RateLimit > 0 && op != nil {
		cost := g.costOf(op, vars)
		if cost < 1 {
			cost = 1
		}
		limit := ratelimit.Limit{Rate: v.RateLimit, Period: v.RateWindow}
		if cost > v.RateLimit {
			// More than the whole burst: no wait would ever admit it, so it is the
			// request that is wrong, not its timing. Nothing is charged.
			SetStatus(ctx, http.StatusBadRequest)
			ev.Outcome = usage.OutcomeError
			return apierr.New(apierr.BadUserInput, fmt.Sprintf("operation cost %d exceeds the key's limit of %d requests per %s: split it", cost, limit.Rate, limit.Period)).
				With("reason", "cost_exceeds_limit").With("cost", cost).With("limit", limit.Rate).GQL()
		}
		res, err := g.Limiter.Allow(ctx, v.APIKeyID, limit, cost)
		if err != nil {
			slog.ErrorContext(ctx, "rate limiter unavailable", "err", err)
			SetStatus(ctx, http.StatusServiceUnavailable)
			setHeader(ctx, "Retry-After", "1")
			ev.Outcome = usage.OutcomeError
			return apierr.New(apierr.Internal, "rate limiter unavailable, try again").With("reason", "rate_limiter_unavailable").GQL()
		}
		g.setHeaders(ctx, limit, res)
		if !res.Allowed {
			secs := ceilSeconds(res.RetryAfter)
			SetStatus(ctx, http.StatusTooManyRequests)
			setHeader(ctx, "Retry-After", strconv.Itoa(secs))
			ev.Outcome = usage.OutcomeRateLimited
			if g.OnDenied != nil {
				g.OnDenied(ctx, v, usage.OutcomeRateLimited, res.RetryAfter)
			}
			return apierr.New(apierr.RateLimited, fmt.Sprintf("rate limit of %d requests per %s exceeded (operation cost %d)", limit.Rate, limit.Period, cost)).
				With("retryAfterSeconds", secs).With("cost", cost).GQL()
		}
	}
	if g.Quota != nil && v.Quota > 0 {
		res, err := g.Quota.Consume(ctx, v.QuotaKey, v.Quota, ratelimit.Period(v.QuotaPeriod), 1)
		if err != nil && g.QuotaFailOpen {
			slog.WarnContext(ctx, "quota store unavailable, admitting (fail open)", "err", err)
			return nil
		}
		if err != nil {
			slog.ErrorContext(ctx, "quota store unavailable", "err", err)
			SetStatus(ctx, http.StatusServiceUnavailable)
			ev.Outcome = usage.OutcomeError
			return apierr.New(apierr.Internal, "quota store unavailable, try again").With("reason", "quota_unavailable").GQL()
		}
		if !res.Allowed {
			wait := res.ResetAt.Sub(g.now())
			secs := ceilSeconds(wait)
			SetStatus(ctx, http.StatusTooManyRequests)
			setHeader(ctx, "Retry-After", strconv.Itoa(secs))
			ev.Outcome = usage.OutcomeQuotaExceeded
			if g.OnDenied != nil {
				g.OnDenied(ctx, v, usage.OutcomeQuotaExceeded, wait)
			}
			return apierr.New(apierr.QuotaExceeded, fmt.Sprintf("quota of %d requests per %s exhausted", v.Quota, v.QuotaPeriod)).
				With("retryAfterSeconds", secs).With("resetAt", res.ResetAt.UTC().Format(time.RFC3339)).GQL()
		}
	}
	return nil
}

// setHeaders writes the IETF RateLimit-Policy / RateLimit fields and the X-RateLimit-*
// headers older clients read (X-RateLimit-Reset in Unix seconds).
func (g *Guard) setHeaders(ctx context.Context, limit ratelimit.Limit, res ratelimit.Result) {
	h := Header(ctx)
	if h == nil {
		return
	}
	reset := ceilSeconds(res.ResetAfter)
	remaining := max(res.Remaining, 0)
	// Header values are built in one buffer and one slice array: this runs on every
	// request, so it allocates twice instead of ten times.
	var buf [160]byte
	b := append(buf[:0], `"default";q=`...)
	b = strconv.AppendInt(b, int64(limit.Rate), 10)
	b = append(b, ";w="...)
	b = strconv.AppendInt(b, int64(limit.Period/time.Second), 10)
	e1 := len(b)
	b = append(b, `"default";r=`...)
	b = strconv.AppendInt(b, int64(remaining), 10)
	b = append(b, ";t="...)
	b = strconv.AppendInt(b, int64(reset), 10)
	e2 := len(b)
	b = strconv.AppendInt(b, int64(limit.Rate), 10)
	e3 := len(b)
	b = strconv.AppendInt(b, int64(remaining), 10)
	e4 := len(b)
	b = strconv.AppendInt(b, g.now().Add(time.Duration(reset)*time.Second).Unix(), 10)
	all := string(b)
	vals := [5]string{all[:e1], all[e1:e2], all[e2:e3], all[e3:e4], all[e4:]}
	v := vals[:] // one array behind the five header slices
	h["Ratelimit-Policy"] = v[0:1:1]
	h["Ratelimit"] = v[1:2:2]
	h["X-Ratelimit-Limit"] = v[2:3:3]
	h["X-Ratelimit-Remaining"] = v[3:4:4]
	h["X-Ratelimit-Reset"] = v[4:5:5]
}

func (g *Guard) record(ev usage.Event) {
	if g.Metrics != nil {
		g.Metrics.Operations.WithLabelValues(ev.OperationType, string(ev.Outcome)).Inc()
		g.Metrics.OperationSeconds.WithLabelValues(ev.OperationType).Observe(float64(ev.LatencyMs) / 1000)
		if ev.Outcome == usage.OutcomeRateLimited || ev.Outcome == usage.OutcomeQuotaExceeded {
			g.Metrics.RateLimited.WithLabelValues(string(ev.Outcome)).Inc()
		}
	}
	if g.Recorder != nil {
		g.Recorder.Record(ev)
	}
}

// outcomeOf classifies a response: forbidden when a field was refused for a missing
// scope, error for any other error, ok otherwise.
func outcomeOf(resp *graphql.Response) usage.Outcome {
	if resp == nil || len(resp.Errors) == 0 {
		return usage.OutcomeOK
	}
	for _, e := range resp.Errors {
		if e.Extensions["code"] == apierr.Forbidden {
			return usage.OutcomeForbidden
		}
	}
	return usage.OutcomeError
}

func setHeader(ctx context.Context, k, v string) {
	if h := Header(ctx); h != nil {
		h.Set(k, v)
	}
}

// ceilSeconds rounds up, so that Retry-After is never earlier than the real reset.
func ceilSeconds(d time.Duration) int {
	if d <= 0 {
		return 0
	}
	return int(math.Ceil(d.Seconds()))
}
