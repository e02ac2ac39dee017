// Package rule holds the privacy rules that isolate tenants. It is the one place where
// tenant scoping is enforced: every ent query and mutation passes through these rules,
// and resolvers never filter by tenant themselves.
//
// Named system paths (key verification, usage flushing, bootstrap, the audit hook)
// bypass the rules with SystemContext.
package rule

import (
	"context"

	"entgo.io/ent"
	"entgo.io/ent/entql"

	"github.com/latchkey/latchkey/ent/privacy"
	"github.com/latchkey/latchkey/internal/platform/viewer"
)

// SystemContext returns a context that bypasses every privacy rule. Use it only on
// named system paths that act for no viewer (verification, background jobs).
func SystemContext(parent context.Context) context.Context {
	return privacy.DecisionContext(parent, privacy.Allow)
}

// DenyIfNoViewer denies any query or mutation made without a viewer.
func DenyIfNoViewer() privacy.QueryMutationRule {
	return privacy.ContextQueryMutationRule(func(ctx context.Context) error {
		if viewer.FromContext(ctx) == nil {
			return privacy.Denyf("no viewer in context")
		}
		return privacy.Skip
	})
}

// AllowIfAdmin allows everything to platform admins.
func AllowIfAdmin() privacy.QueryMutationRule {
	return privacy.ContextQueryMutationRule(func(ctx context.Context) error {
		if v := viewer.FromContext(ctx); v != nil && v.Admin {
			return privacy.Allow
		}
		return privacy.Skip
	})
}

// tenantViewer returns the tenant of the viewer in ctx, or a deny decision.
func tenantViewer(ctx context.Context) (string, error) {
	v := viewer.FromContext(ctx)
	if v == nil || v.TenantID == "" {
		return "", privacy.Denyf("viewer has no tenant")
	}
	return v.TenantID, nil
}

// FilterTenant limits queries, updates and deletes of a tenant-owned entity to the rows
// of the viewer's tenant.
func FilterTenant() privacy.QueryMutationRule {
	type tenantFilter interface{ WhereTenantID(entql.StringP) }
	return privacy.FilterFunc(func(ctx context.Context, f privacy.Filter) error {
		tid, err := tenantViewer(ctx)
		if err != nil {
			return err
		}
		tf, ok := f.(tenantFilter)
		if !ok {
			return privacy.Denyf("entity has no tenant_id")
		}
		tf.WhereTenantID(entql.StringEQ(tid))
		return privacy.Skip
	})
}

// FilterOwnTenant limits queries and updates of tenants to the viewer's own tenant.
func FilterOwnTenant() privacy.QueryMutationRule {
	type idFilter interface{ WhereID(entql.StringP) }
	return privacy.FilterFunc(func(ctx context.Context, f privacy.Filter) error {
		tid, err := tenantViewer(ctx)
		if err != nil {
			return err
		}
		idf, ok := f.(idFilter)
		if !ok {
			return privacy.Denyf("entity has no id filter")
		}
		idf.WhereID(entql.StringEQ(tid))
		return privacy.Skip
	})
}

// DenyForeignCreate denies creating a row for any tenant but the viewer's: the filter
// rules cannot constrain inserts, so creates are checked against the tenant_id set.
func DenyForeignCreate() privacy.MutationRule {
	type tenantSetter interface{ TenantID() (string, bool) }
	return privacy.OnMutationOperation(privacy.MutationRuleFunc(func(ctx context.Context, m ent.Mutation) error {
		tid, err := tenantViewer(ctx)
		if err != nil {
			return err
		}
		ts, ok := m.(tenantSetter)
		if !ok {
			return privacy.Denyf("entity has no tenant_id")
		}
		if got, set := ts.TenantID(); !set || got != tid {
			return privacy.Denyf("create for another tenant")
		}
		return privacy.Skip
	}), ent.OpCreate)
}

// TenantOwned is the policy of every tenant-owned entity: no viewer, no access;
// admins see all; tenant keys see and change only their tenant's rows.
func TenantOwned() ent.Policy {
	return privacy.Policy{
		Query: privacy.QueryPolicy{
			DenyIfNoViewer(),
			AllowIfAdmin(),
			FilterTenant(),
			privacy.AlwaysAllowRule(),
		},
		Mutation: privacy.MutationPolicy{
			DenyIfNoViewer(),
			AllowIfAdmin(),
			DenyForeignCreate(),
			FilterTenant(),
			privacy.AlwaysAllowRule(),
		},
	}
}

// ReadOnlyTenantOwned is the policy of entities only the system writes (audit logs,
// usage logs): tenant-scoped reads, and no mutation outside SystemContext.
func ReadOnlyTenantOwned() ent.Policy {
	return privacy.Policy{
		Query: privacy.QueryPolicy{
			DenyIfNoViewer(),
			AllowIfAdmin(),
			FilterTenant(),
			privacy.AlwaysAllowRule(),
		},
		Mutation: privacy.MutationPolicy{
			privacy.AlwaysDenyRule(),
		},
	}
}

// TenantSelf is the policy of the Tenant entity: admins do everything; a tenant key
// reads and updates its own tenant only, and never creates or deletes tenants.
func TenantSelf() ent.Policy {
	return privacy.Policy{
		Query: privacy.QueryPolicy{
			DenyIfNoViewer(),
			AllowIfAdmin(),
			FilterOwnTenant(),
			privacy.AlwaysAllowRule(),
		},
		Mutation: privacy.MutationPolicy{
			DenyIfNoViewer(),
			AllowIfAdmin(),
			privacy.DenyMutationOperationRule(ent.OpCreate | ent.OpDelete | ent.OpDeleteOne),
			FilterOwnTenant(),
			privacy.AlwaysAllowRule(),
		},
	}
}

// PlatformOnly is the policy of platform data (plans): platform admins read and
// change it; tenant keys neither (the system reads it with SystemContext).
func PlatformOnly() ent.Policy {
	return privacy.Policy{
		Query: privacy.QueryPolicy{
			DenyIfNoViewer(),
			AllowIfAdmin(),
			privacy.AlwaysDenyRule(),
		},
		Mutation: privacy.MutationPolicy{
			DenyIfNoViewer(),
			AllowIfAdmin(),
			privacy.AlwaysDenyRule(),
		},
	}
}

// SystemOnly is the policy of the system's own bookkeeping (how far usage has been
// folded): no viewer reads or changes it, platform admins included; only the system
// context does.
func SystemOnly() ent.Policy {
	return privacy.Policy{
		Query:    privacy.QueryPolicy{privacy.AlwaysDenyRule()},
		Mutation: privacy.MutationPolicy{privacy.AlwaysDenyRule()},
	}
}
