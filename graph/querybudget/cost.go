package querybudget

import (
	"context"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/ast"
)

// Depth returns the nesting depth of op, counting fragments as if they were written
// inline, each fragment's depth computed once. Introspection fields (__schema, __type)
// count as one level: they are bounded by the schema, and GraphiQL's introspection query
// nests ofType far deeper than any data query. op must be validated (no fragment cycles).
func Depth(op *ast.OperationDefinition) int {
	m := map[*ast.FragmentDefinition]int{}
	return depth(op.SelectionSet, 0, m)
}

func depth(set ast.SelectionSet, level int, memo map[*ast.FragmentDefinition]int) int {
	deepest := level
	for _, sel := range set {
		d := level
		switch s := sel.(type) {
		case *ast.Field:
			if s.Name == "__schema" || s.Name == "__type" || len(s.SelectionSet) == 0 {
				d = level + 1
			} else {
				d = depth(s.SelectionSet, level+1, memo)
			}
		case *ast.InlineFragment:
			d = depth(s.SelectionSet, level, memo)
		case *ast.FragmentSpread:
			if s.Definition != nil {
				rel, ok := memo[s.Definition]
				if !ok {
					rel = depth(s.Definition.SelectionSet, 0, memo)
					memo[s.Definition] = rel
				}
				d = level + rel
			}
		}
		deepest = max(deepest, d)
	}
	return deepest
}

// Complexity returns the complexity of op as gqlgen's complexity.Calculate defines it
// (each field 1 plus its children, or the schema's own complexity function of the field,
// interfaces at their most expensive implementation, __schema free), with each
// fragment's complexity computed once instead of once per spread. op must be validated.
func Complexity(ctx context.Context, es graphql.ExecutableSchema, op *ast.OperationDefinition, vars map[string]any) int {
	w := complexityWalker{es: es, schema: es.Schema(), vars: vars, memo: map[*ast.FragmentDefinition]int{}}
	return w.set(ctx, op.SelectionSet)
}

type complexityWalker struct {
	es     graphql.ExecutableSchema
	schema *ast.Schema
	vars   map[string]any
	memo   map[*ast.FragmentDefinition]int
}

func (w complexityWalker) set(ctx context.Context, set ast.SelectionSet) int {
	total := 0
	for _, sel := range set {
		switch s := sel.(type) {
		case *ast.Field:
			if s.Definition == nil || s.ObjectDefinition == nil {
				continue
			}
			def := w.schema.Types[s.Definition.Type.Name()]
			if def == nil || def.Name == "__Schema" {
				continue
			}
			child := 0
			switch def.Kind {
			case ast.Object, ast.Interface, ast.Union:
				child = w.set(ctx, s.SelectionSet)
			}
			args := s.ArgumentMap(w.vars)
			c := 0
			if s.ObjectDefinition.Kind == ast.Interface {
				for _, t := range w.schema.GetPossibleTypes(s.ObjectDefinition) {
					c = max(c, w.field(ctx, t, s.Name, child, args))
				}
			} else {
				c = w.field(ctx, s.ObjectDefinition, s.Name, child, args)
			}
			total = satAdd(total, c)
		case *ast.InlineFragment:
			total = satAdd(total, w.set(ctx, s.SelectionSet))
		case *ast.FragmentSpread:
			if s.Definition == nil {
				continue
			}
			c, ok := w.memo[s.Definition]
			if !ok {
				c = w.set(ctx, s.Definition.SelectionSet)
				w.memo[s.Definition] = c
			}
			total = satAdd(total, c)
		}
	}
	return total
}

func (w complexityWalker) field(ctx context.Context, def *ast.Definition, name string, child int, args map[string]any) int {
	if c, ok := w.es.Complexity(ctx, def.Name, name, child, args); ok && c >= 1 {
		return c
	}
	return satAdd(1, child)
}
