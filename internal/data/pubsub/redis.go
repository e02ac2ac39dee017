package pubsub

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// MaxRedisPayload is the default RedisConfig.MaxPayload: the largest
// len(topic)+len(payload), in bytes, that the Redis bus carries to other instances.
const MaxRedisPayload = 1 << 20

// Defaults of the Redis bus.
const (
	defaultRedisChannel = "latchkey:bus"
	redisSendTimeout    = 5 * time.Second // one pipeline of PUBLISHes
	redisCloseTimeout   = 2 * time.Second // Close's final flush
	redisFramesPerSend  = 16
	redisChannelBuffer  = 1024 // go-redis' channel of received messages
)

// RedisConfig configures NewRedis. The zero value uses the defaults.
type RedisConfig struct {
	Channel    string        // pub/sub channel (default "latchkey:bus")
	Tick       time.Duration // outgoing batching interval (default 50ms): at most one PUBLISH per instance per tick, unless a batch must be split
	InstanceID string        // default random; messages from this instance are not delivered twice. At most 64 bytes
	// QueueSize bounds the messages waiting to be sent to other instances (default
	// 100,000). When it is full, messages are not sent to other instances and are
	// counted in Stats.QueueDropped.
	QueueSize int
	// MaxPayload is the largest len(topic)+len(payload) sent to other instances
	// (default MaxRedisPayload); larger messages reach local subscribers only and are
	// counted in Stats.Oversize.
	MaxPayload int
	// HealthCheck is how often an idle subscription connection is pinged (default 3s);
	// a ping unanswered within 5 s re-establishes the connection (and calls the
	// OnReconnect callbacks).
	HealthCheck time.Duration
	// Sentinel, for a client made by redis.NewFailoverClient, names its sentinels and
	// master. go-redis sends commands to a promoted master at once but leaves an open
	// subscription on the demoted one, which misses what is published while it
	// resynchronizes; so the bus listens for the sentinels' +switch-master of that
	// master, then moves its subscription to the new one (see resubscribe) and runs the
	// OnReconnect callbacks again SentinelSettle later, once every instance has heard
	// of the switch (a message another instance published on the demoted master just
	// before is covered). It also asks the sentinels every SentinelCheck which master
	// they name, so that a switch it did not hear of (its sentinel connection was down)
	// or could not follow (the new master was not reachable yet) is followed then.
	Sentinel *redis.FailoverOptions
}

// SentinelSettle is how long after a master switch the bus runs its OnReconnect
// callbacks a second time (see RedisConfig.Sentinel).
const SentinelSettle = 2 * time.Second

func (c *RedisConfig) setDefaults() error {
	if c.Channel == "" {
		c.Channel = defaultRedisChannel
	}
	if c.Tick == 0 {
		c.Tick = 50 * time.Millisecond
	}
	if c.QueueSize == 0 {
		c.QueueSize = defaultQueueSize
	}
	if c.MaxPayload == 0 {
		c.MaxPayload = MaxRedisPayload
	}
	if c.HealthCheck == 0 {
		c.HealthCheck = 3 * time.Second
	}
	if c.InstanceID == "" {
		b := make([]byte, 12)
		_, _ = rand.Read(b) // never fails (crypto/rand.Read panics instead)
		c.InstanceID = hex.EncodeToString(b)
	}
	switch {
	case len(c.InstanceID) > maxInstanceID:
		return fmt.Errorf("instance ID is longer than %d bytes", maxInstanceID)
	case c.Tick < 0 || c.QueueSize < 0 || c.MaxPayload < 0 || c.HealthCheck < 0:
		return errors.New("durations, QueueSize and MaxPayload must not be negative")
	}
	return nil
}

// NewRedis returns a bus whose local subscribers are served in-process and whose
// messages reach every other instance subscribed to the same channel of client's
// Redis. With a *redis.ClusterClient it uses sharded pub/sub (SPUBLISH and
// SSUBSCRIBE, Redis 7+): every message of the channel goes through the master of the
// channel's slot, which keeps one instance's messages in order (a classic PUBLISH
// would go to any node and be relayed over the cluster bus, in no particular order)
// and keeps them off the other shards. With any other client (a *redis.Client, a
// *redis.Ring) it uses classic pub/sub (PUBLISH and SUBSCRIBE), which any Redis
// version has. The bus does not close client: close the bus first.
//
// ctx bounds only the start: NewRedis returns an error when the subscription cannot
// be established (Redis unreachable, authentication refused) before ctx ends, or for
// a nil client or an invalid cfg (instance ID too long, a negative value). Afterwards
// go-redis re-establishes a lost subscription on its own and the bus calls the
// OnReconnect callbacks. On error no goroutine is left behind.
func NewRedis(ctx context.Context, client redis.UniversalClient, cfg RedisConfig) (Bus, error) {
	if client == nil {
		return nil, errors.New("pubsub: NewRedis: client is nil")
	}
	if err := cfg.setDefaults(); err != nil {
		return nil, fmt.Errorf("pubsub: NewRedis: %w", err)
	}
	b := &redisBus{
		cfg:          cfg,
		client:       client,
		started:      make(chan struct{}),
		malformedLog: logLimiter{interval: logInterval},
	}
	b.hub = newHub(&b.stats)
	maxFrame := maxHeader + 2*binary.MaxVarintLen32 + cfg.MaxPayload
	b.out = newOutbox(&b.stats, cfg.InstanceID, cfg.Tick, cfg.QueueSize, cfg.MaxPayload, maxFrame, redisFramesPerSend, b.publish)
	b.out.sendTimeout, b.out.closeTimeout = redisSendTimeout, redisCloseTimeout

	_, b.sharded = client.(*redis.ClusterClient)
	ps, err := b.subscribe(ctx)
	if err != nil {
		return nil, fmt.Errorf("pubsub: NewRedis: %w", err)
	}
	b.ps = ps
	b.follow(ps, false)
	select {
	case <-b.started:
	case <-ctx.Done():
		b.closing.Store(true)
		_ = b.ps.Close()
		b.dispatching.Wait()
		return nil, fmt.Errorf("pubsub: NewRedis: subscribe to %s: no confirmation: %w", cfg.Channel, ctx.Err())
	}
	go b.out.run()
	if cfg.Sentinel != nil {
		fctx, cancel := context.WithCancel(context.Background())
		b.stopFollow = cancel
		b.following.Add(1)
		go func() {
			defer b.following.Done()
			b.followSentinel(fctx, cfg.Sentinel, "")
		}()
	}
	return b, nil
}

type redisBus struct {
	cfg     RedisConfig
	client  redis.UniversalClient
	sharded bool // SPUBLISH/SSUBSCRIBE rather than PUBLISH/SUBSCRIBE
	stats   counters
	hub     *hub
	out     *outbox

	closeOnce sync.Once
	closeErr  error
	closing   atomic.Bool

	started     chan struct{}  // closed at the first subscription confirmation
	dispatching sync.WaitGroup // the dispatch loops (two while a resubscription overlaps)

	psMu sync.Mutex
	ps   *redis.PubSub // the current subscription

	stopFollow context.CancelFunc // ends followSentinel (nil without RedisConfig.Sentinel)
	following  sync.WaitGroup

	reconnect reconnectHooks

	malformedLog logLimiter
}

func (b *redisBus) Publish(topic string, payload []byte) {
	if b.closing.Load() || !b.hub.publish(topic, payload) {
		return
	}
	b.out.enqueue(topic, payload)
}

// publish sends frames as (S)PUBLISHes in one pipeline. A failed pipeline is sent
// again whole, so other instances may get some of its frames twice.
func (b *redisBus) publish(ctx context.Context, frames [][]byte) error {
	pub := func(c redis.Cmdable, f []byte) *redis.IntCmd {
		if b.sharded {
			return c.SPublish(ctx, b.cfg.Channel, f)
		}
		return c.Publish(ctx, b.cfg.Channel, f)
	}
	if len(frames) == 1 {
		return pub(b.client, frames[0]).Err()
	}
	_, err := b.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, f := range frames {
			pub(p, f)
		}
		return nil
	})
	return err
}

func (b *redisBus) Subscribe(topic string, buf int) *Subscription {
	return b.hub.subscribe(topic, buf)
}

func (b *redisBus) OnReconnect(f func()) {
	b.reconnect.add(f)
}

func (b *redisBus) Stats() Stats { return b.stats.snapshot() }

func (b *redisBus) Close() error {
	b.closeOnce.Do(func() {
		b.closing.Store(true)
		if b.stopFollow != nil {
			b.stopFollow()
			b.following.Wait()
		}
		b.closeErr = b.out.close()
		b.psMu.Lock()
		ps := b.ps
		b.psMu.Unlock()
		_ = ps.Close() // only fails when already closed
		b.dispatching.Wait()
		b.hub.close()
	})
	return b.closeErr
}

// subscribe opens a subscription to the bus's channel on the node client picks now.
func (b *redisBus) subscribe(ctx context.Context) (*redis.PubSub, error) {
	var ps *redis.PubSub
	var err error
	if b.sharded {
		ps = b.client.SSubscribe(ctx)
		err = ps.SSubscribe(ctx, b.cfg.Channel)
	} else {
		ps = b.client.Subscribe(ctx)
		err = ps.Subscribe(ctx, b.cfg.Channel)
	}
	if err != nil {
		_ = ps.Close()
		return nil, fmt.Errorf("subscribe to %s: %w", b.cfg.Channel, err)
	}
	return ps, nil
}

// follow starts the dispatch loop of ps; resubscribed marks a subscription that
// replaces an earlier one (its confirmation runs the reconnect callbacks).
func (b *redisBus) follow(ps *redis.PubSub, resubscribed bool) {
	msgs := ps.ChannelWithSubscriptions(
		redis.WithChannelSize(redisChannelBuffer),
		redis.WithChannelHealthCheckInterval(b.cfg.HealthCheck),
	)
	b.dispatching.Add(1)
	go b.dispatch(msgs, resubscribed)
}

// resubscribe replaces the bus's subscription with a new one on the node the client
// picks now, then closes the old one; once the new one is confirmed, the OnReconnect
// callbacks run, as after a reconnection (see RedisConfig.Sentinel). Frames that
// arrive on both subscriptions meanwhile may be delivered twice. It returns an error
// when the new subscription cannot be made (the old one stays), and nil after Close.
func (b *redisBus) resubscribe(ctx context.Context) error {
	if b.closing.Load() {
		return nil
	}
	ps, err := b.subscribe(ctx)
	if err != nil {
		return fmt.Errorf("pubsub: resubscribe: %w", err)
	}
	b.psMu.Lock()
	if b.closing.Load() {
		b.psMu.Unlock()
		_ = ps.Close()
		return nil
	}
	old := b.ps
	b.ps = ps
	b.follow(ps, true)
	b.psMu.Unlock()
	_ = old.Close()
	return nil
}

// dispatch reads go-redis' channel until the PubSub is closed: subscription
// confirmations (the first one starts the bus, unless this subscription replaces
// another; later ones follow a reconnection) and other instances' frames, delivered
// to local subscribers.
func (b *redisBus) dispatch(msgs <-chan any, resubscribed bool) {
	defer b.dispatching.Done()
	confirmed := false
	for m := range msgs {
		switch m := m.(type) {
		case *redis.Subscription:
			if (m.Kind != "subscribe" && m.Kind != "ssubscribe") || m.Channel != b.cfg.Channel {
				continue
			}
			if !confirmed && !resubscribed {
				confirmed = true
				close(b.started)
				continue
			}
			confirmed = true
			if b.closing.Load() {
				continue
			}
			b.stats.reconnects.Add(1)
			slog.Info("pubsub: Redis subscription re-established; messages sent meanwhile were missed")
			b.reconnect.run()
		case *redis.Message:
			if m.Channel != b.cfg.Channel {
				continue
			}
			receive(b.hub, &b.stats, b.cfg.InstanceID, []byte(m.Payload), &b.malformedLog, b.cfg.Channel)
		}
	}
}
