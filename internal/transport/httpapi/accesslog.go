package httpapi

import (
	"bufio"
	"context"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/latchkey/latchkey/internal/platform/logging"
	"github.com/latchkey/latchkey/internal/platform/viewer"
)

// withRequestID gives every request an id (a valid incoming X-Request-ID, or a new
// one), returns it in X-Request-ID, puts it on every log line of the request, and
// writes one access log line per request that mode selects ("errors" or "": status 400
// and above and WebSocket connections; "all"; "off"), never with a key: only its display
// prefix.
func withRequestID(next http.Handler, mode string) http.Handler {
	errorsOnly := mode == "errors" || mode == ""
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		id := header(r.Header, hdrRequestID)
		if !logging.ValidRequestID(id) {
			id = logging.NewRequestID()
		}
		w.Header()[hdrRequestID] = []string{id}
		ctx := logging.WithRequestID(r.Context(), id)
		if mode == "off" || !slog.Default().Enabled(ctx, slog.LevelInfo) {
			// No access log at this level: skip its bookkeeping.
			next.ServeHTTP(w, r.WithContext(ctx))
			return
		}
		lw := &logWriter{ResponseWriter: w, status: http.StatusOK}
		holder := &viewerHolder{}
		ctx = context.WithValue(ctx, holderKey{}, holder)
		next.ServeHTTP(lw, r.WithContext(ctx))
		if r.URL.Path == "/healthz" || r.URL.Path == "/readyz" || r.URL.Path == "/metrics" ||
			errorsOnly && lw.status < 400 && !lw.hijacked {
			return
		}
		var buf [8]slog.Attr // typed attributes in a stack array: no boxing per request
		attrs := append(buf[:0], slog.String("method", r.Method), slog.String("path", r.URL.Path), slog.Int("status", lw.status),
			slog.Float64("duration_ms", float64(time.Since(start).Microseconds())/1000), slog.Int("bytes", lw.bytes))
		if v := holder.v; v != nil {
			attrs = append(attrs, slog.String("key", v.Actor()), slog.String("tenant", v.TenantID))
		}
		if lw.hijacked {
			attrs = append(attrs, slog.Bool("websocket", true))
		}
		slog.LogAttrs(ctx, slog.LevelInfo, "request", attrs...)
	})
}

// viewerHolder lets the access log learn the viewer the auth middleware found.
type viewerHolder struct{ v *viewer.Viewer }

type holderKey struct{}

// noteViewer records the authenticated viewer for the access log.
func noteViewer(ctx context.Context, v *viewer.Viewer) {
	if h, ok := ctx.Value(holderKey{}).(*viewerHolder); ok {
		h.v = v
	}
}

type logWriter struct {
	http.ResponseWriter
	status   int
	bytes    int
	wrote    bool
	hijacked bool
}

func (w *logWriter) WriteHeader(code int) {
	if !w.wrote {
		w.status, w.wrote = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *logWriter) Write(b []byte) (int, error) {
	w.wrote = true
	n, err := w.ResponseWriter.Write(b)
	w.bytes += n
	return n, err
}

func (w *logWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *logWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	w.hijacked = true
	w.status = http.StatusSwitchingProtocols
	return http.NewResponseController(w.ResponseWriter).Hijack()
}
