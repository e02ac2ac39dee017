package schema

import (
	"entgo.io/contrib/entgql"
	"entgo.io/ent"
	"entgo.io/ent/schema"
	"entgo.io/ent/schema/edge"
	"entgo.io/ent/schema/field"
	"entgo.io/ent/schema/index"

	"github.com/latchkey/latchkey/internal/platform/ids"
)

// Webhook is a tenant's endpoint that receives signed event notifications.
type Webhook struct{ ent.Schema }

// Mixin of the Webhook.
func (Webhook) Mixin() []ent.Mixin {
	return []ent.Mixin{IDMixin{Prefix: ids.Webhook}, TimeMixin{}, TenantMixin{}}
}

// Fields of the Webhook.
func (Webhook) Fields() []ent.Field {
	return []ent.Field{
		field.String("url").NotEmpty().MaxLen(2048).
			Annotations(entgql.OrderField("URL")),
		field.String("description").Default("").MaxLen(500),
		field.Strings("events").Default([]string{"*"}),
		field.String("secret").NotEmpty().Sensitive().Annotations(entgql.Skip()),
		field.String("previous_secret").Optional().Nillable().Sensitive().Annotations(entgql.Skip()),
		field.Time("previous_secret_expires_at").Optional().Nillable().Annotations(entgql.Skip()),
		field.Bool("active").Default(true),
		field.String("disabled_reason").Optional().Nillable(),
		field.Time("failing_since").Optional().Nillable(),
	}
}

// Edges of the Webhook.
func (Webhook) Edges() []ent.Edge {
	return []ent.Edge{
		edge.From("tenant", Tenant.Type).Ref("webhooks").Field("tenant_id").Unique().Required().Immutable(),
		edge.To("deliveries", WebhookDelivery.Type).
			Annotations(entgql.RelayConnection(), authScopes("webhooks:read")),
	}
}

// Annotations of the Webhook.
func (Webhook) Annotations() []schema.Annotation {
	return []schema.Annotation{entgql.RelayConnection()}
}

// WebhookDelivery is one event addressed to one webhook, with the state of its delivery.
// Every retry of a delivery carries the same event_id (the webhook-id header).
type WebhookDelivery struct{ ent.Schema }

// Mixin of the WebhookDelivery.
func (WebhookDelivery) Mixin() []ent.Mixin {
	return []ent.Mixin{IDMixin{Prefix: ids.WebhookDelivery}, TimeMixin{}, TenantMixin{}}
}

// Fields of the WebhookDelivery.
func (WebhookDelivery) Fields() []ent.Field {
	return []ent.Field{
		field.String("webhook_id").Immutable().Annotations(entgql.Type("ID")),
		field.String("event_id").NotEmpty().Immutable(),
		field.String("event_type").NotEmpty().Immutable().
			Annotations(entgql.OrderField("EVENT_TYPE")),
		field.Text("payload").Immutable(),
		field.Enum("status").NamedValues("Pending", "PENDING", "Delivered", "DELIVERED", "Failed", "FAILED").Default("PENDING"),
		field.Int("attempts").Default(0),
		field.Time("next_attempt_at").Optional().Nillable(),
		field.Time("last_attempt_at").Optional().Nillable(),
		field.Int("response_status").Optional().Nillable(),
		field.Int("latency_ms").Optional().Nillable(),
		field.String("error").Optional().Nillable().MaxLen(1000),
	}
}

// Edges of the WebhookDelivery.
func (WebhookDelivery) Edges() []ent.Edge {
	return []ent.Edge{
		edge.From("webhook", Webhook.Type).Ref("deliveries").Field("webhook_id").Unique().Required().Immutable(),
		edge.To("attempt_log", WebhookAttempt.Type).
			Annotations(authScopes("webhooks:read")),
	}
}

// Indexes of the WebhookDelivery.
func (WebhookDelivery) Indexes() []ent.Index {
	return []ent.Index{
		index.Fields("status", "next_attempt_at"),
		// One delivery per event and endpoint: de-duplicates deterministic event ids
		// (limit and expiry events) even when two instances enqueue at once.
		index.Fields("webhook_id", "event_id").Unique(),
	}
}

// Annotations of the WebhookDelivery.
func (WebhookDelivery) Annotations() []schema.Annotation {
	return []schema.Annotation{entgql.RelayConnection()}
}

// WebhookAttempt is one HTTP attempt of a delivery: when, the status code or error, the
// latency, and when the next attempt is due (if any).
type WebhookAttempt struct{ ent.Schema }

// Mixin of the WebhookAttempt.
func (WebhookAttempt) Mixin() []ent.Mixin {
	return []ent.Mixin{IDMixin{Prefix: ids.WebhookAttempt}, TenantMixin{}}
}

// Fields of the WebhookAttempt.
func (WebhookAttempt) Fields() []ent.Field {
	return []ent.Field{
		field.String("delivery_id").Immutable().Annotations(entgql.Type("ID")),
		field.Int("attempt").Immutable(),
		field.Time("at").Immutable().Annotations(entgql.OrderField("AT")),
		field.Int("status_code").Optional().Nillable().Immutable(),
		field.Int("latency_ms").Immutable(),
		field.String("error").Optional().Nillable().Immutable().MaxLen(1000),
		field.Time("next_attempt_at").Optional().Nillable().Immutable(),
	}
}

// Edges of the WebhookAttempt.
func (WebhookAttempt) Edges() []ent.Edge {
	return []ent.Edge{
		edge.From("delivery", WebhookDelivery.Type).Ref("attempt_log").Field("delivery_id").Unique().Required().Immutable(),
	}
}

// Indexes of the WebhookAttempt.
func (WebhookAttempt) Indexes() []ent.Index {
	return []ent.Index{index.Fields("delivery_id", "at")}
}

// Annotations of the WebhookAttempt.
func (WebhookAttempt) Annotations() []schema.Annotation {
	return []schema.Annotation{entgql.RelayConnection()}
}
