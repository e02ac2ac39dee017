package migrate

import (
	"slices"

	"ariga.io/atlas/sql/postgres"
	atlas "ariga.io/atlas/sql/schema"
	"entgo.io/ent/dialect/sql/schema"
)

// partitioned maps the tables that hand-written PostgreSQL migrations partition to
// their partition key column. Neither ent nor Atlas models partitions (and Atlas
// names the key's column wrongly once a column before it was dropped, so the name is
// given here).
var partitioned = map[string]string{"usage_logs": "at"}

// IgnorePartitions is the schema option that makes a diff against the ent schema
// ignore the native partitioning of the tables the PostgreSQL migrations partition by
// hand, and only that: the partition key, and the partition key's columns added to
// the primary key (PostgreSQL requires them there). Atlas does not inspect the
// partitions themselves. Any other difference, in those tables too, is still
// reported, a primary key that differs otherwise included. The migration generator
// and the schema-drift test use it; it changes nothing on SQLite. The option itself
// returns no error; the diff returns Atlas's.
func IgnorePartitions() schema.MigrateOption {
	return schema.WithDiffHook(func(next schema.Differ) schema.Differ {
		return schema.DiffFunc(func(current, desired *atlas.Schema) ([]atlas.Change, error) {
			if current != nil && desired != nil {
				desired = withPartitioning(current, desired)
			}
			return next.Diff(current, desired)
		})
	})
}

// withPartitioning returns a copy of desired (the ent schema) where each partitioned
// table of the list is partitioned as in current (the database), and has current's
// primary key when that key is desired's plus partition key columns.
func withPartitioning(current, desired *atlas.Schema) *atlas.Schema {
	out := *desired
	out.Tables = slices.Clone(desired.Tables)
	for i, want := range out.Tables {
		have, ok := current.Table(want.Name)
		var p *postgres.Partition
		if ok {
			p = partitionOf(have.Attrs)
		}
		key := partitioned[want.Name]
		if key == "" || p == nil || partitionOf(want.Attrs) != nil {
			continue
		}
		t := *want
		t.Attrs = append(slices.Clone(want.Attrs), p)
		if samePrimaryKey(have.PrimaryKey, want.PrimaryKey, key) {
			t.PrimaryKey = have.PrimaryKey
		}
		out.Tables[i] = &t
	}
	return &out
}

// samePrimaryKey reports whether have is want with the partition key column added.
func samePrimaryKey(have, want *atlas.Index, key string) bool {
	if have == nil || want == nil {
		return false
	}
	cols := func(ix *atlas.Index) []string {
		var out []string
		for _, part := range ix.Parts {
			if part.C == nil {
				return nil
			}
			if part.C.Name != key {
				out = append(out, part.C.Name)
			}
		}
		return out
	}
	rest, wanted := cols(have), cols(want)
	return len(rest) > 0 && slices.Equal(rest, wanted) && len(have.Parts) == len(rest)+1
}

// partitionOf returns the partition key among attrs, or nil.
func partitionOf(attrs []atlas.Attr) *postgres.Partition {
	for _, a := range attrs {
		if p, ok := a.(*postgres.Partition); ok {
			return p
		}
	}
	return nil
}
