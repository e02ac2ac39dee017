package loadstub

import (
	"context"
	"net/http"

	"github.com/99designs/gqlgen/graphql/handler"
	"github.com/99designs/gqlgen/graphql/handler/lru"
	"github.com/99designs/gqlgen/graphql/handler/transport"
	"github.com/vektah/gqlparser/v2/ast"

	"github.com/latchkey/latchkey/ent"
	"github.com/latchkey/latchkey/graph"
	"github.com/latchkey/latchkey/graph/generated"
	"github.com/latchkey/latchkey/internal/platform/viewer"
)

// GraphQL is gqlgen with the project's own generated schema and nothing else: the POST
// transport and a parsed-query cache (the server caches validated documents too), no
// authentication, limits, recording, directives or middleware. The baseline is
// { __typename }, which runs no resolver. It also answers the query the harness sends
// Latchkey, { viewer { apiKey { id } } }, from constants: the same fields through
// gqlgen's executor, a reference that shows how much of the gap to the baseline is
// gqlgen resolving the real query rather than Latchkey's own work.
func GraphQL() http.Handler {
	srv := handler.New(generated.NewExecutableSchema(generated.Config{Resolvers: constResolver{&graph.Resolver{}}}))
	srv.AddTransport(transport.POST{})
	srv.SetQueryCache(lru.New[*ast.QueryDocument](1000))
	return srv
}

// constResolver answers viewer and its apiKey with constants; every other field is
// the empty Resolver's (never asked).
type constResolver struct{ *graph.Resolver }

func (r constResolver) Query() generated.QueryResolver   { return constQuery{r.Resolver.Query()} }
func (r constResolver) Viewer() generated.ViewerResolver { return constViewer{} }

type constQuery struct{ generated.QueryResolver }

var (
	stubKey    = &ent.ApiKey{ID: "key_stub"}
	stubViewer = &viewer.Viewer{APIKeyID: stubKey.ID, TenantID: "ten_stub", Key: stubKey}
)

func (constQuery) Viewer(context.Context) (*viewer.Viewer, error) { return stubViewer, nil }

type constViewer struct{}

func (constViewer) APIKey(context.Context, *viewer.Viewer) (*ent.ApiKey, error) { return stubKey, nil }
func (constViewer) Tenant(context.Context, *viewer.Viewer) (*ent.Tenant, error) { return nil, nil }
