package testdb

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultRedisSentinelURL is the Redis Sentinel setup the tests use when
// TEST_REDIS_SENTINEL_URL is unset: the sentinel scripts/redis-sentinel.sh starts,
// watching a master and its replica under the name "latchkey".
const DefaultRedisSentinelURL = "redis://127.0.0.1:26390?master_name=latchkey"

// RedisSentinelURL returns the test Sentinel setup's URL (TEST_REDIS_SENTINEL_URL, or
// DefaultRedisSentinelURL) after checking that a sentinel answers, names a master, and
// that the master answers. A setup that cannot be reached fails the test: the
// Sentinel paths are tested, never skipped.
func RedisSentinelURL(tb testing.TB) string {
	tb.Helper()
	raw := os.Getenv("TEST_REDIS_SENTINEL_URL")
	if raw == "" {
		raw = DefaultRedisSentinelURL
	}
	if err := checkSentinel(raw); err != nil {
		tb.Fatalf("testdb: %v", err)
	}
	return raw
}

// checkSentinel asks the first sentinel of raw for its master and pings the master.
func checkSentinel(raw string) error {
	opt, err := redis.ParseFailoverURL(raw)
	if err != nil {
		return fmt.Errorf("TEST_REDIS_SENTINEL_URL %q: %w", raw, err)
	}
	hint := func(err error) error {
		return fmt.Errorf("these tests need Redis Sentinel at %s (%v); start it with "+
			"scripts/redis-sentinel.sh (a master, a replica and a sentinel on 127.0.0.1) or set TEST_REDIS_SENTINEL_URL", redact(raw), err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	sentinel := redis.NewSentinelClient(&redis.Options{Addr: opt.SentinelAddrs[0], Username: opt.SentinelUsername,
		Password: opt.SentinelPassword, TLSConfig: opt.TLSConfig, DialTimeout: 2 * time.Second})
	defer sentinel.Close()
	addr, err := sentinel.GetMasterAddrByName(ctx, opt.MasterName).Result()
	if err != nil {
		return hint(err)
	}
	master := redis.NewClient(&redis.Options{Addr: addr[0] + ":" + addr[1], Username: opt.Username,
		Password: opt.Password, TLSConfig: opt.TLSConfig, DialTimeout: 2 * time.Second})
	defer master.Close()
	if err := master.Ping(ctx).Err(); err != nil {
		return hint(fmt.Errorf("master %s:%s: %w", addr[0], addr[1], err))
	}
	return nil
}
