package httpapi

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/99designs/gqlgen/graphql/handler/transport"

	"github.com/latchkey/latchkey/internal/domain/keys"
	"github.com/latchkey/latchkey/internal/platform/reqctx"
	"github.com/latchkey/latchkey/internal/platform/viewer"
	"github.com/latchkey/latchkey/internal/transport/wsgorilla"
)

// Close codes of rejected WebSocket connections. Never 1000: graphql-ws clients
// reconnect forever after a normal closure. wsgorilla sends the protocol's other
// codes (4400 invalid message, 4401 subscribe before the ack, 4408 no
// connection_init in time, 4409 duplicate operation id, 4429 second
// connection_init).
const (
	closeUnauthorized = 4401 // no credential at all
	closeForbidden    = 4403 // a credential that was refused
	// closeTooManyFailures: the client's budget of unknown credentials is spent.
	closeTooManyFailures = 4429
)

// defaultWSInitTimeout is how long a WebSocket client may take to send
// connection_init.
const defaultWSInitTimeout = 10 * time.Second

// Conns tracks open WebSocket connections so that shutdown can close them.
type Conns struct {
	mu     sync.Mutex
	cancel map[*context.CancelFunc]struct{}
}

func (c *Conns) add(cancel context.CancelFunc) func() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cancel == nil {
		c.cancel = map[*context.CancelFunc]struct{}{}
	}
	c.cancel[&cancel] = struct{}{}
	return func() {
		c.mu.Lock()
		delete(c.cancel, &cancel)
		c.mu.Unlock()
	}
}

// CloseAll closes every open connection (after their subscriptions have completed).
func (c *Conns) CloseAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for f := range c.cancel {
		(*f)()
	}
}

// Len returns the number of open connections.
func (c *Conns) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.cancel)
}

// credentialFromPayload finds the key in a connection_init payload: apiKey, an
// X-API-Key entry (what the playground's header editor sends), or Authorization.
func credentialFromPayload(p transport.InitPayload) string {
	for _, k := range []string{"apiKey", "X-API-Key", "x-api-key"} {
		if s := strings.TrimSpace(p.GetString(k)); s != "" {
			return s
		}
	}
	if h, ok := p["headers"].(map[string]any); ok {
		for k, v := range h {
			if s, ok := v.(string); ok && strings.EqualFold(k, "X-API-Key") && strings.TrimSpace(s) != "" {
				return strings.TrimSpace(s)
			}
		}
	}
	return keys.ExtractCredential("", p.Authorization())
}

// websocketTransport serves GraphQL over WebSocket (graphql-transport-ws and the
// legacy graphql-ws) with gorilla/websocket. The key comes from connection_init or
// from the upgrade request's headers (already verified by the middleware).
func (o Options) websocketTransport() transport.Websocket {
	initTimeout := o.WebSocketInitTimeout
	if initTimeout <= 0 {
		initTimeout = defaultWSInitTimeout
	}
	return transport.Websocket{
		Implementation: &wsgorilla.Implementation{
			CheckOrigin: wsgorilla.AllowOrigins(o.AllowedOrigins),
			// The adapter's timeout closes with 4408 as graphql-transport-ws
			// says; gqlgen's own (transport.Websocket.InitTimeout, left zero)
			// would close with 1002.
			InitTimeout: initTimeout,
		},
		KeepAlivePingInterval: 15 * time.Second,
		PingPongInterval:      15 * time.Second, // graphql-transport-ws: drop peers that stop answering
		PayloadReadLimit:      &o.MaxBodyBytes,  // same bound as an HTTP request body
		InitFunc: func(ctx context.Context, p transport.InitPayload) (context.Context, *transport.InitPayload, error) {
			if cred := credentialFromPayload(p); cred != "" && !o.DisableAuth {
				v, err := o.verify(ctx, cred)
				if err != nil {
					reason, code := "temporarily unavailable", closeForbidden
					var ae *keys.AuthError
					var te *keys.ThrottledError
					switch {
					case errors.As(err, &ae):
						reason = ae.Reason
					case errors.As(err, &te):
						// Too many unknown credentials from this client: clients do not
						// retry on 4429.
						reason, code = "too many failed credentials", closeTooManyFailures
					}
					ctx = transport.WithWebsocketCloseCode(ctx, code)
					return transport.AppendCloseReason(ctx, reason), nil, errors.New(reason)
				}
				ctx = viewer.NewContext(ctx, v)
			}
			if viewer.FromContext(ctx) == nil {
				o.refused(keys.ErrMissing)
				ctx = transport.WithWebsocketCloseCode(ctx, closeUnauthorized)
				return transport.AppendCloseReason(ctx, "authentication required"), nil, errors.New("authentication required: send apiKey in connection_init")
			}
			ctx = reqctx.WithWebSocket(ctx)
			ctx, cancel := context.WithCancel(ctx)
			remove := o.Conns.add(cancel)
			context.AfterFunc(ctx, remove)
			return ctx, nil, nil
		},
	}
}
