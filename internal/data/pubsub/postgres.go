package pubsub

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lib/pq"
)

// MaxPayload is the largest len(topic)+len(payload), in bytes, that the PostgreSQL bus
// carries to other instances (5845 bytes: what fits in one NOTIFY, whose payload
// PostgreSQL limits to 8000 bytes, after framing and base64). A larger message still
// reaches this instance's subscribers but is not sent to other instances; it is counted
// in Stats.Oversize and logged (at most once per 10 s).
const MaxPayload = maxFrame - maxHeader - 2*2 // two length prefixes, 2-byte uvarints below 16384

// Each NOTIFY payload is the standard base64 encoding of one frame (see remote.go).
// Base64 keeps the text valid in any server encoding (NOTIFY payloads are text, so NUL
// bytes and invalid UTF-8 are not allowed) and makes a frame's size exact, so MaxPayload
// is a hard guarantee rather than depending on how a payload escapes.

const (
	// notifyLimit is the largest NOTIFY payload sent, below PostgreSQL's 8000 bytes.
	notifyLimit = 7900
	// maxFrame is the largest frame whose base64 encoding fits in notifyLimit.
	maxFrame = notifyLimit / 4 * 3

	// maxChunksPerStatement bounds how many notifications one pg_notify statement sends (~500 KB).
	maxChunksPerStatement = 64
)

// Timeouts of the PostgreSQL bus.
const (
	flushTimeout      = 5 * time.Second // one pg_notify statement
	closeFlushTimeout = 2 * time.Second // Close's final flush, in total
	defaultChannel    = "latchkey_bus"
)

// notifySQL sends every element of $2 as a notification on channel $1, in order, in one
// round trip and one transaction (all or none are sent).
const notifySQL = `SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p`

// PostgresConfig configures NewPostgres. The zero value uses the defaults.
type PostgresConfig struct {
	Channel    string        // LISTEN/NOTIFY channel (default "latchkey_bus"); at most 63 bytes
	Tick       time.Duration // outgoing batching interval (default 50ms): at most one NOTIFY per instance per tick, unless a batch must be split
	InstanceID string        // default random; messages from this instance are not delivered twice. At most 64 bytes
	// Listener reconnect backoff (defaults 100ms, 5s): the wait before reconnecting
	// doubles after each failed attempt, from MinReconnect up to MaxReconnect.
	MinReconnect, MaxReconnect time.Duration
	// QueueSize bounds the messages waiting to be sent to other instances (default 100,000;
	// at most QueueSize*MaxPayload bytes). When it is full, messages are not sent to other
	// instances and are counted in Stats.QueueDropped.
	QueueSize int
}

func (c *PostgresConfig) setDefaults() error {
	if c.Channel == "" {
		c.Channel = defaultChannel
	}
	if c.Tick == 0 {
		c.Tick = 50 * time.Millisecond
	}
	if c.MinReconnect == 0 {
		c.MinReconnect = 100 * time.Millisecond
	}
	if c.MaxReconnect == 0 {
		c.MaxReconnect = max(5*time.Second, c.MinReconnect)
	}
	if c.QueueSize == 0 {
		c.QueueSize = defaultQueueSize
	}
	if c.InstanceID == "" {
		b := make([]byte, 12)
		_, _ = rand.Read(b) // never fails (crypto/rand.Read panics instead)
		c.InstanceID = hex.EncodeToString(b)
	}
	switch {
	case len(c.Channel) > 63:
		return fmt.Errorf("channel name %q is longer than 63 bytes", c.Channel)
	case len(c.InstanceID) > maxInstanceID:
		return fmt.Errorf("instance ID is longer than %d bytes", maxInstanceID)
	case c.Tick < 0 || c.MinReconnect < 0 || c.MaxReconnect < 0 || c.QueueSize < 0:
		return errors.New("durations and QueueSize must not be negative")
	case c.MaxReconnect < c.MinReconnect:
		return errors.New("MaxReconnect is less than MinReconnect")
	}
	return nil
}

// NewPostgres connects a pq.Listener to dsn (a lib/pq connection string/URL with sslmode set) and uses db for pg_notify.
// It returns an error when the listener cannot connect or LISTEN fails.
//
// ctx bounds only the start (connecting and LISTEN); NewPostgres fails at the first failed
// connection attempt, so a misconfigured dsn is reported at once. After a successful
// start the listener reconnects on its own with the configured backoff and the bus calls
// the OnReconnect callbacks. dsn and db must point at the same database. NewPostgres also
// returns an error for a nil db, a dsn that lib/pq cannot parse (the error never contains
// the password), or an invalid cfg (a name too long, a negative duration).
// On error no goroutine is left behind.
func NewPostgres(ctx context.Context, dsn string, db *sql.DB, cfg PostgresConfig) (Bus, error) {
	if db == nil {
		return nil, errors.New("pubsub: NewPostgres: db is nil")
	}
	if err := cfg.setDefaults(); err != nil {
		return nil, fmt.Errorf("pubsub: NewPostgres: %w", err)
	}
	if _, err := pq.NewConnector(dsn); err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = errors.New("malformed URL") // url.Error would print the password
		}
		return nil, fmt.Errorf("pubsub: NewPostgres: invalid dsn: %w", err)
	}

	runCtx, cancelRun := context.WithCancel(context.Background())
	b := &pgBus{
		cfg:          cfg,
		db:           db,
		runCtx:       runCtx,
		cancelRun:    cancelRun,
		dispatchDone: make(chan struct{}),
		startFailed:  make(chan error, 1),
		malformedLog: logLimiter{interval: logInterval},
		connLog:      logLimiter{interval: logInterval},
	}
	b.hub = newHub(&b.stats)
	b.out = newOutbox(&b.stats, cfg.InstanceID, cfg.Tick, cfg.QueueSize, MaxPayload, maxFrame, maxChunksPerStatement, b.notify)
	b.out.sendTimeout, b.out.closeTimeout, b.out.runCtx = flushTimeout, closeFlushTimeout, runCtx

	// The dialer closes the listener's connections when runCtx is cancelled, so that
	// a dial or handshake that hangs cannot hold up Close (pq.Listener holds its lock
	// while connecting, and Listener.Close waits for that lock).
	b.dialer = &ctxDialer{ctx: runCtx, min: cfg.MinReconnect, max: cfg.MaxReconnect, d: net.Dialer{
		KeepAliveConfig: net.KeepAliveConfig{
			// The listener only reads: keepalives detect a silently dead connection
			// (about 10s + 3*5s) so that it is re-established and OnReconnect called.
			Enable: true, Idle: 10 * time.Second, Interval: 5 * time.Second, Count: 3,
		},
	}}
	// The reconnect backoff is applied by the dialer, which Close can interrupt;
	// pq.Listener's own waits are uninterruptible sleeps, so they are kept minimal.
	b.listener = pq.NewDialListener(b.dialer, dsn, time.Millisecond, time.Millisecond, b.listenerEvent)
	go b.dispatch()

	listenDone := make(chan error, 1)
	go func() { listenDone <- b.listener.Listen(cfg.Channel) }()
	var err error
	listened := false
	select {
	case err = <-listenDone:
		listened = true
	case err = <-b.startFailed:
	case <-ctx.Done():
		err = ctx.Err()
	}
	if err != nil {
		b.closing.Store(true)
		cancelRun()
		_ = b.listener.Close()
		<-b.dispatchDone
		if !listened {
			<-listenDone // Listen returns once the listener is closed
		}
		return nil, fmt.Errorf("pubsub: NewPostgres: LISTEN %s: %w", cfg.Channel, err)
	}
	b.started.Store(true)

	go b.out.run()
	return b, nil
}

type pgBus struct {
	cfg      PostgresConfig
	db       *sql.DB
	listener *pq.Listener
	dialer   *ctxDialer
	stats    counters
	hub      *hub
	out      *outbox

	runCtx    context.Context // cancelled at the end of Close (or Close's flush deadline)
	cancelRun context.CancelFunc

	closeOnce sync.Once
	closeErr  error
	closing   atomic.Bool
	started   atomic.Bool

	dispatchDone chan struct{}
	startFailed  chan error

	reconnect reconnectHooks

	malformedLog, connLog logLimiter
}

func (b *pgBus) Publish(topic string, payload []byte) {
	if b.closing.Load() || !b.hub.publish(topic, payload) {
		return
	}
	b.out.enqueue(topic, payload)
}

// notify sends frames as one pg_notify statement (all or none).
func (b *pgBus) notify(ctx context.Context, frames [][]byte) error {
	chunks := make([]string, len(frames))
	for i, f := range frames {
		chunks[i] = base64.StdEncoding.EncodeToString(f)
	}
	_, err := b.db.ExecContext(ctx, notifySQL, b.cfg.Channel, pq.StringArray(chunks))
	return err
}

func (b *pgBus) Subscribe(topic string, buf int) *Subscription {
	return b.hub.subscribe(topic, buf)
}

func (b *pgBus) OnReconnect(f func()) {
	b.reconnect.add(f)
}

func (b *pgBus) Stats() Stats { return b.stats.snapshot() }

func (b *pgBus) Close() error {
	b.closeOnce.Do(func() {
		b.closing.Store(true)
		// The final flush (and a flush in progress) get closeFlushTimeout in total.
		t := time.AfterFunc(closeFlushTimeout, b.cancelRun)
		b.closeErr = b.out.close()
		t.Stop()
		b.cancelRun()
		_ = b.listener.Close() // only fails when already closed
		<-b.dispatchDone
		b.hub.close()
	})
	return b.closeErr
}

// dispatch receives notifications until the listener is closed and delivers other
// instances' messages to local subscribers. A nil notification means the listener
// reconnected after a loss.
func (b *pgBus) dispatch() {
	defer close(b.dispatchDone)
	for n := range b.listener.Notify {
		if n == nil {
			if b.closing.Load() {
				continue
			}
			b.stats.reconnects.Add(1)
			b.reconnect.run()
			continue
		}
		if n.Channel != b.cfg.Channel {
			continue
		}
		buf, err := base64.StdEncoding.DecodeString(n.Extra)
		if err != nil {
			buf = nil // malformed
		}
		receive(b.hub, &b.stats, b.cfg.InstanceID, buf, &b.malformedLog, b.cfg.Channel)
	}
}

// listenerEvent is pq.Listener's event callback; it runs on the listener's goroutine
// and must not block.
func (b *pgBus) listenerEvent(ev pq.ListenerEventType, err error) {
	switch ev {
	case pq.ListenerEventConnected, pq.ListenerEventReconnected:
		b.dialer.setDelay(0, true)
	case pq.ListenerEventDisconnected:
		b.dialer.setDelay(b.cfg.MinReconnect, false)
	case pq.ListenerEventConnectionAttemptFailed:
		b.dialer.attemptFailed()
	}
	if !b.started.Load() {
		if ev == pq.ListenerEventConnectionAttemptFailed {
			select {
			case b.startFailed <- err:
			default:
			}
		}
		return
	}
	if b.closing.Load() {
		return
	}
	switch ev {
	case pq.ListenerEventDisconnected:
		slog.Warn("pubsub: PostgreSQL listener disconnected; reconnecting", "err", err)
	case pq.ListenerEventReconnected:
		slog.Info("pubsub: PostgreSQL listener reconnected; messages sent meanwhile were missed")
	case pq.ListenerEventConnectionAttemptFailed:
		b.connLog.warn("pubsub: PostgreSQL listener cannot reconnect", "err", err)
	}
}

// ctxDialer dials like net.Dialer, closes its connections when ctx is done, and
// waits the listener's reconnect backoff before dialing (interrupted when ctx is done).
type ctxDialer struct {
	ctx      context.Context
	d        net.Dialer
	min, max time.Duration

	mu      sync.Mutex
	backoff time.Duration // last wait after a failed attempt; 0 after success
	delay   time.Duration // wait before the next dial
}

// attemptFailed doubles the backoff, from min up to max, for the next attempt.
func (c *ctxDialer) attemptFailed() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.backoff = min(max(2*c.backoff, c.min), c.max)
	c.delay = c.backoff
}

// setDelay sets the wait before the next dial, resetting the backoff if reset.
func (c *ctxDialer) setDelay(d time.Duration, reset bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.delay = d
	if reset {
		c.backoff = 0
	}
}

func (c *ctxDialer) Dial(network, address string) (net.Conn, error) {
	return c.DialContext(context.Background(), network, address)
}

func (c *ctxDialer) DialTimeout(network, address string, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return c.DialContext(ctx, network, address)
}

func (c *ctxDialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stopDial := context.AfterFunc(c.ctx, cancel)
	defer stopDial()

	c.mu.Lock()
	delay := c.delay
	c.delay = 0 // only the first dial of an attempt waits (a DSN may list several hosts)
	c.mu.Unlock()
	if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		}
	}

	conn, err := c.d.DialContext(ctx, network, address)
	if err != nil {
		return nil, err
	}
	cc := &ctxConn{Conn: conn}
	cc.stop = context.AfterFunc(c.ctx, func() { _ = conn.Close() })
	return cc, nil
}

type ctxConn struct {
	net.Conn
	stop func() bool
}

func (c *ctxConn) Close() error {
	c.stop()
	return c.Conn.Close()
}
