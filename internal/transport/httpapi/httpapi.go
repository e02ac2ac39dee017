// Package httpapi serves Latchkey over HTTP: GraphQL on /query (GET and POST, per
// the GraphQL-over-HTTP spec, with automatic persisted queries), the playground on /,
// health on /healthz and readiness on /readyz, behind body-size, CORS and
// authentication middleware.
package httpapi

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/handler"
	"github.com/99designs/gqlgen/graphql/handler/extension"
	"github.com/99designs/gqlgen/graphql/handler/lru"
	"github.com/99designs/gqlgen/graphql/handler/transport"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/cors"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"

	"github.com/latchkey/latchkey/internal/apierr"
	"github.com/latchkey/latchkey/internal/domain/keys"
	"github.com/latchkey/latchkey/internal/platform/metrics"
	"github.com/latchkey/latchkey/internal/platform/viewer"
	"github.com/latchkey/latchkey/internal/transport/playground"
)

// Options configure the HTTP API. Zero values pick the defaults.
type Options struct {
	Schema   graphql.ExecutableSchema
	Verifier *keys.Verifier
	// Ready reports whether dependencies (the database) answer; used by /readyz.
	Ready func(context.Context) error
	// AllowedOrigins are the browser origins allowed by CORS ("*" allows any origin,
	// without credentials). Empty: no cross-origin access.
	AllowedOrigins []string
	// MaxBodyBytes bounds request bodies (default 1 MiB).
	MaxBodyBytes int64
	// MaxDepth and MaxComplexity bound queries (defaults 12 and 5000).
	MaxDepth      int
	MaxComplexity int
	// DisableAuth serves every request as a platform admin. For benchmarks only.
	DisableAuth bool
	// Guard limits and records authenticated operations (nil: neither).
	Guard *Guard
	// TrustedProxies are the peers whose X-Forwarded-For is believed.
	TrustedProxies TrustedProxies
	// Metrics, when set, counts auth failures and operations.
	Metrics *metrics.Metrics
	// Conns tracks WebSocket connections (required).
	Conns *Conns
	// MetricsOnMain serves /metrics on this handler, to platform admins only (when
	// METRICS_ADDR does not give metrics a listener of their own).
	MetricsOnMain bool
	// WebSocketInitTimeout is how long a WebSocket client may take to send
	// connection_init before the connection is closed with 4408 (default 10 s).
	WebSocketInitTimeout time.Duration
}

// verify authenticates cred, counting refusals by reason and logging the database
// errors that kept it from answering. It returns the verifier's result.
func (o Options) verify(ctx context.Context, cred string) (*viewer.Viewer, error) {
	v, err := o.Verifier.Verify(ctx, cred)
	var ae *keys.AuthError
	switch {
	case errors.As(err, &ae):
		o.refused(ae)
	case err != nil:
		slog.ErrorContext(ctx, "verify key", "err", err)
	}
	return v, err
}

// refused counts a refused credential in the metrics (never stored per key).
func (o Options) refused(ae *keys.AuthError) {
	if o.Metrics != nil {
		o.Metrics.AuthFailures.WithLabelValues(ae.Reason).Inc()
	}
}

// adminOnly serves h to platform-admin credentials only (401 otherwise).
func (o Options) adminOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cred := keys.ExtractCredential(r.Header.Get("X-API-Key"), r.Header.Get("Authorization"))
		v, err := o.Verifier.Verify(r.Context(), cred)
		if err != nil || !v.Admin {
			w.Header().Set("WWW-Authenticate", `Bearer realm="latchkey"`)
			http.Error(w, "metrics require a platform admin credential", http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// New returns the HTTP handler of the whole API.
func New(o Options) http.Handler {
	if o.MaxBodyBytes <= 0 {
		o.MaxBodyBytes = 1 << 20
	}
	if o.MaxDepth <= 0 {
		o.MaxDepth = 12
	}
	if o.MaxComplexity <= 0 {
		o.MaxComplexity = 5000
	}
	if o.Conns == nil {
		o.Conns = &Conns{}
	}
	mux := http.NewServeMux()
	mux.Handle("/query", o.graphqlHandler())
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if o.Ready != nil {
			if err := o.Ready(ctx); err != nil {
				slog.Warn("readiness check failed", "err", err)
				writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "unavailable", "reason": "database"})
				return
			}
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	playground.Register(mux, "Latchkey", "/query")

	c := cors.New(cors.Options{
		AllowedOrigins:   o.AllowedOrigins,
		AllowedMethods:   []string{http.MethodGet, http.MethodPost},
		AllowedHeaders:   []string{"X-API-Key", "Authorization", "Content-Type", "Accept"},
		ExposedHeaders:   []string{"RateLimit", "RateLimit-Policy", "X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset", "Retry-After", "X-Request-ID"},
		AllowCredentials: false, // keys travel in headers, never cookies
		MaxAge:           600,
	})
	if o.Metrics != nil && o.MetricsOnMain {
		mux.Handle("GET /metrics", o.adminOnly(promhttp.HandlerFor(o.Metrics.Registry, promhttp.HandlerOpts{})))
	}
	if len(o.AllowedOrigins) == 0 {
		return withRequestID(mux)
	}
	return withRequestID(c.Handler(mux))
}

func (o Options) graphqlHandler() http.Handler {
	srv := handler.New(o.Schema)
	srv.AddTransport(o.websocketTransport())
	srv.AddTransport(transport.Options{})
	srv.AddTransport(transport.GET{})
	srv.AddTransport(transport.POST{})
	srv.AddTransport(transport.GRAPHQL{})
	cache := newDocCache(1000)
	srv.SetQueryCache(cache)
	srv.SetDisableSuggestion(true)
	srv.SetParserTokenLimit(KeyBudget.Tokens)
	srv.Use(extension.Introspection{})
	srv.Use(extension.AutomaticPersistedQuery{Cache: apqCache{lru.New[string](1000)}})
	srv.Use(&docBudget{cache: cache, refused: o.refused}) // after APQ: it needs the text
	srv.Use(&queryLimits{Depth: o.MaxDepth, Complexity: o.MaxComplexity})
	srv.AroundFields(argLimits)
	srv.SetErrorPresenter(apierr.Presenter)
	srv.SetRecoverFunc(apierr.Recover)
	srv.AroundOperations(func(ctx context.Context, next graphql.OperationHandler) graphql.ResponseHandler {
		rc := graphql.GetOperationContext(ctx)
		if viewer.FromContext(ctx) == nil && !introspectionOnly(rc.Operation) {
			// Anonymous callers may only introspect (the playground loads the schema first).
			o.refused(keys.ErrMissing)
			return graphql.OneShot(&graphql.Response{Errors: gqlerror.List{unauthenticated(ctx).GQL()}})
		}
		if rc.Operation != nil && rc.Operation.Operation == ast.Subscription && !onWebSocket(ctx) {
			// Over HTTP a subscription would hold the request (and a subscription
			// slot of the key) until its first event.
			SetStatus(ctx, http.StatusBadRequest)
			e := apierr.New(apierr.BadUserInput, "subscriptions are served over WebSocket on /query (graphql-transport-ws or graphql-ws)").With("reason", "subscription_over_http")
			return graphql.OneShot(&graphql.Response{Errors: gqlerror.List{e.GQL()}})
		}
		return next(ctx)
	})
	if o.Guard != nil {
		o.Guard.init(o.Schema.Schema())
		srv.AroundOperations(o.Guard.Around)
	}
	return o.middleware(srv)
}

// middleware enforces the body limit and media types, authenticates the caller and
// lets the executor set the response status (401, 429) through the context.
func (o Options) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodGet, http.MethodPost, http.MethodOptions:
		default:
			w.Header().Set("Allow", "GET, POST")
			writeGraphQLError(w, r, http.StatusMethodNotAllowed, apierr.New(apierr.BadUserInput, "use GET or POST (or a WebSocket upgrade) on /query"))
			return
		}
		cred := keys.ExtractCredential(r.Header.Get("X-API-Key"), r.Header.Get("Authorization"))
		anonymous := cred == "" && !o.DisableAuth
		if anonymous && len(r.URL.RawQuery) > MaxAnonymousBodyBytes {
			o.unauthenticated(w, r)
			return
		}
		if r.Method == http.MethodPost {
			mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
			if mt != "application/json" && mt != "application/graphql" {
				writeGraphQLError(w, r, http.StatusUnsupportedMediaType,
					apierr.New(apierr.BadUserInput, "Content-Type must be application/json"))
				return
			}
			limit := o.MaxBodyBytes
			if anonymous {
				limit = min(limit, MaxAnonymousBodyBytes)
			}
			body, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
			if err != nil {
				writeGraphQLError(w, r, http.StatusBadRequest, apierr.New(apierr.BadUserInput, "could not read request body"))
				return
			}
			if int64(len(body)) > limit {
				if anonymous {
					// Without a credential only introspection runs: a large body is
					// refused as unauthenticated before it is parsed.
					o.unauthenticated(w, r)
					return
				}
				writeGraphQLError(w, r, http.StatusRequestEntityTooLarge,
					apierr.New(apierr.BadUserInput, "request body too large").With("limitBytes", o.MaxBodyBytes))
				return
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
		}
		ctx := r.Context()
		if o.DisableAuth {
			ctx = viewer.NewContext(ctx, &viewer.Viewer{Admin: true, Scopes: viewer.AllScopes})
		} else if cred != "" {
			v, err := o.verify(ctx, cred)
			var ae *keys.AuthError
			switch {
			case errors.As(err, &ae):
				w.Header().Set("WWW-Authenticate", `Bearer realm="latchkey"`)
				writeGraphQLError(w, r, http.StatusUnauthorized, ae.APIError())
				return
			case err != nil:
				writeGraphQLError(w, r, http.StatusServiceUnavailable, apierr.New(apierr.Internal, "temporarily unavailable"))
				return
			}
			ctx = viewer.NewContext(ctx, v)
			noteViewer(ctx, v)
		}
		sw := &statusWriter{ResponseWriter: w, method: r.Method}
		ctx = context.WithValue(ctx, statusKey{}, sw)
		ctx = context.WithValue(ctx, ipKey{}, o.TrustedProxies.clientIP(r))
		next.ServeHTTP(sw, r.WithContext(ctx))
	})
}

type statusKey struct{}

// statusWriter lets code running inside the executor choose the HTTP status of a
// response that gqlgen would send as 200.
type statusWriter struct {
	http.ResponseWriter
	method   string
	status   int
	released bool
	// hijacked is set once the connection became a WebSocket: its operations run
	// concurrently and have no HTTP response of their own.
	hijacked atomic.Bool
}

func (w *statusWriter) WriteHeader(code int) {
	if w.released {
		return
	}
	w.released = true
	switch {
	case code == http.StatusOK && w.status != 0:
		code = w.status
	case code == http.StatusNotAcceptable && w.method == http.MethodGet:
		// gqlgen answers a mutation over GET with 406; the GraphQL-over-HTTP spec says 405.
		w.Header().Set("Allow", "POST")
		code = http.StatusMethodNotAllowed
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if !w.released {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Hijack hands the connection over for WebSocket upgrades.
func (w *statusWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	w.hijacked.Store(true)
	w.released = true
	return http.NewResponseController(w.ResponseWriter).Hijack()
}

// SetStatus sets the HTTP status of the response of the request in ctx, replacing the
// 200 gqlgen would send (e.g. 401 or 429). It does nothing outside an HTTP request.
func SetStatus(ctx context.Context, status int) {
	if sw, ok := ctx.Value(statusKey{}).(*statusWriter); ok && !sw.hijacked.Load() {
		sw.status = status
	}
}

// Header returns the response headers of the request in ctx, or nil outside an HTTP
// request (and on WebSocket connections, whose operations have no headers).
func Header(ctx context.Context) http.Header {
	if sw, ok := ctx.Value(statusKey{}).(*statusWriter); ok && !sw.hijacked.Load() {
		return sw.Header()
	}
	return nil
}

// unauthenticated answers 401 UNAUTHENTICATED with WWW-Authenticate to a request that
// sent no credential and asked for more than an anonymous caller may.
func (o Options) unauthenticated(w http.ResponseWriter, r *http.Request) {
	o.refused(keys.ErrMissing)
	w.Header().Set("WWW-Authenticate", `Bearer realm="latchkey"`)
	e := keys.ErrMissing.APIError()
	e.Message = "authentication required: send X-API-Key or Authorization: Bearer"
	writeGraphQLError(w, r, http.StatusUnauthorized, e)
}

// writeGraphQLError writes a GraphQL response carrying one error, in the media type the
// client accepts.
func writeGraphQLError(w http.ResponseWriter, r *http.Request, status int, e *apierr.Error) {
	ct := "application/json"
	if strings.Contains(r.Header.Get("Accept"), "application/graphql-response+json") {
		ct = "application/graphql-response+json"
	}
	w.Header().Set("Content-Type", ct)
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(graphql.Response{Errors: gqlerror.List{e.GQL()}})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
