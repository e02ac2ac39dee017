package schema

import (
	"context"
	"fmt"
	"slices"

	"entgo.io/ent"

	gen "github.com/latchkey/latchkey/ent"
	"github.com/latchkey/latchkey/ent/hook"
	"github.com/latchkey/latchkey/ent/schema/rule"
	"github.com/latchkey/latchkey/internal/domain/audit"
	"github.com/latchkey/latchkey/internal/domain/webhook"
	"github.com/latchkey/latchkey/internal/platform/viewer"
)

// Hooks of the Tenant.
func (Tenant) Hooks() []ent.Hook { return []ent.Hook{auditHook("tenant")} }

// Hooks of the ApiKey.
func (ApiKey) Hooks() []ent.Hook { return []ent.Hook{auditHook("api_key")} }

// Hooks of the Webhook.
func (Webhook) Hooks() []ent.Hook { return []ent.Hook{auditHook("webhook")} }

// auditHook writes one AuditLog row for every single-object create, update and delete,
// in the transaction of the change (a rolled-back change leaves no audit row).
// Bulk updates (e.g. the batched last_used_at flush) are system work and not audited.
func auditHook(objectType string) ent.Hook {
	return hook.On(func(next ent.Mutator) ent.Mutator {
		return ent.MutateFunc(func(ctx context.Context, m ent.Mutation) (ent.Value, error) {
			action, overridden := audit.ActionFrom(ctx)
			if overridden && action == "" {
				return next.Mutate(ctx, m)
			}
			var deletedTenant *string
			if m.Op().Is(ent.OpDeleteOne) {
				// Rows are gone after the mutation: read the owner first.
				if wm, ok := m.(*gen.WebhookMutation); ok {
					id, _ := wm.ID()
					w, err := wm.Client().Webhook.Get(ctx, id)
					if err != nil {
						return nil, err
					}
					deletedTenant = &w.TenantID
				}
			}
			v, err := next.Mutate(ctx, m)
			if err != nil {
				return nil, err
			}
			entry := auditEntry{action: action}
			switch obj := v.(type) {
			case *gen.Tenant:
				entry.objectID, entry.tenantID = obj.ID, &obj.ID
			case *gen.ApiKey:
				entry.objectID, entry.tenantID = obj.ID, obj.TenantID
			case *gen.Webhook:
				entry.objectID, entry.tenantID = obj.ID, &obj.TenantID
			default:
				idm, ok := m.(interface{ ID() (string, bool) })
				if !ok {
					return v, nil
				}
				entry.objectID, _ = idm.ID()
				entry.tenantID = deletedTenant
			}
			if !overridden {
				entry.action = objectType + "." + verb(m)
			}
			entry.changed = slices.DeleteFunc(m.Fields(), func(f string) bool {
				return f == "updated_at" || f == "created_at" || f == "hash" || f == "secret" || f == "previous_secret"
			})
			cm, ok := m.(interface{ Client() *gen.Client })
			if !ok {
				return nil, fmt.Errorf("audit: mutation %T has no client", m)
			}
			if err := entry.write(ctx, cm.Client(), objectType); err != nil {
				return nil, fmt.Errorf("audit: %w", err)
			}
			if err := outbox(ctx, cm.Client(), entry, v); err != nil {
				return nil, fmt.Errorf("webhook outbox: %w", err)
			}
			return v, nil
		})
	}, ent.OpCreate|ent.OpUpdateOne|ent.OpDeleteOne)
}

// verb names what a mutation did: created, updated, deleted, or revoked for a key
// whose revoked_at is being set.
func verb(m ent.Mutation) string {
	switch {
	case m.Op().Is(ent.OpCreate):
		return "created"
	case m.Op().Is(ent.OpDeleteOne):
		return "deleted"
	}
	if km, ok := m.(*gen.ApiKeyMutation); ok {
		if _, set := km.RevokedAt(); set {
			return "revoked"
		}
	}
	return "updated"
}

// outbox writes the webhook deliveries of a change in its transaction (see
// webhook.Enqueue): key lifecycle events and tenant updates.
func outbox(ctx context.Context, c *gen.Client, e auditEntry, v ent.Value) error {
	if e.tenantID == nil {
		return nil
	}
	var data any
	switch obj := v.(type) {
	case *gen.ApiKey:
		switch e.action {
		case webhook.EventAPIKeyCreated, webhook.EventAPIKeyUpdated, webhook.EventAPIKeyRevoked, webhook.EventAPIKeyRotated:
			data = webhook.APIKeyData(obj)
		}
	case *gen.Tenant:
		if e.action == webhook.EventTenantUpdated {
			data = webhook.TenantData(obj)
		}
	}
	if data == nil {
		return nil
	}
	_, err := webhook.Enqueue(ctx, c, webhook.Event{Type: e.action, TenantID: *e.tenantID, Data: data}, "")
	return err
}

type auditEntry struct {
	action   string
	objectID string
	tenantID *string
	changed  []string
}

func (e auditEntry) write(ctx context.Context, c *gen.Client, objectType string) error {
	v := viewer.FromContext(ctx)
	q := c.AuditLog.Create().
		SetActor(v.Actor()).
		SetAction(e.action).
		SetObjectType(objectType).
		SetObjectID(e.objectID).
		SetNillableTenantID(e.tenantID).
		SetChangedFields(e.changed)
	if v != nil && v.APIKeyID != "" {
		q.SetActorKeyID(v.APIKeyID)
	}
	return q.Exec(rule.SystemContext(ctx))
}
