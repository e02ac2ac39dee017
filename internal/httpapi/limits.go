package httpapi

import (
	"context"
	"fmt"

	"github.com/99designs/gqlgen/complexity"
	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"

	"github.com/latchkey/latchkey/internal/apierr"
)

// queryLimits rejects operations nested deeper than Depth or costlier than
// Complexity before anything executes, with BAD_USER_INPUT.
type queryLimits struct {
	Depth      int
	Complexity int
	es         graphql.ExecutableSchema
}

var _ interface {
	graphql.HandlerExtension
	graphql.OperationContextMutator
} = &queryLimits{}

func (*queryLimits) ExtensionName() string { return "QueryLimits" }

func (l *queryLimits) Validate(es graphql.ExecutableSchema) error {
	l.es = es
	return nil
}

func (l *queryLimits) MutateOperationContext(ctx context.Context, rc *graphql.OperationContext) *gqlerror.Error {
	op := rc.Doc.Operations.ForName(rc.OperationName)
	if op == nil {
		return nil
	}
	if d := depth(op.SelectionSet, 0); d > l.Depth {
		return apierr.BadInput("query", "query depth %d exceeds the limit of %d", d, l.Depth).With("reason", "depth").GQL()
	}
	if c := complexity.Calculate(ctx, l.es, op, rc.Variables); c > l.Complexity {
		return apierr.New(apierr.BadUserInput, fmt.Sprintf("query complexity %d exceeds the limit of %d", c, l.Complexity)).With("reason", "complexity").GQL()
	}
	return nil
}

// depth returns the nesting depth of a selection set; fragments count as inline
// (validation has already rejected fragment cycles).
func depth(set ast.SelectionSet, level int) int {
	deepest := level
	for _, sel := range set {
		var d int
		switch s := sel.(type) {
		case *ast.Field:
			if s.Name == "__schema" || s.Name == "__type" {
				// Introspection is bounded by the schema itself; GraphiQL's query
				// nests ofType far deeper than any data query needs.
				d = level + 1
			} else if len(s.SelectionSet) == 0 {
				d = level + 1
			} else {
				d = depth(s.SelectionSet, level+1)
			}
		case *ast.InlineFragment:
			d = depth(s.SelectionSet, level)
		case *ast.FragmentSpread:
			if s.Definition != nil {
				d = depth(s.Definition.SelectionSet, level)
			}
		}
		deepest = max(deepest, d)
	}
	return deepest
}

// introspectionOnly reports whether every root field of op is an introspection field,
// the only thing an anonymous caller may run (so that the playground can load the schema).
func introspectionOnly(op *ast.OperationDefinition) bool {
	if op == nil || op.Operation != ast.Query {
		return false
	}
	return onlyIntrospection(op.SelectionSet)
}

func onlyIntrospection(set ast.SelectionSet) bool {
	for _, sel := range set {
		switch s := sel.(type) {
		case *ast.Field:
			if s.Name != "__schema" && s.Name != "__type" && s.Name != "__typename" {
				return false
			}
		case *ast.InlineFragment:
			if !onlyIntrospection(s.SelectionSet) {
				return false
			}
		case *ast.FragmentSpread:
			if s.Definition == nil || !onlyIntrospection(s.Definition.SelectionSet) {
				return false
			}
		}
	}
	return true
}
