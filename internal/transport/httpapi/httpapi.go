// Package httpapi serves Latchkey over HTTP: GraphQL on /query (GET and POST, per
// the GraphQL-over-HTTP spec, with automatic persisted queries), the playground on /,
// the console on /console,
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
	"math"
	"mime"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/handler"
	"github.com/99designs/gqlgen/graphql/handler/transport"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/cors"
	"github.com/vektah/gqlparser/v2/gqlerror"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"

	"github.com/latchkey/latchkey/graph/gqlerr"
	"github.com/latchkey/latchkey/graph/gqlserver"
	"github.com/latchkey/latchkey/internal/domain/keys"
	"github.com/latchkey/latchkey/internal/domain/verify"
	"github.com/latchkey/latchkey/internal/platform/fault"
	"github.com/latchkey/latchkey/internal/platform/metrics"
	"github.com/latchkey/latchkey/internal/platform/reqctx"
	"github.com/latchkey/latchkey/internal/platform/tracing"
	"github.com/latchkey/latchkey/internal/platform/viewer"
	"github.com/latchkey/latchkey/internal/transport/console"
	"github.com/latchkey/latchkey/internal/transport/playground"
)

// Options configure the HTTP API. Zero values pick the defaults.
type Options struct {
	// AccessLog is which requests get an access log line: "errors" (status 400 and above,
	// and WebSocket connections), "all", or "off"; "" is "errors".
	AccessLog string
	// GraphQL is the executor of the API floor (graph/gqlserver) without transports.
	GraphQL *handler.Server
	// Verifier authenticates credentials.
	Verifier *keys.Verifier
	// Verifications serves POST /v1/keys/verify (nil: not served).
	Verifications *verify.Service
	// Ready reports whether dependencies (the database) answer; used by /readyz.
	Ready func(context.Context) error
	// AllowedOrigins are the browser origins allowed by CORS ("*" allows any origin,
	// without credentials). Empty: no cross-origin access.
	AllowedOrigins []string
	// MaxBodyBytes bounds request bodies (default 1 MiB).
	MaxBodyBytes int64
	// DisableAuth serves every request as a platform admin. For benchmarks only.
	DisableAuth bool
	// TrustedProxies are the peers whose X-Forwarded-For is believed.
	TrustedProxies TrustedProxies
	// Metrics, when set, counts auth failures and operations.
	Metrics *metrics.Metrics
	// Conns tracks WebSocket connections (required).
	Conns *Conns
	// MetricsOnMain serves /metrics on this handler, to platform admins only (when
	// METRICS_ADDR does not give metrics a listener of their own).
	MetricsOnMain bool
	// WebSocketInitTimeout bounds the wait for connection_init (default 10 s).
	WebSocketInitTimeout time.Duration
	// Tracing, when set, gives every request but the health checks a server span,
	// continuing the caller's W3C trace context (nil: no tracing, at no cost).
	Tracing *tracing.Provider
}

// verify authenticates cred, counting refusals by reason and logging the database
// errors that kept it from answering. It returns the verifier's result.
func (o Options) verify(ctx context.Context, cred string) (*viewer.Viewer, error) {
	v, err := o.Verifier.Verify(ctx, cred)
	var ae *keys.AuthError
	var te *keys.ThrottledError
	switch {
	case errors.As(err, &ae):
		o.refused(ae)
	case errors.As(err, &te):
		o.refused(&keys.AuthError{Reason: "throttled"})
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

// adminOnly serves h to platform-admin credentials only (401 otherwise). An unknown
// credential spends its client's failure budget, as on /query.
func (o Options) adminOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := reqctx.WithClientIP(r.Context(), o.TrustedProxies.clientIP(r))
		cred := keys.ExtractCredential(header(r.Header, hdrAPIKey), header(r.Header, hdrAuthorization))
		v, err := o.Verifier.Verify(ctx, cred)
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
	if o.Conns == nil {
		o.Conns = &Conns{}
	}
	mux := http.NewServeMux()
	mux.Handle("/query", o.graphqlHandler())
	if o.Verifications != nil {
		mux.HandleFunc("POST /v1/keys/verify", o.verifyHandler)
	}
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
	console.Register(mux, "/query")

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
	var h http.Handler = mux
	if len(o.AllowedOrigins) > 0 {
		h = c.Handler(mux)
	}
	return o.traced(withRequestID(h, o.AccessLog))
}

// traced wraps h in the server span of each request when tracing is on.
func (o Options) traced(h http.Handler) http.Handler {
	if o.Tracing == nil {
		return h
	}
	return otelhttp.NewHandler(h, "latchkey",
		otelhttp.WithTracerProvider(o.Tracing.TracerProvider),
		otelhttp.WithPropagators(o.Tracing.Propagator),
		otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string {
			if strings.HasPrefix(r.URL.Path, console.AssetPrefix) || strings.HasPrefix(r.URL.Path, playground.AssetPrefix) {
				return r.Method + " assets" // one name for every hashed asset URL
			}
			return r.Method + " " + r.URL.Path
		}),
		otelhttp.WithFilter(func(r *http.Request) bool {
			return r.URL.Path != "/healthz" && r.URL.Path != "/readyz"
		}),
	)
}

func (o Options) graphqlHandler() http.Handler {
	srv := o.GraphQL
	srv.AddTransport(o.websocketTransport())
	srv.AddTransport(transport.Options{})
	srv.AddTransport(transport.GET{})
	srv.AddTransport(transport.POST{})
	srv.AddTransport(transport.GRAPHQL{})
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
			writeGraphQLError(w, r, http.StatusMethodNotAllowed, fault.New(fault.BadUserInput, "use GET or POST (or a WebSocket upgrade) on /query"))
			return
		}
		cred := keys.ExtractCredential(header(r.Header, hdrAPIKey), header(r.Header, hdrAuthorization))
		anonymous := cred == "" && !o.DisableAuth
		if anonymous && len(r.URL.RawQuery) > gqlserver.MaxAnonymousBodyBytes {
			o.unauthenticated(w, r)
			return
		}
		if r.Method == http.MethodPost {
			mt, _, _ := mime.ParseMediaType(header(r.Header, hdrContentType))
			if mt != "application/json" && mt != "application/graphql" {
				writeGraphQLError(w, r, http.StatusUnsupportedMediaType,
					fault.New(fault.BadUserInput, "Content-Type must be application/json"))
				return
			}
			limit := o.MaxBodyBytes
			if anonymous {
				limit = min(limit, gqlserver.MaxAnonymousBodyBytes)
			}
			body, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
			if err != nil {
				writeGraphQLError(w, r, http.StatusBadRequest, fault.New(fault.BadUserInput, "could not read request body"))
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
					fault.New(fault.BadUserInput, "request body too large").With("limitBytes", o.MaxBodyBytes))
				return
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
		}
		ctx := reqctx.WithClientIP(r.Context(), o.TrustedProxies.clientIP(r))
		if o.DisableAuth {
			ctx = viewer.NewContext(ctx, &viewer.Viewer{Admin: true, Scopes: viewer.AllScopes})
		} else if cred != "" {
			v, err := o.verify(ctx, cred)
			if err != nil {
				e := credentialError(err)
				writeGraphQLError(w, r, refusalStatus(w.Header(), e), e)
				return
			}
			ctx = viewer.NewContext(ctx, v)
			noteViewer(ctx, v)
		}
		sw := &statusWriter{ResponseWriter: w, method: r.Method}
		ctx = reqctx.WithResponder(ctx, sw)
		next.ServeHTTP(sw, r.WithContext(ctx))
	})
}

// statusWriter is the reqctx.Responder of an HTTP request: it turns the refusals and
// limits that the floors below report into the status and headers of a response that
// gqlgen would send as 200.
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

// Refuse sets the status of a response carrying the refusal e, and the headers it
// implies (see refusalStatus).
func (w *statusWriter) Refuse(e *fault.Error) {
	if w.hijacked.Load() {
		return
	}
	w.status = refusalStatus(w.Header(), e)
}

// refusalStatus returns the HTTP status of a response carrying the refusal e and sets
// the headers it implies in h: 401 with WWW-Authenticate, 403, 429 with Retry-After,
// 503 with Retry-After: 1, and 400 for a request that can never succeed as sent.
func refusalStatus(h http.Header, e *fault.Error) int {
	switch e.Code {
	case fault.Unauthenticated:
		h.Set("WWW-Authenticate", `Bearer realm="latchkey"`)
		return http.StatusUnauthorized
	case fault.Forbidden:
		return http.StatusForbidden
	case fault.RateLimited, fault.QuotaExceeded:
		if secs, ok := e.Extensions["retryAfterSeconds"].(int); ok {
			h.Set("Retry-After", strconv.Itoa(secs))
		}
		return http.StatusTooManyRequests
	case fault.Internal:
		h.Set("Retry-After", "1")
		return http.StatusServiceUnavailable
	}
	return http.StatusBadRequest
}

// Limit writes the IETF RateLimit-Policy / RateLimit fields and the X-RateLimit-*
// headers older clients read (X-RateLimit-Reset in Unix seconds).
func (w *statusWriter) Limit(l reqctx.Limit) {
	if w.hijacked.Load() {
		return
	}
	setRateLimitHeaders(w.Header(), l, time.Now())
}

// setRateLimitHeaders writes the rate-limit headers of l into h.
func setRateLimitHeaders(h http.Header, l reqctx.Limit, now time.Time) {
	reset := int64(ceilSeconds(l.Reset))
	// Header values are built in one buffer and one slice array: this runs on every
	// request, so it allocates twice instead of ten times.
	var buf [160]byte
	b := append(buf[:0], '"')
	b = append(b, l.Name...)
	b = append(b, `";q=`...)
	b = strconv.AppendInt(b, int64(l.Quota), 10)
	b = append(b, ";w="...)
	b = strconv.AppendInt(b, int64(l.Window/time.Second), 10)
	e1 := len(b)
	b = append(b, '"')
	b = append(b, l.Name...)
	b = append(b, `";r=`...)
	b = strconv.AppendInt(b, int64(l.Remaining), 10)
	b = append(b, ";t="...)
	b = strconv.AppendInt(b, reset, 10)
	e2 := len(b)
	b = strconv.AppendInt(b, int64(l.Quota), 10)
	e3 := len(b)
	b = strconv.AppendInt(b, int64(l.Remaining), 10)
	e4 := len(b)
	b = strconv.AppendInt(b, now.Add(time.Duration(reset)*time.Second).Unix(), 10)
	all := string(b)
	vals := [5]string{all[:e1], all[e1:e2], all[e2:e3], all[e3:e4], all[e4:]}
	v := vals[:] // one array behind the five header slices
	h["Ratelimit-Policy"] = v[0:1:1]
	h["Ratelimit"] = v[1:2:2]
	h["X-Ratelimit-Limit"] = v[2:3:3]
	h["X-Ratelimit-Remaining"] = v[3:4:4]
	h["X-Ratelimit-Reset"] = v[4:5:5]
}

// ceilSeconds rounds up, so that a reset is never announced earlier than it is.
func ceilSeconds(d time.Duration) int {
	if d <= 0 {
		return 0
	}
	return int(math.Ceil(d.Seconds()))
}

// unauthenticated answers 401 UNAUTHENTICATED with WWW-Authenticate to a request that
// sent no credential and asked for more than an anonymous caller may.
func (o Options) unauthenticated(w http.ResponseWriter, r *http.Request) {
	o.refused(keys.ErrMissing)
	w.Header().Set("WWW-Authenticate", `Bearer realm="latchkey"`)
	writeGraphQLError(w, r, http.StatusUnauthorized, gqlserver.Unauthenticated())
}

// writeGraphQLError writes a GraphQL response carrying one error, in the media type the
// client accepts.
func writeGraphQLError(w http.ResponseWriter, r *http.Request, status int, e *fault.Error) {
	ct := "application/json"
	if strings.Contains(r.Header.Get("Accept"), "application/graphql-response+json") {
		ct = "application/graphql-response+json"
	}
	w.Header().Set("Content-Type", ct)
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(graphql.Response{Errors: gqlerror.List{gqlerr.From(e)}})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	writeJSONHeader(w, status)
	_ = json.NewEncoder(w).Encode(v)
}

// writeJSONHeader writes the status and headers of a JSON answer that is not cached.
func writeJSONHeader(w http.ResponseWriter, status int) {
	h := w.Header()
	h[hdrContentType] = valJSON
	h[hdrCacheControl] = valNoStore
	w.WriteHeader(status)
}
