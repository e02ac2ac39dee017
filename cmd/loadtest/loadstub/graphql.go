package loadstub

import (
	"net/http"

	"github.com/99designs/gqlgen/graphql/handler"
	"github.com/99designs/gqlgen/graphql/handler/lru"
	"github.com/99designs/gqlgen/graphql/handler/transport"
	"github.com/vektah/gqlparser/v2/ast"

	"github.com/latchkey/latchkey/graph"
	"github.com/latchkey/latchkey/graph/generated"
)

// GraphQL is gqlgen with the project's own generated schema and nothing else: the POST
// transport and a parsed-query cache (the server caches validated documents too), no
// authentication, limits, recording, directives or middleware. It is only ever asked
// { __typename }, which runs no resolver, so the empty Resolver is enough.
func GraphQL() http.Handler {
	srv := handler.New(generated.NewExecutableSchema(generated.Config{Resolvers: &graph.Resolver{}}))
	srv.AddTransport(transport.POST{})
	srv.SetQueryCache(lru.New[*ast.QueryDocument](1000))
	return srv
}
