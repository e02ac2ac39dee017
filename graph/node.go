package graph

import (
	"context"

	"github.com/latchkey/latchkey/ent"
	"github.com/latchkey/latchkey/ent/apikey"
	"github.com/latchkey/latchkey/ent/auditlog"
	"github.com/latchkey/latchkey/ent/owner"
	entplan "github.com/latchkey/latchkey/ent/plan"
	"github.com/latchkey/latchkey/ent/tenant"
	"github.com/latchkey/latchkey/ent/usagelog"
	"github.com/latchkey/latchkey/ent/webhook"
	"github.com/latchkey/latchkey/ent/webhookattempt"
	"github.com/latchkey/latchkey/ent/webhookdelivery"
	"github.com/latchkey/latchkey/internal/platform/fault"
	"github.com/latchkey/latchkey/internal/platform/ids"
	"github.com/latchkey/latchkey/internal/platform/logid"
	"github.com/latchkey/latchkey/internal/platform/viewer"
)

// nodeType resolves a Relay node ID to its table by the ID's type prefix.
// Unknown prefixes are NOT_FOUND, like IDs that do not exist.
func nodeType(_ context.Context, id string) (string, error) {
	switch ids.Prefix(id) {
	case ids.Tenant:
		return tenant.Table, nil
	case ids.APIKey:
		return apikey.Table, nil
	case ids.Webhook:
		return webhook.Table, nil
	case ids.WebhookDelivery:
		return webhookdelivery.Table, nil
	case ids.AuditLog:
		return auditlog.Table, nil
	case ids.WebhookAttempt:
		return webhookattempt.Table, nil
	case ids.Plan:
		return entplan.Table, nil
	case ids.Owner:
		return owner.Table, nil
	case logid.Prefix:
		if _, err := logid.Parse(id); err != nil {
			return "", fault.ErrNotFound
		}
		return usagelog.Table, nil
	}
	return "", fault.ErrNotFound
}

// checkNodeScope applies to node/nodes the scope the list query of the type needs.
// It returns FORBIDDEN when the viewer lacks it.
func checkNodeScope(ctx context.Context, n ent.Noder) error {
	var scope string
	switch n.(type) {
	case nil:
		return nil
	case *ent.Tenant, *ent.AuditLog:
		scope = viewer.ScopeTenantRead
	case *ent.ApiKey, *ent.Owner:
		scope = viewer.ScopeKeysRead
	case *ent.Webhook, *ent.WebhookDelivery, *ent.WebhookAttempt:
		scope = viewer.ScopeWebhooksRead
	case *ent.UsageLog:
		scope = viewer.ScopeUsageRead
	}
	if v := viewer.FromContext(ctx); scope != "" && !v.Has(scope) {
		return fault.New(fault.Forbidden, "missing scope "+scope).With("requiredScopes", []string{scope})
	}
	return nil
}
