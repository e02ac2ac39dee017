// Package audit writes one AuditLog row for every single-object create, update and
// delete of tenants, keys and webhooks, in the transaction of the change (a rolled-back
// change leaves no audit row). The wiring registers its hook on the ent client
// (Register); bulk updates (e.g. the batched last_used_at flush) are system work and
// not audited.
//
// An action is named "<object>.<verb>" (api_key.created, webhook.deleted,
// api_key.revoked for a key whose revoked_at is set); WithAction overrides it for the
// mutations run with a context, or suppresses the row.
package audit

import (
	"context"
	"fmt"
	"slices"

	"entgo.io/ent"

	gen "github.com/latchkey/latchkey/ent"
	"github.com/latchkey/latchkey/ent/hook"
	"github.com/latchkey/latchkey/ent/schema/rule"
	"github.com/latchkey/latchkey/internal/platform/viewer"
)

type actionKey struct{}

// WithAction names the audit action of the mutations run with ctx, overriding the
// name the hook would derive (e.g. "api_key.rotated" for the key that a rotation creates).
// An empty action suppresses the audit row for those mutations.
func WithAction(ctx context.Context, action string) context.Context {
	return context.WithValue(ctx, actionKey{}, &action)
}

// Action returns the action a mutation m of objectType (run with ctx) is audited as:
// the one WithAction set, or "<objectType>.<verb>"; "" when it is not audited.
func Action(ctx context.Context, m ent.Mutation, objectType string) string {
	if action, ok := ctx.Value(actionKey{}).(*string); ok {
		return *action
	}
	return objectType + "." + verb(m)
}

// Register puts the audit hook on the audited entities of client (and so on every
// transaction opened from it).
func Register(client *gen.Client) {
	client.Tenant.Use(Hook("tenant"))
	client.ApiKey.Use(Hook("api_key"))
	client.Webhook.Use(Hook("webhook"))
	client.Plan.Use(Hook("plan"))
	client.Owner.Use(Hook("owner"))
}

// Hook writes the audit row of each single-object create, update and delete of an
// entity of objectType. It returns the mutation's error, or the audit write's.
func Hook(objectType string) ent.Hook {
	return hook.On(func(next ent.Mutator) ent.Mutator {
		return ent.MutateFunc(func(ctx context.Context, m ent.Mutation) (ent.Value, error) {
			action := Action(ctx, m, objectType)
			if action == "" {
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
			entry := entry{action: action}
			switch obj := v.(type) {
			case *gen.Tenant:
				entry.objectID, entry.tenantID = obj.ID, &obj.ID
			case *gen.ApiKey:
				entry.objectID, entry.tenantID = obj.ID, obj.TenantID
			case *gen.Webhook:
				entry.objectID, entry.tenantID = obj.ID, &obj.TenantID
			case *gen.Plan:
				entry.objectID = obj.ID // platform data: no tenant
			case *gen.Owner:
				entry.objectID, entry.tenantID = obj.ID, &obj.TenantID
			default:
				idm, ok := m.(interface{ ID() (string, bool) })
				if !ok {
					return v, nil
				}
				entry.objectID, _ = idm.ID()
				entry.tenantID = deletedTenant
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

type entry struct {
	action   string
	objectID string
	tenantID *string
	changed  []string
}

func (e entry) write(ctx context.Context, c *gen.Client, objectType string) error {
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
