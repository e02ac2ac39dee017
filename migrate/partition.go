package migrate

import (
	"slices"

	"ariga.io/atlas/sql/postgres"
	atlas "ariga.io/atlas/sql/schema"
	"entgo.io/ent/dialect/sql/schema"
)

// partitioned are the tables that hand-written PostgreSQL migrations partition, by
// name. Neither ent nor Atlas models partitions.
var partitioned = map[string]bool{"usage_logs": true}

// IgnorePartitions is the schema option that makes a diff against the ent schema
// ignore the native partitioning of the tables the PostgreSQL migrations partition by
// hand, and only that: the partition key, the partition key's columns added to the
// primary key (PostgreSQL requires them there). Atlas does not inspect the partitions
// themselves. Any other difference, in those tables too, is still
// reported. The migration generator and the schema-drift test use it; it changes
// nothing on SQLite. The option itself returns no error; the diff returns Atlas's.
func IgnorePartitions() schema.MigrateOption {
	return schema.WithDiffHook(func(next schema.Differ) schema.Differ {
		return schema.DiffFunc(func(current, desired *atlas.Schema) ([]atlas.Change, error) {
			if current != nil && desired != nil {
				current = withoutPartitioning(current, desired)
			}
			return next.Diff(current, desired)
		})
	})
}

// withoutPartitioning returns a copy of current (the database) where each partitioned
// table of the list looks as ent describes it: no partition key, and the primary key
// without the partition columns that ent's does not have.
func withoutPartitioning(current, desired *atlas.Schema) *atlas.Schema {
	out := *current
	out.Tables = nil
	for _, t := range current.Tables {
		var p postgres.Partition
		if !partitioned[t.Name] || !hasPartition(t.Attrs, &p) {
			out.Tables = append(out.Tables, t)
			continue
		}
		want, ok := desired.Table(t.Name)
		if !ok {
			out.Tables = append(out.Tables, t)
			continue
		}
		c := *t
		c.Attrs = slices.DeleteFunc(slices.Clone(t.Attrs), func(a atlas.Attr) bool {
			_, ok := a.(*postgres.Partition)
			return ok
		})
		if c.PrimaryKey != nil && want.PrimaryKey != nil {
			keyCols := map[string]bool{}
			for _, part := range p.Parts {
				if part.C != nil {
					keyCols[part.C.Name] = true
				}
			}
			wantCols := map[string]bool{}
			for _, part := range want.PrimaryKey.Parts {
				if part.C != nil {
					wantCols[part.C.Name] = true
				}
			}
			pk := *c.PrimaryKey
			pk.Parts = slices.DeleteFunc(slices.Clone(pk.Parts), func(ip *atlas.IndexPart) bool {
				return ip.C != nil && keyCols[ip.C.Name] && !wantCols[ip.C.Name]
			})
			c.PrimaryKey = &pk
		}
		out.Tables = append(out.Tables, &c)
	}
	return &out
}

// hasPartition reports whether attrs hold a partition key, and copies it into p.
func hasPartition(attrs []atlas.Attr, p *postgres.Partition) bool {
	for _, a := range attrs {
		if v, ok := a.(*postgres.Partition); ok {
			*p = *v
			return true
		}
	}
	return false
}
