package config

import (
	"strings"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	cases := []struct {
		name    string
		env     map[string]string
		check   func(Config) bool
		wantErr string
	}{
		{"defaults", nil, func(c Config) bool {
			return c.Addr == ":8080" && c.DatabaseURL == "sqlite:latchkey.db" && c.MaxBodyBytes == 1<<20 &&
				c.MaxQueryDepth == 12 && c.PublicURL == "http://localhost:8080" && !c.RateLimitFailOpen &&
				c.UsageRetention == 720*time.Hour && c.UsageFlushInterval == 100*time.Millisecond &&
				c.PprofAddr == "" && c.AccessLog == "errors"
		}, ""},
		{"access log", map[string]string{"ACCESS_LOG": "all"}, func(c Config) bool { return c.AccessLog == "all" }, ""},
		{"bad access log", map[string]string{"ACCESS_LOG": "some"}, nil, "ACCESS_LOG"},
		{"pprof", map[string]string{"PPROF_ADDR": "127.0.0.1:6060"}, func(c Config) bool { return c.PprofAddr == "127.0.0.1:6060" }, ""},
		{"flush interval", map[string]string{"USAGE_FLUSH_INTERVAL": "250ms"}, func(c Config) bool { return c.UsageFlushInterval == 250*time.Millisecond }, ""},
		{"bad flush interval", map[string]string{"USAGE_FLUSH_INTERVAL": "1ms"}, nil, "USAGE_FLUSH_INTERVAL"},
		{"port", map[string]string{"PORT": "9000"}, func(c Config) bool { return c.Addr == ":9000" }, ""},
		{"listen addr", map[string]string{"LISTEN_ADDR": "127.0.0.1:1234"}, func(c Config) bool { return c.Addr == "127.0.0.1:1234" }, ""},
		{"origins", map[string]string{"ALLOWED_ORIGINS": " https://a.example , https://b.example,"}, func(c Config) bool {
			return len(c.AllowedOrigins) == 2 && c.AllowedOrigins[1] == "https://b.example"
		}, ""},
		{"fail open", map[string]string{"RATE_LIMIT_FAIL_OPEN": "true"}, func(c Config) bool { return c.RateLimitFailOpen }, ""},
		{"bad port", map[string]string{"PORT": "http"}, nil, "PORT"},
		{"short admin token", map[string]string{"ADMIN_TOKEN": "short"}, nil, "ADMIN_TOKEN"},
		{"bad body limit", map[string]string{"MAX_BODY_BYTES": "-1"}, nil, "MAX_BODY_BYTES"},
		{"bad bool", map[string]string{"RATE_LIMIT_FAIL_OPEN": "maybe"}, nil, "RATE_LIMIT_FAIL_OPEN"},
		{"bad retention", map[string]string{"USAGE_RETENTION": "5m"}, nil, "USAGE_RETENTION"},
		{"bad redis", map[string]string{"REDIS_URL": "localhost:6379"}, nil, "REDIS_URL"},
		{"redis cluster", map[string]string{"REDIS_CLUSTER_URL": "redis://127.0.0.1:7000?addr=127.0.0.1:7001&addr=127.0.0.1:7002"}, func(c Config) bool {
			return c.RedisClusterURL == "redis://127.0.0.1:7000?addr=127.0.0.1:7001&addr=127.0.0.1:7002" && c.RedisURL == ""
		}, ""},
		{"redis cluster, one seed node", map[string]string{"REDIS_CLUSTER_URL": "rediss://user:secret@redis.internal:6379"}, func(c Config) bool {
			return c.RedisClusterURL != ""
		}, ""},
		{"redis and redis cluster", map[string]string{"REDIS_URL": "redis://127.0.0.1:6379/0", "REDIS_CLUSTER_URL": "redis://127.0.0.1:7000"}, nil,
			"REDIS_URL and REDIS_CLUSTER_URL are both set"},
		{"redis cluster without scheme", map[string]string{"REDIS_CLUSTER_URL": "127.0.0.1:7000"}, nil, "REDIS_CLUSTER_URL must start with redis://"},
		{"redis cluster, unknown option", map[string]string{"REDIS_CLUSTER_URL": "redis://127.0.0.1:7000?adr=127.0.0.1:7001"}, nil, "REDIS_CLUSTER_URL"},
		{"redis cluster, bad option", map[string]string{"REDIS_CLUSTER_URL": "redis://127.0.0.1:7000?dial_timeout=soon"}, nil, "REDIS_CLUSTER_URL"},
		{"redis sentinel", map[string]string{"REDIS_SENTINEL_URL": "redis://127.0.0.1:26390?master_name=latchkey&addr=127.0.0.1:26391"}, func(c Config) bool {
			return c.RedisSentinelURL == "redis://127.0.0.1:26390?master_name=latchkey&addr=127.0.0.1:26391" && c.RedisURL == "" && c.RedisClusterURL == ""
		}, ""},
		{"redis sentinel with passwords", map[string]string{"REDIS_SENTINEL_URL": "rediss://sentinel:s3cret@sentinel.internal:26379/2?master_name=main&password=m4ster"}, func(c Config) bool {
			return c.RedisSentinelURL != ""
		}, ""},
		{"redis and redis sentinel", map[string]string{"REDIS_URL": "redis://127.0.0.1:6379/0", "REDIS_SENTINEL_URL": "redis://127.0.0.1:26390?master_name=latchkey"}, nil,
			"set one of the three"},
		{"redis cluster and redis sentinel", map[string]string{"REDIS_CLUSTER_URL": "redis://127.0.0.1:7000", "REDIS_SENTINEL_URL": "redis://127.0.0.1:26390?master_name=latchkey"}, nil,
			"set one of the three"},
		{"redis sentinel without master", map[string]string{"REDIS_SENTINEL_URL": "redis://127.0.0.1:26390"}, nil, "names no master"},
		{"redis sentinel without scheme", map[string]string{"REDIS_SENTINEL_URL": "127.0.0.1:26390"}, nil, "REDIS_SENTINEL_URL must start with redis://"},
		{"redis sentinel, unknown option", map[string]string{"REDIS_SENTINEL_URL": "redis://127.0.0.1:26390?master=latchkey"}, nil, "REDIS_SENTINEL_URL ("},
		{"redis sentinel, bad URL hides the password", map[string]string{"REDIS_SENTINEL_URL": "redis://u:hunter2@127.0.0.1:70 00?master_name=x"}, nil, "REDIS_SENTINEL_URL ("},
		{"redis cluster, bad URL hides the password", map[string]string{"REDIS_CLUSTER_URL": "redis://u:hunter2@127.0.0.1:70 00"}, nil, "REDIS_CLUSTER_URL ("},
		{"webhook workers", map[string]string{"WEBHOOK_WORKERS": "128", "WEBHOOK_PER_TENANT": "8"}, func(c Config) bool {
			return c.WebhookWorkers == 128 && c.WebhookPerTenant == 8
		}, ""},
		{"webhook workers default", nil, func(c Config) bool { return c.WebhookWorkers == 0 && c.WebhookPerTenant == 0 }, ""},
		{"bad webhook workers", map[string]string{"WEBHOOK_WORKERS": "0"}, nil, "WEBHOOK_WORKERS"},
		{"bad webhook per tenant", map[string]string{"WEBHOOK_PER_TENANT": "lots"}, nil, "WEBHOOK_PER_TENANT"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := parse(func(k string) string { return tc.env[k] })
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want mention of %s", err, tc.wantErr)
				}
				if strings.Contains(err.Error(), "hunter2") {
					t.Fatalf("err = %v shows the password", err)
				}
				return
			}
			if err != nil || !tc.check(c) {
				t.Fatalf("parse = %+v, %v", c, err)
			}
		})
	}
}
