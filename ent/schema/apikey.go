package schema

import (
	"entgo.io/contrib/entgql"
	"entgo.io/ent"
	"entgo.io/ent/schema"
	"entgo.io/ent/schema/edge"
	"entgo.io/ent/schema/field"
	"entgo.io/ent/schema/index"

	"github.com/latchkey/latchkey/internal/platform/ids"
	"github.com/latchkey/latchkey/internal/platform/limitspec"
)

// ApiKey is a credential. Only the SHA-256 hash of the secret is stored; tenant keys
// belong to one tenant, platform admin keys (admin=true) to none.
type ApiKey struct{ ent.Schema }

// Mixin of the ApiKey.
func (ApiKey) Mixin() []ent.Mixin {
	return []ent.Mixin{IDMixin{Prefix: ids.APIKey}, TimeMixin{}, TenantMixin{Optional: true}}
}

// Fields of the ApiKey.
func (ApiKey) Fields() []ent.Field {
	return []ent.Field{
		field.String("name").NotEmpty().MaxLen(100).
			Annotations(entgql.OrderField("NAME")),
		field.String("prefix").NotEmpty().Immutable().MaxLen(32).
			Comment("display start of the key, safe to show and log"),
		field.String("hash").NotEmpty().Immutable().Unique().Sensitive().MaxLen(64).
			Annotations(entgql.Skip()).
			Comment("hex SHA-256 of the full key"),
		field.Bool("admin").Default(false).Immutable().
			Annotations(entgql.Skip()),
		field.Strings("scopes").Default([]string{}),
		field.Int("rate_limit").Optional().Nillable().
			Comment("requests per window; nil: the tenant plan's default"),
		field.Int("rate_limit_window_seconds").Optional().Nillable(),
		field.Int64("quota").Optional().Nillable().
			Comment("requests per quota period; nil: the tenant plan's default (0 there: unlimited)"),
		field.Enum("quota_period").NamedValues("Day", "DAY", "Month", "MONTH").Optional().Nillable().
			Comment("calendar period of the quota (UTC); nil: the plan's"),
		field.Time("expires_at").Optional().Nillable().
			Annotations(entgql.OrderField("EXPIRES_AT")),
		field.Time("last_used_at").Optional().Nillable().
			Annotations(entgql.OrderField("LAST_USED_AT")),
		field.Time("revoked_at").Optional().Nillable(),
		field.Time("rotated_at").Optional().Nillable().
			Comment("when a successor replaced this key; it works until expires_at (the grace period)"),
		field.String("rotated_from_id").Optional().Nillable().Immutable().
			Annotations(entgql.Type("ID")),
		field.String("quota_key").Optional().Nillable().Immutable().
			Annotations(entgql.Skip()).
			Comment("the key whose quota counter this key uses: the first key of its rotation chain (nil: itself)"),
		field.Bool("limits_locked").Default(false).
			Comment("rate limit and quota set by a platform admin: tenant keys may only tighten them"),
		field.Bool("expiry_locked").Default(false).
			Comment("expiry set by a platform admin or bounded by the key that created or rotated this one: tenant keys may only bring it forward"),
		field.Enum("kind").NamedValues("Management", "MANAGEMENT", "Consumer", "CONSUMER").Default("MANAGEMENT").Immutable().
			Comment("MANAGEMENT keys call Latchkey's API; CONSUMER keys are issued to a tenant's customers and only verified"),
		field.Enum("environment").NamedValues("Live", "LIVE", "Test", "TEST").Default("LIVE").Immutable().
			Comment("a label, visible in the key (<prefix>_live_ / <prefix>_test_); limited and charged alike"),
		field.String("owner_id").Optional().Nillable().MaxLen(128).
			Annotations(entgql.OrderField("OWNER_ID")).
			Comment("the tenant's own customer or user id, returned by every verification"),
		field.JSON("meta", map[string]any{}).Optional().
			Annotations(entgql.Type("Map"), entgql.Skip(entgql.SkipWhereInput, entgql.SkipOrderField)).
			Comment("a JSON object of at most 4 KiB, returned by every verification"),
		field.Strings("permissions").Optional().
			Comment("the tenant's own permission names (e.g. documents:read), distinct from Latchkey scopes"),
		field.Bool("enabled").Default(true).
			Comment("a reversible switch: a disabled key fails verification with DISABLED"),
		field.JSON("limits", []limitspec.Named{}).Optional().
			Annotations(entgql.Type("[NamedLimit!]"), entgql.Skip(entgql.SkipWhereInput, entgql.SkipOrderField)).
			Comment("named limits, charged by verifications that name them; nil: the plan's"),
		field.Int64("credits_remaining").Optional().Nillable().
			Annotations(entgql.Skip()).
			Comment("the credit balance as last written with the usage (the live balance is in the limit store); nil: no credits"),
		field.Int64("credits_refill_amount").Optional().Nillable().
			Annotations(entgql.Skip()),
		field.Enum("credits_refill_interval").NamedValues("Never", "NEVER", "Daily", "DAILY", "Monthly", "MONTHLY").Optional().Nillable().
			Annotations(entgql.Skip()),
		field.Int64("credits_granted").Optional().Nillable().
			Annotations(entgql.Skip()).
			Comment("the balance the 80 % and 100 % warnings count against: the refill amount, or what was set and added"),
		field.Time("credits_period_start").Optional().Nillable().
			Annotations(entgql.Skip()).
			Comment("start of the refill period credits_remaining belongs to"),
	}
}

// Indexes of the ApiKey.
func (ApiKey) Indexes() []ent.Index {
	return []ent.Index{index.Fields("tenant_id", "owner_id")}
}

// Edges of the ApiKey.
func (ApiKey) Edges() []ent.Edge {
	return []ent.Edge{
		edge.From("tenant", Tenant.Type).Ref("api_keys").Field("tenant_id").Unique().Immutable().
			Annotations(authScopes("tenant:read")),
		edge.To("rotated_to", ApiKey.Type).
			Annotations(authScopes("keys:read")).
			From("rotated_from").Field("rotated_from_id").Unique().Immutable().
			Annotations(authScopes("keys:read")),
	}
}

// Annotations of the ApiKey.
func (ApiKey) Annotations() []schema.Annotation {
	return []schema.Annotation{entgql.RelayConnection()}
}
