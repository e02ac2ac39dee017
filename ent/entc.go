//go:build ignore

// entc.go generates the ent code and the entgql GraphQL schema (schema/ent.graphql).
// It runs from the repository root so that entgql resolves gqlgen.yml consistently.
package main

import (
	"fmt"
	"log"
	"os"
	"strings"

	"entgo.io/contrib/entgql"
	"entgo.io/ent/entc"
	"entgo.io/ent/entc/gen"
	"github.com/vektah/gqlparser/v2/ast"
)

func main() {
	if err := os.Chdir(".."); err != nil {
		log.Fatalf("chdir: %v", err)
	}
	ex, err := entgql.NewExtension(
		entgql.WithSchemaGenerator(),
		entgql.WithSchemaPath("schema/ent.graphql"),
		entgql.WithConfigPath("gqlgen.yml"),
		entgql.WithWhereInputs(true),
		entgql.WithRelaySpec(true),
		entgql.WithSchemaHook(pruneLogFilters),
	)
	if err != nil {
		log.Fatalf("entgql: %v", err)
	}
	err = entc.Generate("./ent/schema", &gen.Config{
		Target:  "./ent",
		Package: "github.com/latchkey/latchkey/ent",
		Features: []gen.Feature{
			gen.FeaturePrivacy,
			gen.FeatureIntercept,
			gen.FeatureEntQL,
			gen.FeatureSnapshot,
			gen.FeatureVersionedMigration,
			gen.FeatureExecQuery,
			gen.FeatureLock,
			gen.FeatureUpsert,
			gen.FeatureModifier,
		},
	}, entc.Extensions(ex))
	if err != nil {
		log.Fatalf("entc: %v", err)
	}
}

// costlyLogFilters are the operators that the request log's where input does not offer:
// on the largest table, substring, suffix and case-folding matches cannot use an index
// and make every call scan a tenant's whole retention; range comparisons of strings
// serve no question a user of the log asks.
var costlyLogFilters = []string{"Contains", "ContainsFold", "EqualFold", "HasSuffix", "GT", "GTE", "LT", "LTE"}

// pruneLogFilters removes costlyLogFilters on the text fields (strings, ids, the outcome) of UsageLogWhereInput
// (ranges of numbers, times and the log's id stay). It returns an error when the input type is missing.
func pruneLogFilters(_ *gen.Graph, s *ast.Schema) error {
	in := s.Types["UsageLogWhereInput"]
	if in == nil {
		return fmt.Errorf("UsageLogWhereInput is not in the schema")
	}
	kept := in.Fields[:0]
	for _, f := range in.Fields {
		if !costly(f) {
			kept = append(kept, f)
		}
	}
	in.Fields = kept
	return nil
}

func costly(f *ast.FieldDefinition) bool {
	if t := f.Type.Name(); t == "Int" || t == "Time" || strings.HasPrefix(f.Name, "id") {
		return false // numbers, times and the log's own id keep their ranges
	}
	for _, op := range costlyLogFilters {
		if strings.HasSuffix(f.Name, op) {
			return true
		}
	}
	return false
}
