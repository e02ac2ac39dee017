package gqlserver

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"unicode"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"

	"github.com/latchkey/latchkey/graph/gqlerr"
	"github.com/latchkey/latchkey/graph/querybudget"
	"github.com/latchkey/latchkey/internal/platform/fault"
)

// queryLimits rejects operations nested deeper than Depth or costlier than
// Complexity before anything executes, with BAD_USER_INPUT. Both walks compute each
// fragment once (querybudget.Depth, querybudget.Complexity).
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
	if d := querybudget.Depth(op); d > l.Depth {
		return gqlerr.From(fault.BadInput("query", "query depth %d exceeds the limit of %d", d, l.Depth).With("reason", "depth"))
	}
	if c := querybudget.Complexity(ctx, l.es, op, rc.Variables); c > l.Complexity {
		return gqlerr.From(fault.New(fault.BadUserInput, fmt.Sprintf("query complexity %d exceeds the limit of %d", c, l.Complexity)).With("reason", "complexity"))
	}
	return nil
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

// Bounds of filter arguments, so that a `where` input cannot build a query the
// database refuses (too many variables, too deep an expression) or that is slow.
const (
	maxWhereDepth = 8
	maxWhereItems = 500
)

// MaxPageSize bounds first/last of every connection (root lists and edges alike) and
// the ids of nodes().
const MaxPageSize = 100

// argLimits is a field middleware that checks every field's arguments before its
// resolver runs: first and last are not both set and within 0..MaxPageSize, nodes()
// takes at most MaxPageSize ids, and `where` filters stay within
// maxWhereDepth nested not/and/or/has…With levels and maxWhereItems list items.
// Violations are BAD_USER_INPUT.
func argLimits(ctx context.Context, next graphql.Resolver) (any, error) {
	fc := graphql.GetFieldContext(ctx)
	if fc == nil || len(fc.Args) == 0 {
		return next(ctx)
	}
	first, last := fc.Args["first"], fc.Args["last"]
	if !isNil(first) && !isNil(last) {
		return nil, fault.BadInput("last", "pass either first or last, not both")
	}
	for name, n := range map[string]any{"first": first, "last": last} {
		if p, ok := n.(*int); ok && p != nil && (*p < 0 || *p > MaxPageSize) {
			return nil, fault.BadInput(name, "%s must be between 0 and %d", name, MaxPageSize)
		}
	}
	if ids, ok := fc.Args["ids"].([]string); ok && len(ids) > MaxPageSize {
		return nil, fault.BadInput("ids", "at most %d ids", MaxPageSize)
	}
	if w, ok := fc.Args["where"]; ok && !isNil(w) {
		items := 0
		if err := walkWhere(reflect.ValueOf(w), 0, &items); err != nil {
			return nil, err
		}
	}
	for name, v := range fc.Args {
		if hasControl(reflect.ValueOf(v)) {
			return nil, fault.BadInput(name, "%s must not contain control characters (tab, line feed and carriage return are allowed)", name)
		}
	}
	return next(ctx)
}

// hasControl reports whether a string anywhere in v (an argument: scalars, input
// structs, lists, maps) holds a control character other than tab, LF or CR. NUL and
// its kin are refused in every free-text field alike, before any database sees them
// (PostgreSQL rejects NUL in text; SQLite would store it).
func hasControl(v reflect.Value) bool {
	for v.Kind() == reflect.Pointer || v.Kind() == reflect.Interface {
		if v.IsNil() {
			return false
		}
		v = v.Elem()
	}
	switch v.Kind() {
	case reflect.String:
		for _, r := range v.String() {
			if unicode.IsControl(r) && r != '\t' && r != '\n' && r != '\r' {
				return true
			}
		}
	case reflect.Struct:
		if strings.HasPrefix(v.Type().Name(), "Omittable[") {
			// graphql.Omittable keeps its value in unexported fields.
			return hasControl(v.MethodByName("Value").Call(nil)[0])
		}
		for i := 0; i < v.NumField(); i++ {
			if v.Type().Field(i).IsExported() && hasControl(v.Field(i)) {
				return true
			}
		}
	case reflect.Slice, reflect.Array:
		for i := 0; i < v.Len(); i++ {
			if hasControl(v.Index(i)) {
				return true
			}
		}
	case reflect.Map:
		it := v.MapRange()
		for it.Next() {
			if hasControl(it.Key()) || hasControl(it.Value()) {
				return true
			}
		}
	}
	return false
}

func isNil(v any) bool {
	if v == nil {
		return true
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Pointer, reflect.Slice, reflect.Map, reflect.Interface:
		return rv.IsNil()
	}
	return false
}

// walkWhere walks a generated *XWhereInput: nested inputs (Not, And, Or, Has…With)
// count as depth, slices of scalars (…In, …NotIn) as items.
func walkWhere(v reflect.Value, depth int, items *int) error {
	for v.Kind() == reflect.Pointer || v.Kind() == reflect.Interface {
		if v.IsNil() {
			return nil
		}
		v = v.Elem()
	}
	switch v.Kind() {
	case reflect.Struct:
		if depth > maxWhereDepth {
			return fault.BadInput("where", "filter nested deeper than %d levels", maxWhereDepth)
		}
		for i := 0; i < v.NumField(); i++ {
			if !v.Type().Field(i).IsExported() {
				continue
			}
			if err := walkWhere(v.Field(i), depth+1, items); err != nil {
				return err
			}
		}
	case reflect.Slice:
		for i := 0; i < v.Len(); i++ {
			*items++
			if *items > maxWhereItems {
				return fault.BadInput("where", "filter lists hold more than %d values in all", maxWhereItems)
			}
			if err := walkWhere(v.Index(i), depth, items); err != nil {
				return err
			}
		}
	}
	return nil
}
