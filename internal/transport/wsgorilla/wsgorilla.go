// Package wsgorilla plugs github.com/gorilla/websocket into gqlgen's WebSocket
// transport.
//
// gqlgen >= v0.17.92 uses github.com/coder/websocket unless
// transport.Websocket.Implementation is set. Use this package instead:
//
//	srv.AddTransport(transport.Websocket{
//		Implementation:        &wsgorilla.Implementation{CheckOrigin: wsgorilla.AllowOrigins(cfg.Origins)},
//		KeepAlivePingInterval: 10 * time.Second, // legacy graphql-ws: "ka" messages
//		PingPongInterval:      10 * time.Second, // graphql-transport-ws: ping, pong expected
//		InitFunc:              initFunc,
//	})
//
// Both GraphQL-over-WebSocket subprotocols are negotiated: graphql-transport-ws
// (github.com/enisdenjo/graphql-ws) and the legacy graphql-ws
// (subscriptions-transport-ws). To reject a connection_init so that clients do
// not reconnect in a loop, return a close code from the InitFunc:
//
//	ctx = transport.WithWebsocketCloseCode(ctx, 4403)    // or 4401
//	ctx = transport.AppendCloseReason(ctx, "forbidden") // close reason, else "terminated"
//	return ctx, nil, err                                // ctx must not be nil
//
// The adapter enforces what gqlgen's transport does not. It inspects every
// message the client sends and the few messages gqlgen sends that are not
// results (results pass by their last bytes, undecoded). With
// graphql-transport-ws, as its PROTOCOL.md says:
//
//   - an invalid message (not JSON, not an object, an unknown type or one only
//     servers send, fields of the wrong type) closes with 4400 "Invalid
//     message received"; gqlgen would close with 1000, after which graphql-ws
//     clients reconnect and send it again, forever;
//   - subscribe before connection_ack closes with 4401 "Unauthorized";
//   - subscribe with the id of an active operation closes with 4409
//     "Subscriber for <id> already exists"; gqlgen would run both and lose
//     the first, which could then never be completed;
//   - a second connection_init closes with 4429 "Too many initialisation
//     requests";
//   - no connection_init within Implementation.InitTimeout closes with 4408
//     "Connection initialisation timeout";
//   - ping and pong are accepted before connection_ack too;
//   - gqlgen's complete after an error, or after the client's own complete,
//     is not sent;
//   - an id reused soon after its operation ended is handed to gqlgen
//     renamed (and renamed back in what gqlgen sends for it): gqlgen forgets
//     an id only after sending its end, so a client that reused it at once
//     could lose the new operation's entry, which its complete would then no
//     longer stop.
//
// With the legacy graphql-ws, whose errors are messages, a message that cannot
// be decoded or has an unknown type gets a connection_error and the connection
// stays open; a start with the id of an active operation gets an error for
// that id. See CloseBadRequest and the other constants.
package wsgorilla

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/99designs/gqlgen/graphql/handler/transport"
	"github.com/gorilla/websocket"
)

const (
	// DefaultBufferSize is the read and write buffer size used when
	// Implementation.ReadBufferSize or WriteBufferSize is zero.
	DefaultBufferSize = 1024
	// DefaultWriteTimeout bounds every write when Implementation.WriteTimeout
	// is zero.
	DefaultWriteTimeout = 10 * time.Second

	// maxCloseReason is the longest close reason that fits in a control
	// frame (125 bytes) after the 2-byte close code.
	maxCloseReason = 123
)

// defaultHandlerExitGrace is how long a connection may stay open after
// gqlgen's HTTP handler has returned without closing it (see
// conn.handlerDone).
const defaultHandlerExitGrace = time.Second

// handlerExitGrace overrides defaultHandlerExitGrace when non-zero
// (nanoseconds); tests shorten it.
var handlerExitGrace atomic.Int64

// Implementation adapts gorilla/websocket to gqlgen's
// transport.WebsocketImplementation. The zero value is ready to use. Fields
// are read on every Accept; do not change them while the server is running.
type Implementation struct {
	// CheckOrigin decides whether a browser origin may connect. Nil allows
	// only same-origin requests: no Origin header, or an Origin whose host
	// equals the request Host. It is never wide open by default; see
	// AllowOrigins. A refused origin gets HTTP 403.
	CheckOrigin func(r *http.Request) bool

	// ReadBufferSize and WriteBufferSize are gorilla's I/O buffer sizes in
	// bytes; zero means DefaultBufferSize (1024). Messages may be larger than
	// the buffers. The read buffer lives as long as the connection; write
	// buffers come from a pool shared by connections with the same size and
	// are held only while a message is being written, so an idle connection
	// holds none.
	ReadBufferSize, WriteBufferSize int

	// EnableCompression negotiates permessage-deflate (RFC 7692, no context
	// takeover) when the client offers it.
	EnableCompression bool

	// WriteTimeout bounds each write: the handshake response, every message
	// and every close frame. A write that times out closes the connection,
	// so a dead or stalled client cannot block gqlgen's writers. Zero means
	// DefaultWriteTimeout (10 s).
	WriteTimeout time.Duration

	// InitTimeout closes a connection whose client has not sent
	// connection_init within this time, with 4408 "Connection
	// initialisation timeout" (both protocols). Zero means no limit. Use it
	// instead of transport.Websocket.InitTimeout, which closes with 1002 and
	// takes a goroutine and a timer per connection; leave that one zero.
	InitTimeout time.Duration
}

var _ transport.WebsocketImplementation = (*Implementation)(nil)

// Accept upgrades the request to a WebSocket connection. The subprotocol is
// the first one in the client's Sec-WebSocket-Protocol list (client
// preference) that is also in opts.Subprotocols; none is selected when there
// is no match, which gqlgen treats as legacy graphql-ws. On failure (bad
// handshake, refused origin) Accept has written the HTTP status (403 for a
// refused origin) and headers but no body, and returns the error; gqlgen
// then writes its JSON error body.
func (i *Implementation) Accept(w http.ResponseWriter, r *http.Request, opts transport.WebsocketAcceptOptions) (transport.WebsocketConn, error) {
	var cfg Implementation
	if i != nil {
		cfg = *i
	}
	if cfg.CheckOrigin == nil {
		cfg.CheckOrigin = sameOrigin
	}
	if cfg.ReadBufferSize <= 0 {
		cfg.ReadBufferSize = DefaultBufferSize
	}
	if cfg.WriteBufferSize <= 0 {
		cfg.WriteBufferSize = DefaultBufferSize
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = DefaultWriteTimeout
	}

	upgrader := websocket.Upgrader{
		HandshakeTimeout:  cfg.WriteTimeout,
		ReadBufferSize:    cfg.ReadBufferSize,
		WriteBufferSize:   cfg.WriteBufferSize,
		WriteBufferPool:   writeBufferPool(cfg.WriteBufferSize),
		CheckOrigin:       cfg.CheckOrigin,
		EnableCompression: cfg.EnableCompression,
		// Non-nil: gorilla negotiates from this list and ignores any
		// Sec-WebSocket-Protocol in the response header.
		Subprotocols: []string{},
		Error:        writeUpgradeError,
	}
	if p := selectSubprotocol(r, opts.Subprotocols); p != "" {
		upgrader.Subprotocols = []string{p}
	}

	header := make(http.Header, len(opts.ResponseHeader))
	for k, vs := range opts.ResponseHeader {
		header[k] = append([]string(nil), vs...)
	}

	ws, err := upgrader.Upgrade(w, r, header)
	if err != nil {
		return nil, err
	}
	c := &conn{ws: ws, writeTimeout: cfg.WriteTimeout}
	if ws.Subprotocol() == transportWSName {
		c.proto = transportWS
	}
	if cfg.InitTimeout > 0 {
		c.initDeadline = true
		_ = ws.SetReadDeadline(time.Now().Add(cfg.InitTimeout))
	}
	// r.Context() is cancelled when the HTTP handler returns, also for a
	// hijacked connection and also after a panic.
	c.stopWatch = context.AfterFunc(r.Context(), c.handlerDone)
	return c, nil
}

// writeUpgradeError writes the status of a failed upgrade (403 for a refused
// origin, 400 for a bad handshake) without a body: gqlgen's transport writes
// its own JSON error body ("unable to upgrade") right after Accept fails, and
// gorilla's plain-text body would make the response "Forbidden\n{...}".
func writeUpgradeError(w http.ResponseWriter, _ *http.Request, status int, _ error) {
	w.Header().Set("Sec-Websocket-Version", "13")
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
}

// AllowOrigins returns a CheckOrigin func that allows same-origin requests
// plus the listed origins, such as "https://app.example.com". Scheme and host
// compare case-insensitively and default ports (80, 443) are ignored. "*"
// allows any origin.
func AllowOrigins(origins []string) func(*http.Request) bool {
	allowed := make(map[string]struct{}, len(origins))
	for _, o := range origins {
		o = strings.TrimSpace(o)
		if o == "*" {
			return func(*http.Request) bool { return true }
		}
		if o != "" {
			allowed[normalizeOrigin(o)] = struct{}{}
		}
	}
	return func(r *http.Request) bool {
		if sameOrigin(r) {
			return true
		}
		_, ok := allowed[normalizeOrigin(r.Header.Get("Origin"))]
		return ok
	}
}

// sameOrigin allows requests without an Origin header (non-browser clients)
// and requests whose Origin host equals the Host they were sent to.
func sameOrigin(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return false
	}
	return strings.EqualFold(u.Host, r.Host)
}

// normalizeOrigin returns scheme://host[:port] in lower case without a default
// port, or the lower-cased input if it is not such a URL (e.g. "null").
func normalizeOrigin(origin string) string {
	origin = strings.ToLower(strings.TrimSpace(origin))
	u, err := url.Parse(origin)
	if err != nil || u.Scheme == "" || u.Host == "" {
		return origin
	}
	host := u.Host
	switch port := u.Port(); {
	case port == "80" && (u.Scheme == "http" || u.Scheme == "ws"),
		port == "443" && (u.Scheme == "https" || u.Scheme == "wss"):
		host = strings.TrimSuffix(host, ":"+port)
	}
	return u.Scheme + "://" + host
}

// selectSubprotocol returns the first subprotocol requested by the client
// that the server supports, or "".
func selectSubprotocol(r *http.Request, supported []string) string {
	for _, line := range r.Header.Values("Sec-Websocket-Protocol") {
		for _, p := range strings.Split(line, ",") {
			p = strings.TrimSpace(p)
			for _, s := range supported {
				if p == s {
					return p
				}
			}
		}
	}
	return ""
}

var writeBufferPools sync.Map // int (buffer size) -> *sync.Pool

// writeBufferPool returns the pool for write buffers of the given size;
// gorilla requires one pool per buffer size.
func writeBufferPool(size int) websocket.BufferPool {
	if p, ok := writeBufferPools.Load(size); ok {
		return p.(*sync.Pool)
	}
	p, _ := writeBufferPools.LoadOrStore(size, &sync.Pool{})
	return p.(*sync.Pool)
}

// conn is a gorilla connection as gqlgen sees it.
//
// gorilla allows one concurrent reader and one concurrent writer of data
// frames; WriteControl and Close may be called from any goroutine. gqlgen
// reads from one goroutine and serializes its writes with a mutex, but conn
// serializes data writes itself too (wmu), so that the write deadline and the
// write form one step and no caller can corrupt a frame.
type conn struct {
	ws           *websocket.Conn
	writeTimeout time.Duration

	wmu sync.Mutex // data frames (WriteJSON)

	proto protocol
	ops   tracker // operations by id, and whether connection_ack was sent
	// forward, set by inspect, replaces the message handed to gqlgen (read
	// goroutine only).
	forward []byte

	// Used only by the reading goroutine (NextReader).
	initReceived bool  // connection_init read
	initDeadline bool  // the InitTimeout read deadline is set
	violation    error // the *ProtocolError the connection was closed with

	mu         sync.Mutex
	closed     bool
	stopWatch  func() bool // stops the handler-exit watch
	forceClose *time.Timer // pending forced close after handler exit
}

var (
	_ transport.WebsocketConn          = (*conn)(nil)
	_ transport.WebsocketReadLimiter   = (*conn)(nil)
	_ transport.WebsocketReadDeadliner = (*conn)(nil)
)

// NextReader returns the next data message that gqlgen should handle, after
// checking it against the protocol (see the package documentation). A
// message the adapter handles itself is not returned; a violation that
// closes the connection returns a *ProtocolError. A close frame from the peer
// with 1000 (normal), 1001 (going away) or no status becomes
// transport.ErrWebsocketClosed, which gqlgen treats as an orderly end.
// gorilla has already answered the peer's close frame and any ping by then.
//
// The message is read whole before gqlgen decodes it (gqlgen would read it
// whole too); SetReadLimit bounds it.
func (c *conn) NextReader() (int, io.Reader, error) {
	if c.violation != nil {
		return 0, nil, c.violation
	}
	for {
		mt, r, err := c.ws.NextReader()
		var data []byte
		if err == nil {
			data, err = io.ReadAll(r)
		}
		if err != nil {
			return mt, nil, c.readError(err)
		}
		c.forward = nil
		v, err := c.inspect(data)
		if err != nil {
			return mt, nil, err
		}
		if v == pass {
			if c.forward != nil {
				data = c.forward // a renamed operation (see tracker)
			}
			return mt, bytes.NewReader(data), nil
		}
	}
}

// readError translates an error from reading a message.
func (c *conn) readError(err error) error {
	if websocket.IsCloseError(err, websocket.CloseNormalClosure, websocket.CloseGoingAway, websocket.CloseNoStatusReceived) {
		return transport.ErrWebsocketClosed
	}
	var ne net.Error
	if c.initDeadline && !c.initReceived && errors.As(err, &ne) && ne.Timeout() {
		_, err = c.fail(CloseInitTimeout, reasonInitTimeout)
	}
	return err
}

// fail closes the connection with code and reason for a protocol violation.
// The close frame goes out at once; gqlgen closes the network connection
// when NextReader returns the error (its own close frame is not sent: gorilla
// refuses a second one).
func (c *conn) fail(code int, reason string) (verdict, error) {
	_ = c.WriteClose(code, reason)
	c.violation = &ProtocolError{Code: code, Reason: truncateReason(reason)}
	return skip, c.violation
}

// clearInitDeadline removes the InitTimeout read deadline once
// connection_init has arrived.
func (c *conn) clearInitDeadline() {
	if c.initDeadline {
		c.initDeadline = false
		_ = c.ws.SetReadDeadline(time.Time{})
	}
}

// WriteJSON sends v as one text message within the write timeout.
//
// A write after the close frame was sent or after Close returns an error
// wrapping transport.ErrWebsocketClosed: gqlgen still writes "complete" for
// subscriptions it cancels while tearing a connection down, and passes the
// error to its ErrorFunc, which can ignore it with errors.Is.
//
// Any other network failure (including a timeout) closes the connection:
// gorilla's write state is broken after it, and closing unblocks gqlgen's
// reader so the session ends instead of lingering.
//
// A message the client no longer waits for is not sent (see the package
// documentation) and WriteJSON returns nil.
func (c *conn) WriteJSON(v any) error {
	data, ok := appendMessage(nil, v)
	if !ok {
		var err error
		if data, err = json.Marshal(v); err != nil {
			return err
		}
	}
	data, send := c.outgoing(data)
	if !send {
		return nil
	}
	return c.write(data)
}

// write sends data as one text message within the write timeout; errors as
// for WriteJSON.
func (c *conn) write(data []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.ws.SetWriteDeadline(time.Now().Add(c.writeTimeout))
	err := c.ws.WriteMessage(websocket.TextMessage, data)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, websocket.ErrCloseSent), c.isClosed():
		return fmt.Errorf("%w: %w", transport.ErrWebsocketClosed, err)
	default:
		_ = c.Close()
		return err
	}
}

// WriteClose sends a close frame with the given code and reason. Codes that
// may not be sent on the wire (0, 1004, 1006, 1015, ...) or that gorilla
// clients reject (1014) become 1011; 1005 sends an empty close frame. The reason is cut to the 123 bytes a control frame
// allows (on a UTF-8 boundary); an over-long reason would otherwise make
// gorilla drop the whole frame and the client would see 1006 instead of the
// code. It is safe to call concurrently with WriteJSON.
func (c *conn) WriteClose(closeCode int, message string) error {
	payload := websocket.FormatCloseMessage(sendableCloseCode(closeCode), truncateReason(message))
	return c.ws.WriteControl(websocket.CloseMessage, payload, time.Now().Add(c.writeTimeout))
}

// Subprotocol returns the negotiated subprotocol, "" if none.
func (c *conn) Subprotocol() string { return c.ws.Subprotocol() }

// SetReadLimit sets the maximum message size. A larger message makes gorilla
// send close 1009 (message too big) and NextReader return an error.
func (c *conn) SetReadLimit(limit int64) { c.ws.SetReadLimit(limit) }

// SetReadDeadline sets the read deadline (zero clears it). gqlgen uses it to
// drop graphql-transport-ws clients that do not answer its pings.
func (c *conn) SetReadDeadline(t time.Time) error { return c.ws.SetReadDeadline(t) }

func (c *conn) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// Close closes the network connection; it does not send a close frame (gqlgen
// calls WriteClose first). It is idempotent and safe for concurrent use.
func (c *conn) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	if c.stopWatch != nil {
		c.stopWatch()
	}
	if c.forceClose != nil {
		c.forceClose.Stop()
	}
	c.mu.Unlock()
	return c.ws.Close()
}

// handlerDone runs when gqlgen's HTTP handler has returned. gqlgen normally
// closes the connection itself (possibly a moment later, from its
// close-on-cancel goroutine), but some paths return without closing: a
// connection_init whose payload is not a JSON object, or a panic in an
// InitFunc (e.g. one returning a nil context with an error). The hijacked
// connection would then stay open until the client gave up. After a short
// grace period, close it with 1011.
func (c *conn) handlerDone() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	grace := time.Duration(handlerExitGrace.Load())
	if grace <= 0 {
		grace = defaultHandlerExitGrace
	}
	c.forceClose = time.AfterFunc(grace, func() {
		_ = c.WriteClose(websocket.CloseInternalServerErr, "connection abandoned by server")
		_ = c.Close()
	})
}

// sendableCloseCode maps codes that must not appear in a close frame, or that
// gorilla's client rejects as invalid (1014), to 1011.
func sendableCloseCode(code int) int {
	switch {
	case code == websocket.CloseNoStatusReceived: // FormatCloseMessage sends no code
		return code
	case code >= 1000 && code <= 1003, code >= 1007 && code <= 1013, code >= 3000 && code <= 4999:
		return code
	default:
		return websocket.CloseInternalServerErr
	}
}

// truncateReason cuts s to at most maxCloseReason bytes without splitting a
// UTF-8 sequence, and replaces invalid UTF-8 (peers must reject it).
func truncateReason(s string) string {
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	if len(s) <= maxCloseReason {
		return s
	}
	cut := maxCloseReason
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut]
}
