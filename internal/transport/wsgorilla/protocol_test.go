package wsgorilla_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/99designs/gqlgen/graphql/handler/transport"
	"github.com/gorilla/websocket"

	"github.com/latchkey/latchkey/internal/transport/wsgorilla"
)

// sendRaw writes one text frame as is.
func (c *client) sendRaw(frame string) {
	c.t.Helper()
	_ = c.conn.SetWriteDeadline(time.Now().Add(timeout))
	if err := c.conn.WriteMessage(websocket.TextMessage, []byte(frame)); err != nil {
		c.t.Fatalf("send %s: %v", frame, err)
	}
}

// expectNoMore checks, with a ping, that nothing is queued before the pong.
// gqlgen writes the messages of a failed subscribe before it reads the next
// message, so this is exact for them.
func (c *client) expectNoMore() {
	c.t.Helper()
	c.send(msg{Type: "ping", Payload: json.RawMessage(`{"probe":true}`)})
	if m := c.read(); m.Type != "pong" || string(m.Payload) != `{"probe":true}` {
		c.t.Fatalf("got %+v (payload %s), want the pong", m, m.Payload)
	}
}

// TestTransportWSInvalidMessages: every message graphql-transport-ws does not
// define closes the socket with 4400, before and after connection_ack, and
// runs nothing. gqlgen alone closed with 1000 after the ack, so graphql-ws
// clients reconnected and sent the message again.
func TestTransportWSInvalidMessages(t *testing.T) {
	frames := []struct{ name, frame string }{
		{"not JSON", `{"type":`},
		{"trailing data", `{"type":"ping"} x`},
		{"empty", ``},
		{"array", `[]`},
		{"string", `"connection_init"`},
		{"null", `null`},
		{"no type", `{"id":"1"}`},
		{"type not a string", `{"type":1}`},
		{"unknown type", `{"type":"start","id":"1","payload":{"query":"subscription { name }"}}`},
		{"server type next", `{"type":"next","id":"1","payload":{}}`},
		{"server type error", `{"type":"error","id":"1","payload":[]}`},
		{"server type connection_ack", `{"type":"connection_ack"}`},
		{"init payload a string", `{"type":"connection_init","payload":"k"}`},
		{"init payload an array", `{"type":"connection_init","payload":[]}`},
		{"ping payload a number", `{"type":"ping","payload":1}`},
		{"pong payload a string", `{"type":"pong","payload":"x"}`},
		{"subscribe without id", `{"type":"subscribe","payload":{"query":"subscription { name }"}}`},
		{"subscribe with empty id", `{"type":"subscribe","id":"","payload":{"query":"subscription { name }"}}`},
		{"subscribe with numeric id", `{"type":"subscribe","id":1,"payload":{"query":"subscription { name }"}}`},
		{"subscribe without payload", `{"type":"subscribe","id":"1"}`},
		{"subscribe payload a string", `{"type":"subscribe","id":"1","payload":"subscription { name }"}`},
		{"subscribe without query", `{"type":"subscribe","id":"1","payload":{}}`},
		{"subscribe query a number", `{"type":"subscribe","id":"1","payload":{"query":1}}`},
		{"subscribe variables an array", `{"type":"subscribe","id":"1","payload":{"query":"subscription { name }","variables":[]}}`},
		{"subscribe operationName a number", `{"type":"subscribe","id":"1","payload":{"query":"subscription { name }","operationName":1}}`},
		{"subscribe extensions a string", `{"type":"subscribe","id":"1","payload":{"query":"subscription { name }","extensions":"x"}}`},
		{"complete without id", `{"type":"complete"}`},
		{"complete with empty id", `{"type":"complete","id":""}`},
	}
	for _, phase := range []string{"before init", "after ack"} {
		t.Run(phase, func(t *testing.T) {
			h := newHarness(t, transport.Websocket{})
			for _, f := range frames {
				t.Run(f.name, func(t *testing.T) {
					c := h.dial(t, transportWS)
					if phase == "after ack" {
						c.initAndAck(transportWS)
					}
					c.sendRaw(f.frame)
					ce := c.expectClose()
					if ce.Code != wsgorilla.CloseBadRequest || ce.Text != "Invalid message received" {
						t.Errorf("close %d %q, want 4400 \"Invalid message received\"", ce.Code, ce.Text)
					}
					h.closeCode(t) // gqlgen ended the connection
				})
			}
			if n := h.ops.Load(); n != 0 {
				t.Errorf("%d operations ran", n)
			}
		})
	}
}

// TestTransportWSProtocolErrorReported: a violation after the ack reaches
// gqlgen's ErrorFunc as a *wsgorilla.ProtocolError with the code sent.
func TestTransportWSProtocolErrorReported(t *testing.T) {
	h := newHarness(t, transport.Websocket{})
	c := h.dial(t, transportWS)
	c.initAndAck(transportWS)
	c.sendRaw(`{"type":"next","id":"1","payload":{}}`)
	if ce := c.expectClose(); ce.Code != wsgorilla.CloseBadRequest {
		t.Fatalf("close %d %q", ce.Code, ce.Text)
	}
	select {
	case err := <-h.errs:
		var pe *wsgorilla.ProtocolError
		if !errors.As(err, &pe) || pe.Code != wsgorilla.CloseBadRequest || pe.Reason != "Invalid message received" {
			t.Errorf("ErrorFunc got %v, want a ProtocolError 4400", err)
		}
	case <-time.After(timeout):
		t.Error("ErrorFunc not called")
	}
}

func TestTransportWSDuplicateSubscriber(t *testing.T) {
	h := newHarness(t, transport.Websocket{})
	c := h.dial(t, transportWS)
	c.initAndAck(transportWS)
	c.send(msg{Type: "subscribe", ID: "sub-1", Payload: json.RawMessage(subQuery)})
	waitFor(t, "the first subscription", func() bool { return h.ops.Load() == 1 })
	c.send(msg{Type: "subscribe", ID: "sub-1", Payload: json.RawMessage(subQuery)})
	ce := c.expectClose()
	if ce.Code != wsgorilla.CloseSubscriberExists || ce.Text != "Subscriber for sub-1 already exists" {
		t.Errorf("close %d %q, want 4409 \"Subscriber for sub-1 already exists\"", ce.Code, ce.Text)
	}
	h.closeCode(t)
	if n := h.ops.Load(); n != 1 {
		t.Errorf("%d operations ran, want 1", n)
	}

	// Also for an operation that is not a subscription, while it runs (the
	// test server's @defer query waits for SendNextSubscriptionMessage).
	c = h.dial(t, transportWS)
	c.initAndAck(transportWS)
	deferred := `{"query":"query { ... @defer { name } }"}`
	c.send(msg{Type: "subscribe", ID: "q", Payload: json.RawMessage(deferred)})
	waitFor(t, "the query", func() bool { return h.ops.Load() == 2 })
	c.send(msg{Type: "subscribe", ID: "q", Payload: json.RawMessage(subQuery)})
	if ce := c.expectClose(); ce.Code != wsgorilla.CloseSubscriberExists || ce.Text != "Subscriber for q already exists" {
		t.Errorf("close %d %q, want 4409", ce.Code, ce.Text)
	}

	// An id too long for a close frame: the reason is cut, the code stays.
	c = h.dial(t, transportWS)
	c.initAndAck(transportWS)
	long := strings.Repeat("i", 300)
	c.send(msg{Type: "subscribe", ID: long, Payload: json.RawMessage(subQuery)})
	waitFor(t, "the subscription with a long id", func() bool { return h.ops.Load() == 3 })
	c.send(msg{Type: "subscribe", ID: long, Payload: json.RawMessage(subQuery)})
	if ce := c.expectClose(); ce.Code != wsgorilla.CloseSubscriberExists || !strings.HasPrefix(ce.Text, "Subscriber for iii") || len(ce.Text) != 123 {
		t.Errorf("close %d %q, want 4409 with a reason of 123 bytes", ce.Code, ce.Text)
	}
}

// TestTransportWSIDReuse: an id is free again once the server ended its
// operation or the client completed it.
func TestTransportWSIDReuse(t *testing.T) {
	h := newHarness(t, transport.Websocket{})
	c := h.dial(t, transportWS)
	c.initAndAck(transportWS)

	// Ended by the server.
	c.send(msg{Type: "subscribe", ID: "1", Payload: json.RawMessage(subQuery)})
	h.gql.SendNextSubscriptionMessage()
	c.expect("next", "1")
	h.gql.SendCompleteSubscriptionMessage()
	c.expect("complete", "1")
	c.send(msg{Type: "subscribe", ID: "1", Payload: json.RawMessage(subQuery)})
	h.gql.SendNextSubscriptionMessage()
	c.expect("next", "1")

	// Completed by the client: no complete comes back, and the id is reused
	// at once.
	c.send(msg{Type: "complete", ID: "1"})
	c.send(msg{Type: "subscribe", ID: "1", Payload: json.RawMessage(subQuery)})
	for deadline := time.Now().Add(timeout); h.ops.Load() != 3 || h.ended.Load() != 2; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for the third operation: %d operations started, %d ended", h.ops.Load(), h.ended.Load())
		}
	}
	h.gql.SendNextSubscriptionMessage()
	c.expect("next", "1")
	h.gql.SendCompleteSubscriptionMessage()
	c.expect("complete", "1")

	// A query: next, complete, and the id is free.
	for range 2 {
		c.send(msg{Type: "subscribe", ID: "q", Payload: json.RawMessage(`{"query":"{ name }"}`)})
		c.expect("next", "q")
		c.expect("complete", "q")
	}
	c.expectNoMore()
	c.closeNormally()
}

// TestTransportWSNoCompleteAfterError: gqlgen writes complete after error for
// a subscribe it cannot run; the spec says no complete follows an error.
func TestTransportWSNoCompleteAfterError(t *testing.T) {
	h := newHarness(t, transport.Websocket{})
	c := h.dial(t, transportWS)
	c.initAndAck(transportWS)
	for _, q := range []string{
		`{"query":"subscription { nope }"}`, // validation error
		`{"query":"subscription {"}`,        // parse error
	} {
		c.send(msg{Type: "subscribe", ID: "1", Payload: json.RawMessage(q)})
		m := c.expect("error", "1")
		if !strings.Contains(string(m.Payload), "message") {
			t.Errorf("error payload %s", m.Payload)
		}
		c.expectNoMore()
	}
	// The id is free again.
	c.send(msg{Type: "subscribe", ID: "1", Payload: json.RawMessage(subQuery)})
	h.gql.SendNextSubscriptionMessage()
	c.expect("next", "1")
	c.closeNormally()
}

// TestTransportWSBeforeAck: subscribe before connection_ack closes with 4401;
// ping, pong and complete are allowed at any time.
func TestTransportWSBeforeAck(t *testing.T) {
	h := newHarness(t, transport.Websocket{})

	c := h.dial(t, transportWS)
	c.send(msg{Type: "subscribe", ID: "1", Payload: json.RawMessage(subQuery)})
	ce := c.expectClose()
	if ce.Code != wsgorilla.CloseUnauthorized || ce.Text != "Unauthorized" {
		t.Errorf("close %d %q, want 4401 \"Unauthorized\"", ce.Code, ce.Text)
	}
	h.closeCode(t)
	if h.ops.Load() != 0 || h.inits.Load() != 0 {
		t.Errorf("%d operations and %d inits ran", h.ops.Load(), h.inits.Load())
	}

	c = h.dial(t, transportWS)
	c.send(msg{Type: "ping", Payload: json.RawMessage(`{"n":1}`)})
	if m := c.expect("pong", ""); string(m.Payload) != `{"n":1}` {
		t.Errorf("pong payload %s", m.Payload)
	}
	c.send(msg{Type: "ping"})
	if m := c.expect("pong", ""); m.Payload != nil {
		t.Errorf("pong payload %s, want none", m.Payload)
	}
	c.send(msg{Type: "pong"})
	c.send(msg{Type: "complete", ID: "1"})
	c.initAndAck(transportWS)
	c.send(msg{Type: "subscribe", ID: "1", Payload: json.RawMessage(subQuery)})
	h.gql.SendNextSubscriptionMessage()
	c.expect("next", "1")
	c.closeNormally()
}

func TestTransportWSTooManyInits(t *testing.T) {
	h := newHarness(t, transport.Websocket{})
	c := h.dial(t, transportWS)
	c.initAndAck(transportWS)
	c.send(msg{Type: "connection_init"})
	ce := c.expectClose()
	if ce.Code != wsgorilla.CloseTooManyInitRequests || ce.Text != "Too many initialisation requests" {
		t.Errorf("close %d %q, want 4429 \"Too many initialisation requests\"", ce.Code, ce.Text)
	}
	h.closeCode(t)
	if n := h.inits.Load(); n != 1 {
		t.Errorf("InitFunc ran %d times", n)
	}
}

// TestTransportWSAPQ: a subscribe without a query is valid when extensions
// carries it by hash (automatic persisted queries).
func TestTransportWSAPQ(t *testing.T) {
	h := newHarness(t, transport.Websocket{})
	c := h.dial(t, transportWS)
	c.initAndAck(transportWS)
	c.send(msg{Type: "subscribe", ID: "1", Payload: json.RawMessage(`{"extensions":{"persistedQuery":{"version":1,"sha256Hash":"00"}}}`)})
	// The test server has no query cache: gqlgen answers with an error for
	// the operation, and the connection stays open.
	if m := c.read(); m.ID != "1" || (m.Type != "error" && m.Type != "next") {
		t.Fatalf("got %+v (payload %s)", m, m.Payload)
	}
	c.expectNoMore()
	c.closeNormally()
}

// TestLegacyInvalidMessages: graphql-ws reports errors with messages and
// keeps the connection open. gqlgen alone closed with 1000 (after the ack) or
// 1002.
func TestLegacyInvalidMessages(t *testing.T) {
	for _, protocols := range [][]string{{legacyWS}, nil} {
		t.Run(strings.Join(append([]string{"protocol"}, protocols...), " "), func(t *testing.T) {
			h := newHarness(t, transport.Websocket{})
			c := h.dial(t, protocols...)

			// Before connection_init.
			c.sendRaw(`{"type":`)
			if m := c.expect("connection_error", ""); !strings.Contains(string(m.Payload), `"message":"Invalid message received"`) {
				t.Errorf("connection_error payload %s", m.Payload)
			}
			c.initAndAck(legacyWS)

			for _, f := range []struct{ frame, message string }{
				{`not json`, "Invalid message received"},
				{`[]`, "Invalid message received"},
				{`{"type":1}`, "Invalid message received"},
				{`{"type":"subscribe","id":"1"}`, `Invalid message type \"subscribe\"`},
				{`{"type":"data","id":"1","payload":{}}`, `Invalid message type \"data\"`},
				{`{"type":"ka"}`, `Invalid message type \"ka\"`},
				{`{}`, `Invalid message type \"\"`},
			} {
				c.sendRaw(f.frame)
				m := c.expect("connection_error", "", "ka")
				if !strings.Contains(string(m.Payload), `"message":"`+f.message+`"`) {
					t.Errorf("%s: connection_error payload %s, want message %s", f.frame, m.Payload, f.message)
				}
			}

			// The connection still works.
			c.send(msg{Type: "start", ID: "1", Payload: json.RawMessage(subQuery)})
			h.gql.SendNextSubscriptionMessage()
			c.expect("data", "1", "ka")
			c.send(msg{Type: "stop", ID: "1"})
			c.expect("complete", "1", "ka") // graphql-ws clients expect it
			c.closeNormally()
			if n := h.ops.Load(); n != 1 {
				t.Errorf("%d operations ran, want 1", n)
			}
		})
	}
}

// TestLegacyDuplicateStart: a start with the id of an active operation gets
// an error for that id; the running operation continues and can be stopped.
func TestLegacyDuplicateStart(t *testing.T) {
	h := newHarness(t, transport.Websocket{})
	c := h.dial(t, legacyWS)
	c.initAndAck(legacyWS)
	c.send(msg{Type: "start", ID: "1", Payload: json.RawMessage(subQuery)})
	waitFor(t, "the subscription", func() bool { return h.ops.Load() == 1 })
	c.send(msg{Type: "start", ID: "1", Payload: json.RawMessage(subQuery)})
	m := c.expect("error", "1", "ka")
	if !strings.Contains(string(m.Payload), `[{"message":"Subscriber for 1 already exists"}]`) {
		t.Errorf("error payload %s", m.Payload)
	}
	h.gql.SendNextSubscriptionMessage()
	c.expect("data", "1", "ka")
	c.send(msg{Type: "stop", ID: "1"})
	c.expect("complete", "1", "ka")
	waitFor(t, "the subscription to end", func() bool { return h.ended.Load() == 1 })
	// Stopped: the id may be used again.
	c.send(msg{Type: "start", ID: "1", Payload: json.RawMessage(subQuery)})
	h.gql.SendNextSubscriptionMessage()
	c.expect("data", "1", "ka")
	c.closeNormally()
	if n := h.ops.Load(); n != 2 {
		t.Errorf("%d operations ran, want 2", n)
	}
}

// TestAdapterInitTimeout: Implementation.InitTimeout closes a connection
// without connection_init with 4408 (pings do not extend it) and no longer
// applies once connection_init has arrived.
func TestAdapterInitTimeout(t *testing.T) {
	const initTimeout = 100 * time.Millisecond
	for _, protocol := range []string{transportWS, legacyWS} {
		t.Run(protocol, func(t *testing.T) {
			h := newHarness(t, transport.Websocket{
				Implementation: &wsgorilla.Implementation{InitTimeout: initTimeout},
			})
			// The server's timer starts when it accepts the upgrade, before
			// dial returns, so the time is measured from before the dial.
			start := time.Now()
			c := h.dial(t, protocol)
			if protocol == transportWS {
				c.send(msg{Type: "ping"})
				c.expect("pong", "")
			}
			ce := c.expectClose()
			if ce.Code != wsgorilla.CloseInitTimeout || ce.Text != "Connection initialisation timeout" {
				t.Errorf("close %d %q, want 4408 \"Connection initialisation timeout\"", ce.Code, ce.Text)
			}
			if d := time.Since(start); d < initTimeout {
				t.Errorf("closed after %v", d)
			}
			h.closeCode(t)

			c = h.dial(t, protocol)
			c.initAndAck(protocol)
			time.Sleep(3 * initTimeout)
			c.send(msg{Type: "connection_init"}) // any message that gets an answer
			if protocol == transportWS {
				if ce := c.expectClose(); ce.Code != wsgorilla.CloseTooManyInitRequests {
					t.Errorf("close %d %q, want 4429: the connection outlived the init timeout", ce.Code, ce.Text)
				}
			} else {
				c.expect("connection_error", "", "ka") // gqlgen's answer, then 1002
			}
		})
	}
}
