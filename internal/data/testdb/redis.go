package testdb

import (
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultRedisClusterURL is the Redis Cluster the tests use when TEST_REDIS_CLUSTER_URL
// is unset: the three masters scripts/redis-cluster.sh starts.
const DefaultRedisClusterURL = "redis://127.0.0.1:7000?addr=127.0.0.1:7001&addr=127.0.0.1:7002"

// RedisClusterURL returns the test Redis Cluster's URL (TEST_REDIS_CLUSTER_URL, or
// DefaultRedisClusterURL) after checking that every master answers and the cluster
// reports cluster_state:ok. A cluster that cannot be reached fails the test: the
// cluster paths are tested, never skipped.
func RedisClusterURL(tb testing.TB) string {
	tb.Helper()
	raw := os.Getenv("TEST_REDIS_CLUSTER_URL")
	if raw == "" {
		raw = DefaultRedisClusterURL
	}
	client, err := dialCluster(raw)
	if err != nil {
		tb.Fatalf("testdb: %v", err)
	}
	_ = client.Close()
	return raw
}

// RedisClusterClient returns a client of the test Redis Cluster (see RedisClusterURL),
// closed when the test ends. A cluster that cannot be reached fails the test.
func RedisClusterClient(tb testing.TB) *redis.ClusterClient {
	tb.Helper()
	client, err := dialCluster(RedisClusterURL(tb))
	if err != nil {
		tb.Fatalf("testdb: %v", err)
	}
	tb.Cleanup(func() { _ = client.Close() })
	return client
}

// dialCluster connects to the cluster at raw and checks it. It returns an error saying
// how to start one when a node does not answer or the cluster is not ok.
func dialCluster(raw string) (*redis.ClusterClient, error) {
	opt, err := redis.ParseClusterURL(raw)
	if err != nil {
		return nil, fmt.Errorf("TEST_REDIS_CLUSTER_URL %q: %w", raw, err)
	}
	opt.DialTimeout = 2 * time.Second
	client := redis.NewClusterClient(opt)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	check := func() error {
		info, err := client.ClusterInfo(ctx).Result()
		if err != nil {
			return err
		}
		if !strings.Contains(info, "cluster_state:ok") {
			return fmt.Errorf("the cluster is not ok:\n%s", info)
		}
		return client.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error {
			return node.Ping(ctx).Err()
		})
	}
	if err := check(); err != nil {
		_ = client.Close()
		return nil, fmt.Errorf("these tests need a Redis Cluster at %s (%v); start one with "+
			"scripts/redis-cluster.sh (three masters on 127.0.0.1:7000-7002) or set TEST_REDIS_CLUSTER_URL", redact(raw), err)
	}
	return client, nil
}

// SilentRedisAddr starts a server on loopback that accepts connections and never
// answers, and returns its address: a Redis call to it waits for its read timeout (a
// store that hangs, or a caller that goes away first). It stops with the test.
func SilentRedisAddr(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	done := make(chan struct{})
	tb.Cleanup(func() { close(done); ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { <-done; c.Close() }()
		}
	}()
	return ln.Addr().String()
}
