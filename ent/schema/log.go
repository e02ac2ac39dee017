package schema

import (
	"time"

	"entgo.io/contrib/entgql"
	"entgo.io/ent"
	"entgo.io/ent/schema"
	"entgo.io/ent/schema/field"
	"entgo.io/ent/schema/index"

	"github.com/latchkey/latchkey/internal/platform/ids"
	"github.com/latchkey/latchkey/internal/platform/logid"
)

// AuditLog records one change: who (the key), what (the action), which object, when.
// Rows are written by the audit hook in the transaction of the change.
type AuditLog struct{ ent.Schema }

// Mixin of the AuditLog.
func (AuditLog) Mixin() []ent.Mixin {
	return []ent.Mixin{IDMixin{Prefix: ids.AuditLog}, TenantMixin{Optional: true}}
}

// Fields of the AuditLog.
func (AuditLog) Fields() []ent.Field {
	return []ent.Field{
		field.String("actor").NotEmpty().Immutable().
			Comment("display prefix of the acting key, admin-token or system"),
		field.String("actor_key_id").Optional().Nillable().Immutable().Annotations(entgql.Type("ID")),
		field.String("action").NotEmpty().Immutable().
			Annotations(entgql.OrderField("ACTION")),
		field.String("object_type").NotEmpty().Immutable(),
		field.String("object_id").NotEmpty().Immutable().Annotations(entgql.Type("ID")),
		field.Strings("changed_fields").Optional().Immutable(),
		field.Time("created_at").Default(time.Now).Immutable().
			Annotations(entgql.OrderField("CREATED_AT")),
	}
}

// Indexes of the AuditLog.
func (AuditLog) Indexes() []ent.Index {
	return []ent.Index{index.Fields("created_at")}
}

// Annotations of the AuditLog.
func (AuditLog) Annotations() []schema.Annotation {
	return []schema.Annotation{entgql.RelayConnection()}
}

// UsageLog is one authenticated operation or verification. Rows are written in batches
// by the usage recorder, never on the request path; GraphQL reads them as the request
// log (usageLogs), tenant-isolated by the privacy policy like every other entity.
type UsageLog struct{ ent.Schema }

// Mixin of the UsageLog.
func (UsageLog) Mixin() []ent.Mixin {
	// (tenant_id, at) serves every tenant filter: no index on tenant_id alone.
	return []ent.Mixin{TenantMixin{NoIndex: true}}
}

// Fields of the UsageLog.
func (UsageLog) Fields() []ent.Field {
	return []ent.Field{
		field.Int64("id").GoType(logid.ID(0)),
		field.String("api_key_id").Immutable().Annotations(entgql.Type("ID")),
		field.String("owner_id").Optional().Nillable().Immutable().
			Comment("the owner of a consumer key (verifications), for the request log and breakdowns"),
		field.String("operation_name").Default("").Immutable().
			Comment("the GraphQL operation's name, or a verification's tag"),
		field.String("operation_type").Immutable().
			Comment("query, mutation, subscription or verify"),
		field.Strings("root_fields").Optional().Immutable(),
		field.String("outcome").Immutable().
			Comment("how it ended: OK, ERROR, FORBIDDEN, RATE_LIMITED, QUOTA_EXCEEDED, or a verification's code (VALID, REVOKED, ...); stored in lower case").
			Annotations(entgql.Type("UsageOutcome")),
		field.Int("latency_ms").Immutable(),
		field.String("ip").Default("").Immutable().
			Comment("the client IP the request came from"),
		field.Time("at").Immutable().
			Annotations(entgql.OrderField("AT")),
	}
}

// Indexes of the UsageLog.
func (UsageLog) Indexes() []ent.Index {
	return []ent.Index{
		index.Fields("api_key_id", "at"),
		index.Fields("at"),
		// The request log of a tenant, newest first.
		index.Fields("tenant_id", "at"),
	}
}

// Annotations of the UsageLog: a Relay connection with where filters (the request log);
// no mutations, the recorder writes the rows.
func (UsageLog) Annotations() []schema.Annotation {
	return []schema.Annotation{entgql.RelayConnection()}
}

// UsageRollup is the pre-aggregated usage of one key over one bucket (a minute, hour or
// day). The recorder adds to it with an upsert on every flush; usage queries read only
// rollups, never raw rows. Latency is kept as a fixed histogram (see internal/usage) so
// that percentiles merge across buckets and instances.
type UsageRollup struct{ ent.Schema }

// Mixin of the UsageRollup.
func (UsageRollup) Mixin() []ent.Mixin {
	return []ent.Mixin{TenantMixin{}}
}

// Fields of the UsageRollup.
func (UsageRollup) Fields() []ent.Field {
	fields := []ent.Field{
		field.Int64("id"),
		field.String("api_key_id").Immutable(),
		field.Enum("granularity").Values("minute", "hour", "day").Immutable(),
		field.Time("bucket_start").Immutable(),
		field.Int64("requests").Default(0),
		field.Int64("errors").Default(0),
		field.Int64("rate_limited").Default(0),
		field.Int64("quota_exceeded").Default(0),
		field.Int64("uncharged").Default(0).
			Comment("operations that charged no quota: refused before the limits (a revoked or disabled key, missing permissions) or while a limit store was down"),
		field.Int64("latency_sum_ms").Default(0),
	}
	for i := range LatencyBuckets {
		fields = append(fields, field.Int64(latencyColumn(i)).Default(0))
	}
	return fields
}

// LatencyBuckets is the number of latency histogram columns of a rollup.
const LatencyBuckets = 16

func latencyColumn(i int) string { return "lat_" + string(rune('a'+i)) }

// Indexes of the UsageRollup.
func (UsageRollup) Indexes() []ent.Index {
	return []ent.Index{
		index.Fields("api_key_id", "granularity", "bucket_start").Unique(),
		index.Fields("tenant_id", "granularity", "bucket_start"),
		// The minute rows of a time range, whatever the key: what the fold reads and
		// what pruning deletes.
		index.Fields("granularity", "bucket_start"),
	}
}

// Annotations of the UsageRollup.
func (UsageRollup) Annotations() []schema.Annotation {
	return []schema.Annotation{entgql.Skip()}
}

// UsageFold is the single row (id 1) that says how far the minute rollups have been
// folded into the hour and day rollups. The recorder writes an event's hour and day
// rows itself only when its minute is before folded_before; later minutes are added
// to the hour and day rows by the fold, which moves folded_before on in the same
// transaction. Usage queries add the minute rows from folded_before on to the hour and
// day rows (see internal/domain/usage, fold.go). The migration creates the row.
type UsageFold struct{ ent.Schema }

// Fields of the UsageFold.
func (UsageFold) Fields() []ent.Field {
	return []ent.Field{
		field.Int("id"),
		field.Time("folded_before").
			Comment("every minute rollup before this time is also in the hour and day rollups; none after it is"),
	}
}

// Annotations of the UsageFold.
func (UsageFold) Annotations() []schema.Annotation {
	return []schema.Annotation{entgql.Skip()}
}
