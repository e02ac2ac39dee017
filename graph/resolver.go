// Package graph holds the GraphQL resolvers. Resolvers are thin: they translate
// arguments, call the domain packages under internal/, and never filter by tenant
// (the ent privacy rules do).
package graph

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"

	"entgo.io/contrib/entgql"
	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/handler/transport"
	"github.com/vektah/gqlparser/v2/ast"

	"github.com/latchkey/latchkey/ent"
	"github.com/latchkey/latchkey/ent/apikey"
	"github.com/latchkey/latchkey/graph/generated"
	"github.com/latchkey/latchkey/graph/gqlerr"
	"github.com/latchkey/latchkey/graph/model"
	"github.com/latchkey/latchkey/internal/domain/admission"
	"github.com/latchkey/latchkey/internal/domain/keys"
	"github.com/latchkey/latchkey/internal/domain/live"
	"github.com/latchkey/latchkey/internal/domain/owners"
	"github.com/latchkey/latchkey/internal/domain/plan"
	"github.com/latchkey/latchkey/internal/domain/verify"
	"github.com/latchkey/latchkey/internal/domain/webhook"
	"github.com/latchkey/latchkey/internal/platform/fault"
	"github.com/latchkey/latchkey/internal/platform/logid"
	"github.com/latchkey/latchkey/internal/platform/viewer"
)

// Resolver is the dependency root of the resolvers.
type Resolver struct {
	Client *ent.Client
	// Dialect is the database's ("sqlite" or "postgres"), for the few queries that
	// group by an expression.
	Dialect string
	Keys    *keys.Manager
	// Admission reports keys' quotas and credit balances as the limit store holds them
	// (nil: quotaUsage is null, credits are the stored ones).
	Admission *admission.Service
	// Live serves the usage subscriptions.
	Live *live.Hub
	// Webhooks manages webhook endpoints (and wakes the dispatchers after commits).
	Webhooks *webhook.Manager
	// Verify verifies consumer keys.
	Verify *verify.Service
	// Plans resolves tenants' plans and changes them.
	Plans *plan.Catalog
	// Owners changes owner records.
	Owners *owners.Service
}

// NewSchema returns the executable schema with its directives.
func NewSchema(r *Resolver) graphql.ExecutableSchema {
	cfg := generated.Config{
		Resolvers:  r,
		Directives: generated.DirectiveRoot{Auth: Auth, RateLimit: RateLimit},
	}
	setComplexity(&cfg.Complexity)
	return generated.NewExecutableSchema(cfg)
}

// PerItemCosts are the fields that cost their rate-limit cost once per item of a list
// argument. entgql generates them, so they cannot carry @rateLimit: `nodes` costs one
// per id, like fetching each node on its own.
var PerItemCosts = map[string]string{"Query.nodes": "ids"}

// Auth implements @auth(scopes, admin): the field runs only for a viewer holding
// every scope (admins hold all). It returns UNAUTHENTICATED without a viewer and
// FORBIDDEN otherwise.
func Auth(ctx context.Context, _ any, next graphql.Resolver, scopes []string, admin *bool) (any, error) {
	v := viewer.FromContext(ctx)
	if v == nil {
		return nil, fault.New(fault.Unauthenticated, "authentication required")
	}
	if admin != nil && *admin && !v.Admin {
		return nil, fault.New(fault.Forbidden, "requires a platform admin")
	}
	for _, s := range scopes {
		if !v.Has(s) {
			return nil, fault.New(fault.Forbidden, "missing scope "+s).With("requiredScopes", scopes)
		}
	}
	return next(ctx)
}

// RateLimit implements @rateLimit(cost). The cost is charged for the whole operation
// before it executes (graph/gqlserver asks the admission service), so at field level it
// does nothing.
func RateLimit(ctx context.Context, _ any, next graphql.Resolver, _ *int) (any, error) {
	return next(ctx)
}

// limitsOf returns the limits in force for key k: its own settings over its tenant
// plan's. Platform admin keys have none. The plan comes without a query when the
// tenant edge was loaded or the key is of the viewer's own tenant (every key a tenant
// key lists), so a list of keys costs no query per key.
func (r *Resolver) limitsOf(ctx context.Context, k *ent.ApiKey) (plan.Limits, error) {
	if k.TenantID == nil {
		return plan.Limits{}, nil
	}
	if t, err := k.Edges.TenantOrErr(); err == nil && t != nil {
		return keys.LimitsOf(k, r.Plans.Resolve(t.Plan)), nil
	}
	if v := viewer.FromContext(ctx); v != nil && v.TenantID == *k.TenantID && v.TenantPlan != "" {
		return keys.LimitsOf(k, r.Plans.Resolve(v.TenantPlan)), nil
	}
	t, err := k.Tenant(ctx)
	if err != nil {
		return plan.Limits{}, err
	}
	return keys.LimitsOf(k, r.Plans.Resolve(t.Plan)), nil
}

// streamTarget returns the viewer and the tenant a usage subscription reads: the
// viewer's tenant, or for platform admins the tenant of the key they name.
// It returns NOT_FOUND for a key the viewer cannot see, BAD_USER_INPUT when an admin
// names no key.
func (r *Resolver) streamTarget(ctx context.Context, apiKeyID *string) (*viewer.Viewer, string, error) {
	v := viewer.FromContext(ctx)
	if v == nil {
		return nil, "", fault.New(fault.Unauthenticated, "authentication required")
	}
	if apiKeyID != nil {
		// Through the privacy rules: another tenant's key is NOT_FOUND.
		k, err := r.Client.ApiKey.Get(ctx, *apiKeyID)
		if err != nil {
			return nil, "", err
		}
		if k.TenantID == nil {
			return nil, "", fault.BadInput("apiKeyID", "platform admin keys have no usage")
		}
		return v, *k.TenantID, nil
	}
	if v.TenantID == "" {
		return nil, "", fault.BadInput("apiKeyID", "platform admins must name a key")
	}
	return v, v.TenantID, nil
}

// endStream reports why a subscription ended early (its key was revoked or expired):
// the client receives an UNAUTHENTICATED error for it instead of a plain completion.
func endStream(ctx context.Context, err error) {
	var ae *keys.AuthError
	e := fault.New(fault.Internal, "stream ended")
	if errors.As(err, &ae) {
		e = ae.APIError()
	}
	// A subscription that is over already (its client left) has nobody to tell, and
	// gqlgen reads the errors of an ended subscription without waiting for us.
	if ctx.Err() != nil {
		return
	}
	defer func() { _ = recover() }() // outside a WebSocket operation there is nowhere to report it
	transport.AddSubscriptionError(ctx, gqlerr.From(e))
}

// db returns the client of the request: the transaction of a mutation field (opened by
// graph/gqlserver for each mutation root field), else the resolver's client.
func (r *Resolver) db(ctx context.Context) *ent.Client {
	if c := ent.FromContext(ctx); c != nil {
		return c
	}
	return r.Client
}

// change turns an omittable input field into the domain's change of a setting.
func change[T any](o graphql.Omittable[*T]) keys.Change[T] {
	return keys.Change[T]{Set: o.IsSet(), Value: o.Value()}
}

// mapOrNil points at m, or is nil for a null map.
func mapOrNil(m map[string]any) *map[string]any {
	if m == nil {
		return nil
	}
	return &m
}

// verifyResult is the GraphQL form of a verification's answer.
func verifyResult(res *verify.Result) *model.VerifyAPIKeyResult {
	out := &model.VerifyAPIKeyResult{Valid: res.Valid(), Code: model.VerifyCode(res.Code), RetryAfterSeconds: res.RetryAfterSeconds(), OwnerMeta: res.OwnerMeta}
	if res.Scope != "" {
		out.LimitScope = &res.Scope
	}
	if res.Credits != nil {
		c := int(*res.Credits)
		out.Credits = &c
	}
	if k := res.Key; k != nil {
		env := k.Environment
		out.KeyID, out.OwnerID, out.Name, out.Meta, out.Permissions, out.Environment, out.ExpiresAt =
			&k.ID, k.OwnerID, &k.Name, k.Meta, k.Permissions, &env, k.ExpiresAt
	}
	if l := res.RateLimit; l != nil {
		out.RateLimit = &model.RateLimitState{Limit: l.Limit, Remaining: l.Remaining, ResetAt: l.ResetAt}
	}
	if q := res.Quota; q != nil {
		out.Quota = &model.QuotaUsage{Limit: int(q.Limit), Used: int(q.Used), Remaining: int(q.Remaining),
			Period: apikey.QuotaPeriod(strings.ToUpper(string(q.Period))), ResetAt: q.ResetAt}
	}
	return out
}

// values copies a list of pointers (gqlgen's input lists) into a list of values; nil
// stays nil.
func values[T any](ps []*T) []T {
	if ps == nil {
		return nil
	}
	out := make([]T, 0, len(ps))
	for _, p := range ps {
		if p != nil {
			out = append(out, *p)
		}
	}
	return out
}

// sliceOrNil points at l, or is nil for a nil list.
func sliceOrNil[T any](l []T) *[]T {
	if l == nil {
		return nil
	}
	return &l
}

// creditsOf is the domain's credit settings of a CreditsInput (nil for none).
func creditsOf(in *model.CreditsInput) *keys.Credits {
	if in == nil {
		return nil
	}
	c := &keys.Credits{Remaining: int64(in.Remaining), RefillInterval: apikey.CreditsRefillIntervalNever}
	if in.RefillInterval != nil {
		c.RefillInterval = *in.RefillInterval
	}
	if in.RefillAmount != nil {
		n := int64(*in.RefillAmount)
		c.RefillAmount = &n
	}
	return c
}

// orZero returns *p, or 0 for nil.
func orZero(p *int) int {
	if p == nil {
		return 0
	}
	return *p
}

// defaultFirst applies the default page size when neither first nor last is given.
// (Page sizes and first+last are checked for every field by httpapi's argument limits.)
func defaultFirst(first, last *int) *int {
	if first == nil && last == nil {
		n := 50
		return &n
	}
	return first
}

// logCursor turns the row ID inside a request-log cursor ("log_123", as written by the
// connection) back into the number the database compares (a nil cursor is left alone).
// It returns BAD_USER_INPUT for a cursor whose ID is no request-log ID.
func logCursor(c *entgql.Cursor[string]) error {
	if c == nil {
		return nil
	}
	id, err := logid.Parse(strings.Trim(c.ID, `"`))
	if err != nil {
		return fault.BadInput("after", "not a cursor of the request log")
	}
	c.ID = strconv.FormatInt(int64(id), 10)
	return nil
}

// countOnlyIfAsked returns the context to give an entgql Paginate so that it counts
// the whole connection only when the query selects totalCount. entgql also counts
// whenever pageInfo is selected, although it builds pageInfo from the page itself
// (one row more than asked); on the request log, whose rows grow by millions a day,
// that count was almost all of a page's cost (see README, Performance). The copy of
// the field context leaves pageInfo out of the selections Paginate looks at; gqlgen
// still resolves pageInfo from the real one. A pageInfo selected through a fragment
// is not seen, and then counts as before.
func countOnlyIfAsked(ctx context.Context) context.Context {
	fc := graphql.GetFieldContext(ctx)
	if fc == nil {
		return ctx
	}
	for _, f := range graphql.CollectFieldsCtx(ctx, nil) {
		if f.Name == "totalCount" {
			return ctx
		}
	}
	c := *fc
	c.Field.Selections = slices.DeleteFunc(slices.Clone(fc.Field.Selections), func(s ast.Selection) bool {
		f, ok := s.(*ast.Field)
		return ok && f.Name == "pageInfo"
	})
	return graphql.WithFieldContext(ctx, &c)
}
