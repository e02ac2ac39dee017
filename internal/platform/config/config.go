// Package config reads the server configuration from the environment.
package config

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Config is the server configuration. See the README's configuration table.
type Config struct {
	// Addr is the listen address, from PORT (default 8080) or LISTEN_ADDR.
	Addr string
	// DatabaseURL selects the store: sqlite:PATH (default sqlite:latchkey.db) or postgres://...
	DatabaseURL string
	// RedisURL, when set, holds shared rate-limit state in one Redis server.
	RedisURL string
	// RedisClusterURL, when set, holds it in a Redis Cluster instead: go-redis' cluster
	// URL form, redis://h1:p1?addr=h2:p2&addr=h3:p3 (REDIS_CLUSTER_URL).
	RedisClusterURL string
	// RedisSentinelURL, when set, holds it in the master that Redis Sentinel names,
	// following its failovers: go-redis' failover URL form,
	// redis://s1:26379?master_name=NAME&addr=s2:26379 (REDIS_SENTINEL_URL). At most one
	// of RedisURL, RedisClusterURL and RedisSentinelURL is set.
	RedisSentinelURL string
	// AdminToken, when set, is a platform-admin credential.
	AdminToken string
	// AllowedOrigins are the CORS origins allowed for browser dashboards.
	AllowedOrigins []string
	// MaxBodyBytes, MaxQueryDepth and MaxQueryComplexity bound requests.
	MaxBodyBytes       int64
	MaxQueryDepth      int
	MaxQueryComplexity int
	// PublicURL is the base URL printed in the start-up message (default http://localhost:PORT).
	PublicURL string
	// RateLimitFailOpen admits requests when Redis is unreachable (default false: deny
	// with an INTERNAL "unavailable" error and HTTP 503).
	RateLimitFailOpen bool
	// TrustedProxies are comma-separated CIDRs whose X-Forwarded-For is believed.
	TrustedProxies string
	// UsageRetention is how long raw usage rows are kept (default 720h).
	UsageRetention time.Duration
	// UsageFlushInterval is the longest a usage event waits before its batch is written
	// (USAGE_FLUSH_INTERVAL, default 100ms): with one batch write, what a crash can lose.
	UsageFlushInterval time.Duration
	// MaxSubscriptionsPerKey bounds the open GraphQL subscriptions of one key (default 20).
	MaxSubscriptionsPerKey int
	// AuthFailuresPerMinute is the budget of unknown credentials per client IP
	// (AUTH_FAILURES_PER_MINUTE, default 30); VerifyFailuresPerMinute that of unknown
	// consumer keys per verifying key (VERIFY_FAILURES_PER_MINUTE, default 6000: 100 a
	// second sustained).
	// Spent, credentials that would need a database read get 429 until it refills.
	AuthFailuresPerMinute, VerifyFailuresPerMinute int
	// WebhookAllowPrivate allows webhook URLs on loopback, private and link-local
	// addresses (WEBHOOK_ALLOW_PRIVATE, default false).
	WebhookAllowPrivate bool
	// WebhookAllowHTTP allows http:// webhook URLs (WEBHOOK_ALLOW_HTTP, default false).
	WebhookAllowHTTP bool
	// LogFormat is "json" (default) or "text"; LogLevel debug, info (default), warn, error.
	LogFormat, LogLevel string
	// AccessLog says which requests get an access log line (ACCESS_LOG): "errors" (the
	// default: status 400 and above, and WebSocket connections), "all", or "off". Every
	// authenticated operation and verification is in the request log (usageLogs) anyway.
	AccessLog string
	// MetricsAddr, when set, serves /metrics on its own listener (unauthenticated, for
	// a private network); unset, /metrics is on the main listener for platform admins.
	MetricsAddr string
	// PprofAddr, when set, serves net/http/pprof's runtime profiles (/debug/pprof/) on
	// its own listener (PPROF_ADDR, unauthenticated: loopback or a private network
	// only). Unset, the default, no profile is served.
	PprofAddr string
	// WebhookRetrySchedule is WEBHOOK_RETRY_SCHEDULE, comma-separated durations
	// (empty: the Standard Webhooks schedule 5s,5m,30m,2h,5h,10h,10h).
	WebhookRetrySchedule string
	// WebhookWorkers is WEBHOOK_WORKERS, the most concurrent webhook sends per instance
	// (0: the dispatcher's default, 64).
	WebhookWorkers int
	// WebhookPerTenant is WEBHOOK_PER_TENANT, the most concurrent webhook sends to one
	// tenant's endpoints per instance (0: the dispatcher's default, a quarter of the
	// workers).
	WebhookPerTenant int
}

// FromEnv reads the configuration from environment variables.
// It returns an error naming the variable when a value is invalid.
func FromEnv() (Config, error) {
	return parse(os.Getenv)
}

func parse(get func(string) string) (Config, error) {
	c := Config{
		DatabaseURL:      get("DATABASE_URL"),
		RedisURL:         get("REDIS_URL"),
		RedisClusterURL:  get("REDIS_CLUSTER_URL"),
		RedisSentinelURL: get("REDIS_SENTINEL_URL"),
		AdminToken:       get("ADMIN_TOKEN"),
		PublicURL:        get("PUBLIC_URL"),
	}
	port := get("PORT")
	if port == "" {
		port = "8080"
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return c, fmt.Errorf("config: PORT must be a port number, got %q", port)
	}
	c.Addr = ":" + port
	if a := get("LISTEN_ADDR"); a != "" {
		c.Addr = a
	}
	if c.PublicURL == "" {
		c.PublicURL = "http://localhost:" + port
	}
	if c.DatabaseURL == "" {
		c.DatabaseURL = "sqlite:latchkey.db"
	}
	if c.AdminToken != "" && len(c.AdminToken) < 16 {
		return c, fmt.Errorf("config: ADMIN_TOKEN must be at least 16 characters")
	}
	for _, o := range strings.Split(get("ALLOWED_ORIGINS"), ",") {
		if o = strings.TrimSpace(o); o != "" {
			c.AllowedOrigins = append(c.AllowedOrigins, o)
		}
	}
	var err error
	if c.MaxBodyBytes, err = intVar(get, "MAX_BODY_BYTES", 1<<20); err != nil {
		return c, err
	}
	depth, err := intVar(get, "MAX_QUERY_DEPTH", 12)
	if err != nil {
		return c, err
	}
	complexity, err := intVar(get, "MAX_QUERY_COMPLEXITY", 5000)
	if err != nil {
		return c, err
	}
	c.MaxQueryDepth, c.MaxQueryComplexity = int(depth), int(complexity)
	if c.RateLimitFailOpen, err = boolVar(get, "RATE_LIMIT_FAIL_OPEN"); err != nil {
		return c, err
	}
	c.TrustedProxies = get("TRUSTED_PROXIES")
	subs, err := intVar(get, "MAX_SUBSCRIPTIONS_PER_KEY", 20)
	if err != nil {
		return c, err
	}
	c.MaxSubscriptionsPerKey = int(subs)
	authFail, err := intVar(get, "AUTH_FAILURES_PER_MINUTE", 30)
	if err != nil {
		return c, err
	}
	verifyFail, err := intVar(get, "VERIFY_FAILURES_PER_MINUTE", 6000)
	if err != nil {
		return c, err
	}
	c.AuthFailuresPerMinute, c.VerifyFailuresPerMinute = int(authFail), int(verifyFail)
	if c.WebhookAllowPrivate, err = boolVar(get, "WEBHOOK_ALLOW_PRIVATE"); err != nil {
		return c, err
	}
	if c.WebhookAllowHTTP, err = boolVar(get, "WEBHOOK_ALLOW_HTTP"); err != nil {
		return c, err
	}
	c.WebhookRetrySchedule = get("WEBHOOK_RETRY_SCHEDULE")
	workers, err := intVar(get, "WEBHOOK_WORKERS", 0)
	if err != nil {
		return c, err
	}
	perTenant, err := intVar(get, "WEBHOOK_PER_TENANT", 0)
	if err != nil {
		return c, err
	}
	if workers > 100_000 || perTenant > 100_000 {
		return c, fmt.Errorf("config: WEBHOOK_WORKERS and WEBHOOK_PER_TENANT must be at most 100000")
	}
	c.WebhookWorkers, c.WebhookPerTenant = int(workers), int(perTenant)
	c.LogFormat, c.LogLevel, c.MetricsAddr = get("LOG_FORMAT"), get("LOG_LEVEL"), get("METRICS_ADDR")
	c.PprofAddr = get("PPROF_ADDR")
	switch c.AccessLog = get("ACCESS_LOG"); c.AccessLog {
	case "":
		c.AccessLog = "errors"
	case "errors", "all", "off":
	default:
		return c, fmt.Errorf("config: ACCESS_LOG must be errors, all or off, got %q", c.AccessLog)
	}
	c.UsageRetention = 30 * 24 * time.Hour
	if v := get("USAGE_RETENTION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < time.Hour {
			return c, fmt.Errorf("config: USAGE_RETENTION must be a duration of at least 1h (e.g. 720h), got %q", v)
		}
		c.UsageRetention = d
	}
	c.UsageFlushInterval = 100 * time.Millisecond
	if v := get("USAGE_FLUSH_INTERVAL"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 10*time.Millisecond || d > 10*time.Second {
			return c, fmt.Errorf("config: USAGE_FLUSH_INTERVAL must be a duration from 10ms to 10s (e.g. 100ms), got %q", v)
		}
		c.UsageFlushInterval = d
	}
	if c.RedisURL != "" && !strings.HasPrefix(c.RedisURL, "redis://") && !strings.HasPrefix(c.RedisURL, "rediss://") {
		return c, fmt.Errorf("config: REDIS_URL must start with redis:// or rediss://")
	}
	if err := checkRedisCluster(c.RedisURL, c.RedisClusterURL); err != nil {
		return c, err
	}
	if err := checkRedisSentinel(c.RedisURL, c.RedisClusterURL, c.RedisSentinelURL); err != nil {
		return c, err
	}
	return c, nil
}

// checkRedisCluster validates REDIS_CLUSTER_URL: go-redis' cluster URL form, and never
// together with REDIS_URL (which of the two would hold the limits?).
func checkRedisCluster(single, cluster string) error {
	if cluster == "" {
		return nil
	}
	if single != "" {
		return fmt.Errorf("config: REDIS_URL and REDIS_CLUSTER_URL are both set; set REDIS_URL for one Redis server or REDIS_CLUSTER_URL for a Redis Cluster, not both")
	}
	if !strings.HasPrefix(cluster, "redis://") && !strings.HasPrefix(cluster, "rediss://") {
		return fmt.Errorf("config: REDIS_CLUSTER_URL must start with redis:// or rediss:// (redis://h1:p1?addr=h2:p2&addr=h3:p3)")
	}
	if _, err := redis.ParseClusterURL(cluster); err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err // without the URL, which may hold a password
		}
		return fmt.Errorf("config: REDIS_CLUSTER_URL (redis://h1:p1?addr=h2:p2&addr=h3:p3): %w", err)
	}
	return nil
}

// checkRedisSentinel validates REDIS_SENTINEL_URL: go-redis' failover URL form with a
// master_name, and never together with REDIS_URL or REDIS_CLUSTER_URL.
func checkRedisSentinel(single, cluster, sentinel string) error {
	const form = "redis://s1:26379?master_name=NAME&addr=s2:26379"
	if sentinel == "" {
		return nil
	}
	if single != "" || cluster != "" {
		return fmt.Errorf("config: REDIS_SENTINEL_URL is set together with REDIS_URL or REDIS_CLUSTER_URL; set one of the three")
	}
	if !strings.HasPrefix(sentinel, "redis://") && !strings.HasPrefix(sentinel, "rediss://") {
		return fmt.Errorf("config: REDIS_SENTINEL_URL must start with redis:// or rediss:// (%s)", form)
	}
	opt, err := redis.ParseFailoverURL(sentinel)
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err // without the URL, which may hold a password
		}
		return fmt.Errorf("config: REDIS_SENTINEL_URL (%s): %w", form, err)
	}
	if opt.MasterName == "" {
		return fmt.Errorf("config: REDIS_SENTINEL_URL names no master: add master_name=NAME (%s)", form)
	}
	return nil
}

func boolVar(get func(string) string, name string) (bool, error) {
	v := get(name)
	if v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, fmt.Errorf("config: %s must be true or false, got %q", name, v)
	}
	return b, nil
}

func intVar(get func(string) string, name string, def int64) (int64, error) {
	v := get(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("config: %s must be a positive integer, got %q", name, v)
	}
	return n, nil
}
