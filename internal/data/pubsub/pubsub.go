// Package pubsub is the server's message bus: live usage events for GraphQL
// subscriptions and cache invalidations (a revoked key must be rejected by every
// instance within a second).
//
// Three implementations share one interface, [Bus]:
//
//   - [NewLocal]: in-process only, for SQLite (single-instance) deployments.
//   - [NewRedis]: local subscribers are served in-process as with NewLocal, and
//     messages are also carried to every other instance on the same Redis (classic
//     pub/sub) or Redis Cluster (sharded pub/sub) on one channel. The server uses it
//     whenever Redis is configured.
//   - [NewPostgres]: the same, carried with PostgreSQL LISTEN/NOTIFY
//     (github.com/lib/pq's pq.Listener), for PostgreSQL deployments without Redis.
//     A NOTIFY payload is limited to 8000 bytes of text, so a message larger than
//     [MaxPayload] stays local; every NOTIFY also takes PostgreSQL's global notification
//     queue lock at commit, which is why Redis is preferred when it is there.
//
// Both remote buses batch: messages published within one Tick (50 ms) leave in as
// few frames as fit (one NOTIFY of up to 7.9 KB, or one PUBLISH of up to 1 MiB),
// so the cost on the transport grows with ticks, not with messages.
//
// Delivery is best effort and never blocks publishers: a subscriber that does not
// keep up loses messages (counted per subscription, see [Subscription.Dropped]),
// and after a lost connection other instances' messages may have been
// missed (see OnReconnect in [Bus]). Consumers that must not act on stale data,
// such as caches, purge themselves in an OnReconnect callback and bound their
// entries' lifetime. Messages from one instance arrive on the others in the order
// they were published; a failed send is retried, so in the rare case where it failed
// (timed out) after the transport had sent it, other instances get its messages twice.
package pubsub

import (
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// Bus publishes payloads on topics to every subscriber of the topic, on this instance
// and (for the PostgreSQL and Redis buses) on every other instance sharing the
// database or the Redis channel.
//
// All methods are safe for concurrent use.
type Bus interface {
	// Publish never blocks on subscribers or the network: local subscribers get the payload at once;
	// other instances get it within one Tick. The payload must not be modified afterwards.
	//
	// Every subscriber receives the same slice: subscribers must not modify it either.
	// Publish after Close does nothing. Publish reports no error: on the remote buses a
	// message whose topic and payload exceed the transport's limit (MaxPayload on
	// PostgreSQL, RedisConfig.MaxPayload on Redis), or that finds the outgoing
	// queue full, still reaches local subscribers but not other instances; it is counted
	// in Stats (Oversize, QueueDropped) and logged (at most once per 10 s per cause).
	Publish(topic string, payload []byte)

	// Subscribe returns a subscription with a buffer of buf messages. A subscriber that does not keep up
	// never blocks publishers or other subscribers: messages beyond its buffer are dropped and counted.
	//
	// buf < 1 is treated as 1 (an unbuffered channel would drop nearly every message).
	// Subscribe after Close returns a subscription whose channel is already closed.
	Subscribe(topic string, buf int) *Subscription

	// Close stops the bus (flushing pending outgoing notifications first, within a short timeout)
	// and closes every subscription's channel. It waits for the bus's goroutines to exit.
	//
	// Close returns an error only for the remote buses, when the final flush failed or
	// timed out (the error says how many messages did not reach other instances).
	// Calling Close again returns the same result.
	Close() error

	// OnReconnect registers f to be called every time the connection that receives other
	// instances' messages is re-established after a loss. Messages published while it was
	// down were missed, so a cache should purge itself in f.
	//
	// Callbacks run one after another on the goroutine that delivers incoming messages,
	// before any message received after the reconnection is delivered: they must return
	// quickly and must not call Close. The local bus has no connection and never calls them.
	OnReconnect(f func())

	// Stats returns a snapshot of the bus's counters.
	Stats() Stats
}

// Stats counts what a bus did since it was created. Counters only grow.
type Stats struct {
	// Published counts Publish calls (made before Close).
	Published uint64
	// Delivered counts messages put into a subscriber's channel: one per subscriber,
	// for messages published on this instance and received from other instances.
	Delivered uint64
	// Dropped counts messages lost because a subscriber's buffer was full.
	Dropped uint64

	// The counters below stay zero on the local bus.

	// Notifications counts frames sent to other instances: NOTIFYs (one per
	// notification, even when several are sent in one statement) or PUBLISHes.
	Notifications uint64
	// Oversize counts messages not sent to other instances because their topic and
	// payload together exceed MaxPayload bytes.
	Oversize uint64
	// QueueDropped counts messages not sent to other instances because the outgoing
	// queue was full (the database was too slow or unreachable).
	QueueDropped uint64
	// NotifyErrors counts failed sends (NOTIFY statements, PUBLISH pipelines); their
	// messages stay queued and are retried.
	NotifyErrors uint64
	// Received counts messages received from other instances.
	Received uint64
	// Malformed counts messages on the channel that could not be decoded (ignored).
	Malformed uint64
	// Reconnects counts re-established receiving connections (each calls the
	// OnReconnect callbacks).
	Reconnects uint64
}

// Subscription receives the messages published on one topic. Create it with
// [Bus.Subscribe]; read from C; call Close when done.
type Subscription struct {
	ch      chan []byte
	topic   string
	hub     *hub
	dropped atomic.Uint64
	closed  bool // guarded by hub.mu
}

// C returns the channel that carries the subscription's messages. It is closed by
// Close or by the bus's Close. Received slices are shared with other subscribers and
// must not be modified.
func (s *Subscription) C() <-chan []byte { return s.ch }

// Dropped returns the number of messages dropped because the buffer was full, since the
// subscription was created or since the last TakeDropped.
func (s *Subscription) Dropped() uint64 { return s.dropped.Load() }

// TakeDropped returns the drop count and resets it to zero, atomically (for a
// "droppedEvents" field in the next message).
func (s *Subscription) TakeDropped() uint64 { return s.dropped.Swap(0) }

// Close unsubscribes and closes C. It is idempotent and safe to call concurrently
// with Publish and with the bus's Close.
func (s *Subscription) Close() {
	if s.hub == nil {
		return
	}
	s.hub.unsubscribe(s)
}

// counters are a bus's statistics, updated atomically.
type counters struct {
	published, delivered, dropped                    atomic.Uint64
	notifications, oversize, queueDropped, notifyErr atomic.Uint64
	received, malformed, reconnects                  atomic.Uint64
}

func (c *counters) snapshot() Stats {
	return Stats{
		Published:     c.published.Load(),
		Delivered:     c.delivered.Load(),
		Dropped:       c.dropped.Load(),
		Notifications: c.notifications.Load(),
		Oversize:      c.oversize.Load(),
		QueueDropped:  c.queueDropped.Load(),
		NotifyErrors:  c.notifyErr.Load(),
		Received:      c.received.Load(),
		Malformed:     c.malformed.Load(),
		Reconnects:    c.reconnects.Load(),
	}
}

// hub is the in-process fan-out shared by every implementation.
//
// Sends are non-blocking and happen under the read lock; Subscribe, Subscription.Close
// and close take the write lock, so a channel is never closed while a send to it is in
// progress.
type hub struct {
	stats *counters

	mu     sync.RWMutex
	topics map[string][]*Subscription
	closed bool
}

func newHub(stats *counters) *hub {
	return &hub{stats: stats, topics: make(map[string][]*Subscription)}
}

func (h *hub) subscribe(topic string, buf int) *Subscription {
	if buf < 1 {
		buf = 1
	}
	s := &Subscription{ch: make(chan []byte, buf), topic: topic, hub: h}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		s.closed = true
		close(s.ch)
		return s
	}
	h.topics[topic] = append(h.topics[topic], s)
	return s
}

func (h *hub) unsubscribe(s *Subscription) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if s.closed {
		return
	}
	s.closed = true
	close(s.ch)
	subs := h.topics[s.topic]
	for i, x := range subs {
		if x == s {
			// Copy rather than shift in place: the slice may be long-lived and
			// shifting would keep a stale pointer in its tail.
			rest := make([]*Subscription, 0, len(subs)-1)
			rest = append(rest, subs[:i]...)
			rest = append(rest, subs[i+1:]...)
			subs = rest
			break
		}
	}
	if len(subs) == 0 {
		delete(h.topics, s.topic)
	} else {
		h.topics[s.topic] = subs
	}
}

// deliver hands payload to every subscriber of topic without blocking. It reports
// false when the hub is closed.
func (h *hub) deliver(topic string, payload []byte) bool {
	var delivered, dropped uint64
	h.mu.RLock()
	if h.closed {
		h.mu.RUnlock()
		return false
	}
	for _, s := range h.topics[topic] {
		select {
		case s.ch <- payload:
			delivered++
		default:
			s.dropped.Add(1)
			dropped++
		}
	}
	h.mu.RUnlock()
	if delivered > 0 {
		h.stats.delivered.Add(delivered)
	}
	if dropped > 0 {
		h.stats.dropped.Add(dropped)
	}
	return true
}

// publish is deliver for a message published on this instance.
func (h *hub) publish(topic string, payload []byte) bool {
	if !h.deliver(topic, payload) {
		return false
	}
	h.stats.published.Add(1)
	return true
}

func (h *hub) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return
	}
	h.closed = true
	for _, subs := range h.topics {
		for _, s := range subs {
			s.closed = true
			close(s.ch)
		}
	}
	h.topics = nil
}

// NewLocal returns an in-process bus: Publish delivers to this process's subscribers
// only. It never returns an error; its Close always returns nil and its OnReconnect
// callbacks are never called.
func NewLocal() Bus {
	l := &localBus{}
	l.hub = newHub(&l.stats)
	return l
}

type localBus struct {
	stats counters
	hub   *hub
}

func (l *localBus) Publish(topic string, payload []byte) { l.hub.publish(topic, payload) }

func (l *localBus) Subscribe(topic string, buf int) *Subscription {
	return l.hub.subscribe(topic, buf)
}

func (l *localBus) Close() error {
	l.hub.close()
	return nil
}

func (l *localBus) OnReconnect(func()) {}

func (l *localBus) Stats() Stats { return l.stats.snapshot() }

// logLimiter logs a recurring problem at most once per interval, reporting how many
// occurrences were not logged.
type logLimiter struct {
	interval time.Duration

	mu         sync.Mutex
	last       time.Time
	suppressed uint64
}

func (l *logLimiter) warn(msg string, args ...any) {
	l.mu.Lock()
	now := time.Now()
	if !l.last.IsZero() && now.Sub(l.last) < l.interval {
		l.suppressed++
		l.mu.Unlock()
		return
	}
	l.last = now
	suppressed := l.suppressed
	l.suppressed = 0
	l.mu.Unlock()
	if suppressed > 0 {
		args = append(args, "suppressed", suppressed)
	}
	slog.Warn(msg, args...)
}
