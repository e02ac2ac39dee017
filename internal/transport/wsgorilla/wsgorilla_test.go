package wsgorilla_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/handler/testserver"
	"github.com/99designs/gqlgen/graphql/handler/transport"
	"github.com/gorilla/websocket"
	"go.uber.org/goleak"

	"github.com/latchkey/latchkey/internal/transport/wsgorilla"
)

const (
	transportWS = "graphql-transport-ws"
	legacyWS    = "graphql-ws"
	subQuery    = `{"query":"subscription { name }"}`
	timeout     = 5 * time.Second
)

// msg is a GraphQL-over-WebSocket message (both protocols use this shape).
type msg struct {
	Type    string          `json:"type"`
	ID      string          `json:"id,omitempty"`
	Payload json.RawMessage `json:"payload,omitempty"`
}

// harness is a gqlgen test server behind a real HTTP server, with the
// websocket transport using wsgorilla.
type harness struct {
	gql    *testserver.TestServer
	srv    *httptest.Server
	url    string
	closes chan int   // CloseFunc codes
	errs   chan error // ErrorFunc errors
	inits  atomic.Int64
	ops    atomic.Int64 // operations (subscriptions) started
	ended  atomic.Int64 // operations whose results gqlgen has all read
}

// newHarness starts a server. When the test ends, after the server and all
// clients are closed, it fails if any goroutine started during the test is
// still running (connection, keep-alive or subscription goroutines).
func newHarness(t testing.TB, ws transport.Websocket) *harness {
	t.Helper()
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) }) // runs last
	h := &harness{
		closes: make(chan int, 4096),
		errs:   make(chan error, 4096),
	}
	if ws.Implementation == nil {
		ws.Implementation = &wsgorilla.Implementation{}
	}
	init := ws.InitFunc
	ws.InitFunc = func(ctx context.Context, p transport.InitPayload) (context.Context, *transport.InitPayload, error) {
		h.inits.Add(1)
		if init != nil {
			return init(ctx, p)
		}
		return ctx, nil, nil
	}
	ws.CloseFunc = func(_ context.Context, code int) {
		select {
		case h.closes <- code:
		default:
		}
	}
	ws.ErrorFunc = func(_ context.Context, err error) {
		select {
		case h.errs <- err:
		default:
		}
	}
	h.gql = testserver.New()
	h.gql.AddTransport(ws)
	// The default recover func prints a stack trace (see TestAbandonedConnection).
	h.gql.SetRecoverFunc(func(_ context.Context, err any) error { return fmt.Errorf("panic: %v", err) })
	h.gql.AroundOperations(func(ctx context.Context, next graphql.OperationHandler) graphql.ResponseHandler {
		h.ops.Add(1)
		responses := next(ctx)
		return func(ctx context.Context) *graphql.Response {
			r := responses(ctx)
			if r == nil {
				h.ended.Add(1) // gqlgen writes complete or error next
			}
			return r
		}
	})
	h.srv = httptest.NewUnstartedServer(h.gql)
	// net/http logs gqlgen's second WriteHeader after a refused upgrade.
	h.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	h.srv.Start()
	t.Cleanup(h.srv.Close)
	h.url = "ws" + strings.TrimPrefix(h.srv.URL, "http")
	return h
}

// waitFor polls cond until it is true or the timeout expires.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// closeCode waits for gqlgen's CloseFunc.
func (h *harness) closeCode(t testing.TB) int {
	t.Helper()
	select {
	case code := <-h.closes:
		return code
	case <-time.After(timeout):
		t.Fatal("CloseFunc not called")
		return 0
	}
}

type client struct {
	t    testing.TB
	conn *websocket.Conn
	resp *http.Response
	body []byte // of a refused handshake
}

func (h *harness) dial(t testing.TB, protocols ...string) *client {
	t.Helper()
	c, err := h.tryDial(t, nil, protocols...)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	return c
}

func (h *harness) tryDial(t testing.TB, header http.Header, protocols ...string) (*client, error) {
	t.Helper()
	d := websocket.Dialer{Subprotocols: protocols, HandshakeTimeout: timeout}
	conn, resp, err := d.Dial(h.url, header)
	if err != nil {
		var body []byte
		if resp != nil {
			body, _ = io.ReadAll(resp.Body)
			_ = resp.Body.Close()
		}
		return &client{t: t, resp: resp, body: body}, err
	}
	t.Cleanup(func() { _ = conn.Close() })
	return &client{t: t, conn: conn, resp: resp}, nil
}

func (c *client) send(m msg) {
	c.t.Helper()
	_ = c.conn.SetWriteDeadline(time.Now().Add(timeout))
	if err := c.conn.WriteJSON(m); err != nil {
		c.t.Fatalf("send %s: %v", m.Type, err)
	}
}

// read returns the next message, skipping legacy "ka" keep-alives unless
// the caller asks for them.
func (c *client) read(skip ...string) msg {
	c.t.Helper()
	for {
		_ = c.conn.SetReadDeadline(time.Now().Add(timeout))
		var m msg
		if err := c.conn.ReadJSON(&m); err != nil {
			c.t.Fatalf("read: %v", err)
		}
		if !contains(skip, m.Type) {
			return m
		}
	}
}

func (c *client) expect(typ, id string, skip ...string) msg {
	c.t.Helper()
	m := c.read(skip...)
	if m.Type != typ || m.ID != id {
		c.t.Fatalf("got message %+v (payload %s), want type %q id %q", m, m.Payload, typ, id)
	}
	return m
}

// expectClose reads until the connection fails and returns the close frame
// received, failing if there is none. Messages of the skipped types may
// arrive first.
func (c *client) expectClose(skip ...string) *websocket.CloseError {
	c.t.Helper()
	for {
		_ = c.conn.SetReadDeadline(time.Now().Add(timeout))
		_, data, err := c.conn.ReadMessage()
		if err == nil {
			var m msg
			if json.Unmarshal(data, &m) != nil || !contains(skip, m.Type) {
				c.t.Fatalf("got message %s, want close", data)
			}
			continue
		}
		var ce *websocket.CloseError
		if !errors.As(err, &ce) {
			c.t.Fatalf("got %v, want a close frame", err)
		}
		return ce
	}
}

// closeNormally runs the client side of the closing handshake.
func (c *client) closeNormally() {
	_ = c.conn.WriteControl(websocket.CloseMessage,
		websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(timeout))
	_ = c.conn.SetReadDeadline(time.Now().Add(timeout))
	for {
		if _, _, err := c.conn.ReadMessage(); err != nil {
			break
		}
	}
	_ = c.conn.Close()
}

func (c *client) initAndAck(protocol string) {
	c.t.Helper()
	c.send(msg{Type: "connection_init", Payload: json.RawMessage(`{}`)})
	c.expect("connection_ack", "")
	if protocol != transportWS {
		c.expect("ka", "") // gqlgen sends one right after the ack
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func data(t testing.TB, m msg) string {
	t.Helper()
	var p struct {
		Data json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(m.Payload, &p); err != nil {
		t.Fatalf("payload %s: %v", m.Payload, err)
	}
	return string(p.Data)
}

func TestGraphQLTransportWS(t *testing.T) {
	h := newHarness(t, transport.Websocket{})
	c := h.dial(t, transportWS)
	if got := c.conn.Subprotocol(); got != transportWS {
		t.Fatalf("subprotocol %q, want %q", got, transportWS)
	}

	c.send(msg{Type: "connection_init"})
	c.expect("connection_ack", "")

	c.send(msg{Type: "ping", Payload: json.RawMessage(`{"n":1}`)})
	if pong := c.expect("pong", ""); string(pong.Payload) != `{"n":1}` {
		t.Errorf("pong payload %s", pong.Payload)
	}

	// A subscription completed by the server.
	c.send(msg{Type: "subscribe", ID: "1", Payload: json.RawMessage(subQuery)})
	for range 3 {
		h.gql.SendNextSubscriptionMessage()
		if got := data(t, c.expect("next", "1")); got != `{"name":"test"}` {
			t.Errorf("next data %s", got)
		}
	}
	h.gql.SendCompleteSubscriptionMessage()
	c.expect("complete", "1")

	// A subscription completed by the client.
	c.send(msg{Type: "subscribe", ID: "2", Payload: json.RawMessage(subQuery)})
	h.gql.SendNextSubscriptionMessage()
	c.expect("next", "2")
	c.send(msg{Type: "complete", ID: "2"})
	// gqlgen ends the operation and writes "complete" for it; the adapter
	// does not send it: after the client's complete "no further events ...
	// should be sent through". The pong is the next message.
	waitFor(t, "operation 2 to end", func() bool { return h.ended.Load() == 2 })
	c.send(msg{Type: "ping"})
	c.expect("pong", "")

	// A WebSocket-level ping is answered by gorilla.
	pong := make(chan string, 1)
	c.conn.SetPongHandler(func(s string) error { pong <- s; return nil })
	if err := c.conn.WriteControl(websocket.PingMessage, []byte("hi"), time.Now().Add(timeout)); err != nil {
		t.Fatal(err)
	}
	c.send(msg{Type: "ping"})
	c.expect("pong", "") // reading processes the control pong
	if got := <-pong; got != "hi" {
		t.Errorf("pong %q", got)
	}

	// Client closes: gorilla answers the close frame, gqlgen sees
	// ErrWebsocketClosed (no ErrorFunc call) and cleans up.
	c.send(msg{Type: "subscribe", ID: "3", Payload: json.RawMessage(subQuery)})
	waitFor(t, "subscription 3", func() bool { return h.ops.Load() == 3 })
	c.conn.SetPongHandler(nil)
	_ = c.conn.WriteControl(websocket.CloseMessage,
		websocket.FormatCloseMessage(websocket.CloseNormalClosure, "bye"), time.Now().Add(timeout))
	ce := c.expectClose()
	if ce.Code != websocket.CloseNormalClosure {
		t.Errorf("server answered close with %d, want 1000", ce.Code)
	}
	_ = c.conn.Close()
	if code := h.closeCode(t); code != transport.WebsocketCloseNormalClosure {
		t.Errorf("CloseFunc code %d", code)
	}
	// gqlgen may still write "complete" for the cancelled subscription 3;
	// that write fails with ErrWebsocketClosed. Nothing else is reported.
	for len(h.errs) > 0 {
		if err := <-h.errs; !errors.Is(err, transport.ErrWebsocketClosed) {
			t.Errorf("ErrorFunc called on a normal close: %v", err)
		}
	}
	// The harness checks that the subscription and connection goroutines
	// are gone.
}

func TestLegacyGraphQLWS(t *testing.T) {
	tests := []struct {
		name      string
		protocols []string
	}{
		{"graphql-ws", []string{legacyWS}},
		{"no subprotocol", nil}, // gqlgen's default is graphql-ws
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, transport.Websocket{KeepAlivePingInterval: 20 * time.Millisecond})
			c := h.dial(t, tt.protocols...)
			if want := strings.Join(tt.protocols, ""); c.conn.Subprotocol() != want {
				t.Fatalf("subprotocol %q, want %q", c.conn.Subprotocol(), want)
			}

			c.send(msg{Type: "connection_init", Payload: json.RawMessage(`{"apiKey":"k"}`)})
			c.expect("connection_ack", "")
			for range 3 { // the first right after the ack, then every interval
				c.expect("ka", "")
			}

			c.send(msg{Type: "start", ID: "1", Payload: json.RawMessage(subQuery)})
			h.gql.SendNextSubscriptionMessage()
			if got := data(t, c.expect("data", "1", "ka")); got != `{"name":"test"}` {
				t.Errorf("data %s", got)
			}
			c.send(msg{Type: "stop", ID: "1"})
			c.expect("complete", "1", "ka")

			c.send(msg{Type: "connection_terminate"})
			ce := c.expectClose("ka")
			if ce.Code != websocket.CloseNormalClosure || ce.Text != "terminated" {
				t.Errorf("close %d %q, want 1000 terminated", ce.Code, ce.Text)
			}
			if code := h.closeCode(t); code != transport.WebsocketCloseNormalClosure {
				t.Errorf("CloseFunc code %d", code)
			}
		})
	}
}

// gqlgen's protocol messages, of both subprotocols, are written by hand (see
// encode.go), the same bytes json.Marshal writes.
func TestMessagesWrittenByHand(t *testing.T) {
	h := newHarness(t, transport.Websocket{})
	for _, p := range []struct{ protocol, start, next string }{{transportWS, "subscribe", "next"}, {legacyWS, "start", "data"}} {
		c := h.dial(t, p.protocol)
		c.initAndAck(p.protocol)
		c.send(msg{Type: p.start, ID: "1", Payload: json.RawMessage(subQuery)})
		waitFor(t, "the subscription", func() bool { return h.ops.Load() > 0 })
		h.gql.SendNextSubscriptionMessage()
		if got := data(t, c.expect(p.next, "1", "ka")); got != `{"name":"test"}` {
			t.Errorf("%s: data %s", p.protocol, got)
		}
		c.closeNormally()
		h.ops.Store(0)
	}
	got := strings.Join(wsgorilla.HandWrittenTypes(), " ")
	for _, want := range []string{"*transport.graphqltransportwsMessage", "*transport.graphqlwsMessage"} {
		if !strings.Contains(got, want) {
			t.Errorf("%s not written by hand (written by hand: %s)", want, got)
		}
	}
}

func TestSubprotocolNegotiation(t *testing.T) {
	tests := []struct {
		name      string
		protocols []string
		want      string
	}{
		{"graphql-transport-ws", []string{transportWS}, transportWS},
		{"graphql-ws", []string{legacyWS}, legacyWS},
		{"client prefers graphql-transport-ws", []string{transportWS, legacyWS}, transportWS},
		{"client prefers graphql-ws", []string{legacyWS, transportWS}, legacyWS},
		{"unknown then supported", []string{"foo", transportWS}, transportWS},
		{"none", nil, ""},
	}
	h := newHarness(t, transport.Websocket{})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := h.dial(t, tt.protocols...)
			if got := c.conn.Subprotocol(); got != tt.want {
				t.Fatalf("negotiated %q, want %q", got, tt.want)
			}
			c.initAndAck(tt.want)
			c.closeNormally()
		})
	}
}

func TestInitRejectionCloseCode(t *testing.T) {
	long := strings.Repeat("x", 200)
	tests := []struct {
		name       string
		protocol   string
		code       int    // 0: InitFunc sets no close code
		reason     string // "": InitFunc appends no reason
		wantCode   int
		wantReason string
	}{
		{"4403 graphql-transport-ws", transportWS, 4403, "forbidden", 4403, "forbidden"},
		{"4401 graphql-transport-ws", transportWS, 4401, "unauthorized", 4401, "unauthorized"},
		{"4403 graphql-ws", legacyWS, 4403, "forbidden", 4403, "forbidden"},
		{"4401 graphql-ws", legacyWS, 4401, "unauthorized", 4401, "unauthorized"},
		{"default reason", transportWS, 4403, "", 4403, "terminated"},
		{"reason cut to 123 bytes", transportWS, 4403, long, 4403, long[:123]},
		// The pitfall: without WithWebsocketCloseCode gqlgen closes with 1000,
		// which graphql-ws clients treat as "reconnect".
		{"no close code", transportWS, 0, "", 1000, "terminated"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, transport.Websocket{
				InitFunc: func(ctx context.Context, _ transport.InitPayload) (context.Context, *transport.InitPayload, error) {
					if tt.code != 0 {
						ctx = transport.WithWebsocketCloseCode(ctx, tt.code)
					}
					if tt.reason != "" {
						ctx = transport.AppendCloseReason(ctx, tt.reason)
					}
					return ctx, nil, errors.New("invalid API key")
				},
			})
			c := h.dial(t, tt.protocol)
			c.send(msg{Type: "connection_init", Payload: json.RawMessage(`{"apiKey":"nope"}`)})
			if tt.protocol == legacyWS {
				// Only the legacy protocol carries the InitFunc error.
				m := c.expect("connection_error", "")
				if !strings.Contains(string(m.Payload), "invalid API key") {
					t.Errorf("connection_error payload %s", m.Payload)
				}
			}
			ce := c.expectClose()
			if ce.Code != tt.wantCode || ce.Text != tt.wantReason {
				t.Errorf("close %d %q, want %d %q", ce.Code, ce.Text, tt.wantCode, tt.wantReason)
			}
			if code := h.closeCode(t); code != tt.wantCode {
				t.Errorf("CloseFunc code %d, want %d", code, tt.wantCode)
			}
		})
	}
}

func TestOriginCheck(t *testing.T) {
	tests := []struct {
		name       string
		check      func(*http.Request) bool
		origin     string // "self": the test server's own origin
		wantStatus int
	}{
		{"default, no Origin", nil, "", http.StatusSwitchingProtocols},
		{"default, same origin", nil, "self", http.StatusSwitchingProtocols},
		{"default, foreign", nil, "https://evil.example", http.StatusForbidden},
		{"default, null", nil, "null", http.StatusForbidden},
		{"allow list, listed", wsgorilla.AllowOrigins([]string{"https://app.example.com"}), "https://app.example.com", http.StatusSwitchingProtocols},
		{"allow list, same origin", wsgorilla.AllowOrigins([]string{"https://app.example.com"}), "self", http.StatusSwitchingProtocols},
		{"allow list, foreign", wsgorilla.AllowOrigins([]string{"https://app.example.com"}), "https://evil.example", http.StatusForbidden},
		{"allow any", wsgorilla.AllowOrigins([]string{"*"}), "https://evil.example", http.StatusSwitchingProtocols},
	}
	oldOutput := log.Writer() // gqlgen logs every refused upgrade
	log.SetOutput(io.Discard)
	defer log.SetOutput(oldOutput)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, transport.Websocket{Implementation: &wsgorilla.Implementation{CheckOrigin: tt.check}})
			header := http.Header{}
			switch tt.origin {
			case "":
			case "self":
				header.Set("Origin", h.srv.URL)
			default:
				header.Set("Origin", tt.origin)
			}
			c, err := h.tryDial(t, header, transportWS)
			if c.resp == nil {
				t.Fatalf("no HTTP response: %v", err)
			}
			if c.resp.StatusCode != tt.wantStatus {
				t.Fatalf("status %d, want %d (err %v)", c.resp.StatusCode, tt.wantStatus, err)
			}
			if err == nil {
				c.initAndAck(transportWS)
				c.closeNormally()
				return
			}
			// The refusal body is gqlgen's JSON error alone.
			var body struct {
				Errors []struct{ Message string } `json:"errors"`
			}
			if err := json.Unmarshal(c.body, &body); err != nil || len(body.Errors) == 0 {
				t.Errorf("body %q is not a GraphQL error (%v)", c.body, err)
			}
		})
	}
}

func TestReadLimit(t *testing.T) {
	tests := []struct {
		name string
		size int
	}{
		{"just over", 1025},
		{"much larger", 256 << 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			limit := int64(1024)
			h := newHarness(t, transport.Websocket{PayloadReadLimit: &limit})
			c := h.dial(t, transportWS)
			c.initAndAck(transportWS)

			big := `{"type":"subscribe","id":"1","payload":{"query":"` + strings.Repeat("x", tt.size) + `"}}`
			_ = c.conn.SetWriteDeadline(time.Now().Add(timeout))
			_ = c.conn.WriteMessage(websocket.TextMessage, []byte(big)) // may fail once the server hangs up
			ce := c.expectClose()
			if ce.Code != websocket.CloseMessageTooBig {
				t.Errorf("close code %d, want 1009", ce.Code)
			}
			h.closeCode(t)
			select {
			case err := <-h.errs:
				if !errors.Is(err, websocket.ErrReadLimit) {
					t.Errorf("ErrorFunc got %v, want ErrReadLimit", err)
				}
			case <-time.After(timeout):
				t.Error("ErrorFunc not called")
			}
			if h.ops.Load() != 0 {
				t.Error("the oversize operation ran")
			}
		})
	}
}

func TestPingPongDeadline(t *testing.T) {
	tests := []struct {
		name      string
		answer    bool
		wantAlive bool
	}{
		{"client answers pings", true, true},
		{"client ignores pings", false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			const interval = 50 * time.Millisecond
			h := newHarness(t, transport.Websocket{PingPongInterval: interval})
			c := h.dial(t, transportWS)
			c.initAndAck(transportWS)

			stop := time.Now().Add(10 * interval)
			pings := 0
			for time.Now().Before(stop) {
				_ = c.conn.SetReadDeadline(stop)
				var m msg
				err := c.conn.ReadJSON(&m)
				if err != nil {
					var ne net.Error
					if errors.As(err, &ne) && ne.Timeout() {
						break // still open at the end of the window
					}
					if tt.wantAlive {
						t.Fatalf("connection dropped after %d pings: %v", pings, err)
					}
					h.closeCode(t)
					return
				}
				if m.Type == "ping" {
					pings++
					if tt.answer {
						c.send(msg{Type: "pong"})
					}
				}
			}
			if !tt.wantAlive {
				t.Fatalf("connection still open after %d unanswered pings", pings)
			}
			if pings < 3 {
				t.Errorf("only %d pings", pings)
			}
		})
	}
}

// TestAbandonedConnection covers gqlgen paths that return from the handler
// without closing the WebSocket; the adapter closes it with 1011.
func TestAbandonedConnection(t *testing.T) {
	defer wsgorilla.SetHandlerExitGrace(50 * time.Millisecond)()
	tests := []struct {
		name     string
		protocol string
		initFunc transport.WebsocketInitFunc
		payload  string
	}{
		// With graphql-transport-ws the adapter refuses such a payload itself
		// (4400, see TestTransportWSInvalidMessages); graphql-ws has no such
		// rule, so gqlgen still abandons the connection.
		{"init payload not an object", legacyWS, nil, `"not-an-object"`},
		{"InitFunc returns nil ctx with an error (gqlgen panics)", transportWS,
			func(context.Context, transport.InitPayload) (context.Context, *transport.InitPayload, error) {
				return nil, nil, errors.New("denied") // the mistake under test
			}, `{}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, transport.Websocket{InitFunc: tt.initFunc})
			c := h.dial(t, tt.protocol)
			c.send(msg{Type: "connection_init", Payload: json.RawMessage(tt.payload)})
			ce := c.expectClose()
			if ce.Code != websocket.CloseInternalServerErr {
				t.Errorf("close %d %q, want 1011", ce.Code, ce.Text)
			}
		})
	}
}

// TestConcurrentWrites drives the connection directly: gqlgen serializes its
// writes, but the adapter must not depend on it (run with -race).
func TestConcurrentWrites(t *testing.T) {
	const writers, perWriter = 8, 50
	impl := &wsgorilla.Implementation{}
	done := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := impl.Accept(w, r, transport.WebsocketAcceptOptions{Subprotocols: []string{transportWS}})
		if err != nil {
			return
		}
		defer c.Close()
		var wg sync.WaitGroup
		for i := range writers {
			wg.Go(func() {
				for j := range perWriter {
					err := c.WriteJSON(msg{Type: "next", ID: strconv.Itoa(i), Payload: json.RawMessage(`{"j":` + strconv.Itoa(j) + `}`)})
					if errors.Is(err, websocket.ErrCloseSent) {
						return // after the close frame below
					}
					if err != nil {
						t.Errorf("WriteJSON: %v", err)
						return
					}
				}
			})
		}
		wg.Go(func() { _ = c.WriteClose(4000, "not yet") }) // control frame mid-stream
		wg.Wait()
		<-done
	}))
	defer srv.Close()
	defer close(done)

	conn, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	got := 0
	for {
		_ = conn.SetReadDeadline(time.Now().Add(timeout))
		var m msg
		if err := conn.ReadJSON(&m); err != nil {
			if !websocket.IsCloseError(err, 4000) {
				t.Fatalf("read after %d messages: %v", got, err)
			}
			break
		}
		got++
	}
	// Messages written after the close frame are refused (ErrCloseSent), so
	// only check that every message that arrived was intact.
	t.Logf("%d intact messages before the close frame", got)
}

// TestWriteTimeout: a client that stops reading cannot block a writer for
// longer than WriteTimeout, and the connection is closed afterwards.
func TestWriteTimeout(t *testing.T) {
	impl := &wsgorilla.Implementation{WriteTimeout: 100 * time.Millisecond}
	result := make(chan error, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := impl.Accept(w, r, transport.WebsocketAcceptOptions{})
		if err != nil {
			result <- err
			return
		}
		big := json.RawMessage(`"` + strings.Repeat("x", 256<<10) + `"`)
		for {
			start := time.Now()
			if err := c.WriteJSON(msg{Type: "next", Payload: big}); err != nil {
				if d := time.Since(start); d > 2*time.Second {
					err = errors.New("write blocked for " + d.String())
				}
				result <- err
				// The connection is closed: reads fail at once.
				if _, _, rerr := c.NextReader(); rerr == nil {
					result <- errors.New("read succeeded after a failed write")
				}
				close(result)
				return
			}
		}
	}))
	defer srv.Close()

	conn, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close() // never reads

	select {
	case err := <-result:
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("write error %v, want a timeout", err)
		}
		if err, ok := <-result; ok {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("writer still blocked")
	}
}

func TestCompression(t *testing.T) {
	tests := []struct {
		name           string
		server, client bool
		want           bool
	}{
		{"both", true, true, true},
		{"server only", true, false, false},
		{"client only", false, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, transport.Websocket{
				Implementation: &wsgorilla.Implementation{EnableCompression: tt.server},
			})
			d := websocket.Dialer{Subprotocols: []string{transportWS}, EnableCompression: tt.client}
			conn, resp, err := d.Dial(h.url, nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = conn.Close() })
			got := strings.Contains(resp.Header.Get("Sec-Websocket-Extensions"), "permessage-deflate")
			if got != tt.want {
				t.Fatalf("permessage-deflate negotiated: %v, want %v", got, tt.want)
			}
			c := &client{t: t, conn: conn}
			c.initAndAck(transportWS)
			c.send(msg{Type: "subscribe", ID: "1", Payload: json.RawMessage(subQuery)})
			h.gql.SendNextSubscriptionMessage()
			if got := data(t, c.expect("next", "1")); got != `{"name":"test"}` {
				t.Errorf("next data %s", got)
			}
			c.closeNormally()
		})
	}
}

// TestInitTimeout documents gqlgen's close code for a client that never sends
// connection_init: 1002, not the 4408 of the graphql-transport-ws spec (use
// Implementation.InitTimeout for that, see TestAdapterInitTimeout). The
// goroutine gqlgen leaves blocked in NextReader ends when the connection is
// closed (the harness checks for leaks).
func TestInitTimeout(t *testing.T) {
	for _, protocol := range []string{transportWS, legacyWS} {
		t.Run(protocol, func(t *testing.T) {
			h := newHarness(t, transport.Websocket{InitTimeout: 50 * time.Millisecond})
			c := h.dial(t, protocol)
			ce := c.expectClose()
			if ce.Code != websocket.CloseProtocolError || ce.Text != "connection initialisation timeout" {
				t.Errorf("close %d %q", ce.Code, ce.Text)
			}
			if code := h.closeCode(t); code != websocket.CloseProtocolError {
				t.Errorf("CloseFunc code %d", code)
			}
		})
	}
}
