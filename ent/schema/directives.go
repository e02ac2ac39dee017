package schema

import (
	"entgo.io/contrib/entgql"
	"github.com/vektah/gqlparser/v2/ast"
)

// authScopes puts the GraphQL @auth(scopes: [...]) directive on a generated field or edge,
// so that nested edges enforce the same scopes as the root fields that list them.
func authScopes(scopes ...string) entgql.Annotation {
	list := make(ast.ChildValueList, 0, len(scopes))
	for _, s := range scopes {
		list = append(list, &ast.ChildValue{Value: &ast.Value{Raw: s, Kind: ast.StringValue}})
	}
	return entgql.Directives(entgql.NewDirective("auth", &ast.Argument{
		Name:  "scopes",
		Value: &ast.Value{Kind: ast.ListValue, Children: list},
	}))
}
