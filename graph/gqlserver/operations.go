package gqlserver

import (
	"context"
	"errors"
	"strconv"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"

	"github.com/latchkey/latchkey/graph/gqlerr"
	"github.com/latchkey/latchkey/internal/domain/admission"
	"github.com/latchkey/latchkey/internal/domain/keys"
	"github.com/latchkey/latchkey/internal/domain/usage"
	"github.com/latchkey/latchkey/internal/platform/fault"
	"github.com/latchkey/latchkey/internal/platform/reqctx"
	"github.com/latchkey/latchkey/internal/platform/viewer"
)

// operations is the interceptor of every GraphQL operation. It re-checks the key of
// operations on a WebSocket (verified once at connection_init), computes the cost of
// the operation from the @rateLimit directives, asks the admission service whether it
// may run, reports the decision to the transport (status, RateLimit headers) and tells
// the admission service how the operation ended.
type operations struct {
	admission *admission.Service
	checker   Checker
	perItem   map[string]string
	costs     map[string]int // "Type.field" → cost of fields marked @rateLimit
}

// Checker re-validates the key of a viewer (keys.Verifier.Recheck).
type Checker interface {
	Recheck(ctx context.Context, v *viewer.Viewer) error
}

func (o *operations) around(ctx context.Context, next graphql.OperationHandler) graphql.ResponseHandler {
	v := viewer.FromContext(ctx)
	if v != nil && o.checker != nil && reqctx.OnWebSocket(ctx) {
		// A key revoked since connection_init (on any instance) must not start
		// another operation on the open connection.
		if err := o.checker.Recheck(ctx, v); err != nil {
			e := fault.New(fault.Internal, "temporarily unavailable")
			var ae *keys.AuthError
			if errors.As(err, &ae) {
				e = ae.APIError()
			}
			return graphql.OneShot(&graphql.Response{Errors: gqlerror.List{gqlerr.From(e)}})
		}
	}
	if o.admission == nil || admission.Exempt(v) {
		return next(ctx)
	}
	rc := graphql.GetOperationContext(ctx)
	op := rc.Operation
	if op != nil && o.free(op) {
		// Every root field charges its caller nothing and records its own usage
		// (verifyApiKey): no second event for the operation.
		return next(ctx)
	}
	req := admission.Request{Viewer: v, Event: usage.Event{OperationName: rc.OperationName}}
	if op != nil {
		if req.Event.OperationName == "" {
			req.Event.OperationName = op.Name
		}
		req.Event.OperationType = string(op.Operation)
		for _, sel := range op.SelectionSet {
			if f, ok := sel.(*ast.Field); ok {
				req.Event.RootFields = append(req.Event.RootFields, f.Name)
			}
		}
		req.Cost = o.costOf(op, rc.Variables)
	}
	d := o.admission.Admit(ctx, req)
	if d.Limit != nil {
		reqctx.ReportLimit(ctx, *d.Limit)
	}
	if d.Err != nil {
		reqctx.Refuse(ctx, d.Err)
		return graphql.OneShot(&graphql.Response{Errors: gqlerror.List{gqlerr.From(d.Err)}})
	}
	if op != nil && op.Operation == ast.Subscription {
		// A subscription is one operation, counted when it is admitted: its first
		// response may come much later (or never).
		d.Done(usage.OutcomeOK)
		return next(ctx)
	}
	handler := next(ctx)
	return func(ctx context.Context) *graphql.Response {
		resp := handler(ctx)
		d.Done(outcomeOf(resp))
		return resp
	}
}

// free reports whether every root field of op is marked @rateLimit(cost: 0).
func (o *operations) free(op *ast.OperationDefinition) bool {
	n := 0
	for _, sel := range op.SelectionSet {
		f, ok := sel.(*ast.Field)
		if !ok {
			return false // fragments at the root: count them the usual way
		}
		if f.Name == "__typename" {
			continue
		}
		if f.ObjectDefinition == nil {
			return false
		}
		if c, marked := o.costs[f.ObjectDefinition.Name+"."+f.Name]; !marked || c != 0 {
			return false
		}
		n++
	}
	return n > 0
}

// costOf returns the cost of op: root fields cost 1 unless marked, nested fields only
// when marked with @rateLimit; a field listed in perItem costs that much per item of
// its list argument. Fragments are bounded by the document budget (see docBudget).
func (o *operations) costOf(op *ast.OperationDefinition, vars map[string]any) int {
	return o.selectionCost(op.SelectionSet, true, vars)
}

func (o *operations) selectionCost(set ast.SelectionSet, root bool, vars map[string]any) int {
	total := 0
	for _, sel := range set {
		switch s := sel.(type) {
		case *ast.Field:
			if s.Definition == nil || s.Name == "__typename" {
				continue
			}
			coord := s.ObjectDefinition.Name + "." + s.Name
			c, marked := o.costs[coord]
			if !marked && root {
				c = 1
			}
			if arg, ok := o.perItem[coord]; ok {
				if items, ok := s.ArgumentMap(vars)[arg].([]any); ok {
					c *= max(len(items), 1)
				}
			}
			total += c + o.selectionCost(s.SelectionSet, false, vars)
		case *ast.InlineFragment:
			total += o.selectionCost(s.SelectionSet, root, vars)
		case *ast.FragmentSpread:
			if s.Definition != nil {
				total += o.selectionCost(s.Definition.SelectionSet, root, vars)
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

// outcomeOf classifies a response: forbidden when a field was refused for a missing
// scope, error for any other error, ok otherwise.
func outcomeOf(resp *graphql.Response) usage.Outcome {
	if resp == nil || len(resp.Errors) == 0 {
		return usage.OutcomeOK
	}
	for _, e := range resp.Errors {
		if e.Extensions["code"] == fault.Forbidden {
			return usage.OutcomeForbidden
		}
	}
	return usage.OutcomeError
}
