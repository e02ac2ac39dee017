package wsgorilla

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
)

// Close codes of the graphql-transport-ws protocol (PROTOCOL.md of
// github.com/enisdenjo/graphql-ws) that the adapter sends itself. graphql-ws
// clients give up on 4400, 4401, 4409 and 4429 instead of reconnecting, which
// they do after 1000.
const (
	// CloseBadRequest: a message that is not valid JSON, not an object, of an
	// unknown type or of a type only the server sends, or whose fields have
	// the wrong types (reason "Invalid message received").
	CloseBadRequest = 4400
	// CloseUnauthorized: subscribe before connection_ack (reason
	// "Unauthorized").
	CloseUnauthorized = 4401
	// CloseInitTimeout: no connection_init within Implementation.InitTimeout
	// (reason "Connection initialisation timeout"). Sent for both protocols.
	CloseInitTimeout = 4408
	// CloseSubscriberExists: subscribe with the id of an operation that is
	// still active (reason "Subscriber for <id> already exists").
	CloseSubscriberExists = 4409
	// CloseTooManyInitRequests: a second connection_init (reason "Too many
	// initialisation requests").
	CloseTooManyInitRequests = 4429
)

const (
	reasonInvalidMessage = "Invalid message received"
	reasonUnauthorized   = "Unauthorized"
	reasonInitTimeout    = "Connection initialisation timeout"
	reasonTooManyInits   = "Too many initialisation requests"
)

// ProtocolError is returned by a connection's NextReader after the adapter
// closed the connection because the client broke the protocol; Code and
// Reason are those of the close frame the client received. gqlgen passes it
// to transport.Websocket.ErrorFunc (inside a transport.WebsocketError), but
// its CloseFunc still reports the code gqlgen would have used, which was not
// sent.
type ProtocolError struct {
	Code   int
	Reason string
}

func (e *ProtocolError) Error() string {
	return "websocket: protocol violation, closed with " + strconv.Itoa(e.Code) + " " + strconv.Quote(e.Reason)
}

// protocol is the negotiated GraphQL-over-WebSocket subprotocol.
type protocol uint8

const (
	// legacyWS is graphql-ws (subscriptions-transport-ws), also used when no
	// subprotocol was negotiated, as gqlgen does.
	legacyWS protocol = iota
	// transportWS is graphql-transport-ws.
	transportWS
)

const transportWSName = "graphql-transport-ws"

// Suffixes of gqlgen's outgoing messages. gqlgen marshals a struct whose last
// field is the type, so a result message ends with its type; anything else
// is decoded (see conn.outgoing).
var (
	nextSuffix = []byte(`"type":"next"}`) // graphql-transport-ws result
	dataSuffix = []byte(`"type":"data"}`) // graphql-ws result
)

// clientMessage is the envelope shared by both protocols. ID is a pointer so
// that a missing or null id can be told from "".
type clientMessage struct {
	Type    string          `json:"type"`
	ID      *string         `json:"id"`
	Payload json.RawMessage `json:"payload"`
}

// verdict says what NextReader does with an incoming message.
type verdict uint8

const (
	pass verdict = iota // hand it to gqlgen
	skip                // handled by the adapter; read the next message
)

// opState is what the adapter knows about the operations of one id.
type opState struct {
	// open: the client subscribed and has neither completed the operation
	// nor received its end (complete or error) from the server.
	open bool
	// running counts the operations with this id that gqlgen has not ended
	// yet (it writes complete or error for each). It can exceed one when the
	// client completed an operation and reused its id before gqlgen ended it.
	running int
}

// tracker follows the operations of one connection, from the client's
// subscribe or start to gqlgen's complete or error. It is touched by
// subscribe, complete and stop messages and by the end of operations, never
// by results.
type tracker struct {
	acked atomic.Bool // connection_ack sent

	mu  sync.Mutex
	ops map[string]opState

	// A client may reuse an id as soon as the server has ended its operation, but
	// gqlgen forgets an operation's id only after it has sent the end, so an id
	// reused at once could meet gqlgen's stale entry, which then removes the new
	// operation's (whose complete would no longer stop it). An id the client used
	// lately is therefore handed to gqlgen renamed, id + "\x1f" + its count, and
	// the renamed operation's messages are renamed back on their way out.
	used     map[string]int    // operations started per id lately (at most maxUsed ids)
	renamed  map[string]string // gqlgen id of a running renamed operation -> client id
	latest   map[string]string // client id -> gqlgen id of its latest renamed operation
	nRenamed atomic.Int32      // len(renamed), read without the lock on every result
}

// maxUsed bounds the ids whose use the tracker remembers: an id reused after that
// many others were used is long forgotten by gqlgen.
const maxUsed = 256

// start notes that the client started an operation with id and returns the id to
// hand to gqlgen: id itself, or a renamed one for an id used lately.
func (t *tracker) start(id string) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.used == nil {
		t.used, t.renamed, t.latest = make(map[string]int), make(map[string]string), make(map[string]string)
	}
	if len(t.used) >= maxUsed {
		clear(t.used)
	}
	n := t.used[id] + 1
	t.used[id] = n
	if n == 1 {
		// Forgotten (see maxUsed): a renamed operation of id may still be ending,
		// but the client's next complete is for this one.
		delete(t.latest, id)
		return id
	}
	g := id + "\x1f" + strconv.Itoa(n)
	t.renamed[g] = id
	t.latest[id] = g
	t.nRenamed.Store(int32(len(t.renamed)))
	return g
}

// gqlgenID returns the id gqlgen knows the client's latest operation of id by.
func (t *tracker) gqlgenID(id string) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if g, ok := t.latest[id]; ok {
		return g
	}
	return id
}

// clientID returns the client's id of gqlgen's operation g, and whether g was
// renamed; with end, a renamed operation is forgotten.
func (t *tracker) clientID(g string, end bool) (string, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	id, ok := t.renamed[g]
	if !ok {
		return g, false
	}
	if end {
		delete(t.renamed, g)
		if t.latest[id] == g {
			delete(t.latest, id)
		}
		t.nRenamed.Store(int32(len(t.renamed)))
	}
	return id, true
}

// renameTail replaces the tail `"id":<from>,"type":<typ>}` of a message gqlgen
// encoded (its struct ends with the id and the type) by the same with id to; it
// returns data unchanged when the tail is not there.
func renameTail(data []byte, from, to, typ string) []byte {
	tail := func(id string) []byte {
		b, _ := json.Marshal(id)
		return append(append(append([]byte(`"id":`), b...), `,"type":`+strconv.Quote(typ)...), '}')
	}
	old := tail(from)
	if !bytes.HasSuffix(data, old) {
		return data
	}
	return append(append([]byte(nil), data[:len(data)-len(old)]...), tail(to)...)
}

// renameIncoming re-encodes a client message with id g for gqlgen.
func renameIncoming(m *clientMessage, g string) []byte {
	data, _ := json.Marshal(clientMessage{Type: m.Type, ID: &g, Payload: m.Payload})
	return data
}

// open records a new operation and reports false if id is still active.
func (t *tracker) open(id string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	st := t.ops[id]
	if st.open {
		return false
	}
	if t.ops == nil {
		t.ops = make(map[string]opState)
	}
	t.ops[id] = opState{open: true, running: st.running + 1}
	return true
}

// completedByClient records the client's complete (graphql-transport-ws) or
// stop (graphql-ws) for id; the id may be reused from now on.
func (t *tracker) completedByClient(id string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if st, ok := t.ops[id]; ok && st.open {
		st.open = false
		t.ops[id] = st
	}
}

// endedByServer records that gqlgen ended an operation of id (complete or
// error) and reports whether the client still waits for that message: it
// subscribed, has not completed the operation itself and has not received
// an error for it. Only the oldest running operation of an id is considered
// ended; when the client reused an id, that is the one it completed.
func (t *tracker) endedByServer(id string) (awaited bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	st, ok := t.ops[id]
	if !ok {
		return false
	}
	awaited = st.open && st.running == 1
	st.running--
	if st.running <= 0 {
		delete(t.ops, id)
	} else {
		t.ops[id] = st
	}
	return awaited
}

// kind returns the first byte of a JSON value (one of {["tfn or a digit or
// '-'), or 0 for an absent value.
func kind(raw json.RawMessage) byte {
	raw = bytes.TrimLeft(raw, " \t\r\n")
	if len(raw) == 0 {
		return 0
	}
	return raw[0]
}

// nullish reports whether raw is absent or null.
func nullish(raw json.RawMessage) bool {
	k := kind(raw)
	return k == 0 || k == 'n'
}

// objectOrNullish reports whether raw is an object, null or absent.
func objectOrNullish(raw json.RawMessage) bool {
	return nullish(raw) || kind(raw) == '{'
}

// validSubscribePayload checks a subscribe payload as graphql-transport-ws
// defines it: an object with a string query, and operationName (string),
// variables and extensions (objects) null or absent otherwise. For
// automatic persisted queries the query may be absent when extensions is an
// object: gqlgen looks it up by hash.
func validSubscribePayload(raw json.RawMessage) bool {
	if kind(raw) != '{' {
		return false
	}
	var p struct {
		Query         json.RawMessage `json:"query"`
		OperationName json.RawMessage `json:"operationName"`
		Variables     json.RawMessage `json:"variables"`
		Extensions    json.RawMessage `json:"extensions"`
	}
	if json.Unmarshal(raw, &p) != nil {
		return false
	}
	switch {
	case kind(p.Query) != '"' && !(nullish(p.Query) && kind(p.Extensions) == '{'):
		return false
	case !nullish(p.OperationName) && kind(p.OperationName) != '"':
		return false
	case !objectOrNullish(p.Variables), !objectOrNullish(p.Extensions):
		return false
	}
	return true
}

// nonEmpty reports whether id is present and not "".
func nonEmpty(id *string) bool { return id != nil && *id != "" }

// inspect checks one incoming message and decides what happens to it.
func (c *conn) inspect(data []byte) (verdict, error) {
	if c.proto == transportWS {
		return c.inspectTransportWS(data)
	}
	return c.inspectLegacy(data), nil
}

// inspectTransportWS enforces graphql-transport-ws: an invalid message closes
// with 4400, a second connection_init with 4429, subscribe before the ack
// with 4401 and subscribe with an active id with 4409. Ping and pong before
// the ack are answered or dropped here: gqlgen accepts only connection_init
// until then, while the protocol allows them at any time.
func (c *conn) inspectTransportWS(data []byte) (verdict, error) {
	var m clientMessage
	if json.Unmarshal(data, &m) != nil {
		return c.fail(CloseBadRequest, reasonInvalidMessage)
	}
	switch m.Type {
	case "connection_init":
		if !objectOrNullish(m.Payload) {
			return c.fail(CloseBadRequest, reasonInvalidMessage)
		}
		if c.initReceived {
			return c.fail(CloseTooManyInitRequests, reasonTooManyInits)
		}
		c.initReceived = true
		c.clearInitDeadline()
		return pass, nil
	case "ping", "pong":
		if !objectOrNullish(m.Payload) {
			return c.fail(CloseBadRequest, reasonInvalidMessage)
		}
		if c.ops.acked.Load() {
			return pass, nil // gqlgen answers pings from now on
		}
		if m.Type == "ping" {
			pong := []byte(`{"type":"pong"}`)
			if !nullish(m.Payload) {
				pong = append(append([]byte(`{"type":"pong","payload":`), m.Payload...), '}')
			}
			_ = c.write(pong) // a failed write closed the connection: the next read fails
		}
		return skip, nil
	case "subscribe":
		if !nonEmpty(m.ID) || !validSubscribePayload(m.Payload) {
			return c.fail(CloseBadRequest, reasonInvalidMessage)
		}
		if !c.ops.acked.Load() {
			return c.fail(CloseUnauthorized, reasonUnauthorized)
		}
		if !c.ops.open(*m.ID) {
			return c.fail(CloseSubscriberExists, "Subscriber for "+*m.ID+" already exists")
		}
		if g := c.ops.start(*m.ID); g != *m.ID {
			c.forward = renameIncoming(&m, g)
		}
		return pass, nil
	case "complete":
		if !nonEmpty(m.ID) {
			return c.fail(CloseBadRequest, reasonInvalidMessage)
		}
		if !c.ops.acked.Load() {
			return skip, nil // nothing can be running yet
		}
		c.ops.completedByClient(*m.ID)
		if g := c.ops.gqlgenID(*m.ID); g != *m.ID {
			c.forward = renameIncoming(&m, g)
		}
		return pass, nil
	default: // unknown, or sent only by servers (connection_ack, next, error)
		return c.fail(CloseBadRequest, reasonInvalidMessage)
	}
}

// inspectLegacy keeps the graphql-ws (subscriptions-transport-ws) semantics,
// which report errors with messages and leave the connection open: a message
// that cannot be decoded or has an unknown type gets a connection_error (gqlgen
// would close with 1000, which makes clients reconnect and send it again),
// and a start with the id of an active operation gets an error for that id
// while the running operation continues (gqlgen would lose track of the
// running one, which could then never be stopped).
func (c *conn) inspectLegacy(data []byte) verdict {
	var m clientMessage
	if json.Unmarshal(data, &m) != nil {
		c.writeLegacyError("connection_error", "", reasonInvalidMessage)
		return skip
	}
	id := ""
	if m.ID != nil {
		id = *m.ID
	}
	switch m.Type {
	case "connection_init":
		c.initReceived = true
		c.clearInitDeadline()
		return pass
	case "connection_terminate":
		return pass
	case "start":
		if !c.ops.open(id) {
			c.writeLegacyError("error", id, "Subscriber for "+id+" already exists")
			return skip
		}
		if g := c.ops.start(id); g != id {
			c.forward = renameIncoming(&m, g)
		}
		return pass
	case "stop":
		c.ops.completedByClient(id)
		if g := c.ops.gqlgenID(id); g != id {
			c.forward = renameIncoming(&m, g)
		}
		return pass
	default:
		c.writeLegacyError("connection_error", "", fmt.Sprintf("Invalid message type %q", m.Type))
		return skip
	}
}

// writeLegacyError sends a graphql-ws connection_error (payload: one error
// object, as gqlgen sends it) or error for id (payload: a list of errors).
func (c *conn) writeLegacyError(typ, id, message string) {
	e := map[string]string{"message": message}
	var payload any = e
	if typ == "error" {
		payload = []map[string]string{e}
	}
	data, err := json.Marshal(struct {
		Type    string `json:"type"`
		ID      string `json:"id,omitempty"`
		Payload any    `json:"payload"`
	}{typ, id, payload})
	if err != nil {
		return
	}
	_ = c.write(data) // a failed write closed the connection: the next read fails
}

// outgoing inspects a message gqlgen is about to send and reports whether to
// send it. Results, almost every message on a busy connection, are
// recognised by their last bytes and pass untouched. Of the rest, it notes
// connection_ack and the end of operations; with graphql-transport-ws it drops
// an end the client does not wait for: a complete after an error for the
// same operation ("no Complete message will be emitted") or after the
// client's own complete ("no further events ... should be sent through").
func (c *conn) outgoing(data []byte) ([]byte, bool) {
	if bytes.HasSuffix(data, nextSuffix) || bytes.HasSuffix(data, dataSuffix) {
		if c.ops.nRenamed.Load() == 0 {
			return data, true // the usual case: nothing renamed on this connection
		}
		typ := "next"
		if bytes.HasSuffix(data, dataSuffix) {
			typ = "data"
		}
		var m struct {
			ID string `json:"id"`
		}
		if json.Unmarshal(data, &m) == nil {
			if id, ok := c.ops.clientID(m.ID, false); ok {
				data = renameTail(data, m.ID, id, typ)
			}
		}
		return data, true
	}
	var m struct {
		Type string `json:"type"`
		ID   string `json:"id"`
	}
	if json.Unmarshal(data, &m) != nil {
		return data, true
	}
	switch m.Type {
	case "connection_ack":
		c.ops.acked.Store(true)
	case "complete", "error":
		id, ok := c.ops.clientID(m.ID, true)
		if ok {
			data = renameTail(data, m.ID, id, m.Type)
		}
		awaited := c.ops.endedByServer(id)
		return data, awaited || c.proto == legacyWS // graphql-ws clients expect a complete after stop
	}
	return data, true
}
