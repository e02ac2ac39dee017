package schema

import (
	"entgo.io/contrib/entgql"
	"entgo.io/ent"
	"entgo.io/ent/schema"
	"entgo.io/ent/schema/edge"
	"entgo.io/ent/schema/field"

	"github.com/latchkey/latchkey/internal/platform/ids"
)

// Tenant is an organization: it owns API keys, webhooks, usage and audit entries.
type Tenant struct{ ent.Schema }

// Mixin of the Tenant.
func (Tenant) Mixin() []ent.Mixin {
	return []ent.Mixin{IDMixin{Prefix: ids.Tenant}, TimeMixin{}}
}

// Fields of the Tenant.
func (Tenant) Fields() []ent.Field {
	return []ent.Field{
		field.String("name").NotEmpty().MaxLen(100).
			Annotations(entgql.OrderField("NAME")),
		field.String("slug").NotEmpty().MaxLen(63).Unique().
			Annotations(entgql.OrderField("SLUG")),
		field.String("plan").Default("free").MaxLen(32),
		field.Bool("active").Default(true),
		field.String("key_prefix").Default("lk").MaxLen(12).
			Comment("the start of the tenant's new keys (<key_prefix>_live_…), 2-12 lowercase letters or digits"),
	}
}

// Edges of the Tenant.
func (Tenant) Edges() []ent.Edge {
	return []ent.Edge{
		edge.To("api_keys", ApiKey.Type).
			Annotations(entgql.RelayConnection(), authScopes("keys:read")),
		edge.To("webhooks", Webhook.Type).
			Annotations(entgql.RelayConnection(), authScopes("webhooks:read")),
	}
}

// Annotations of the Tenant.
func (Tenant) Annotations() []schema.Annotation {
	return []schema.Annotation{entgql.RelayConnection()}
}
