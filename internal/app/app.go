// Package app assembles the Latchkey server from its parts: store, key verifier,
// GraphQL schema and HTTP API. server.go and the end-to-end tests both use it.
package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"

	"github.com/latchkey/latchkey/ent"
	"github.com/latchkey/latchkey/graph"
	"github.com/latchkey/latchkey/graph/gqlserver"
	"github.com/latchkey/latchkey/internal/data/pubsub"
	"github.com/latchkey/latchkey/internal/data/ratelimit"
	"github.com/latchkey/latchkey/internal/data/store"
	"github.com/latchkey/latchkey/internal/domain/admission"
	"github.com/latchkey/latchkey/internal/domain/audit"
	"github.com/latchkey/latchkey/internal/domain/keys"
	"github.com/latchkey/latchkey/internal/domain/live"
	"github.com/latchkey/latchkey/internal/domain/owners"
	"github.com/latchkey/latchkey/internal/domain/plan"
	"github.com/latchkey/latchkey/internal/domain/usage"
	"github.com/latchkey/latchkey/internal/domain/verify"
	"github.com/latchkey/latchkey/internal/domain/webhook"
	"github.com/latchkey/latchkey/internal/platform/config"
	"github.com/latchkey/latchkey/internal/platform/metrics"
	"github.com/latchkey/latchkey/internal/platform/tracing"
	"github.com/latchkey/latchkey/internal/transport/httpapi"
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
	// Plans holds the plans, reloaded after every change on any instance.
	Plans *plan.Catalog
	// Dispatcher delivers webhooks; LimitEvents and Expiry produce the events that
	// come from the limiter and the clock.
	Dispatcher  *webhook.Dispatcher
	LimitEvents *webhook.LimitEvents
	Expiry      *webhook.ExpiryScanner
	// Tracing exports spans when the OTEL_* variables ask for it (nil: off).
	Tracing *tracing.Provider

	redis         redis.UniversalClient    // REDIS_URL's server, REDIS_CLUSTER_URL's cluster or REDIS_SENTINEL_URL's master (nil: memory)
	memory        *ratelimit.Memory        // in-memory failure throttle, swept periodically (nil with Redis)
	memoryChecker *ratelimit.MemoryChecker // in-memory limits, swept periodically (nil with Redis)

	// invalidations, wakes and planChanges are the bus subscriptions Start follows.
	invalidations, wakes, planChanges *pubsub.Subscription

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
	// WebSocketInitTimeout is how long a WebSocket client may take to send
	// connection_init (default 10 s; tests shorten it).
	WebSocketInitTimeout time.Duration
	// Tracing overrides the tracing that the OTEL_* variables configure (tests:
	// an SDK provider with an in-memory exporter).
	Tracing *tracing.Provider
}

// New opens the store (applying migrations), creates the first admin key when needed
// and builds the handler. It returns an error when the database cannot be opened.
func New(ctx context.Context, cfg config.Config, opts Options) (_ *App, err error) {
	trusted, err := httpapi.ParseTrustedProxies(cfg.TrustedProxies)
	if err != nil {
		return nil, err
	}
	tp := opts.Tracing
	if tp == nil {
		if tp, err = tracing.FromEnv(ctx); err != nil {
			return nil, err
		}
	}
	st, err := store.OpenWith(ctx, cfg.DatabaseURL, store.Options{EntOptions: opts.EntOptions, Tracer: tp.Tracer()})
	if err != nil {
		_ = tp.Shutdown(ctx)
		return nil, err
	}
	audit.Register(st.Client) // every change of a tenant, key or webhook, in its transaction
	if st.Applied > 0 {
		slog.Info("applied migrations", "count", st.Applied, "dialect", st.Dialect)
	}
	a := &App{Config: cfg, Store: st, Metrics: metrics.New(), Tracing: tp}
	defer func() {
		if err != nil { // release what was opened so far
			_ = tp.Shutdown(ctx)
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
	limiter, checker, err := a.limiters(cfg)
	if err != nil {
		return nil, err
	}
	a.Plans = plan.NewCatalog(st.Client)
	if err := a.Plans.Load(ctx); err != nil {
		return nil, fmt.Errorf("load plans: %w", err)
	}
	v := keys.NewVerifier(st.Client, st.EntDialect, keys.Config{
		AdminToken:         cfg.AdminToken,
		Plans:              a.Plans,
		Failures:           limiter,
		FailureLimit:       ratelimit.Limit{Rate: cfg.AuthFailuresPerMinute, Period: time.Minute},
		VerifyFailureLimit: ratelimit.Limit{Rate: cfg.VerifyFailuresPerMinute, Period: time.Minute},
	})
	a.Verifier = v
	if err := a.connectBus(ctx); err != nil {
		return nil, err
	}
	manager, err := a.webhooks(cfg)
	if err != nil {
		return nil, err
	}
	a.Live = &live.Hub{Bus: a.Bus, Checker: v, MaxPerKey: cfg.MaxSubscriptionsPerKey, SingleInstance: st.Dialect != "postgres"}
	a.Recorder = usage.NewRecorder(st, usage.Config{
		Retention:     cfg.UsageRetention,
		FlushInterval: cfg.UsageFlushInterval,
		// Backpressure: when the writer is a whole queue behind, a request waits this
		// long for room before its event is dropped (and counted).
		BlockTimeout: usageBlockTimeout,
		OnEvent:      a.Live.Publish,
		OnWrite:      func(_ int, took time.Duration, _ error) { a.Metrics.UsageWriteSeconds.Observe(took.Seconds()) },
	})
	a.Conns = &httpapi.Conns{}
	var adm *admission.Service
	if !opts.DisableGuard {
		adm = &admission.Service{Checker: checker, FailOpen: cfg.RateLimitFailOpen,
			Recorder: a.Recorder, Metrics: a.Metrics, Events: a.LimitEvents, Live: a.Live}
	}
	verifications := &verify.Service{Keys: v, Admission: adm, Metrics: a.Metrics}
	schema := graph.NewSchema(&graph.Resolver{
		Client:    st.Client,
		Dialect:   st.Dialect,
		Keys:      &keys.Manager{Verifier: v, Plans: a.Plans, Credits: ledger(adm)},
		Plans:     a.Plans,
		Owners:    &owners.Service{Verifier: v},
		Admission: adm,
		Live:      a.Live,
		Webhooks:  manager,
		Verify:    verifications,
	})
	a.registerMetrics()
	a.Handler = httpapi.New(httpapi.Options{
		GraphQL: gqlserver.New(gqlserver.Config{
			Schema:        schema,
			Admission:     adm,
			Checker:       v,
			MaxDepth:      cfg.MaxQueryDepth,
			MaxComplexity: cfg.MaxQueryComplexity,
			PerItem:       graph.PerItemCosts,
			Client:        st.Client,
			NoTx:          []string{"verifyApiKey"}, // the hot path: no transaction, no write
			OnRefused:     func(e *keys.AuthError) { a.Metrics.AuthFailures.WithLabelValues(e.Reason).Inc() },
			Tracer:        tp.Tracer(),
		}),
		Verifier:       v,
		Verifications:  verifications,
		Ready:          st.Ping,
		AllowedOrigins: cfg.AllowedOrigins,
		AccessLog:      cfg.AccessLog,
		MaxBodyBytes:   cfg.MaxBodyBytes,
		DisableAuth:    opts.DisableAuth,
		TrustedProxies: trusted,
		Metrics:        a.Metrics,
		Conns:          a.Conns,
		MetricsOnMain:  cfg.MetricsAddr == "",
		Tracing:        tp,

		WebSocketInitTimeout: opts.WebSocketInitTimeout,
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
	m.Counter("latchkey_usage_record_waits_total", "Operations that waited for room in a full usage queue (backpressure: the writer is behind).", func() float64 { return float64(a.Recorder.Stats().Waits) })
	m.Gauge("latchkey_usage_lag_seconds", "Age of the oldest usage event not yet written: what a crash now would lose, in time.", func() float64 { return a.Recorder.Stats().Lag.Seconds() })
	m.Gauge("latchkey_usage_flush_interval_seconds", "Longest a usage event waits before its batch is written (USAGE_FLUSH_INTERVAL).", func() float64 { return a.Recorder.FlushInterval().Seconds() })
	m.Gauge("latchkey_usage_fold_lag_seconds", "How far behind now the usage rollups are folded into hours and days, as this instance last saw (normally 60-120; 0 before its first fold): queries stay exact, but read more minute rows while it grows.", func() float64 {
		if f := a.Recorder.Stats().FoldedBefore; !f.IsZero() {
			return time.Since(f).Seconds()
		}
		return 0
	})
	m.Counter("latchkey_usage_fold_errors_total", "Failed folds of minute rollups into hours and days.", func() float64 { return float64(a.Recorder.Stats().FoldErrors) })
	m.Counter("latchkey_usage_batches_total", "Usage write transactions committed.", func() float64 { return float64(a.Recorder.Stats().Batches) })
	m.Counter("latchkey_usage_write_errors_total", "Failed usage write attempts.", func() float64 { return float64(a.Recorder.Stats().WriteErrors) })
	m.Gauge("latchkey_subscriptions_active", "Open GraphQL subscriptions.", func() float64 { return float64(a.Live.Active()) })
	m.Gauge("latchkey_websocket_connections", "Open GraphQL WebSocket connections.", func() float64 { return float64(a.Conns.Len()) })
	m.Counter("latchkey_bus_published_total", "Messages published on the instance bus.", func() float64 { return float64(a.Bus.Stats().Published) })
	m.Counter("latchkey_bus_dropped_total", "Bus messages dropped for slow subscribers.", func() float64 { return float64(a.Bus.Stats().Dropped) })
	m.Counter("latchkey_bus_sent_total", "Frames (NOTIFYs or PUBLISHes, each a batch of messages) sent to other instances.", func() float64 { return float64(a.Bus.Stats().Notifications) })
	m.Counter("latchkey_live_events_suppressed_total", "Usage events not sent to other instances because no instance watched their tenant.", func() float64 { return float64(a.Live.WatchStats().Suppressed) })
	m.Counter("latchkey_live_events_replayed_total", "Suppressed usage events sent later, to a watch that had just started on another instance.", func() float64 { return float64(a.Live.WatchStats().Replayed) })
	m.Gauge("latchkey_webhook_queue_oldest_seconds", "Age of the oldest due, undelivered webhook delivery.", func() float64 {
		_, oldest := a.webhookBacklog()
		return oldest.Seconds()
	})
	m.Gauge("latchkey_webhook_pending", "Webhook deliveries waiting for an attempt.", func() float64 {
		pending, _ := a.webhookBacklog()
		return float64(pending)
	})
}

// webhookBacklog reads the webhook backlog for the metrics (zero when the database
// does not answer within a second).
func (a *App) webhookBacklog() (int, time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	pending, oldest, _ := webhook.Backlog(ctx, a.Store.Client)
	return pending, oldest
}

// connectBus joins the instances' message bus: with a PostgreSQL store, Redis pub/sub
// when Redis is configured and LISTEN/NOTIFY otherwise; in-process with SQLite (one
// instance). Key cache invalidations travel on it, so a revocation on one instance
// holds on every instance.
func (a *App) connectBus(ctx context.Context) error {
	var err error
	switch {
	case a.Store.Dialect != "postgres":
		a.Bus = pubsub.NewLocal()
	case a.redis != nil:
		var rc pubsub.RedisConfig
		if a.Config.RedisSentinelURL != "" {
			// The bus follows the sentinels' failovers (RedisConfig.Sentinel); the URL
			// was checked when the client was made.
			rc.Sentinel, _ = redis.ParseFailoverURL(a.Config.RedisSentinelURL)
		}
		a.Bus, err = pubsub.NewRedis(ctx, a.redis, rc)
	default:
		a.Bus, err = pubsub.NewPostgres(ctx, a.Store.DSN, a.Store.DB, pubsub.PostgresConfig{})
	}
	if err != nil {
		a.Bus = nil
		return fmt.Errorf("message bus: %w", err)
	}
	a.invalidations = a.Bus.Subscribe(topicInvalidate, 4096)
	a.planChanges = a.Bus.Subscribe(topicPlansChanged, 16)
	// A changed plan changes the limits of every key on it: this instance reloads the
	// plans and drops its cached keys, and tells the others to do the same.
	a.Plans.OnChange = func() {
		a.Verifier.InvalidateLocal("")
		a.Bus.Publish(topicPlansChanged, nil)
	}
	a.Verifier.OnInvalidate = func(hash string) { a.Bus.Publish(topicInvalidate, []byte(hash)) }
	// Messages missed while the bus was reconnecting may have carried invalidations.
	a.Bus.OnReconnect(func() { a.Verifier.InvalidateLocal("") })
	return nil
}

// usageBlockTimeout is how long an operation waits for room in a full usage queue.
const usageBlockTimeout = 100 * time.Millisecond

const (
	topicInvalidate   = "keys:invalidate"
	topicPlansChanged = "plans:changed"
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
			traceAttempt(a.Tracing.Tracer(), r)
		}})
	outbox := &webhook.Outbox{Wake: a.wakeWebhooks}
	outbox.Register(a.Store.Client)
	a.LimitEvents = &webhook.LimitEvents{Client: a.Store.Client, Outbox: outbox}
	a.Expiry = &webhook.ExpiryScanner{Client: a.Store.Client, Outbox: outbox}
	a.wakes = a.Bus.Subscribe(topicWebhooksWake, 16)
	return &webhook.Manager{Policy: policy, Dispatcher: a.Dispatcher, Outbox: outbox}, nil
}

// wakeWebhooks tells this instance's dispatcher and the others' that deliveries are due.
func (a *App) wakeWebhooks() {
	a.Dispatcher.Wake()
	a.Bus.Publish(topicWebhooksWake, nil)
}

// limiters builds the failed-credential throttle and the limit store: in Redis when
// REDIS_URL, REDIS_CLUSTER_URL or REDIS_SENTINEL_URL is set (shared by every instance),
// in memory otherwise.
// Either way a quota or credit counter that is missing (after a restart of this
// process, or of a Redis without persistence) is seeded from the database before it
// counts. In a Redis Cluster every script call names keys of one slot: a check's
// counters carry its tenant as their hash tag (see ratelimit.RedisChecker), and the
// throttle's scripts name one key each.
func (a *App) limiters(cfg config.Config) (ratelimit.Limiter, ratelimit.Checker, error) {
	seed := admission.Seeder(a.Store.Client)
	client, err := redisClient(cfg)
	if err != nil {
		return nil, nil, err
	}
	if client == nil {
		a.memory = ratelimit.NewMemory(nil)
		a.memoryChecker = ratelimit.NewMemoryChecker(nil, seed)
		return a.memory, a.memoryChecker, nil
	}
	a.redis = client
	checker, err := ratelimit.NewRedisChecker(a.redis, "lk:c:", seed)
	if err != nil {
		return nil, nil, err
	}
	// The admission service decides what an unreachable Redis means (RATE_LIMIT_FAIL_OPEN).
	return &ratelimit.FailSafe{Limiter: ratelimit.NewRedis(a.redis, "lk:rl:")}, checker, nil
}

// redisClient connects to REDIS_URL's server, REDIS_CLUSTER_URL's cluster or the master
// REDIS_SENTINEL_URL's sentinels name (nil, nil when none is set). It returns an error
// when more than one is set or a URL is invalid. Connections are made lazily: an
// unreachable Redis shows in the first check. Through Sentinel, the client asks the
// sentinels for the master, follows their +switch-master announcements, and a command
// that meets a demoted master (READONLY) is retried on the new one.
func redisClient(cfg config.Config) (redis.UniversalClient, error) {
	const (
		dialTimeout = 2 * time.Second
		ioTimeout   = time.Second
		maxRetries  = 1
	)
	set := 0
	for _, u := range []string{cfg.RedisURL, cfg.RedisClusterURL, cfg.RedisSentinelURL} {
		if u != "" {
			set++
		}
	}
	switch {
	case set > 1:
		return nil, errors.New("more than one of REDIS_URL, REDIS_CLUSTER_URL and REDIS_SENTINEL_URL is set; set one")
	case cfg.RedisSentinelURL != "":
		opt, err := redis.ParseFailoverURL(cfg.RedisSentinelURL)
		if err != nil {
			return nil, fmt.Errorf("REDIS_SENTINEL_URL: %w", err)
		}
		opt.DialTimeout, opt.ReadTimeout, opt.WriteTimeout, opt.MaxRetries = dialTimeout, ioTimeout, ioTimeout, maxRetries
		return redis.NewFailoverClient(opt), nil
	case cfg.RedisClusterURL != "":
		opt, err := redis.ParseClusterURL(cfg.RedisClusterURL)
		if err != nil {
			return nil, fmt.Errorf("REDIS_CLUSTER_URL: %w", err)
		}
		opt.DialTimeout, opt.ReadTimeout, opt.WriteTimeout, opt.MaxRetries = dialTimeout, ioTimeout, ioTimeout, maxRetries
		return redis.NewClusterClient(opt), nil
	case cfg.RedisURL != "":
		opt, err := redis.ParseURL(cfg.RedisURL)
		if err != nil {
			return nil, fmt.Errorf("REDIS_URL: %w", err)
		}
		opt.DialTimeout, opt.ReadTimeout, opt.WriteTimeout, opt.MaxRetries = dialTimeout, ioTimeout, ioTimeout, maxRetries
		return redis.NewClient(opt), nil
	}
	return nil, nil
}

// ledger is the credit ledger of the key manager: the limit store's balances (nil
// without admission: the stored balances only).
func ledger(adm *admission.Service) keys.CreditLedger {
	if adm == nil {
		return nil
	}
	return adm
}

// bootstrapAdmin creates an admin key when none exists and prints it once to out.
func (a *App) bootstrapAdmin(ctx context.Context, out io.Writer) error {
	secret, err := keys.Bootstrap(ctx, a.Store.Client, a.Store.Dialect)
	if err != nil || secret == "" {
		return err // secret "": an admin key exists already
	}
	if out == nil {
		out = io.Discard
	}
	fmt.Fprintf(out, `
  Latchkey created a platform admin key. It is shown only this once; store it now:

      %s

  Playground:  %s/   (paste the key into the Headers tab as {"X-API-Key": "..."})
  Console:     %s/console   (paste the key to sign in)
  Try it:      curl -s %s/query -H 'X-API-Key: %s' -H 'Content-Type: application/json' -d '{"query":"{ viewer { isAdmin } }"}'
  Lost it?     latchkey admin-key (or go run . admin-key) mints another one.

`, secret, a.Config.PublicURL, a.Config.PublicURL, a.Config.PublicURL, secret)
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
	run(func(ctx context.Context) { a.Verifier.Follow(ctx, a.invalidations) })
	run(func(ctx context.Context) { a.Dispatcher.Follow(ctx, a.wakes) })
	run(func(ctx context.Context) {
		follow(ctx, a.planChanges, func() {
			a.Plans.Reload()
			a.Verifier.InvalidateLocal("")
		})
	})
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
					a.memoryChecker.Sweep() // idle buckets, counters of ended periods
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
	if err := a.Bus.Close(); err != nil { // before Redis: it may carry the bus
		slog.Warn("message bus close", "err", err)
	}
	if a.redis != nil {
		_ = a.redis.Close()
	}
	if err := a.Tracing.Shutdown(ctx); err != nil {
		slog.Warn("trace export at shutdown", "err", err)
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
	var side []*http.Server // the optional listeners of METRICS_ADDR and PPROF_ADDR
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		for _, s := range side {
			_ = s.Shutdown(sctx)
		}
	}()
	if a.Config.MetricsAddr != "" {
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", promhttp.HandlerFor(a.Metrics.Registry, promhttp.HandlerOpts{}))
		s, err := serveSide(a.Config.MetricsAddr, "metrics", mux)
		if err != nil {
			ln.Close()
			return fmt.Errorf("METRICS_ADDR: %w", err)
		}
		side = append(side, s)
	}
	if a.Config.PprofAddr != "" {
		s, err := serveSide(a.Config.PprofAddr, "pprof", pprofMux())
		if err != nil {
			ln.Close()
			return fmt.Errorf("PPROF_ADDR: %w", err)
		}
		side = append(side, s)
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
	return a.Shutdown(sctx)
}

// follow calls f for every message of sub (and once more after lost messages) until
// ctx ends or sub closes.
func follow(ctx context.Context, sub *pubsub.Subscription, f func()) {
	for {
		select {
		case <-ctx.Done():
			return
		case _, ok := <-sub.C():
			if !ok {
				return
			}
			sub.TakeDropped()
			f()
		}
	}
}

// serveSide serves h on its own listener at addr (METRICS_ADDR, PPROF_ADDR): not
// behind the API's authentication, so meant for loopback or a private network.
func serveSide(addr, name string, h http.Handler) (*http.Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	slog.Info(name+" listening", "addr", ln.Addr().String())
	return srv, nil
}

// pprofMux serves the runtime profiles of net/http/pprof under /debug/pprof/, e.g.
// a CPU profile: go tool pprof http://PPROF_ADDR/debug/pprof/profile?seconds=10.
// (Importing net/http/pprof also registers them on http.DefaultServeMux, which
// Latchkey never serves.)
func pprofMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}
