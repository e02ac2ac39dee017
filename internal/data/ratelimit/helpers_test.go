package ratelimit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/latchkey/latchkey/internal/data/testdb"
)

// fakeClock is a settable clock for the memory implementations.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock(t time.Time) *fakeClock { return &fakeClock{t: t} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

var epoch = time.Date(2026, 3, 14, 15, 9, 26, 535897932, time.UTC)

func testRedisURL() string {
	if u := os.Getenv("TEST_REDIS_URL"); u != "" {
		return u
	}
	return "redis://127.0.0.1:6379/0"
}

// newRedisClient connects to the test Redis (TEST_REDIS_URL, default
// redis://127.0.0.1:6379/0) and fails the test when it cannot be reached: the Redis
// implementations must be tested, never skipped.
func newRedisClient(tb testing.TB) *redis.Client {
	tb.Helper()
	url := testRedisURL()
	opt, err := redis.ParseURL(url)
	if err != nil {
		tb.Fatalf("TEST_REDIS_URL %q: %v", url, err)
	}
	opt.DialTimeout = 2 * time.Second
	client := redis.NewClient(opt)
	tb.Cleanup(func() { _ = client.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := client.Ping(ctx).Err(); err != nil {
		tb.Fatalf("these tests need a running Redis at %s (set TEST_REDIS_URL, or start one with "+
			"`redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save \"\" --appendonly no`): %v", url, err)
	}
	return client
}

// newRedisClusterClient connects to the test Redis Cluster (TEST_REDIS_CLUSTER_URL,
// default three masters on 127.0.0.1:7000-7002, see scripts/redis-cluster.sh) and
// fails the test when it cannot be reached.
func newRedisClusterClient(tb testing.TB) *redis.ClusterClient {
	tb.Helper()
	return testdb.RedisClusterClient(tb)
}

// forEachRedis runs f as subtests "redis" (one server) and "cluster" (the test Redis
// Cluster: every script call must name keys of one slot).
func forEachRedis(t *testing.T, f func(t *testing.T, client redis.UniversalClient)) {
	t.Helper()
	t.Run("redis", func(t *testing.T) { f(t, newRedisClient(t)) })
	t.Run("cluster", func(t *testing.T) { f(t, newRedisClusterClient(t)) })
}

// anotherClient returns a second client of client's kind (one server or the cluster):
// another server instance.
func anotherClient(tb testing.TB, client redis.UniversalClient) redis.UniversalClient {
	tb.Helper()
	if _, ok := client.(*redis.ClusterClient); ok {
		return newRedisClusterClient(tb)
	}
	return newRedisClient(tb)
}

// testPrefix returns a random key prefix and deletes every key under it when the test
// ends (on every master of a cluster).
func testPrefix(tb testing.TB, client redis.UniversalClient) string {
	tb.Helper()
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	prefix := "lktest:" + hex.EncodeToString(b) + ":"
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var err error
		if cc, ok := client.(*redis.ClusterClient); ok {
			err = cc.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error {
				return deleteKeys(ctx, node, prefix)
			})
		} else {
			err = deleteKeys(ctx, client, prefix)
		}
		if err != nil {
			tb.Errorf("clean up %s*: %v", prefix, err)
		}
	})
	return prefix
}

// deleteKeys deletes the keys under prefix on one server, one DEL each (a cluster
// node refuses a DEL of keys in several slots).
func deleteKeys(ctx context.Context, client redis.UniversalClient, prefix string) error {
	iter := client.Scan(ctx, 0, prefix+"*", 1000).Iterator()
	var keys []string
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil || len(keys) == 0 {
		return err
	}
	_, err := client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, k := range keys {
			p.Del(ctx, k)
		}
		return nil
	})
	return err
}

// deadClient returns a client for a closed port that fails fast.
func deadClient(tb testing.TB) *redis.Client {
	client := redis.NewClient(&redis.Options{
		Addr:         "127.0.0.1:1",
		DialTimeout:  200 * time.Millisecond,
		ReadTimeout:  200 * time.Millisecond,
		WriteTimeout: 200 * time.Millisecond,
		MaxRetries:   -1,
	})
	tb.Cleanup(func() { _ = client.Close() })
	return client
}

// countHook counts the commands and pipelines a client sends.
type countHook struct {
	n        atomic.Int64
	mu       sync.Mutex
	names    []string
	lastKeys []string // the keys of the last EVALSHA or EVAL
}

func (h *countHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *countHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.n.Add(1)
		h.mu.Lock()
		h.names = append(h.names, cmd.Name())
		if name := cmd.Name(); name == "evalsha" || name == "eval" {
			args := cmd.Args() // name, script, numkeys, keys..., args...
			n, _ := args[2].(int)
			h.lastKeys = h.lastKeys[:0]
			for _, k := range args[3 : 3+n] {
				s, _ := k.(string)
				h.lastKeys = append(h.lastKeys, s)
			}
		}
		h.mu.Unlock()
		return next(ctx, cmd)
	}
}

func (h *countHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.n.Add(1)
		h.mu.Lock()
		h.names = append(h.names, "pipeline")
		h.mu.Unlock()
		return next(ctx, cmds)
	}
}

func (h *countHook) reset() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	names := h.names
	h.names = nil
	h.n.Store(0)
	return names
}

// utc parses an RFC 3339 time (tests only: it panics on a bad one).
func utc(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		panic(err)
	}
	return t
}
