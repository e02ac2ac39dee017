// Package gqlserver assembles the GraphQL executor of the API floor: the schema with
// its extensions (automatic persisted queries per key, the document budget, depth and
// complexity limits, argument checks), error presentation, and the interceptor that
// admits, limits and records every operation through the domain's admission service.
// The transport floor adds the transports (HTTP, WebSocket) and the middleware around it.
package gqlserver

import (
	"context"

	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/handler"
	"github.com/99designs/gqlgen/graphql/handler/extension"
	"github.com/99designs/gqlgen/graphql/handler/lru"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"
	"go.opentelemetry.io/otel/trace"

	"github.com/latchkey/latchkey/ent"
	"github.com/latchkey/latchkey/graph/fanout"
	"github.com/latchkey/latchkey/graph/gqlerr"
	"github.com/latchkey/latchkey/internal/domain/admission"
	"github.com/latchkey/latchkey/internal/domain/keys"
	"github.com/latchkey/latchkey/internal/platform/fault"
	"github.com/latchkey/latchkey/internal/platform/reqctx"
	"github.com/latchkey/latchkey/internal/platform/viewer"
)

// Config configures New. Zero values pick the defaults.
type Config struct {
	Schema graphql.ExecutableSchema
	// Admission admits, limits and records operations (nil: none of that, for
	// benchmarks of authentication alone).
	Admission *admission.Service
	// Checker re-validates the key of each operation on a WebSocket.
	Checker Checker
	// MaxDepth and MaxComplexity bound operations (defaults 12 and 5000).
	MaxDepth, MaxComplexity int
	// PerItem names fields charged per item of a list argument ("Query.nodes" → "ids").
	PerItem map[string]string
	// OnRefused, when set, counts a refused credential (metrics).
	OnRefused func(*keys.AuthError)
	// Client opens the transaction of each mutation root field (nil: none).
	Client *ent.Client
	// NoTx names mutation fields that run without a transaction of their own.
	NoTx []string
	// Tracer, when set, gives operations and resolvers spans (nil: no tracing, at
	// no cost).
	Tracer trace.Tracer
}

// New returns the executor of cfg.Schema without transports.
func New(cfg Config) *handler.Server {
	if cfg.MaxDepth <= 0 {
		cfg.MaxDepth = 12
	}
	if cfg.MaxComplexity <= 0 {
		cfg.MaxComplexity = 5000
	}
	refused := func(e *keys.AuthError) {
		if cfg.OnRefused != nil {
			cfg.OnRefused(e)
		}
	}
	// Subscriptions whose resolvers use fanout.Share encode each event once per
	// query shape, not once per subscriber.
	srv := handler.New(fanout.Wrap(cfg.Schema))
	if cfg.Tracer != nil {
		// First, so that the operation span covers the other interceptors (limits,
		// admission) and is the parent of the resolvers' and the database's spans.
		srv.Use(tracing{tr: cfg.Tracer})
	}
	cache := newDocCache(1000)
	srv.SetQueryCache(cache)
	srv.SetDisableSuggestion(true)
	srv.SetParserTokenLimit(KeyBudget.Tokens)
	srv.Use(extension.Introspection{})
	srv.Use(extension.AutomaticPersistedQuery{Cache: apqCache{lru.New[string](1000)}})
	srv.Use(&docBudget{cache: cache, refused: refused}) // after APQ: it needs the text
	srv.Use(&queryLimits{Depth: cfg.MaxDepth, Complexity: cfg.MaxComplexity})
	tx := &transactions{client: cfg.Client, skip: cfg.NoTx}
	srv.AroundRootFields(tx.rootField)
	srv.AroundFields(tx.field)
	srv.AroundFields(argLimits)
	srv.SetErrorPresenter(gqlerr.Presenter)
	srv.SetRecoverFunc(gqlerr.Recover)
	srv.AroundOperations(func(ctx context.Context, next graphql.OperationHandler) graphql.ResponseHandler {
		rc := graphql.GetOperationContext(ctx)
		if viewer.FromContext(ctx) == nil && !introspectionOnly(rc.Operation) {
			// Anonymous callers may only introspect (the playground loads the schema first).
			refused(keys.ErrMissing)
			return refuse(ctx, Unauthenticated())
		}
		if rc.Operation != nil && rc.Operation.Operation == ast.Subscription && !reqctx.OnWebSocket(ctx) {
			// Over HTTP a subscription would hold the request (and a subscription
			// slot of the key) until its first event.
			return refuse(ctx, fault.New(fault.BadUserInput, "subscriptions are served over WebSocket on /query (graphql-transport-ws or graphql-ws)").With("reason", "subscription_over_http"))
		}
		return next(ctx)
	})
	ops := &operations{admission: cfg.Admission, checker: cfg.Checker, perItem: cfg.PerItem, costs: directiveCosts(cfg.Schema.Schema())}
	srv.AroundOperations(ops.around)
	return srv
}

// refuse answers an operation with the refusal e, which the transport turns into the
// HTTP status and headers.
func refuse(ctx context.Context, e *fault.Error) graphql.ResponseHandler {
	reqctx.Refuse(ctx, e)
	return graphql.OneShot(&graphql.Response{Errors: gqlerror.List{gqlerr.From(e)}})
}

// Unauthenticated is the refusal of a request that needs a credential it did not send.
func Unauthenticated() *fault.Error {
	e := keys.ErrMissing.APIError()
	e.Message = "authentication required: send X-API-Key or Authorization: Bearer"
	return e
}
