package webhook

import (
	"context"
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/latchkey/latchkey/ent"
	"github.com/latchkey/latchkey/ent/schema/rule"
	"github.com/latchkey/latchkey/ent/webhookattempt"
	"github.com/latchkey/latchkey/ent/webhookdelivery"
	"github.com/latchkey/latchkey/internal/data/txn"
	"github.com/latchkey/latchkey/internal/domain/audit"
	"github.com/latchkey/latchkey/internal/platform/fault"
	"github.com/latchkey/latchkey/internal/platform/viewer"
)

// MaxDescriptionLength is the longest webhook description accepted, in bytes.
const MaxDescriptionLength = 500

// MaxGracePeriod is the longest time a rotated-out secret keeps signing.
const MaxGracePeriod = 7 * 24 * time.Hour

// Manager creates and changes webhooks for the GraphQL resolvers. Every method runs
// with the caller's ctx, so the privacy rules apply: a viewer only sees and changes its
// own tenant's webhooks (another tenant's id is NOT_FOUND, from ent), platform admins
// all. Invalid input is an *fault.Error with code BAD_USER_INPUT naming the field.
type Manager struct {
	// Policy validates webhook URLs.
	Policy Policy
	// Dispatcher gives the lease of redelivered deliveries; may be nil.
	Dispatcher *Dispatcher
	// Outbox wakes the dispatchers when deliveries are due; may be nil.
	Outbox *Outbox
}

// CreateParams are the fields of a new webhook.
type CreateParams struct {
	// TenantID owns the webhook; "" means the viewer's tenant.
	TenantID string
	// URL receives the deliveries (see ValidateURL).
	URL string
	// Events are event types (EventTypes) or exactly ["*"]; empty means ["*"].
	Events []string
	// Description is free text, at most MaxDescriptionLength bytes.
	Description string
}

// Create validates p and creates an active webhook with a new signing secret, which it
// returns: the secret is shown once (it is kept only in the webhook's secret column).
// It returns BAD_USER_INPUT for an invalid URL (field "url"), events ("events"),
// description ("description") or a missing tenant ("tenantID"), a privacy error when
// the viewer may not create webhooks for the tenant, or a database error.
func (m *Manager) Create(ctx context.Context, client *ent.Client, p CreateParams) (*ent.Webhook, string, error) {
	tid := p.TenantID
	if tid == "" {
		if v := viewer.FromContext(ctx); v != nil {
			tid = v.TenantID
		}
	}
	if tid == "" {
		return nil, "", fault.BadInput("tenantID", "tenantID is required")
	}
	u, err := m.validateURL(ctx, p.URL)
	if err != nil {
		return nil, "", err
	}
	events, err := normalizeEvents(p.Events)
	if err != nil {
		return nil, "", err
	}
	if err := checkDescription(p.Description); err != nil {
		return nil, "", err
	}
	secret, err := NewSecret()
	if err != nil {
		return nil, "", err
	}
	w, err := client.Webhook.Create().
		SetTenantID(tid).
		SetURL(u).
		SetEvents(events).
		SetDescription(p.Description).
		SetSecret(secret).
		Save(ctx)
	if err != nil {
		return nil, "", err
	}
	return w, secret, nil
}

// UpdateParams are the changes to a webhook; nil fields are left as they are.
type UpdateParams struct {
	URL *string
	// Events replaces the subscribed types when non-nil (empty means ["*"]).
	Events      []string
	Description *string
	// Active enables or disables the webhook; re-activating clears disabled_reason and
	// failing_since, and the deliveries that waited are sent.
	Active *bool
}

// Update changes the webhook id. It returns BAD_USER_INPUT for an invalid URL, events
// or description, NOT_FOUND (from ent) for a missing or foreign id, or a database error.
func (m *Manager) Update(ctx context.Context, client *ent.Client, id string, p UpdateParams) (*ent.Webhook, error) {
	upd := client.Webhook.UpdateOneID(id)
	if p.URL != nil {
		u, err := m.validateURL(ctx, *p.URL)
		if err != nil {
			return nil, err
		}
		upd.SetURL(u)
	}
	if p.Events != nil {
		events, err := normalizeEvents(p.Events)
		if err != nil {
			return nil, err
		}
		upd.SetEvents(events)
	}
	if p.Description != nil {
		if err := checkDescription(*p.Description); err != nil {
			return nil, err
		}
		upd.SetDescription(*p.Description)
	}
	if p.Active != nil {
		upd.SetActive(*p.Active)
		if *p.Active {
			upd.ClearDisabledReason().ClearFailingSince()
		}
	}
	w, err := upd.Save(ctx)
	if err != nil {
		return nil, err
	}
	if p.Active != nil && *p.Active {
		m.Outbox.wakeAfterCommit(ctx)
	}
	return w, nil
}

// Delete deletes the webhook id with its deliveries and their attempts, in one
// transaction (or in the caller's, when client is transactional). It returns NOT_FOUND
// (from ent) for a missing or foreign id, or a database error.
func (m *Manager) Delete(ctx context.Context, client *ent.Client, id string) error {
	return txn.WithTx(ctx, client, func(ctx context.Context, c *ent.Client) error {
		if _, err := c.Webhook.Get(ctx, id); err != nil {
			return err
		}
		// The viewer owns the webhook: its deliveries and attempts go with it. Touching
		// the deliveries first locks them, so an attempt being recorded concurrently
		// either commits before (and its row is deleted here) or finds its delivery gone.
		sctx := rule.SystemContext(ctx)
		if err := c.WebhookDelivery.Update().
			Where(webhookdelivery.WebhookID(id)).
			SetStatus(webhookdelivery.StatusFailed).
			ClearNextAttemptAt().
			Exec(sctx); err != nil {
			return err
		}
		if _, err := c.WebhookAttempt.Delete().
			Where(webhookattempt.HasDeliveryWith(webhookdelivery.WebhookID(id))).
			Exec(sctx); err != nil {
			return err
		}
		if _, err := c.WebhookDelivery.Delete().
			Where(webhookdelivery.WebhookID(id)).
			Exec(sctx); err != nil {
			return err
		}
		return c.Webhook.DeleteOneID(id).Exec(ctx)
	})
}

// RotateSecret gives the webhook id a new signing secret, which it returns (shown once).
// During gracePeriodSeconds (0 to 7 days) deliveries are signed with both the new and
// the old secret, so receivers can switch without losing messages; with 0 the old secret
// stops at once. It returns BAD_USER_INPUT (field "gracePeriodSeconds") for a period out
// of range, NOT_FOUND (from ent) for a missing or foreign id, or a database error.
func (m *Manager) RotateSecret(ctx context.Context, client *ent.Client, id string, gracePeriodSeconds int) (*ent.Webhook, string, error) {
	if gracePeriodSeconds < 0 || time.Duration(gracePeriodSeconds)*time.Second > MaxGracePeriod {
		return nil, "", fault.BadInput("gracePeriodSeconds", "gracePeriodSeconds must be between 0 and %d (7 days)", int(MaxGracePeriod/time.Second))
	}
	secret, err := NewSecret()
	if err != nil {
		return nil, "", err
	}
	var w *ent.Webhook
	err = txn.WithTx(ctx, client, func(ctx context.Context, c *ent.Client) error {
		old, err := c.Webhook.Get(ctx, id)
		if err != nil {
			return err
		}
		upd := c.Webhook.UpdateOneID(id).SetSecret(secret)
		if gracePeriodSeconds > 0 {
			upd.SetPreviousSecret(old.Secret).
				SetPreviousSecretExpiresAt(time.Now().UTC().Add(time.Duration(gracePeriodSeconds) * time.Second))
		} else {
			upd.ClearPreviousSecret().ClearPreviousSecretExpiresAt()
		}
		w, err = upd.Save(audit.WithAction(ctx, "webhook.secret_rotated"))
		return err
	})
	if err != nil {
		return nil, "", err
	}
	return w, secret, nil
}

// SendTest queues a webhook.test delivery to the webhook id only (whether or not it
// subscribes to webhook.test) and wakes the dispatcher. It returns BAD_USER_INPUT
// (field "id") when the webhook is disabled, NOT_FOUND (from ent) for a missing or
// foreign id, or a database error.
func (m *Manager) SendTest(ctx context.Context, client *ent.Client, id string) (*ent.WebhookDelivery, error) {
	w, err := client.Webhook.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	if !w.Active {
		return nil, fault.BadInput("id", "the webhook is disabled; re-activate it before sending a test")
	}
	now := time.Now().UTC()
	body, err := Event{
		Type:     EventWebhookTest,
		TenantID: w.TenantID,
		At:       now,
		Data: map[string]any{
			"webhook_id": w.ID,
			"message":    "This is a test event from Latchkey.",
		},
	}.Body()
	if err != nil {
		return nil, err
	}
	d, err := client.WebhookDelivery.Create().
		SetTenantID(w.TenantID).
		SetWebhookID(w.ID).
		SetEventID(newEventID()).
		SetEventType(EventWebhookTest).
		SetPayload(string(body)).
		SetNextAttemptAt(now).
		Save(ctx)
	if err != nil {
		return nil, err
	}
	m.Outbox.wakeAfterCommit(ctx)
	return d, nil
}

// Redeliver sends the delivery deliveryID again, with the same event id (webhook-id)
// and payload, and wakes the dispatcher. A DELIVERED or FAILED delivery becomes PENDING
// now with a fresh retry schedule (its attempts count restarts; its attempt history is
// kept). A PENDING delivery whose next retry is later than the dispatcher's lease is
// moved to now; one due sooner, or being attempted, is left as it is.
// It returns NOT_FOUND (from ent) for a missing or foreign id, or a database error.
func (m *Manager) Redeliver(ctx context.Context, client *ent.Client, deliveryID string) (*ent.WebhookDelivery, error) {
	d, err := client.WebhookDelivery.Get(ctx, deliveryID)
	if err != nil {
		return nil, err
	}
	now := time.Now().UTC()
	switch d.Status {
	case webhookdelivery.StatusPending:
		lease := defaultLease(DefaultTimeout)
		if m.Dispatcher != nil {
			lease = m.Dispatcher.Lease()
		}
		if d.NextAttemptAt == nil || d.NextAttemptAt.Sub(now) <= lease {
			break // in flight, or due soon anyway
		}
		// A scheduled retry: bring it forward, unless it changed meanwhile.
		if _, err := client.WebhookDelivery.Update().
			Where(
				webhookdelivery.ID(d.ID),
				webhookdelivery.StatusEQ(webhookdelivery.StatusPending),
				webhookdelivery.NextAttemptAt(*d.NextAttemptAt),
			).
			SetNextAttemptAt(now).
			Save(ctx); err != nil {
			return nil, err
		}
	default:
		if _, err := client.WebhookDelivery.Update().
			Where(
				webhookdelivery.ID(d.ID),
				webhookdelivery.StatusIn(webhookdelivery.StatusDelivered, webhookdelivery.StatusFailed),
			).
			SetStatus(webhookdelivery.StatusPending).
			SetAttempts(0).
			SetNextAttemptAt(now).
			Save(ctx); err != nil {
			return nil, err
		}
	}
	m.Outbox.wakeAfterCommit(ctx)
	return client.WebhookDelivery.Get(ctx, deliveryID)
}

// validateURL trims and validates a webhook URL, as BAD_USER_INPUT on field "url".
func (m *Manager) validateURL(ctx context.Context, raw string) (string, error) {
	u := strings.TrimSpace(raw)
	if err := ValidateURL(ctx, u, m.Policy); err != nil {
		var ue *URLError
		if errors.As(err, &ue) {
			return "", fault.BadInput("url", "%s", ue.Reason)
		}
		return "", err
	}
	return u, nil
}

// normalizeEvents checks a subscription list: known event types without duplicates,
// or exactly ["*"]; empty means ["*"].
func normalizeEvents(in []string) ([]string, error) {
	if len(in) == 0 {
		return []string{AllEvents}, nil
	}
	out := make([]string, 0, len(in))
	for _, e := range in {
		e = strings.TrimSpace(e)
		switch {
		case e == AllEvents:
		case !ValidEventType(e):
			return nil, fault.BadInput("events", "unknown event type %q (known: %s, or \"*\" for all)", e, strings.Join(EventTypes, ", "))
		}
		if !slices.Contains(out, e) {
			out = append(out, e)
		}
	}
	if slices.Contains(out, AllEvents) && len(out) > 1 {
		return nil, fault.BadInput("events", "\"*\" subscribes to every event type and cannot be combined with others")
	}
	return out, nil
}

func checkDescription(s string) error {
	if len(s) > MaxDescriptionLength {
		return fault.BadInput("description", "description must be at most %d bytes", MaxDescriptionLength)
	}
	return nil
}
