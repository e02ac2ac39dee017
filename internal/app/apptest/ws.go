package apptest

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/gorilla/websocket"
)

// WS protocols.
const (
	TransportWS = "graphql-transport-ws"
	LegacyWS    = "graphql-ws"
)

// WSClient is a GraphQL-over-WebSocket client for tests (gorilla's client).
type WSClient struct {
	Conn     *websocket.Conn
	Protocol string

	msgs chan *WSMessage
	err  error // the read error that ended msgs
}

// WSMessage is one protocol message.
type WSMessage struct {
	ID      string          `json:"id,omitempty"`
	Type    string          `json:"type"`
	Payload json.RawMessage `json:"payload,omitempty"`
}

// DialWS opens a WebSocket to the server with protocol and sends connection_init with
// payload. header may carry an API key. It returns the client after the ack, or the
// close error when the server rejects the connection.
func (e *Env) DialWS(protocol string, payload map[string]any, header http.Header) (*WSClient, error) {
	return DialWS(e.Server.URL, protocol, payload, header)
}

// DialWS is Env.DialWS for any base URL (http://host:port).
func DialWS(baseURL, protocol string, payload map[string]any, header http.Header) (*WSClient, error) {
	c, err := OpenWS(baseURL, protocol, header)
	if err != nil {
		return nil, err
	}
	if err := c.Send("", "connection_init", payload); err != nil {
		c.Conn.Close()
		return nil, err
	}
	for {
		m, err := c.Next(5 * time.Second)
		if err != nil {
			c.Conn.Close()
			return nil, err
		}
		if m.Type == "connection_ack" {
			return c, nil
		}
		if m.Type == "ka" {
			continue
		}
	}
}

// OpenWS opens a WebSocket to the server with protocol and sends nothing: the
// caller speaks first (protocol tests).
func (e *Env) OpenWS(protocol string, header http.Header) (*WSClient, error) {
	return OpenWS(e.Server.URL, protocol, header)
}

// OpenWS is Env.OpenWS for any base URL (http://host:port).
func OpenWS(baseURL, protocol string, header http.Header) (*WSClient, error) {
	d := websocket.Dialer{Subprotocols: []string{protocol}, HandshakeTimeout: 5 * time.Second, ReadBufferSize: 1024, WriteBufferSize: 1024}
	conn, resp, err := d.Dial("ws"+strings.TrimPrefix(baseURL, "http")+"/query", header)
	if err != nil {
		if resp != nil {
			return nil, errors.New("dial: HTTP " + resp.Status)
		}
		return nil, err
	}
	c := &WSClient{Conn: conn, Protocol: protocol, msgs: make(chan *WSMessage, 256)}
	// One reader for the connection's life: a gorilla connection cannot be read
	// again after a read times out, so timeouts are applied to this channel instead.
	go func() {
		defer close(c.msgs)
		for {
			var m WSMessage
			if err := conn.ReadJSON(&m); err != nil {
				c.err = err
				return
			}
			select {
			case c.msgs <- &m:
			default: // a test that stopped reading must not stall the server's writes
			}
		}
	}()
	return c, nil
}

// Send writes one message.
func (c *WSClient) Send(id, typ string, payload any) error {
	m := map[string]any{"type": typ}
	if id != "" {
		m["id"] = id
	}
	if payload != nil {
		m["payload"] = payload
	}
	_ = c.Conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	return c.Conn.WriteJSON(m)
}

// SendRaw writes frame as one text message, as is (malformed ones too).
func (c *WSClient) SendRaw(frame string) error {
	_ = c.Conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	return c.Conn.WriteMessage(websocket.TextMessage, []byte(frame))
}

// Subscribe starts operation id.
func (c *WSClient) Subscribe(id, query string, vars map[string]any) error {
	typ := "subscribe"
	if c.Protocol == LegacyWS {
		typ = "start"
	}
	return c.Send(id, typ, map[string]any{"query": query, "variables": vars})
}

// Stop ends operation id.
func (c *WSClient) Stop(id string) error {
	typ := "complete"
	if c.Protocol == LegacyWS {
		typ = "stop"
	}
	return c.Send(id, typ, nil)
}

// Next reads the next message other than keep-alives and pings (answering pings).
// A close from the server is returned as a *websocket.CloseError.
func (c *WSClient) Next(timeout time.Duration) (*WSMessage, error) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		var m *WSMessage
		select {
		case msg, ok := <-c.msgs:
			if !ok {
				return nil, c.err
			}
			m = msg
		case <-timer.C:
			return nil, errTimeout
		}
		switch m.Type {
		case "ka", "pong":
			continue
		case "ping":
			_ = c.Send("", "pong", nil)
			continue
		}
		return m, nil
	}
}

var errTimeout = errors.New("ws: timeout waiting for a message")

// IsData reports whether m carries a result (next / data).
func (m *WSMessage) IsData() bool { return m.Type == "next" || m.Type == "data" }

// Close closes the connection normally.
func (c *WSClient) Close() {
	_ = c.Conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
	_ = c.Conn.Close()
}
