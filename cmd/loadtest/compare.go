package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// The comparison phase (DESIGN, "Measuring speed"): each measured endpoint of the real
// server against a stub process with the same I/O, in alternating rounds (stub,
// Latchkey, stub, Latchkey, …) on the same cores, with the same load generator and
// connection count; the medians' ratio is what counts on a shared machine.

// Setups of the real server.
const (
	setupSQLite   = "sqlite"   // the embedded default: SQLite file, no Redis
	setupPostgres = "postgres" // production: PostgreSQL + Redis
	setupCluster  = "cluster"  // past one Redis: PostgreSQL + a Redis Cluster
	// The production path's two halves, each alone, to split its cost: usage in
	// SQLite with the limits in Redis, and usage in PostgreSQL with the limits in
	// the instance's memory. Neither is a deployment the targets are about.
	setupSQLiteRedis = "sqlite-redis"
	setupPostgresMem = "postgres-memory"
)

// allSetups are the setups -compare-setups takes, in the order they run.
var allSetups = []string{setupSQLite, setupPostgres, setupCluster, setupSQLiteRedis, setupPostgresMem}

// setupStores says where each setup's server keeps usage (a fresh SQLite file, or a
// fresh PostgreSQL database) and limits (in memory, or in the Redis its setting
// names: REDIS_URL, the harness's Redis server, or REDIS_CLUSTER_URL, its cluster).
var setupStores = map[string]struct {
	sqlite bool
	redis  string // "" (limits in memory), "REDIS_URL" or "REDIS_CLUSTER_URL"
}{
	setupSQLite:      {sqlite: true},
	setupPostgres:    {redis: "REDIS_URL"},
	setupCluster:     {redis: "REDIS_CLUSTER_URL"},
	setupSQLiteRedis: {sqlite: true, redis: "REDIS_URL"},
	setupPostgresMem: {},
}

// hasBacking reports whether setup's server uses PostgreSQL or Redis, whose CPU the
// rounds then measure.
func hasBacking(setup string) bool {
	st := setupStores[setup]
	return !st.sqlite || st.redis != ""
}

// setupNames are the setups as the table names them.
var setupNames = map[string]string{setupSQLite: "SQLite", setupPostgres: "PostgreSQL + Redis", setupCluster: "PostgreSQL + Redis Cluster",
	setupSQLiteRedis: "SQLite + Redis (limits only)", setupPostgresMem: "PostgreSQL, limits in memory (usage only)"}

// goal is a target printed beside a measured ratio; it is reported, not asserted.
type goal struct {
	Ratio float64       // the least ratio (0: none)
	P99   time.Duration // Latchkey's p99 must stay below it (0: none)
	Note  string        // said instead when there is no number
}

// goals are the targets of DESIGN "Measuring speed", by setup and mode.
var goals = map[[2]string]goal{
	{setupSQLite, modeGraphQL}:      {Ratio: 0.9},
	{setupPostgres, modeGraphQL}:    {Ratio: 0.8},
	{setupSQLite, modeVerify}:       {Ratio: 0.9, P99: 2 * time.Millisecond},
	{setupPostgres, modeVerify}:     {Note: "none: reported beside SQLite's"},
	{setupCluster, modeGraphQL}:     {Ratio: 0.8},
	{setupCluster, modeVerify}:      {Note: "none: reported beside SQLite's"},
	{setupSQLiteRedis, modeGraphQL}: {Note: "none: half of PostgreSQL + Redis"},
	{setupSQLiteRedis, modeVerify}:  {Note: "none: half of PostgreSQL + Redis"},
	{setupPostgresMem, modeGraphQL}: {Note: "none: half of PostgreSQL + Redis"},
	{setupPostgresMem, modeVerify}:  {Note: "none: half of PostgreSQL + Redis"},
}

// comparison is one stub/Latchkey pair on one setup.
type comparison struct {
	Setup, Mode    string
	Goal           goal
	Stub, Latchkey []roundResult
	// Reference are the rounds of bare gqlgen answering Latchkey's own GraphQL query
	// from constants, run between each stub and Latchkey round (GraphQL only).
	Reference []roundResult
	// Rate is the fixed rate (requests/s) of the latency rounds StubFixed and
	// LatchkeyFixed (0: none ran).
	Rate                     float64
	StubFixed, LatchkeyFixed []roundResult
	Profile                  string // CPU profile of an extra, uncounted Latchkey round ("": none)
	ProfileTop               string // its top functions, as `go tool pprof -top` prints them
	Err                      error  // the pair could not be measured (or not completely)
}

// medians returns the median requests/s, p50 and p99 of rounds (each the median of
// the per-round figures).
func medians(rounds []roundResult) (rps float64, p50, p99 time.Duration) {
	rps = median(rounds, roundResult.RPS)
	p50 = median(rounds, func(r roundResult) time.Duration { return r.Latency.P50 })
	p99 = median(rounds, func(r roundResult) time.Duration { return r.Latency.P99 })
	return rps, p50, p99
}

// median returns the median of f over rounds (the mean of the middle two for an even
// count; 0 for none).
func median[T float64 | time.Duration](rounds []roundResult, f func(roundResult) T) T {
	if len(rounds) == 0 {
		return 0
	}
	vs := make([]T, len(rounds))
	for i, r := range rounds {
		vs[i] = f(r)
	}
	slices.Sort(vs)
	m := len(vs) / 2
	if len(vs)%2 == 0 {
		return (vs[m-1] + vs[m]) / 2
	}
	return vs[m]
}

// Ratio is Latchkey's median requests/s over the stub's (0 without rounds).
func (c comparison) Ratio() float64 {
	stub, _, _ := medians(c.Stub)
	lk, _, _ := medians(c.Latchkey)
	if stub == 0 {
		return 0
	}
	return lk / stub
}

// Verdict says whether the goal was met: "met", "missed: …", or the goal's note.
func (c comparison) Verdict() string {
	if c.Goal.Ratio == 0 && c.Goal.P99 == 0 {
		return c.Goal.Note
	}
	var missed []string
	if c.Goal.Ratio > 0 && c.Ratio() < c.Goal.Ratio {
		missed = append(missed, "ratio")
	}
	if _, _, p99 := medians(c.Latchkey); c.Goal.P99 > 0 && p99 >= c.Goal.P99 {
		missed = append(missed, "p99")
	}
	if len(missed) == 0 {
		return "met"
	}
	return "missed: " + strings.Join(missed, ", ")
}

// FixedVerdict says whether Latchkey's p99 at the fixed rate met the goal's p99:
// "met", "missed", or "" when the goal has none or no such rounds ran.
func (c comparison) FixedVerdict() string {
	if c.Goal.P99 == 0 || len(c.LatchkeyFixed) == 0 {
		return ""
	}
	if _, _, p99 := medians(c.LatchkeyFixed); p99 >= c.Goal.P99 {
		return "missed"
	}
	return "met"
}

// problems lists what went wrong in the pair's rounds: errors, bad answers.
func (c comparison) problems() []string {
	var ps []string
	if c.Err != nil {
		ps = append(ps, c.Err.Error())
	}
	check := func(side string, rounds []roundResult) {
		for i, r := range rounds {
			if r.Bad > 0 || r.Errors > 0 {
				ps = append(ps, fmt.Sprintf("%s round %d: %d bad answers, %d without an answer (first: %s)", side, i+1, r.Bad, r.Errors, r.FirstErr))
			}
		}
	}
	check("stub", c.Stub)
	check("Latchkey", c.Latchkey)
	check("stub fixed-rate", c.StubFixed)
	check("Latchkey fixed-rate", c.LatchkeyFixed)
	return ps
}

// maxCompareKeys bounds -compare-keys: the keys are created one mutation each.
const maxCompareKeys = 10_000

// compareFixture is what the Latchkey rounds use, created through the GraphQL API.
type compareFixture struct {
	Viewer    string   // management key, no scopes, unlimited: sends the viewer query
	Verifier  string   // management key with keys:verify, unlimited
	Consumers []string // CONSUMER keys, unlimited: the keys verified, in turn
}

// newCompareFixture creates a tenant and the keys as the platform admin, with
// consumers consumer keys. Every key has a rate limit of 10^9 per hour and no quota,
// so no limit interferes.
func newCompareFixture(ctx context.Context, c *client, adminToken string, consumers int) (*compareFixture, error) {
	tenantID, err := createTenant(ctx, c, adminToken)
	if err != nil {
		return nil, err
	}
	key := func(name string, scopes []string, kind string) (string, error) {
		in := map[string]any{"tenantID": tenantID, "name": name, "scopes": scopes, "kind": kind,
			"rateLimit": 1_000_000_000, "rateLimitWindowSeconds": 3600, "quota": 0}
		_, secret, err := createKey(ctx, c, adminToken, in)
		return secret, err
	}
	var f compareFixture
	if f.Viewer, err = key("viewer", []string{}, "MANAGEMENT"); err != nil {
		return nil, err
	}
	if f.Verifier, err = key("verifier", []string{"keys:verify"}, "MANAGEMENT"); err != nil {
		return nil, err
	}
	for i := range max(consumers, 1) {
		k, err := key(fmt.Sprintf("load-%d", i), []string{}, "CONSUMER")
		if err != nil {
			return nil, err
		}
		f.Consumers = append(f.Consumers, k)
	}
	return &f, nil
}

// pairTargets returns the stub's and Latchkey's side of mode. Both get the same
// headers; the GraphQL stub is asked { __typename } where Latchkey is asked the
// viewer query, the verify stub the very same body. For GraphQL, ref asks the stub
// Latchkey's query, which it answers from constants (a reference, not a baseline:
// see loadstub.GraphQL); for verification ref is the zero target (no url).
func pairTargets(mode, stubURL, serverURL string, fx *compareFixture, conns int) (stub, ref, lk target) {
	switch mode {
	case modeGraphQL:
		h := [][2]string{{"Content-Type", "application/json"}, {"X-API-Key", fx.Viewer}}
		stub = target{name: "bare gqlgen", url: stubURL + "/query", header: h,
			body: requestBody(`{ __typename }`, nil), want: []byte(`"__typename":"Query"`)}
		lk = target{name: "Latchkey", url: serverURL + "/query", header: h,
			body: requestBody(viewerQuery, nil), want: []byte(`"apiKey":{"id":"`)}
		ref = target{name: "bare gqlgen, same query", url: stubURL + "/query", header: h,
			body: lk.body, want: lk.want}
	default:
		h := [][2]string{{"Content-Type", "application/json"}, {"Authorization", "Bearer " + fx.Verifier}}
		bodies := make([][]byte, len(fx.Consumers))
		for i, k := range fx.Consumers {
			bodies[i] = []byte(fmt.Sprintf(`{"key":%q,"permissions":[],"tag":"load"}`, k))
		}
		want := []byte(`"code":"VALID"`)
		stub = target{name: "net/http stub", url: stubURL + "/v1/keys/verify", header: h, body: bodies[0], want: want}
		lk = target{name: "Latchkey", url: serverURL + "/v1/keys/verify", header: h, body: bodies[0], want: want}
		if len(bodies) > 1 {
			stub.bodies, stub.turn = bodies, new(atomic.Uint64)
			lk.bodies, lk.turn = bodies, new(atomic.Uint64)
		}
	}
	stub.http, lk.http = newHTTPClient(conns), newHTTPClient(conns)
	if ref.url != "" {
		ref.http = newHTTPClient(conns)
	}
	return stub, ref, lk
}

// runComparison runs the comparison phase on every selected setup, prints its table
// and returns the exit code.
func runComparison(ctx context.Context, o options, h harness) int {
	began := time.Now()
	var all []comparison
	var failures []string
	for _, setup := range o.CompareSetups {
		if ctx.Err() != nil {
			break
		}
		cmps, err := compareSetup(ctx, o, h, setup)
		all = append(all, cmps...)
		if err != nil {
			failures = append(failures, fmt.Sprintf("compare %s: %v", setupNames[setup], err))
		}
	}
	writeCompareTable(os.Stdout, o, machineDescription(), time.Since(began), all)
	for _, c := range all {
		for _, p := range c.problems() {
			failures = append(failures, fmt.Sprintf("compare %s %s: %s", setupNames[c.Setup], c.Mode, p))
		}
	}
	if ctx.Err() != nil {
		failures = append(failures, fmt.Sprintf("compare: run ended early: %v", ctx.Err()))
	}
	for _, f := range failures {
		logf("FAIL: %s", f)
	}
	if len(failures) > 0 {
		return exitFailed
	}
	return exitOK
}

// compareSetup starts a real server on setup (a fresh SQLite file, or a fresh
// PostgreSQL database with Redis), creates the keys, measures both pairs, and stops
// the server. A returned error is about the setup; each pair carries its own.
func compareSetup(ctx context.Context, o options, h harness, setup string) ([]comparison, error) {
	adminToken := "load-admin-" + randomHex(16)
	var settings []string
	st := setupStores[setup]
	if st.redis != "" {
		url, hint := o.RedisURL, "see README, Tests"
		if st.redis == "REDIS_CLUSTER_URL" {
			url, hint = o.RedisClusterURL, "make redis-cluster"
		}
		if err := checkRedis(url); err != nil {
			return nil, fmt.Errorf("%v (start it: %s)", err, hint)
		}
		settings = append(settings, st.redis+"="+url)
	}
	if st.sqlite {
		dir := filepath.Join(h.tmp, "compare-"+setup)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, err
		}
		settings = append(settings, "DATABASE_URL=sqlite:"+filepath.Join(dir, "load.db"))
	} else {
		db, err := createDatabase(ctx, o.PostgresURL)
		if err != nil {
			return nil, err
		}
		defer func() {
			if err := db.drop(); err != nil {
				logf("warning: could not drop database %s: %v", db.name, err)
			}
		}()
		settings = append(settings, "DATABASE_URL="+db.url)
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	settings = append(settings, loopbackSettings(port, adminToken)...)
	pprofAddr := ""
	if o.Profile != "" {
		pport, err := freePort()
		if err != nil {
			return nil, err
		}
		pprofAddr = "127.0.0.1:" + strconv.Itoa(pport)
		settings = append(settings, "PPROF_ADDR="+pprofAddr)
	}
	logPath := filepath.Join(h.tmp, "compare-"+setup+".log")
	srv, err := startServer(ctx, h.bin, nil, logPath, port, settings)
	if err != nil {
		return nil, fmt.Errorf("start server: %w", err)
	}
	logf("compare %s: server ready on %s (log: %s)", setupNames[setup], srv.baseURL, logPath)
	c := newClient(srv.baseURL, 1, &ledger{})
	fx, err := newCompareFixture(ctx, c, adminToken, o.CompareKeys)
	c.http.CloseIdleConnections()
	if err != nil {
		srv.stop(10 * time.Second)
		return nil, fmt.Errorf("setup: %w\n--- server log (tail) ---\n%s", err, tailFile(logPath, 20))
	}

	var cmps []comparison
	for _, mode := range []string{modeGraphQL, modeVerify} {
		if ctx.Err() != nil {
			break
		}
		cmp := comparePair(ctx, o, h, setup, mode, srv, fx, adminToken, pprofAddr)
		cmps = append(cmps, cmp)
	}
	if err := srv.stop(30 * time.Second); err != nil {
		return cmps, fmt.Errorf("server stop: %w\n--- server log (tail) ---\n%s", err, tailFile(logPath, 20))
	}
	if ls := summarizeLog(logPath); ls.Errors > 0 || len(ls.Other) > 0 {
		return cmps, fmt.Errorf("server log: %s", ls.describe())
	}
	return cmps, nil
}

// comparePair measures one mode on a running server: it starts the stub process,
// warms both sides up, runs the alternating rounds and, with -profile, one more
// Latchkey round under the CPU profiler (not counted).
func comparePair(ctx context.Context, o options, h harness, setup, mode string, srv *server, fx *compareFixture, adminToken, pprofAddr string) comparison {
	cmp := comparison{Setup: setup, Mode: mode, Goal: goals[[2]string{setup, mode}]}
	name := setupNames[setup] + " " + mode
	args := []string{"baseline", "-mode", mode}
	if mode == modeVerify {
		answer, err := sampleAnswer(ctx, srv.baseURL, fx)
		if err != nil {
			cmp.Err = err
			return cmp
		}
		args = append(args, "-answer", answer)
	}
	port, err := freePort()
	if err != nil {
		cmp.Err = err
		return cmp
	}
	args = append(args, "-addr", "127.0.0.1:"+strconv.Itoa(port))
	stubProc, err := startServer(ctx, h.self, args, filepath.Join(h.tmp, "stub-"+setup+"-"+mode+".log"), port, nil)
	if err != nil {
		cmp.Err = fmt.Errorf("start the stub: %w", err)
		return cmp
	}
	defer stubProc.stop(5 * time.Second)
	stub, ref, lk := pairTargets(mode, stubProc.baseURL, srv.baseURL, fx, o.CompareConns)
	stub.pid, ref.pid, lk.pid = stubProc.cmd.Process.Pid, stubProc.cmd.Process.Pid, srv.cmd.Process.Pid
	defer stub.http.CloseIdleConnections()
	defer lk.http.CloseIdleConnections()
	targets := []target{stub, lk}
	if ref.url != "" {
		defer ref.http.CloseIdleConnections()
		targets = append(targets, ref)
	}

	gen, err := newGenerator(o.CompareGenerator, h.tmp, o.CompareConns, targets...)
	if err != nil {
		cmp.Err = err
		return cmp
	}

	// Warm-up, not counted: connections opened, caches filled, code paths hot.
	warm := min(time.Second, o.CompareDuration/2)
	for _, t := range targets {
		gen(ctx, t, warm)
	}
	settle(ctx, srv, adminToken)

	// alternate runs the pair's rounds with round (stub, Latchkey, stub, …), each side
	// after the other has settled, and logs each with describe; it returns an error
	// when a side died or the run ended before all were done. With refs, a round of
	// ref runs between each stub and Latchkey round, and refs gets its results.
	alternate := func(what string, round generator, refs *[]roundResult, describe func(s, l roundResult) string) (stubs, lks []roundResult, err error) {
		for i := range o.CompareRounds {
			if ctx.Err() != nil || !srv.alive() || !stubProc.alive() {
				break
			}
			s := round(ctx, stub, o.CompareDuration)
			settle(ctx, nil, "")
			if refs != nil {
				r := round(ctx, ref, o.CompareDuration)
				settle(ctx, nil, "")
				*refs = append(*refs, r)
				logf("compare %s, %s, %d/%d: %s %.0f/s (CPU %s/request)", name, what, i+1, o.CompareRounds, ref.name, r.RPS(), us(r.CPUPerRequest()))
			}
			l := round(ctx, lk, o.CompareDuration)
			settle(ctx, srv, adminToken)
			stubs, lks = append(stubs, s), append(lks, l)
			logf("compare %s, %s, %d/%d: %s", name, what, i+1, o.CompareRounds, describe(s, l))
		}
		if len(lks) < o.CompareRounds {
			err = fmt.Errorf("%s: %d of %d ran (server alive %v, stub alive %v)", what, len(lks), o.CompareRounds, srv.alive(), stubProc.alive())
		}
		return stubs, lks, err
	}
	var refs *[]roundResult
	if ref.url != "" {
		refs = &cmp.Reference
	}
	if cmp.Stub, cmp.Latchkey, cmp.Err = alternate("rounds", gen, refs, func(s, l roundResult) string {
		return fmt.Sprintf("%s %.0f/s (p50 %s, p99 %s, CPU %s/request) · Latchkey %.0f/s (p50 %s, p99 %s, CPU %s/request) · ratio %.2f",
			stub.name, s.RPS(), ms(s.Latency.P50), ms(s.Latency.P99), us(s.CPUPerRequest()),
			l.RPS(), ms(l.Latency.P50), ms(l.Latency.P99), us(l.CPUPerRequest()), l.RPS()/math.Max(1, s.RPS()))
	}); cmp.Err != nil {
		return cmp
	}
	if o.CompareRate > 0 {
		// Latency where neither side is saturated: the same schedule for both, from
		// this process's client (wrk cannot hold a rate).
		rps, _, _ := medians(cmp.Stub)
		cmp.Rate = rps * o.CompareRate
		fixed := func(ctx context.Context, t target, d time.Duration) roundResult {
			return fixedRateRound(ctx, t, o.CompareConns, cmp.Rate, d)
		}
		if cmp.StubFixed, cmp.LatchkeyFixed, cmp.Err = alternate(fmt.Sprintf("rounds at %.0f/s", cmp.Rate), fixed, nil, func(s, l roundResult) string {
			return fmt.Sprintf("%s p50 %s, p99 %s · Latchkey p50 %s, p99 %s", stub.name, ms(s.Latency.P50), ms(s.Latency.P99), ms(l.Latency.P50), ms(l.Latency.P99))
		}); cmp.Err != nil {
			return cmp
		}
	}
	if o.Profile != "" && ctx.Err() == nil {
		path := filepath.Join(o.Profile, "cpu-"+setup+"-"+mode+".pprof")
		l, err := profiledRound(ctx, gen, lk, o.CompareDuration, pprofAddr, path)
		if err != nil {
			cmp.Err = fmt.Errorf("profile: %w", err)
			return cmp
		}
		settle(ctx, srv, adminToken)
		cmp.Profile, cmp.ProfileTop = path, pprofTop(ctx, h.root, path)
		logf("compare %s: profiled round %.0f/s (not counted), CPU profile %s:\n%s", name, l.RPS(), path, cmp.ProfileTop)
	}
	return cmp
}

// sampleAnswer verifies the consumer key once and returns the server's answer, which
// the verify stub then writes to every request (the same bytes on the wire).
func sampleAnswer(ctx context.Context, serverURL string, fx *compareFixture) (string, error) {
	_, _, lk := pairTargets(modeVerify, "", serverURL, fx, 1)
	defer lk.http.CloseIdleConnections()
	status, body, err := lk.send(ctx)
	if err != nil {
		return "", fmt.Errorf("sample verification: %w", err)
	}
	if status != http.StatusOK || !strings.Contains(string(body), string(lk.want)) {
		return "", fmt.Errorf("sample verification: HTTP %d: %.300s", status, body)
	}
	return string(body), nil
}

// settle lets the previous round's after-effects end before the next round starts,
// so they are not charged to the other side: with srv, until the server's usage queue
// is empty (its recorder writes the round's events after the answers; at most 5 s);
// then a short pause.
func settle(ctx context.Context, srv *server, adminToken string) {
	if srv != nil {
		c := &http.Client{Timeout: time.Second}
		deadline := time.Now().Add(5 * time.Second)
		for empty := 0; empty < 2 && time.Now().Before(deadline) && ctx.Err() == nil; {
			m, _, err := scrapeMetrics(ctx, c, srv.baseURL, adminToken)
			if err == nil && m["latchkey_usage_queue_depth"] == 0 {
				empty++
			} else {
				empty = 0
			}
			time.Sleep(50 * time.Millisecond)
		}
		c.CloseIdleConnections()
	}
	select {
	case <-ctx.Done():
	case <-time.After(200 * time.Millisecond):
	}
}

// profiledRound runs one round against t while the server's PPROF_ADDR records a CPU
// profile of it into path.
func profiledRound(ctx context.Context, gen generator, t target, d time.Duration, pprofAddr, path string) (roundResult, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return roundResult{}, err
	}
	secs := max(1, int(math.Round(d.Seconds())))
	url := fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", pprofAddr, secs)
	done := make(chan error, 1)
	go func() { done <- download(ctx, url, path, time.Duration(secs+30)*time.Second) }()
	time.Sleep(50 * time.Millisecond) // the profiler starts first, the load then covers it
	res := gen(ctx, t, time.Duration(secs)*time.Second)
	return res, <-done
}

// download saves the body of GET url into path.
func download(ctx context.Context, url, path string, timeout time.Duration) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := (&http.Client{Timeout: timeout}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 300))
		return fmt.Errorf("GET %s: HTTP %d: %s", url, resp.StatusCode, b)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// pprofTop returns the top functions of a CPU profile, by cumulative and by own time,
// as `go tool pprof -top` prints them (or why it could not).
func pprofTop(ctx context.Context, root, path string) string {
	var parts []string
	for _, args := range [][]string{{"-cum", "-nodecount=25"}, {"-nodecount=15"}} {
		cmd := exec.CommandContext(ctx, "go", append([]string{"tool", "pprof", "-top"}, append(args, path)...)...)
		cmd.Dir = root
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Sprintf("go tool pprof: %v: %s", err, out)
		}
		parts = append(parts, strings.TrimSpace(string(out)))
	}
	return strings.Join(parts, "\n\n")
}

// parseSetups reads -compare-setups: a comma-separated list of allSetups.
func parseSetups(s string) ([]string, error) {
	var out []string
	for _, p := range strings.Split(s, ",") {
		switch p = strings.TrimSpace(p); {
		case slices.Contains(allSetups, p):
			if !slices.Contains(out, p) {
				out = append(out, p)
			}
		case p == "":
		default:
			return nil, fmt.Errorf("-compare-setups: unknown setup %q (want %s)", p, strings.Join(allSetups, ", "))
		}
	}
	if len(out) == 0 {
		return nil, errors.New("-compare-setups: name at least one of " + strings.Join(allSetups, ", "))
	}
	return out, nil
}
