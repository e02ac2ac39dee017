package main

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"
)

// harness is what every phase shares.
type harness struct {
	root string // the repository
	bin  string // the server binary built for the run
	self string // this program: the comparison phase starts its stubs from it
	tmp  string // the run's temporary directory (logs, the SQLite file)
}

// run builds the server, runs the phases (1–6, then the comparison) and returns the
// exit code: the worst of the parts.
func run(ctx context.Context, o options) int {
	harnessErr := func(format string, args ...any) int {
		logf("error: "+format, args...)
		return exitHarness
	}
	root, err := repoRoot(ctx)
	if err != nil {
		return harnessErr("%v", err)
	}
	self, err := os.Executable()
	if err != nil {
		return harnessErr("%v", err)
	}
	tmp, err := os.MkdirTemp("", "latchkey-load-")
	if err != nil {
		return harnessErr("%v", err)
	}
	defer func() {
		if o.Keep {
			logf("kept %s (server binary and logs)", tmp)
		} else {
			os.RemoveAll(tmp)
		}
	}()

	logf("building the server (go build -o %s .) in %s", filepath.Join(tmp, "latchkey"), root)
	t0 := time.Now()
	bin, err := buildServer(ctx, root, tmp)
	if err != nil {
		return harnessErr("%v", err)
	}
	logf("built in %s", time.Since(t0).Round(time.Millisecond))
	h := harness{root: root, bin: bin, self: self, tmp: tmp}

	code := exitOK
	if !o.CompareOnly {
		code = runPhases(ctx, o, h)
	}
	if o.Compare && ctx.Err() == nil {
		code = max(code, runComparison(ctx, o, h))
	}
	return code
}

// runPhases runs phases 1–6 on PostgreSQL + Redis, prints their table and returns the
// exit code.
func runPhases(ctx context.Context, o options, h harness) int {
	began := time.Now()
	harnessErr := func(format string, args ...any) int {
		logf("error: "+format, args...)
		return exitHarness
	}
	if err := checkRedis(o.RedisURL); err != nil {
		return harnessErr("%v (start it: see README, Tests)", err)
	}
	tmp, bin := h.tmp, h.bin
	db, err := createDatabase(ctx, o.PostgresURL)
	if err != nil {
		return harnessErr("%v", err)
	}
	logf("created database %s", db.name)
	defer func() {
		if err := db.drop(); err != nil {
			logf("warning: could not drop database %s: %v", db.name, err)
		} else {
			logf("dropped database %s", db.name)
		}
	}()

	adminToken := "load-admin-" + randomHex(16)
	var servers []*server
	defer func() {
		// On early returns; a no-op after the stop below.
		for _, srv := range servers {
			srv.stop(10 * time.Second)
		}
	}()
	// start starts one server process on the run's database and Redis.
	start := func(name string) (*server, error) {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		settings := append(loopbackSettings(port, adminToken),
			"DATABASE_URL="+db.url,
			"REDIS_URL="+o.RedisURL,
			"WEBHOOK_ALLOW_PRIVATE=true",
			"WEBHOOK_ALLOW_HTTP=true",
			"MAX_SUBSCRIPTIONS_PER_KEY="+strconv.Itoa(max(1000, o.Subscribers)),
		)
		if o.FlushInterval > 0 {
			settings = append(settings, "USAGE_FLUSH_INTERVAL="+o.FlushInterval.String())
		}
		logPath := filepath.Join(tmp, name+".log")
		t0 := time.Now()
		srv, err := startServer(ctx, bin, nil, logPath, port, settings)
		if err != nil {
			return nil, err
		}
		logf("%s ready on %s in %s (log: %s)", name, srv.baseURL, time.Since(t0).Round(time.Millisecond), logPath)
		return srv, nil
	}
	for i := range o.Instances {
		srv, err := start(fmt.Sprintf("server%d", i+1))
		if err != nil {
			return harnessErr("start server %d: %v", i+1, err)
		}
		servers = append(servers, srv)
	}
	alive := func() bool {
		for _, srv := range servers {
			if !srv.alive() {
				return false
			}
		}
		return true
	}

	rep := &report{opts: o, machine: machineDescription()}
	l := &ledger{}
	clients := make([]*client, len(servers))
	bases := make([]string, len(servers))
	for i, srv := range servers {
		clients[i] = newClient(srv.baseURL, o.Workers, l)
		bases[i] = srv.baseURL
	}
	fx, err := setup(ctx, clients[0], adminToken, o.Limit)
	if err != nil {
		return harnessErr("setup: %v\n--- server log (tail) ---\n%s", err, tailFile(servers[0].logPath, 20))
	}
	logf("tenant %s with an unlimited, a limited (%d/hour) and a subscriber key", fx.TenantID, o.Limit)

	// Phase 1: throughput.
	logf("throughput: %d workers posting %s for %s", o.Workers, viewerQuery, o.Duration)
	tp := runThroughput(ctx, clients, fx.Fast, o.Workers, o.Duration)
	rep.throughput = &tp
	logf("throughput: %d requests in %s = %.0f/s, p50 %s, p99 %s, statuses %s, GraphQL errors %d, no answer %d",
		tp.Requests, tp.Elapsed.Round(time.Millisecond), tp.RPS(), ms(tp.Latency.P50), ms(tp.Latency.P99),
		formatStatuses(tp.Statuses), tp.GQLErrors, tp.Transport)
	if tp.FirstErr != "" {
		logf("throughput: first problem: %s", tp.FirstErr)
	}

	// Phase 2: rate-limit accuracy.
	if ctx.Err() == nil && alive() {
		logf("rate limit: %d concurrent requests with a key limited to %d/hour", o.Burst, o.Limit)
		rl := runRateLimit(ctx, bases, l, fx.Limited, o.Limit, o.Burst)
		rep.rateLimit = &rl
		logf("rate limit: %d admitted, %d denied, statuses %s, Retry-After %v, in %s",
			rl.Admitted, rl.Denied, formatStatuses(rl.Statuses), rl.RetryAfterSeconds, rl.Elapsed.Round(time.Millisecond))
		for _, p := range rl.HeaderProblems {
			logf("rate limit: %s", p)
		}
	}

	// Phase 3: subscription fan-out.
	if ctx.Err() == nil && alive() {
		logf("fan-out: opening %d WebSocket subscribers", o.Subscribers)
		fo, err := runFanout(ctx, clients, fx.Subscriber, fx.Fast, o.Subscribers, o.Events, fanoutHooks{})
		rep.fanout, rep.fanoutErr = &fo, err
		logf("fan-out: %d/%d deliveries, p50 %s, p99 %s, max %s, droppedEvents %d",
			fo.Delivered, fo.Expected, ms(fo.Latency.P50), ms(fo.Latency.P99), ms(fo.Latency.Max), fo.Dropped)
		for _, p := range fo.Problems {
			logf("fan-out: %s", p)
		}
		if err != nil {
			logf("fan-out: error: %v", err)
		}
	}

	// Phase 4: webhooks.
	if ctx.Err() == nil && alive() {
		logf("webhooks: %d sendTestWebhook mutations, %d at a time", o.Webhooks, o.WebhookWorkers)
		wh, err := runWebhooks(ctx, clients, fx.Fast, o.Webhooks, o.WebhookWorkers, 30*time.Second)
		rep.webhooks, rep.webhooksErr = &wh, err
		logf("webhooks: %d/%d delivered in %s = %.0f/s, response→receipt p50 %s, p99 %s (%d before the response), %d duplicates, %d bad signatures",
			wh.Received, wh.Sent, wh.Elapsed.Round(time.Millisecond), wh.PerSecond(), ms(wh.Latency.P50), ms(wh.Latency.P99), wh.Early, wh.Duplicates, wh.BadSignatures)
		logf("webhooks: one at a time p50 %s, p99 %s; burst receipts per 500 ms: %s", ms(wh.Probe.P50), ms(wh.Probe.P99), wh.Timeline)
		for _, p := range wh.Problems {
			logf("webhooks: %s", p)
		}
		if err != nil {
			logf("webhooks: error: %v", err)
		}
	}
	rep.interrupted = ctx.Err()

	// Phase 5: stop gracefully, then count the stored usage rows.
	for _, c := range clients {
		c.http.CloseIdleConnections()
	}
	logf("stopping %d server process(es) with SIGTERM", len(servers))
	var wg sync.WaitGroup
	for _, srv := range servers {
		wg.Add(1)
		go func() { defer wg.Done(); srv.stop(30 * time.Second) }()
	}
	wg.Wait()
	for i, srv := range servers {
		rep.stopTook = max(rep.stopTook, srv.stopTook)
		if srv.stopErr != nil {
			rep.stopErrs = append(rep.stopErrs, fmt.Sprintf("server %d: %v", i+1, srv.stopErr))
			logf("server %d stop: %v", i+1, srv.stopErr)
		} else {
			logf("server %d exited cleanly %s after SIGTERM", i+1, srv.stopTook.Round(time.Millisecond))
		}
	}
	rep.served = l.served.Load()
	rep.unanswered = l.transport.Load()
	rep.otherStatuses = l.otherStatuses()
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
	rep.stored, rep.storedByOutcome, rep.storedErr = db.usageRows(cctx)
	cancel()
	logf("usage rows stored %d (by outcome %v), operations served %d (tenant-key answers with other statuses: %s, without an answer: %d)",
		rep.stored, rep.storedByOutcome, rep.served, rep.otherStatuses, rep.unanswered)

	// Phase 6: kill -9 under load, on a fresh process with a key of its own.
	if o.Crash > 0 && ctx.Err() == nil {
		srv, res, err := crashPhase(ctx, o, fx.TenantID, adminToken, db, start)
		rep.crash, rep.crashErr = res, err
		if err != nil {
			logf("kill -9: error: %v", err)
		}
		if srv != nil {
			servers = append(servers, srv)
		}
	}

	rep.log = logSummary{ByMsg: map[string]int{}}
	for i, srv := range servers {
		ls := summarizeLog(srv.logPath)
		for _, line := range ls.Examples {
			logf("server %d log: %s", i+1, line)
		}
		for _, line := range ls.Other {
			logf("server %d output: %s", i+1, line)
		}
		rep.log.merge(ls)
	}
	rep.elapsed = time.Since(began)

	rep.writeTable(os.Stdout)
	failures := rep.failures()
	for _, f := range failures {
		logf("FAIL: %s", f)
	}
	if len(failures) > 0 {
		return exitFailed
	}
	logf("all checks passed in %s", rep.elapsed.Round(time.Second))
	return exitOK
}

// checkRedis dials the host of redisURL, to fail early with a clear message.
func checkRedis(redisURL string) error {
	u, err := url.Parse(redisURL)
	if err != nil {
		return fmt.Errorf("LOAD_REDIS_URL: %w", err)
	}
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), "6379")
	}
	conn, err := net.DialTimeout("tcp", host, 3*time.Second)
	if err != nil {
		return fmt.Errorf("Redis at %s: %w", host, err)
	}
	return conn.Close()
}
