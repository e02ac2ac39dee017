package graph

import (
	"entgo.io/contrib/entgql"

	"github.com/latchkey/latchkey/ent"
	"github.com/latchkey/latchkey/graph/generated"
)

// pageCost is the complexity of a connection: its selection times the page size
// asked for (50 when neither first nor last is given), so nested lists multiply.
func pageCost(child int, first, last *int) int {
	n := 50
	switch {
	case first != nil:
		n = *first
	case last != nil:
		n = *last
	}
	if n < 1 {
		n = 1
	}
	return 1 + child*n
}

type cursor = *entgql.Cursor[string]

// setComplexity assigns page-size-aware costs to every connection field.
func setComplexity(c *generated.ComplexityRoot) {
	c.Query.Tenants = func(child int, _ cursor, first *int, _ cursor, last *int, _ *ent.TenantOrder, _ *ent.TenantWhereInput) int {
		return pageCost(child, first, last)
	}
	c.Query.APIKeys = func(child int, _ cursor, first *int, _ cursor, last *int, _ *ent.ApiKeyOrder, _ *ent.ApiKeyWhereInput) int {
		return pageCost(child, first, last)
	}
	c.Query.Webhooks = func(child int, _ cursor, first *int, _ cursor, last *int, _ *ent.WebhookOrder, _ *ent.WebhookWhereInput) int {
		return pageCost(child, first, last)
	}
	c.Query.WebhookDeliveries = func(child int, _ *string, _ cursor, first *int, _ cursor, last *int, _ *ent.WebhookDeliveryOrder, _ *ent.WebhookDeliveryWhereInput) int {
		return pageCost(child, first, last)
	}
	c.Query.AuditLogs = func(child int, _ cursor, first *int, _ cursor, last *int, _ *ent.AuditLogOrder, _ *ent.AuditLogWhereInput) int {
		return pageCost(child, first, last)
	}
	c.Query.Nodes = func(child int, ids []string) int { return 1 + child*max(1, len(ids)) }
	c.Tenant.APIKeys = func(child int, _ cursor, first *int, _ cursor, last *int, _ *ent.ApiKeyOrder, _ *ent.ApiKeyWhereInput) int {
		return pageCost(child, first, last)
	}
	c.Tenant.Webhooks = func(child int, _ cursor, first *int, _ cursor, last *int, _ *ent.WebhookOrder, _ *ent.WebhookWhereInput) int {
		return pageCost(child, first, last)
	}
	c.Webhook.Deliveries = func(child int, _ cursor, first *int, _ cursor, last *int, _ *ent.WebhookDeliveryOrder, _ *ent.WebhookDeliveryWhereInput) int {
		return pageCost(child, first, last)
	}
	c.ApiKey.RotatedTo = func(child int) int { return 1 + child*10 }
}
