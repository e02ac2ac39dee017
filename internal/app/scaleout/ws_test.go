package scaleout

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// transportWS is the graphql-transport-ws subprotocol.
const transportWS = "graphql-transport-ws"

// wsMessage is one graphql-transport-ws message.
type wsMessage struct {
	ID      string          `json:"id,omitempty"`
	Type    string          `json:"type"`
	Payload json.RawMessage `json:"payload,omitempty"`
}

// wsClient is a minimal graphql-transport-ws client. One goroutine reads the
// connection for its whole life, answers pings and queues every other message.
type wsClient struct {
	conn    *websocket.Conn
	writeMu sync.Mutex // gorilla allows one concurrent writer

	msgs    chan wsMessage
	closing chan struct{}
	done    chan struct{} // closed when the reader has returned
	readErr error         // why the reader returned; read after done
	once    sync.Once
}

// dialWS connects to the server at base (http://host:port), sends connection_init
// with apiKey and waits for connection_ack.
func dialWS(ctx context.Context, base, apiKey string) (*wsClient, error) {
	d := websocket.Dialer{Subprotocols: []string{transportWS}, HandshakeTimeout: 5 * time.Second}
	conn, resp, err := d.DialContext(ctx, "ws"+strings.TrimPrefix(base, "http")+"/query", nil)
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("websocket dial: HTTP %s: %w", resp.Status, err)
		}
		return nil, fmt.Errorf("websocket dial: %w", err)
	}
	if p := conn.Subprotocol(); p != transportWS {
		conn.Close()
		return nil, fmt.Errorf("server chose subprotocol %q, want %q", p, transportWS)
	}
	c := &wsClient{
		conn:    conn,
		msgs:    make(chan wsMessage, 256),
		closing: make(chan struct{}),
		done:    make(chan struct{}),
	}
	go c.read()
	if err := c.send(wsMessage{Type: "connection_init", Payload: mustJSON(map[string]string{"apiKey": apiKey})}); err != nil {
		c.Close()
		return nil, err
	}
	m, err := c.next(ctx)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("waiting for connection_ack: %w", err)
	}
	if m.Type != "connection_ack" {
		c.Close()
		return nil, fmt.Errorf("got %s %s, want connection_ack", m.Type, m.Payload)
	}
	return c, nil
}

func (c *wsClient) read() {
	defer close(c.done)
	for {
		var m wsMessage
		if err := c.conn.ReadJSON(&m); err != nil {
			c.readErr = err
			return
		}
		if m.Type == "ping" {
			if err := c.send(wsMessage{Type: "pong"}); err != nil {
				c.readErr = err
				return
			}
			continue
		}
		select {
		case c.msgs <- m:
		case <-c.closing:
			return
		}
	}
}

// send writes one message.
func (c *wsClient) send(m wsMessage) error {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	_ = c.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	return c.conn.WriteJSON(m)
}

// subscribe starts operation id.
func (c *wsClient) subscribe(id, query string) error {
	return c.send(wsMessage{ID: id, Type: "subscribe", Payload: mustJSON(map[string]string{"query": query})})
}

// next returns the next message other than a ping, or an error when ctx ends or the
// connection does.
func (c *wsClient) next(ctx context.Context) (wsMessage, error) {
	select {
	case m := <-c.msgs:
		return m, nil
	case <-c.done:
		select {
		case m := <-c.msgs: // queued before the connection ended
			return m, nil
		default:
		}
		return wsMessage{}, fmt.Errorf("connection ended: %v", c.readErr)
	case <-ctx.Done():
		return wsMessage{}, ctx.Err()
	}
}

// Close closes the connection (with a normal closure when possible) and waits for
// the reader to return.
func (c *wsClient) Close() {
	c.once.Do(func() {
		close(c.closing)
		// WriteControl may run concurrently with the reader's pong writes.
		_ = c.conn.WriteControl(websocket.CloseMessage,
			websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
		_ = c.conn.Close()
		<-c.done
	})
}

func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}
