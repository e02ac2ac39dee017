package webhook

import (
	"context"
	"fmt"

	"entgo.io/ent"

	gen "github.com/latchkey/latchkey/ent"
	"github.com/latchkey/latchkey/ent/hook"
	"github.com/latchkey/latchkey/internal/data/txn"
	"github.com/latchkey/latchkey/internal/domain/audit"
)

// Outbox writes webhook deliveries in the transaction of the change that caused them
// and wakes the dispatchers once it commits. The wiring creates one with the function
// that wakes every instance's dispatcher, and registers its hook on the ent client.
type Outbox struct {
	// Wake tells the dispatchers (of every instance) that deliveries are due.
	Wake func()
}

// Enqueue writes the deliveries of e (see the package function Enqueue) and wakes the
// dispatchers after the transaction of ctx commits (at once outside one). It returns
// Enqueue's result. A nil Outbox writes without waking.
func (o *Outbox) Enqueue(ctx context.Context, client *gen.Client, e Event, eventID string) (int, error) {
	n, err := Enqueue(ctx, client, e, eventID)
	if err == nil && n > 0 {
		o.wakeAfterCommit(ctx)
	}
	return n, err
}

func (o *Outbox) wakeAfterCommit(ctx context.Context) {
	if o != nil && o.Wake != nil {
		txn.AfterCommit(ctx, o.Wake)
	}
}

// Register puts the outbox hook on the entities whose changes are webhook events: the
// key lifecycle (api_key.created, updated, revoked, rotated) and tenant.updated.
func (o *Outbox) Register(client *gen.Client) {
	client.ApiKey.Use(o.hook("api_key"))
	client.Tenant.Use(o.hook("tenant"))
}

// hook enqueues the event of each audited create or update of an entity of
// objectType, named as its audit action (audit.Action), in the mutation's transaction.
func (o *Outbox) hook(objectType string) ent.Hook {
	return hook.On(func(next ent.Mutator) ent.Mutator {
		return ent.MutateFunc(func(ctx context.Context, m ent.Mutation) (ent.Value, error) {
			v, err := next.Mutate(ctx, m)
			if err != nil {
				return nil, err
			}
			var e Event
			switch obj := v.(type) {
			case *gen.ApiKey:
				if obj.TenantID == nil {
					return v, nil
				}
				e = Event{Type: audit.Action(ctx, m, objectType), TenantID: *obj.TenantID, Data: APIKeyData(obj)}
				switch e.Type {
				case EventAPIKeyCreated, EventAPIKeyUpdated, EventAPIKeyRevoked, EventAPIKeyRotated:
				default:
					return v, nil
				}
			case *gen.Tenant:
				e = Event{Type: audit.Action(ctx, m, objectType), TenantID: obj.ID, Data: TenantData(obj)}
				if e.Type != EventTenantUpdated {
					return v, nil
				}
			default:
				return v, nil
			}
			cm, ok := m.(interface{ Client() *gen.Client })
			if !ok {
				return nil, fmt.Errorf("webhook outbox: mutation %T has no client", m)
			}
			n, err := Enqueue(ctx, cm.Client(), e, "")
			if err != nil {
				return nil, fmt.Errorf("webhook outbox: %w", err)
			}
			if n > 0 && o.Wake != nil {
				// The mutation's own transaction, whether or not ctx carries it.
				var tx *gen.Tx
				if tm, ok := m.(interface{ Tx() (*gen.Tx, error) }); ok {
					tx, _ = tm.Tx()
				}
				txn.OnCommit(tx, o.Wake)
			}
			return v, nil
		})
	}, ent.OpCreate|ent.OpUpdateOne)
}
