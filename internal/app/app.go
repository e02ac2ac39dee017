// Package app assembles the Latchkey server from its parts: store, key verifier,
// GraphQL schema and HTTP API. server.go and the end-to-end tests both use it.
package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"

	"github.com/latchkey/latchkey/ent"
	"github.com/latchkey/latchkey/ent/apikey"
	"github.com/latchkey/latchkey/ent/schema/rule"
	"github.com/latchkey/latchkey/ent/webhookdelivery"
	"github.com/latchkey/latchkey/graph"
	keys "github.com/latchkey/latchkey/internal/apikey"
	"github.com/latchkey/latchkey/internal/config"
	"github.com/latchkey/latchkey/internal/httpapi"
	"github.com/latchkey/latchkey/internal/live"
	"github.com/latchkey/latchkey/internal/metrics"
	"github.com/latchkey/latchkey/internal/pubsub"
	"github.com/latchkey/latchkey/internal/ratelimit"
	"github.com/latchkey/latchkey/internal/store"
	"github.com/latchkey/latchkey/internal/txn"
	"github.com/latchkey/latchkey/internal/usage"
	"github.com/latchkey/latchkey/internal/viewer"
	"github.com/latchkey/latchkey/internal/webhook"
)

// App is a configured server instance.
type App struct {
	Config   config.Config
	Store    *store.Store
	Verifier *keys.Verifier
	Recorder *usage.Recorder
	Metrics  *metrics.Metrics
	Bus      pubsub.Bus
	Live     *live.Hub
	Conns    *httpapi.Conns
	Handler  http.Handler
	// Dispatcher delivers webhooks; LimitEvents and Expiry produce the events that
	// come from the limiter and the clock.
	Dispatcher  *webhook.Dispatcher
	LimitEvents *webhook.LimitEvents
	Expiry      *webhook.ExpiryScanner

	unregisterWake func()

	redis       *redis.Client
	memory      *ratelimit.Memory // in-memory limiter and quota, swept periodically (nil with Redis)
	memoryQuota *ratelimit.MemoryQuota

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// Options change how New builds the app (tests and benchmarks).
type Options struct {
	// DisableAuth serves every request as a platform admin (benchmarks only).
	DisableAuth bool
	// DisableGuard turns rate limiting, quotas and usage recording off (benchmarks
	// only: it measures authentication alone).
	DisableGuard bool
	// Out receives the one-time bootstrap message (default: discarded).
	Out io.Writer
	// EntOptions are passed to the ent client (e.g. query logging in tests).
	EntOptions []ent.Option
}

// New opens the store (applying migrations), creates the first admin key when needed
// and builds the handler. It returns an error when the database cannot be opened.
func New(ctx context.Context, cfg config.Config, opts Options) (_ *App, err error) {
	trusted, err := httpapi.ParseTrustedProxies(cfg.TrustedProxies)
	if err != nil {
		return nil, err
	}
	st, err := store.Open(ctx, cfg.DatabaseURL, opts.EntOptions...)
	if err != nil {
		return nil, err
	}
	if st.Applied > 0 {
		slog.Info("applied migrations", "count", st.Applied, "dialect", st.Dialect)
	}
	v := keys.NewVerifier(st.Client, st.EntDialect, keys.Config{AdminToken: cfg.AdminToken})
	a := &App{Config: cfg, Store: st, Verifier: v, Metrics: metrics.New()}
	defer func() {
		if err != nil { // release what was opened so far
			if a.Bus != nil {
				_ = a.Bus.Close()
			}
			if a.redis != nil {
				_ = a.redis.Close()
			}
			_ = st.Close()
		}
	}()
	if cfg.AdminToken == "" {
		if err := a.bootstrapAdmin(ctx, opts.Out); err != nil {
			return nil, err
		}
	}
	limiter, quota, err := a.limiters(cfg)
	if err != nil {
		return nil, err
	}
	if err := a.connectBus(ctx); err != nil {
		return nil, err
	}
	manager, err := a.webhooks(cfg)
	if err != nil {
		return nil, err
	}
	a.Live = &live.Hub{Bus: a.Bus, Checker: v, MaxPerKey: cfg.MaxSubscriptionsPerKey, SingleInstance: st.Dialect != "postgres"}
	a.Recorder = usage.NewRecorder(st, usage.Config{Retention: cfg.UsageRetention, OnEvent: a.Live.Publish})
	a.Conns = &httpapi.Conns{}
	guard := &httpapi.Guard{Limiter: limiter, Quota: quota, Recorder: a.Recorder, QuotaFailOpen: cfg.RateLimitFailOpen,
		Metrics: a.Metrics, Checker: v, OnDenied: a.limitDenied}
	schema := graph.NewSchema(&graph.Resolver{
		Client:   st.Client,
		Keys:     &keys.Manager{Verifier: v},
		Quota:    quota,
		Live:     a.Live,
		Webhooks: manager,
	})
	a.registerMetrics()
	a.Handler = httpapi.New(httpapi.Options{
		Schema:         schema,
		Verifier:       v,
		Ready:          st.Ping,
		AllowedOrigins: cfg.AllowedOrigins,
		MaxBodyBytes:   cfg.MaxBodyBytes,
		MaxDepth:       cfg.MaxQueryDepth,
		MaxComplexity:  cfg.MaxQueryComplexity,
		DisableAuth:    opts.DisableAuth,
		Guard:          guardUnless(opts.DisableGuard, guard),
		TrustedProxies: trusted,
		Metrics:        a.Metrics,
		Conns:          a.Conns,
		MetricsOnMain:  cfg.MetricsAddr == "",
	})
	return a, nil
}

// registerMetrics exposes the components' counters to Prometheus.
func (a *App) registerMetrics() {
	m := a.Metrics
	m.DB(a.Store.DB)
	m.Counter("latchkey_verify_cache_hits_total", "Key verifications answered from the in-process cache.", func() float64 {
		h, _ := a.Verifier.CacheStats()
		return float64(h)
	})
	m.Counter("latchkey_verify_cache_misses_total", "Key verifications that read the database.", func() float64 {
		_, miss := a.Verifier.CacheStats()
		return float64(miss)
	})
	m.Gauge("latchkey_usage_queue_depth", "Usage events recorded but not yet written.", func() float64 { return float64(a.Recorder.Stats().Queued) })
	m.Counter("latchkey_usage_events_written_total", "Usage events stored.", func() float64 { return float64(a.Recorder.Stats().Written) })
	m.Counter("latchkey_usage_events_dropped_total", "Usage events lost (queue full or repeated write failures).", func() float64 { return float64(a.Recorder.Stats().Dropped) })
	m.Counter("latchkey_usage_batches_total", "Usage write transactions committed.", func() float64 { return float64(a.Recorder.Stats().Batches) })
	m.Counter("latchkey_usage_write_errors_total", "Failed usage write attempts.", func() float64 { return float64(a.Recorder.Stats().WriteErrors) })
	m.Gauge("latchkey_subscriptions_active", "Open GraphQL subscriptions.", func() float64 { return float64(a.Live.Active()) })
	m.Gauge("latchkey_websocket_connections", "Open GraphQL WebSocket connections.", func() float64 { return float64(a.Conns.Len()) })
	m.Counter("latchkey_bus_published_total", "Messages published on the instance bus.", func() float64 { return float64(a.Bus.Stats().Published) })
	m.Counter("latchkey_bus_dropped_total", "Bus messages dropped for slow subscribers.", func() float64 { return float64(a.Bus.Stats().Dropped) })
	m.Gauge("latchkey_webhook_queue_oldest_seconds", "Age of the oldest due, undelivered webhook delivery.", func() float64 {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		d, err := a.Store.Client.WebhookDelivery.Query().
			Where(webhookdelivery.StatusEQ(webhookdelivery.StatusPending), webhookdelivery.NextAttemptAtLTE(time.Now())).
			Order(webhookdelivery.ByNextAttemptAt()).First(rule.SystemContext(ctx))
		if err != nil || d.NextAttemptAt == nil {
			return 0
		}
		return time.Since(*d.NextAttemptAt).Seconds()
	})
	m.Gauge("latchkey_webhook_pending", "Webhook deliveries waiting for an attempt.", func() float64 {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		n, _ := a.Store.Client.WebhookDelivery.Query().Where(webhookdelivery.StatusEQ(webhookdelivery.StatusPending)).Count(rule.SystemContext(ctx))
		return float64(n)
	})
}

// connectBus joins the instances' message bus: PostgreSQL LISTEN/NOTIFY when the store
// is PostgreSQL, in-process otherwise. Key cache invalidations travel on it, so a
// revocation on one instance holds on every instance.
func (a *App) connectBus(ctx context.Context) error {
	if a.Store.Dialect == "postgres" {
		bus, err := pubsub.NewPostgres(ctx, a.Store.DSN, a.Store.DB, pubsub.PostgresConfig{})
		if err != nil {
			return fmt.Errorf("message bus: %w", err)
		}
		a.Bus = bus
	} else {
		a.Bus = pubsub.NewLocal()
	}
	inv := a.Bus.Subscribe(topicInvalidate, 4096)
	a.Verifier.OnInvalidate = func(hash string) { a.Bus.Publish(topicInvalidate, []byte(hash)) }
	// Messages missed while the bus was reconnecting may have carried invalidations.
	a.Bus.OnReconnect(func() { a.Verifier.InvalidateLocal("") })
	go func() {
		for msg := range inv.C() {
			if inv.TakeDropped() > 0 {
				a.Verifier.InvalidateLocal("")
			}
			a.Verifier.InvalidateLocal(string(msg))
		}
	}()
	return nil
}

const (
	topicInvalidate   = "keys:invalidate"
	topicWebhooksWake = "webhooks:wake"
)

// webhooks builds the dispatcher, the limit and expiry event sources and the manager
// the resolvers use. Commits that enqueue deliveries wake the dispatchers of every
// instance through the bus.
func (a *App) webhooks(cfg config.Config) (*webhook.Manager, error) {
	schedule, err := webhook.ParseSchedule(cfg.WebhookRetrySchedule)
	if err != nil {
		return nil, fmt.Errorf("WEBHOOK_RETRY_SCHEDULE: %w", err)
	}
	policy := webhook.Policy{AllowPrivate: cfg.WebhookAllowPrivate, AllowHTTP: cfg.WebhookAllowHTTP}
	a.Dispatcher = webhook.NewDispatcher(a.Store.Client, a.Store.Dialect, webhook.Config{Schedule: schedule, Policy: policy,
		Workers: cfg.WebhookWorkers, PerTenant: cfg.WebhookPerTenant,
		OnAttempt: func(r webhook.AttemptResult) {
			a.Metrics.WebhookAttempts.WithLabelValues(string(r.Outcome)).Inc()
			a.Metrics.WebhookSeconds.Observe(r.Latency.Seconds())
		}})
	a.LimitEvents = &webhook.LimitEvents{Client: a.Store.Client}
	a.Expiry = &webhook.ExpiryScanner{Client: a.Store.Client}
	wake := a.Bus.Subscribe(topicWebhooksWake, 16)
	go func() {
		for range wake.C() {
			a.Dispatcher.Wake()
		}
	}()
	a.unregisterWake = webhook.OnCommitted(a.wakeWebhooks)
	return &webhook.Manager{Policy: policy, Dispatcher: a.Dispatcher}, nil
}

// wakeWebhooks tells this instance's dispatcher and the others' that deliveries are due.
func (a *App) wakeWebhooks() {
	a.Dispatcher.Wake()
	a.Bus.Publish(topicWebhooksWake, nil)
}

// limitDenied turns a denial into a rate_limit.exceeded or quota.exceeded webhook
// event, at most once per key per window (period).
func (a *App) limitDenied(_ context.Context, v *viewer.Viewer, outcome usage.Outcome, retryAfter time.Duration) {
	now := time.Now().UTC()
	switch outcome {
	case usage.OutcomeRateLimited:
		a.LimitEvents.Denied(webhook.EventRateLimitExceeded, v.TenantID, v.APIKeyID, v.KeyPrefix, now.Truncate(v.RateWindow), v.RateWindow,
			map[string]any{"limit": v.RateLimit, "windowSeconds": int(v.RateWindow / time.Second), "retryAfterSeconds": int(math.Ceil(retryAfter.Seconds()))})
	case usage.OutcomeQuotaExceeded:
		start, end := ratelimit.PeriodBounds(ratelimit.Period(v.QuotaPeriod), now)
		a.LimitEvents.Denied(webhook.EventQuotaExceeded, v.TenantID, v.APIKeyID, v.KeyPrefix, start, end.Sub(now),
			map[string]any{"quota": v.Quota, "period": strings.ToUpper(v.QuotaPeriod), "resetAt": end})
	}
}

func guardUnless(off bool, g *httpapi.Guard) *httpapi.Guard {
	if off {
		return nil
	}
	return g
}

// limiters builds the rate limiter and the quota store: in Redis when REDIS_URL is set
// (shared by every instance), in memory otherwise (quota counters are then seeded from
// the stored usage after a restart).
func (a *App) limiters(cfg config.Config) (ratelimit.Limiter, ratelimit.Quota, error) {
	if cfg.RedisURL == "" {
		a.memory = ratelimit.NewMemory(nil)
		client := a.Store.Client
		q := ratelimit.NewMemoryQuota(nil, func(ctx context.Context, key string, start time.Time) (int64, error) {
			// After a restart: what every key of the rotation chain used this period.
			ids, err := client.ApiKey.Query().
				Where(apikey.Or(apikey.ID(key), apikey.QuotaKey(key))).
				IDs(rule.SystemContext(ctx))
			if err != nil {
				return 0, err
			}
			var total int64
			for _, id := range ids {
				n, err := usage.Used(ctx, client, id, start)
				if err != nil {
					return 0, err
				}
				total += n
			}
			return total, nil
		})
		a.memoryQuota = q
		return a.memory, q, nil
	}
	opt, err := redis.ParseURL(cfg.RedisURL)
	if err != nil {
		return nil, nil, fmt.Errorf("REDIS_URL: %w", err)
	}
	opt.DialTimeout = 2 * time.Second
	opt.ReadTimeout = time.Second
	opt.WriteTimeout = time.Second
	opt.MaxRetries = 1
	a.redis = redis.NewClient(opt)
	limiter := &ratelimit.FailSafe{Limiter: ratelimit.NewRedis(a.redis, "lk:rl:"), FailOpen: cfg.RateLimitFailOpen}
	return limiter, ratelimit.NewRedisQuota(a.redis, "lk:q:", nil), nil
}

// bootstrapAdmin creates an admin key when none exists and prints it once to out.
func (a *App) bootstrapAdmin(ctx context.Context, out io.Writer) error {
	ctx = rule.SystemContext(ctx)
	var secret string
	err := txn.WithTx(ctx, a.Store.Client, func(ctx context.Context, tx *ent.Client) error {
		if a.Store.Dialect == "postgres" {
			// Instances starting together on a fresh database create one admin key.
			if _, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock(7346158901)"); err != nil {
				return err
			}
		}
		exists, err := tx.ApiKey.Query().Where(apikey.Admin(true), apikey.RevokedAtIsNil()).Exist(ctx)
		if err != nil || exists {
			return err
		}
		if secret, err = keys.Generate(keys.KindAdmin); err != nil {
			return err
		}
		return tx.ApiKey.Create().
			SetName("bootstrap admin").
			SetAdmin(true).
			SetPrefix(keys.DisplayPrefix(secret)).
			SetHash(keys.HashHex(secret)).
			SetScopes([]string{}).
			Exec(ctx)
	})
	if err != nil {
		return fmt.Errorf("create admin key: %w", err)
	}
	if secret == "" {
		return nil // an admin key exists already
	}
	if out == nil {
		out = io.Discard
	}
	fmt.Fprintf(out, `
  Latchkey created a platform admin key. It is shown only this once; store it now:

      %s

  Playground:  %s/   (paste the key into the Headers tab as {"X-API-Key": "..."})
  Try it:      curl -s %s/query -H 'X-API-Key: %s' -H 'Content-Type: application/json' -d '{"query":"{ viewer { isAdmin } }"}'

`, secret, a.Config.PublicURL, a.Config.PublicURL, secret)
	return nil
}

// Start runs the background workers until Shutdown: batched last_used_at writes, the
// usage recorder and the sweep of idle in-memory limiter and quota entries.
func (a *App) Start(ctx context.Context) {
	ctx, a.cancel = context.WithCancel(context.WithoutCancel(ctx))
	run := func(f func(context.Context)) {
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			f(ctx)
		}()
	}
	run(a.Verifier.Run)
	run(func(ctx context.Context) { _ = a.Recorder.Run(ctx) })
	run(func(ctx context.Context) { _ = a.Dispatcher.Run(ctx) })
	run(a.LimitEvents.Run)
	run(a.Expiry.Run)
	if a.memory != nil {
		run(func(ctx context.Context) {
			t := time.NewTicker(time.Minute)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
					a.memory.Sweep()
					a.memoryQuota.Sweep() // counters of ended periods
				}
			}
		})
	}
}

// Shutdown ends the live subscriptions (clients receive "complete") and closes their
// connections, stops the background workers, flushing what they hold (the usage
// queue), closes the bus and the store.
func (a *App) Shutdown(ctx context.Context) error {
	if err := a.Live.Shutdown(ctx); err != nil {
		slog.Warn("live streams did not end in time", "err", err)
	}
	a.Conns.CloseAll()
	if a.cancel != nil {
		a.cancel()
	}
	done := make(chan struct{})
	go func() { a.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		return ctx.Err()
	}
	if a.redis != nil {
		_ = a.redis.Close()
	}
	a.unregisterWake()
	if err := a.Bus.Close(); err != nil {
		slog.Warn("message bus close", "err", err)
	}
	return a.Store.Close()
}

// ListenAndServe serves the API on the configured address until ctx is canceled, then
// drains in-flight requests and shuts down gracefully.
func (a *App) ListenAndServe(ctx context.Context, ready func(addr net.Addr)) error {
	ln, err := net.Listen("tcp", a.Config.Addr)
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           a.Handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
	}
	var metricsSrv *http.Server
	if a.Config.MetricsAddr != "" {
		mln, err := net.Listen("tcp", a.Config.MetricsAddr)
		if err != nil {
			ln.Close()
			return fmt.Errorf("METRICS_ADDR: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", promhttp.HandlerFor(a.Metrics.Registry, promhttp.HandlerOpts{}))
		metricsSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = metricsSrv.Serve(mln) }()
		slog.Info("metrics listening", "addr", mln.Addr().String())
	}
	a.Start(ctx)
	if ready != nil {
		ready(ln.Addr())
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	slog.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		slog.Error("http shutdown", "err", err)
	}
	if metricsSrv != nil {
		_ = metricsSrv.Shutdown(sctx)
	}
	return a.Shutdown(sctx)
}
