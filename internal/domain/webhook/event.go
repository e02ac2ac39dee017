package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"slices"
	"time"

	"github.com/latchkey/latchkey/ent"
	"github.com/latchkey/latchkey/ent/schema/rule"
	entwebhook "github.com/latchkey/latchkey/ent/webhook"
	"github.com/latchkey/latchkey/ent/webhookdelivery"
	"github.com/latchkey/latchkey/internal/platform/ids"
)

// Event types of the public contract.
const (
	EventAPIKeyCreated     = "api_key.created"
	EventAPIKeyUpdated     = "api_key.updated"
	EventAPIKeyRevoked     = "api_key.revoked"
	EventAPIKeyRotated     = "api_key.rotated"
	EventAPIKeyExpiring    = "api_key.expiring"
	EventAPIKeyExpired     = "api_key.expired"
	EventRateLimitExceeded = "rate_limit.exceeded"
	EventQuotaExceeded     = "quota.exceeded"
	EventTenantUpdated     = "tenant.updated"
	EventWebhookTest       = "webhook.test"
	// Early warnings: a quota or a credit balance (of a key, an owner or a tenant)
	// crossed 80 % or 100 %, once per period.
	EventQuotaThreshold   = "quota.threshold"
	EventCreditsThreshold = "credits.threshold"
	// An endpoint was disabled (410 Gone, or failing for days); a delivery exhausted
	// its retries.
	EventWebhookDisabled       = "webhook.disabled"
	EventWebhookDeliveryFailed = "webhook.delivery_failed"
	AllEvents                  = "*" // a subscription to every event type
)

// EventTypes lists every event type a webhook can subscribe to.
var EventTypes = []string{
	EventAPIKeyCreated, EventAPIKeyUpdated, EventAPIKeyRevoked, EventAPIKeyRotated,
	EventAPIKeyExpiring, EventAPIKeyExpired, EventRateLimitExceeded, EventQuotaExceeded,
	EventTenantUpdated, EventWebhookTest, EventQuotaThreshold, EventCreditsThreshold,
	EventWebhookDisabled, EventWebhookDeliveryFailed,
}

// ValidEventType reports whether t is one of EventTypes.
func ValidEventType(t string) bool { return slices.Contains(EventTypes, t) }

// Event is something that happened to a tenant, to be delivered to its webhooks.
type Event struct {
	// Type is one of EventTypes.
	Type string
	// TenantID is the tenant whose webhooks receive the event.
	TenantID string
	// Data is the event's "data" object; it must marshal to JSON. nil sends {}.
	Data any
	// At is when the event happened; zero means now.
	At time.Time
}

// Body returns the exact JSON body delivered for e:
// {"type": ..., "timestamp": <RFC 3339 UTC with nanoseconds>, "data": ...}.
// It returns an error when Data does not marshal to JSON.
func (e Event) Body() ([]byte, error) {
	at := e.At
	if at.IsZero() {
		at = time.Now()
	}
	data := e.Data
	if data == nil {
		data = struct{}{}
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	err := enc.Encode(struct {
		Type      string `json:"type"`
		Timestamp string `json:"timestamp"`
		Data      any    `json:"data"`
	}{e.Type, at.UTC().Format(time.RFC3339Nano), data})
	if err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// subscribes reports whether a webhook subscribed to events receives eventType.
func subscribes(events []string, eventType string) bool {
	return slices.Contains(events, AllEvents) || slices.Contains(events, eventType)
}

// Enqueue writes one PENDING delivery of e (same event id, the exact payload bytes,
// next attempt now) for every active webhook of e.TenantID that subscribes to e.Type or
// to "*". Call it with the transaction's client inside the transaction of the change, so
// a rolled-back change sends nothing and a committed one is never lost; wake the
// dispatchers after the commit (Outbox.Enqueue does both).
//
// Webhooks are read and deliveries written under rule.SystemContext: events are system
// work, whoever caused them. eventID may be "" (a new "msg_…" id is generated) or a
// deterministic id for de-duplication: a webhook that already has a delivery with that
// event id gets no other.
//
// It returns the number of deliveries written, or an error for an event without type or
// tenant, data that does not marshal to JSON, or a database error.
func Enqueue(ctx context.Context, client *ent.Client, e Event, eventID string) (int, error) {
	return enqueue(ctx, client, e, eventID, "")
}

// enqueue is Enqueue for every webhook but the one with id except ("" for none).
func enqueue(ctx context.Context, client *ent.Client, e Event, eventID, except string) (int, error) {
	if e.Type == "" || e.TenantID == "" {
		return 0, errors.New("webhook: event needs a type and a tenant")
	}
	sctx := rule.SystemContext(ctx)
	hooks, err := client.Webhook.Query().
		Where(entwebhook.TenantID(e.TenantID), entwebhook.Active(true)).
		Select(entwebhook.FieldID, entwebhook.FieldEvents).
		All(sctx)
	if err != nil {
		return 0, err
	}
	targets := make([]string, 0, len(hooks))
	for _, h := range hooks {
		if h.ID != except && subscribes(h.Events, e.Type) {
			targets = append(targets, h.ID)
		}
	}
	if len(targets) == 0 {
		return 0, nil
	}
	if eventID == "" {
		eventID = newEventID()
	} else {
		done, err := client.WebhookDelivery.Query().
			Where(webhookdelivery.EventID(eventID), webhookdelivery.WebhookIDIn(targets...)).
			Select(webhookdelivery.FieldWebhookID).
			Strings(sctx)
		if err != nil {
			return 0, err
		}
		targets = slices.DeleteFunc(targets, func(id string) bool { return slices.Contains(done, id) })
		if len(targets) == 0 {
			return 0, nil
		}
	}
	body, err := e.Body()
	if err != nil {
		return 0, err
	}
	now := time.Now().UTC()
	builders := make([]*ent.WebhookDeliveryCreate, len(targets))
	for i, id := range targets {
		builders[i] = client.WebhookDelivery.Create().
			SetTenantID(e.TenantID).
			SetWebhookID(id).
			SetEventID(eventID).
			SetEventType(e.Type).
			SetPayload(string(body)).
			SetNextAttemptAt(now)
	}
	if err := client.WebhookDelivery.CreateBulk(builders...).Exec(sctx); err != nil {
		return 0, err
	}
	return len(targets), nil
}

// newEventID returns a new event id ("msg_…"), the webhook-id of its deliveries.
func newEventID() string { return ids.New(ids.Event) }
