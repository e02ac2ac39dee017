// Package reqctx carries what the transport knows about a request to the floors below
// it, and what those floors decide about the response back to the transport, without
// either knowing the other: the client IP, whether the operation runs on a WebSocket,
// and a Responder through which a refusal or the limit that applied reaches the HTTP
// status and headers. The transport puts them in the context; nothing else creates them.
package reqctx

import (
	"context"
	"time"

	"github.com/latchkey/latchkey/internal/platform/fault"
)

// Limit is the rate limit that applied to a request: the IETF RateLimit fields and the
// X-RateLimit-* headers are written from it.
type Limit struct {
	// Name is the policy name ("default").
	Name string
	// Quota units per Window.
	Quota  int
	Window time.Duration
	// Remaining units now, after this request.
	Remaining int
	// Reset is how long until the quota is whole again.
	Reset time.Duration
}

// Responder is how code below the transport shapes the HTTP response of its request.
// On a WebSocket (no HTTP response per operation) the transport provides none.
type Responder interface {
	// Refuse marks the response as carrying the refusal e: the transport chooses the
	// status from its code (401, 429, 503, 400) and sets the headers it implies
	// (WWW-Authenticate, Retry-After from e's retryAfterSeconds).
	Refuse(e *fault.Error)
	// Limit reports the limit that applied (the RateLimit headers).
	Limit(l Limit)
}

type responderKey struct{}
type ipKey struct{}
type wsKey struct{}

// WithResponder returns ctx carrying r.
func WithResponder(ctx context.Context, r Responder) context.Context {
	return context.WithValue(ctx, responderKey{}, r)
}

// Refuse reports the refusal e to the responder of ctx, if any.
func Refuse(ctx context.Context, e *fault.Error) {
	if r, ok := ctx.Value(responderKey{}).(Responder); ok && r != nil {
		r.Refuse(e)
	}
}

// ReportLimit reports l to the responder of ctx, if any.
func ReportLimit(ctx context.Context, l Limit) {
	if r, ok := ctx.Value(responderKey{}).(Responder); ok && r != nil {
		r.Limit(l)
	}
}

// WithClientIP returns ctx carrying the client's IP address.
func WithClientIP(ctx context.Context, ip string) context.Context {
	return context.WithValue(ctx, ipKey{}, ip)
}

// ClientIP returns the client IP of ctx ("" when unknown).
func ClientIP(ctx context.Context) string {
	s, _ := ctx.Value(ipKey{}).(string)
	return s
}

// WithWebSocket marks ctx as belonging to a WebSocket connection: its credential was
// verified once, at connection_init, and must be re-checked per operation.
func WithWebSocket(ctx context.Context) context.Context {
	return context.WithValue(ctx, wsKey{}, true)
}

// OnWebSocket reports whether ctx belongs to a WebSocket connection.
func OnWebSocket(ctx context.Context) bool {
	b, _ := ctx.Value(wsKey{}).(bool)
	return b
}
