package schema

import (
	"entgo.io/contrib/entgql"
	"entgo.io/ent"
	"entgo.io/ent/schema"
	"entgo.io/ent/schema/field"
	"entgo.io/ent/schema/index"

	"github.com/latchkey/latchkey/internal/platform/ids"
	"github.com/latchkey/latchkey/internal/platform/limitspec"
)

// Plan is a named set of limits, data rather than code: the defaults of its tenants'
// keys, the caps of each tenant as a whole, and the most keys a tenant may hold.
// Tenants name their plan (Tenant.plan); changing a plan changes every tenant on it.
type Plan struct{ ent.Schema }

// Mixin of the Plan.
func (Plan) Mixin() []ent.Mixin {
	return []ent.Mixin{IDMixin{Prefix: ids.Plan}, TimeMixin{}}
}

// Fields of the Plan.
func (Plan) Fields() []ent.Field {
	return []ent.Field{
		field.String("name").NotEmpty().MaxLen(32).Unique().Immutable().
			Annotations(entgql.OrderField("NAME")),
		field.Int("key_rate_limit").Positive().
			Comment("requests per window of each key without a limit of its own"),
		field.Int("key_rate_limit_window_seconds").Positive(),
		field.Int64("key_quota").Default(0).NonNegative().
			Comment("requests per quota period of each key without a quota of its own; 0: unlimited"),
		field.Enum("quota_period").NamedValues("Day", "DAY", "Month", "MONTH").Default("MONTH"),
		field.Int("tenant_rate_limit").Default(0).NonNegative().
			Comment("requests per window of all the tenant's keys together; 0: no cap"),
		field.Int("tenant_rate_limit_window_seconds").Default(3600).Positive(),
		field.Int64("tenant_quota").Default(0).NonNegative().
			Comment("requests per quota period of all the tenant's keys together; 0: no cap"),
		field.Int("max_keys").Default(0).NonNegative().
			Comment("most unrevoked keys a tenant may hold; 0: no limit"),
		field.JSON("key_limits", []limitspec.Named{}).Optional().
			Annotations(entgql.Type("[NamedLimit!]"), entgql.Skip(entgql.SkipWhereInput, entgql.SkipOrderField)).
			Comment("named limits of each key without named limits of its own"),
	}
}

// Owner is one of a tenant's own customers, as the tenant's consumer keys name it
// (ApiKey.owner_id): its limits are shared by all its keys, and its meta is returned by
// their verifications.
type Owner struct{ ent.Schema }

// Mixin of the Owner.
func (Owner) Mixin() []ent.Mixin {
	return []ent.Mixin{IDMixin{Prefix: ids.Owner}, TimeMixin{}, TenantMixin{}}
}

// Fields of the Owner.
func (Owner) Fields() []ent.Field {
	return []ent.Field{
		field.String("owner_id").NotEmpty().MaxLen(128).Immutable().
			Annotations(entgql.OrderField("OWNER_ID")).
			Comment("the tenant's id of its customer, as on its keys"),
		field.JSON("meta", map[string]any{}).Optional().
			Annotations(entgql.Type("Map"), entgql.Skip(entgql.SkipWhereInput, entgql.SkipOrderField)),
		field.Int("rate_limit").Optional().Nillable().
			Comment("requests per window of all the owner's keys together; nil: none"),
		field.Int("rate_limit_window_seconds").Optional().Nillable(),
		field.Int64("quota").Optional().Nillable().
			Comment("requests per quota period of all the owner's keys together; nil: none"),
		field.Enum("quota_period").NamedValues("Day", "DAY", "Month", "MONTH").Optional().Nillable(),
	}
}

// Indexes of the Owner.
func (Owner) Indexes() []ent.Index {
	return []ent.Index{index.Fields("tenant_id", "owner_id").Unique()}
}

// Annotations of the Owner.
func (Owner) Annotations() []schema.Annotation {
	return []schema.Annotation{entgql.RelayConnection()}
}
