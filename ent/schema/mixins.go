package schema

import (
	"time"

	"entgo.io/contrib/entgql"
	"entgo.io/ent"
	"entgo.io/ent/schema/field"
	"entgo.io/ent/schema/index"
	"entgo.io/ent/schema/mixin"

	"github.com/latchkey/latchkey/internal/platform/ids"
)

// IDMixin gives an entity a prefixed, time-ordered string ID (see internal/ids).
type IDMixin struct {
	mixin.Schema
	Prefix string
}

// Fields of the IDMixin.
func (m IDMixin) Fields() []ent.Field {
	p := m.Prefix
	return []ent.Field{
		field.String("id").
			MaxLen(40).
			NotEmpty().
			Immutable().
			DefaultFunc(func() string { return ids.New(p) }),
	}
}

// TimeMixin adds created_at and updated_at, both orderable in GraphQL.
type TimeMixin struct{ mixin.Schema }

// Fields of the TimeMixin.
func (TimeMixin) Fields() []ent.Field {
	return []ent.Field{
		field.Time("created_at").
			Default(time.Now).
			Immutable().
			Annotations(entgql.OrderField("CREATED_AT")),
		field.Time("updated_at").
			Default(time.Now).
			UpdateDefault(time.Now).
			Annotations(entgql.OrderField("UPDATED_AT")),
	}
}

// TenantMixin marks an entity as owned by one tenant. The tenant_id field is what the
// privacy rules (ent/schema/rule) filter on; it cannot change after creation.
type TenantMixin struct {
	mixin.Schema
	// Optional allows rows without a tenant (platform admin keys, platform audit entries).
	Optional bool
	// NoIndex leaves out the index on tenant_id alone, for an entity whose own indexes
	// start with tenant_id (a second index with the same prefix only costs writes and
	// disk).
	NoIndex bool
}

// Fields of the TenantMixin.
func (m TenantMixin) Fields() []ent.Field {
	f := field.String("tenant_id").Immutable().Annotations(entgql.Type("ID"))
	if m.Optional {
		f = f.Optional().Nillable()
	}
	return []ent.Field{f}
}

// Indexes of the TenantMixin.
func (m TenantMixin) Indexes() []ent.Index {
	if m.NoIndex {
		return nil
	}
	return []ent.Index{index.Fields("tenant_id")}
}
