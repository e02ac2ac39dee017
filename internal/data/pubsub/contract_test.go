package pubsub

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// remoteEnv is a shared transport (one PostgreSQL database, one Redis channel) on
// which the test starts bus instances that reach each other.
type remoteEnv struct {
	// bus starts an instance with cfg's Tick and InstanceID (zero: defaults); it is
	// closed when the test ends.
	bus func(t *testing.T, cfg remoteConfig) Bus
	// killable starts an instance and returns a function that breaks the connection
	// on which it receives other instances' messages.
	killable func(t *testing.T) (Bus, func())
	// inject sends raw bytes on the transport as if an instance had sent them.
	inject func(t *testing.T, raw string)
	// maxPayload is the largest len(topic)+len(payload) carried to other instances.
	maxPayload int
}

type remoteConfig struct {
	Tick       time.Duration
	InstanceID string
}

// busImpl is one Bus implementation under the contract tests.
type busImpl struct {
	name string
	// env prepares a shared transport; nil for the local bus.
	env func(t *testing.T) remoteEnv
}

// implementations are every Bus the contract tests run against. The remote ones need
// PostgreSQL and Redis (standalone and cluster) and fail when they cannot reach them.
var implementations = []busImpl{
	{name: "local"},
	{name: "postgres", env: postgresEnv},
	{name: "redis", env: func(t *testing.T) remoteEnv { return redisEnv(t, newRedisClient) }},
	{name: "redis-cluster", env: func(t *testing.T) remoteEnv { return redisEnv(t, newRedisClusterClient) }},
}

// forEachBus runs test once per implementation, with a function that starts a bus.
func forEachBus(t *testing.T, test func(t *testing.T, newBus func(t *testing.T) Bus)) {
	for _, impl := range implementations {
		t.Run(impl.name, func(t *testing.T) {
			if impl.env == nil {
				test(t, func(*testing.T) Bus { return NewLocal() })
				return
			}
			env := impl.env(t)
			test(t, func(t *testing.T) Bus { return env.bus(t, remoteConfig{}) })
		})
	}
}

// forEachRemote runs test once per implementation that reaches other instances.
func forEachRemote(t *testing.T, test func(t *testing.T, env remoteEnv)) {
	for _, impl := range implementations {
		if impl.env == nil {
			continue
		}
		t.Run(impl.name, func(t *testing.T) { test(t, impl.env(t)) })
	}
}

func postgresEnv(t *testing.T) remoteEnv {
	env := newPGEnv(t)
	return remoteEnv{
		bus: func(t *testing.T, cfg remoteConfig) Bus {
			return env.bus(t, PostgresConfig{Tick: cfg.Tick, InstanceID: cfg.InstanceID})
		},
		killable: func(t *testing.T) (Bus, func()) {
			u, err := url.Parse(env.url)
			if err != nil {
				t.Fatal(err)
			}
			q := u.Query()
			q.Set("application_name", "pubsub_reconnect_test")
			u.RawQuery = q.Encode()
			b := env.busDSN(t, u.String(), PostgresConfig{MinReconnect: 50 * time.Millisecond})
			return b, func() {
				var killed int
				err := env.db.QueryRow(`SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
					WHERE application_name = 'pubsub_reconnect_test' AND datname = current_database()`).Scan(&killed)
				if err != nil || killed != 1 {
					t.Fatalf("terminating the listener's backend: %d killed, %v", killed, err)
				}
			}
		},
		inject: func(t *testing.T, raw string) {
			if _, err := env.db.Exec(`SELECT pg_notify('latchkey_bus', $1)`, raw); err != nil {
				t.Fatal(err)
			}
		},
		maxPayload: MaxPayload,
	}
}

func testRedisURL() string {
	if u := os.Getenv("TEST_REDIS_URL"); u != "" {
		return u
	}
	return "redis://127.0.0.1:6379/0"
}

func testRedisClusterURL() string {
	if u := os.Getenv("TEST_REDIS_CLUSTER_URL"); u != "" {
		return u
	}
	return "redis://127.0.0.1:7000?addr=127.0.0.1:7001&addr=127.0.0.1:7002"
}

// newRedisClient connects to the test Redis (TEST_REDIS_URL) and fails the test when
// it cannot be reached. Its connections are named, so that killable can find them.
func newRedisClient(t *testing.T) redis.UniversalClient {
	t.Helper()
	opt, err := redis.ParseURL(testRedisURL())
	if err != nil {
		t.Fatalf("TEST_REDIS_URL: %v", err)
	}
	opt.DialTimeout = 2 * time.Second
	opt.ClientName = "pubsub-test-" + randomID(t)
	return pingRedis(t, redis.NewClient(opt), testRedisURL())
}

// newRedisClusterClient connects to the test Redis Cluster (TEST_REDIS_CLUSTER_URL,
// default the three masters on 127.0.0.1:7000-7002 that CI starts).
func newRedisClusterClient(t *testing.T) redis.UniversalClient {
	t.Helper()
	opt, err := redis.ParseClusterURL(testRedisClusterURL())
	if err != nil {
		t.Fatalf("TEST_REDIS_CLUSTER_URL: %v", err)
	}
	opt.DialTimeout = 2 * time.Second
	opt.ClientName = "pubsub-test-" + randomID(t)
	return pingRedis(t, redis.NewClusterClient(opt), testRedisClusterURL())
}

func pingRedis(t *testing.T, c redis.UniversalClient, url string) redis.UniversalClient {
	t.Helper()
	t.Cleanup(func() { _ = c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("these tests need Redis at %s (see README: Tests): %v", url, err)
	}
	return c
}

func randomID(t *testing.T) string {
	t.Helper()
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// redisEnv runs buses on a channel of their own, so that tests running at the same
// time (and servers on the same Redis) do not see each other's messages.
func redisEnv(t *testing.T, newClient func(t *testing.T) redis.UniversalClient) remoteEnv {
	channel := "latchkey:bus:test:" + randomID(t)
	client := newClient(t)
	start := func(t *testing.T, client redis.UniversalClient, cfg RedisConfig) Bus {
		t.Helper()
		cfg.Channel = channel
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		b, err := NewRedis(ctx, client, cfg)
		if err != nil {
			t.Fatalf("NewRedis: %v", err)
		}
		t.Cleanup(func() { _ = b.Close() })
		return b
	}
	return remoteEnv{
		bus: func(t *testing.T, cfg remoteConfig) Bus {
			return start(t, client, RedisConfig{Tick: cfg.Tick, InstanceID: cfg.InstanceID})
		},
		killable: func(t *testing.T) (Bus, func()) {
			own := newClient(t) // its connections' name is its own
			b := start(t, own, RedisConfig{})
			return b, func() { killPubSubConns(t, own, channel) }
		},
		inject: func(t *testing.T, raw string) {
			publish := client.Publish
			if _, sharded := client.(*redis.ClusterClient); sharded {
				publish = client.SPublish
			}
			if err := publish(context.Background(), channel, raw).Err(); err != nil {
				t.Fatal(err)
			}
		},
		maxPayload: MaxRedisPayload,
	}
}

// killPubSubConns kills the connections of client (by its ClientName) that are
// subscribed to channel (classic or sharded), on every node.
func killPubSubConns(t *testing.T, client redis.UniversalClient, channel string) {
	t.Helper()
	ctx := context.Background()
	var name string
	var nodes []*redis.Client
	switch c := client.(type) {
	case *redis.Client:
		name = c.Options().ClientName
		nodes = []*redis.Client{c}
	case *redis.ClusterClient:
		name = c.Options().ClientName
		var mu sync.Mutex // ForEachShard calls concurrently
		_ = c.ForEachShard(ctx, func(ctx context.Context, n *redis.Client) error {
			mu.Lock()
			nodes = append(nodes, n)
			mu.Unlock()
			return nil
		})
	}
	killed := 0
	for _, n := range nodes {
		list, err := n.ClientList(ctx).Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(list, "\n") {
			f := map[string]string{}
			for _, kv := range strings.Fields(line) {
				k, v, _ := strings.Cut(kv, "=")
				f[k] = v
			}
			subscribed := (f["sub"] != "" && f["sub"] != "0") || (f["ssub"] != "" && f["ssub"] != "0")
			if f["name"] != name || !subscribed {
				continue
			}
			if err := n.Do(ctx, "CLIENT", "KILL", "ID", f["id"]).Err(); err != nil {
				t.Fatal(err)
			}
			killed++
		}
	}
	if killed != 1 {
		t.Fatalf("killed %d subscribed connections of %s (channel %s), want 1", killed, name, channel)
	}
}

func TestRemoteDelivery(t *testing.T) {
	forEachRemote(t, func(t *testing.T, env remoteEnv) {
		check := leakCheck(t)
		a := env.bus(t, remoteConfig{InstanceID: "a"})
		b := env.bus(t, remoteConfig{InstanceID: "b"})
		subA := a.Subscribe("keys", 8)
		subB := b.Subscribe("keys", 8)
		otherB := b.Subscribe("other", 8)

		start := time.Now()
		a.Publish("keys", []byte("revoked:1"))
		if m := recv(t, subA, 10*time.Millisecond); string(m) != "revoked:1" {
			t.Fatalf("A's subscriber got %q", m)
		}
		if m := recv(t, subB, time.Second); string(m) != "revoked:1" {
			t.Fatalf("B's subscriber got %q", m)
		}
		t.Logf("A -> B latency: %v", time.Since(start))

		// The other direction; and A's own message is not delivered to A twice.
		b.Publish("keys", []byte("revoked:2"))
		if m := recv(t, subB, 10*time.Millisecond); string(m) != "revoked:2" {
			t.Fatalf("B's subscriber got %q", m)
		}
		if m := recv(t, subA, time.Second); string(m) != "revoked:2" {
			t.Fatalf("A's subscriber got %q, want revoked:2 (revoked:1 only once)", m)
		}
		expectNone(t, subA, 300*time.Millisecond)
		expectNone(t, subB, 0)
		expectNone(t, otherB, 0)

		sa, sb := a.Stats(), b.Stats()
		if sa.Published != 1 || sa.Received != 1 || sa.Delivered != 2 || sa.Notifications != 1 {
			t.Errorf("A stats = %+v", sa)
		}
		if sb.Published != 1 || sb.Received != 1 || sb.Delivered != 2 || sb.Notifications != 1 {
			t.Errorf("B stats = %+v", sb)
		}

		if err := a.Close(); err != nil {
			t.Fatalf("A.Close: %v", err)
		}
		if err := b.Close(); err != nil {
			t.Fatalf("B.Close: %v", err)
		}
		for _, s := range []*Subscription{subA, subB, otherB} {
			if _, ok := <-s.C(); ok {
				t.Fatal("subscription open after Close")
			}
		}
		if err := a.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
		a.Publish("keys", []byte("after close")) // ignored, no panic
		check()
	})
}

// TestRemoteBurst checks batching (far fewer sends than messages) and the order of
// one instance's messages on another.
func TestRemoteBurst(t *testing.T) {
	const (
		total  = 2000
		size   = 200
		topics = 4
	)
	forEachRemote(t, func(t *testing.T, env remoteEnv) {
		a := env.bus(t, remoteConfig{})
		b := env.bus(t, remoteConfig{})
		subs := make([]*Subscription, topics)
		for i := range subs {
			subs[i] = b.Subscribe(fmt.Sprint("usage.", i), total)
		}

		start := time.Now()
		for i := range total {
			p := bytes.Repeat([]byte{'x'}, size)
			copy(p, fmt.Sprintf("%06d", i))
			a.Publish(fmt.Sprint("usage.", i%topics), p)
		}
		publishTime := time.Since(start)

		for k, s := range subs {
			for i := k; i < total; i += topics {
				m := recv(t, s, 10*time.Second)
				if want := fmt.Sprintf("%06d", i); len(m) != size || string(m[:6]) != want {
					t.Fatalf("topic %d: got message %q..., want %s (in order)", k, m[:min(len(m), 6)], want)
				}
			}
		}
		elapsed := time.Since(start)
		st := a.Stats()
		t.Logf("%d messages: published in %v, all received in %v, %d sends", total, publishTime, elapsed, st.Notifications)
		if st.Notifications >= total/10 {
			t.Errorf("Notifications = %d, want < %d", st.Notifications, total/10)
		}
		if st.QueueDropped != 0 || st.Oversize != 0 || st.NotifyErrors != 0 {
			t.Errorf("A stats = %+v", st)
		}
		if sb := b.Stats(); sb.Received != total || sb.Delivered != total || sb.Dropped != 0 {
			t.Errorf("B stats = %+v", sb)
		}
	})
}

// TestRemoteOversize checks that a message over the transport's limit reaches local
// subscribers only, and that one at the limit reaches other instances.
func TestRemoteOversize(t *testing.T) {
	forEachRemote(t, func(t *testing.T, env remoteEnv) {
		a := env.bus(t, remoteConfig{})
		b := env.bus(t, remoteConfig{})
		local := a.Subscribe("big", 4)
		remote := b.Subscribe("big", 4)
		atLimit := bytes.Repeat([]byte{0}, env.maxPayload-len("big"))
		over := append(bytes.Clone(atLimit), 1)
		a.Publish("big", over)
		a.Publish("big", atLimit)
		for _, want := range [][]byte{over, atLimit} {
			if got := recv(t, local, 10*time.Millisecond); !bytes.Equal(got, want) {
				t.Fatalf("local: got %d bytes, want %d", len(got), len(want))
			}
		}
		if got := recv(t, remote, 2*time.Second); !bytes.Equal(got, atLimit) {
			t.Fatalf("remote: got %d bytes, want the %d-byte message", len(got), len(atLimit))
		}
		if st := a.Stats(); st.Oversize != 1 {
			t.Errorf("Oversize = %d, want 1", st.Oversize)
		}
	})
}

func TestRemoteMalformed(t *testing.T) {
	forEachRemote(t, func(t *testing.T, env remoteEnv) {
		b := env.bus(t, remoteConfig{})
		sub := b.Subscribe("t", 1)
		env.inject(t, "not a frame")
		waitFor(t, func() bool { return b.Stats().Malformed == 1 })
		expectNone(t, sub, 0)
	})
}

// TestRemoteCloseFlushes checks that Close sends what is still queued.
func TestRemoteCloseFlushes(t *testing.T) {
	forEachRemote(t, func(t *testing.T, env remoteEnv) {
		check := leakCheck(t)
		a := env.bus(t, remoteConfig{Tick: time.Hour})
		b := env.bus(t, remoteConfig{})
		sub := b.Subscribe("t", 10)
		for i := range 5 {
			a.Publish("t", []byte{byte('0' + i)})
		}
		if err := a.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		for i := range 5 {
			if m := recv(t, sub, 2*time.Second); string(m) != string(rune('0'+i)) {
				t.Fatalf("got %q, want %c", m, '0'+i)
			}
		}
		if err := b.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		check()
	})
}

// TestRemoteReconnect breaks the receiving connection of an instance: it is
// re-established, the OnReconnect callbacks run, and messages flow again.
func TestRemoteReconnect(t *testing.T) {
	forEachRemote(t, func(t *testing.T, env remoteEnv) {
		a := env.bus(t, remoteConfig{})
		b, kill := env.killable(t)
		reconnected := make(chan struct{}, 10)
		b.OnReconnect(func() { reconnected <- struct{}{} })
		sub := b.Subscribe("t", 10)

		kill()
		select {
		case <-reconnected:
		case <-time.After(10 * time.Second):
			t.Fatal("OnReconnect callback not called")
		}
		if got := b.Stats().Reconnects; got != 1 {
			t.Errorf("Reconnects = %d, want 1", got)
		}
		a.Publish("t", []byte("after reconnect"))
		if m := recv(t, sub, 2*time.Second); string(m) != "after reconnect" {
			t.Fatalf("got %q", m)
		}
	})
}

// resubscribe moves the Redis bus's subscription to a new connection: the reconnect
// callbacks run once it is confirmed, messages flow on it, and the old one is closed
// (no message arrives twice once the move is over). Close afterwards ends it cleanly.
func TestRedisResubscribe(t *testing.T) {
	forEachRemote(t, func(t *testing.T, env remoteEnv) {
		a := env.bus(t, remoteConfig{})
		b := env.bus(t, remoteConfig{})
		r, ok := b.(*redisBus)
		if !ok {
			return // PostgreSQL: its listener reconnects by itself
		}
		reconnected := make(chan struct{}, 10)
		b.OnReconnect(func() { reconnected <- struct{}{} })
		sub := b.Subscribe("t", 10)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := r.resubscribe(ctx); err != nil {
			t.Fatalf("resubscribe: %v", err)
		}
		select {
		case <-reconnected:
		case <-time.After(10 * time.Second):
			t.Fatal("OnReconnect callback not called after resubscribe")
		}
		if got := b.Stats().Reconnects; got != 1 {
			t.Errorf("Reconnects = %d, want 1", got)
		}
		for i := range 3 {
			want := fmt.Sprintf("after resubscribe %d", i)
			a.Publish("t", []byte(want))
			if m := recv(t, sub, 2*time.Second); string(m) != want {
				t.Fatalf("got %q, want %q", m, want)
			}
		}
		select {
		case m := <-sub.C():
			t.Fatalf("a message arrived twice: %q", m)
		case <-time.After(200 * time.Millisecond):
		}
		if err := b.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if err := r.resubscribe(ctx); err != nil {
			t.Fatalf("resubscribe after Close: %v", err)
		}
	})
}
