package main

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"slices"
	"sort"
	"strings"
	"time"
)

// report collects every phase's result for the table and the checks.
type report struct {
	opts    options
	machine string

	throughput  *throughputResult
	rateLimit   *rateLimitResult
	fanout      *fanoutResult
	fanoutErr   error
	webhooks    *webhookResult
	webhooksErr error
	interrupted error // the run's context ended early (timeout or signal)

	crash    *crashResult // nil when the kill -9 phase did not run
	crashErr error

	stopErrs []string      // per server, when it did not exit cleanly after SIGTERM
	stopTook time.Duration // the slowest server's

	served          int64
	unanswered      int64
	otherStatuses   string
	stored          int64
	storedByOutcome map[string]int64
	storedErr       error

	log     logSummary
	elapsed time.Duration
}

// machineDescription is "2 cores, <CPU model>, linux/amd64, go1.26.8".
func machineDescription() string {
	model := "unknown CPU"
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.Join(strings.Fields(v), " ")
				break
			}
		}
		f.Close()
	}
	return fmt.Sprintf("%d cores, %s, %s/%s, %s", runtime.NumCPU(), model, runtime.GOOS, runtime.GOARCH, runtime.Version())
}

// writeTable prints the Markdown table.
func (r *report) writeTable(w io.Writer) {
	o := r.opts
	rows := [][2]string{{"machine", r.machine}}
	procs := "1 process"
	if o.Instances > 1 {
		procs = fmt.Sprintf("%d processes (requests alternate between them)", o.Instances)
	}
	rows = append(rows, [2]string{"server", fmt.Sprintf("%s, PostgreSQL + Redis, harness on the same cores; whole run %s", procs, r.elapsed.Round(time.Second))})
	if t := r.throughput; t != nil {
		rows = append(rows,
			[2]string{fmt.Sprintf("requests/s (viewer query, %d workers, %s)", t.Workers, o.Duration), fmt.Sprintf("%.0f (%d requests)", t.RPS(), t.Requests)},
			[2]string{"latency p50 / p99", ms(t.Latency.P50) + " / " + ms(t.Latency.P99)},
			[2]string{"throughput HTTP statuses", fmt.Sprintf("%s; GraphQL errors %d; no answer %d", formatStatuses(t.Statuses), t.GQLErrors, t.Transport)},
		)
	}
	if rl := r.rateLimit; rl != nil {
		headers := "Retry-After and RateLimit on every 429"
		if len(rl.HeaderProblems) > 0 {
			headers = fmt.Sprintf("%d header problems", len(rl.HeaderProblems))
		}
		rows = append(rows, [2]string{
			fmt.Sprintf("rate-limit accuracy (limit %d, %d sent)", rl.Limit, rl.Sent),
			fmt.Sprintf("%d admitted / %d denied (accuracy %.0f%%); %s (Retry-After %s s)", rl.Admitted, rl.Denied, 100*rl.Accuracy(), headers, joinInts(rl.RetryAfterSeconds)),
		})
	}
	usage := fmt.Sprintf("%d / %d", r.stored, r.served)
	switch {
	case r.storedErr != nil:
		usage = fmt.Sprintf("? / %d (count failed: %v)", r.served, r.storedErr)
	case r.stored == r.served:
		usage += " (equal)"
	default:
		usage += fmt.Sprintf(" (NOT equal: %+d)", r.stored-r.served)
	}
	if r.unanswered > 0 {
		usage += fmt.Sprintf("; %d requests got no answer", r.unanswered)
	}
	rows = append(rows, [2]string{"usage rows stored / operations served", usage})
	if f := r.fanout; f != nil {
		rows = append(rows,
			[2]string{fmt.Sprintf("subscription fan-out (%d subscribers, %d events) p50 / p99", f.Subscribers, f.Events),
				fmt.Sprintf("%s / %s (max %s)", ms(f.Latency.P50), ms(f.Latency.P99), ms(f.Latency.Max))},
			[2]string{"fan-out deliveries", fmt.Sprintf("%d / %d expected (%d of %d subscribers live; droppedEvents %d)", f.Delivered, f.Expected, f.Ready, f.Subscribers, f.Dropped)},
		)
	}
	if wh := r.webhooks; wh != nil {
		rows = append(rows,
			[2]string{fmt.Sprintf("webhook deliveries/s (%d test events)", o.Webhooks), fmt.Sprintf("%.0f (%d/%d delivered in %s; %d duplicates)", wh.PerSecond(), wh.Received, wh.Sent, wh.Elapsed.Round(time.Millisecond), wh.Duplicates)},
			[2]string{"webhook p99 commit→receipt", fmt.Sprintf("%s (p50 %s; from the mutation's response, %d arrived before it; mostly queueing behind the burst)", ms(wh.Latency.P99), ms(wh.Latency.P50), wh.Early)},
			[2]string{fmt.Sprintf("webhook commit→receipt, one at a time (%d) p50 / p99", wh.Probe.N), ms(wh.Probe.P50) + " / " + ms(wh.Probe.P99)},
		)
	}
	if c := r.crash; c != nil {
		rows = append(rows,
			[2]string{fmt.Sprintf("kill -9 under load (%d workers, %s): usage lost", c.Workers, c.Load),
				fmt.Sprintf("%d of %d answered operations (%.2f%%), the last %s of load at %.0f/s; %d requests without an answer", c.Lost, c.Served, 100*float64(c.Lost)/math.Max(1, float64(c.Served)), ms(c.NewestStoredAge), c.RPS, c.InFlight)},
			[2]string{"kill -9 loss bound (flush interval + one write)",
				fmt.Sprintf("%s + %s = %s: %d operations answered in it (%s); recorder lag max %s, queue max %d, Record waits %d, dropped %d", ms(c.FlushInterval), ms(c.WriteMax), ms(c.Bound), c.ServedInBound, map[bool]string{true: "within", false: "EXCEEDED"}[c.withinBound()], ms(c.MaxLag), c.MaxQueue, c.Waits, c.Dropped)},
		)
	}
	shutdown := fmt.Sprintf("clean exit %s after SIGTERM", r.stopTook.Round(time.Millisecond))
	if len(r.stopErrs) > 0 {
		shutdown = strings.Join(r.stopErrs, "; ")
	}
	rows = append(rows,
		[2]string{"graceful shutdown", shutdown},
		[2]string{"server log", r.log.describe()},
	)
	fmt.Fprintln(w, "| metric | value |")
	fmt.Fprintln(w, "|---|---|")
	for _, row := range rows {
		fmt.Fprintf(w, "| %s | %s |\n", cell(row[0]), cell(row[1]))
	}
}

// cell escapes the pipe characters of a table cell.
func cell(s string) string { return strings.ReplaceAll(s, "|", `\|`) }

func joinInts(ns []int) string {
	if len(ns) == 0 {
		return "none"
	}
	sort.Ints(ns)
	parts := make([]string, len(ns))
	for i, n := range ns {
		parts[i] = fmt.Sprint(n)
	}
	return strings.Join(parts, ", ")
}

// failures lists the correctness checks that failed.
func (r *report) failures() []string {
	var fs []string
	fail := func(format string, args ...any) { fs = append(fs, fmt.Sprintf(format, args...)) }
	if r.interrupted != nil {
		fail("run ended early: %v", r.interrupted)
	}
	if t := r.throughput; t != nil {
		if bad := t.Requests - t.Statuses[200]; bad > 0 || t.GQLErrors > 0 || t.Transport > 0 {
			fail("throughput: statuses %s, %d GraphQL errors, %d requests without an answer (first: %s)", formatStatuses(t.Statuses), t.GQLErrors, t.Transport, t.FirstErr)
		}
	}
	if rl := r.rateLimit; rl == nil {
		fail("rate limit: phase not run")
	} else {
		if rl.Admitted != rl.Limit || rl.Denied != rl.Sent-rl.Limit {
			fail("rate limit: %d admitted and %d denied, want %d and %d (statuses %s, no answer %d)", rl.Admitted, rl.Denied, rl.Limit, rl.Sent-rl.Limit, formatStatuses(rl.Statuses), rl.Transport)
		}
		if len(rl.HeaderProblems) > 0 {
			fail("rate limit: %s", strings.Join(rl.HeaderProblems, "; "))
		}
	}
	if r.storedErr != nil {
		fail("usage rows: %v", r.storedErr)
	} else if r.stored != r.served {
		fail("usage rows: %d stored, %d operations served (by outcome %v; other statuses %s; %d without an answer)", r.stored, r.served, r.storedByOutcome, r.otherStatuses, r.unanswered)
	}
	if r.fanoutErr != nil {
		fail("fan-out: %v", r.fanoutErr)
	}
	if f := r.fanout; f == nil {
		fail("fan-out: phase not run")
	} else if f.Ready < f.Subscribers || f.Delivered < f.Expected {
		fail("fan-out: %d of %d subscribers live, %d of %d events delivered: %s", f.Ready, f.Subscribers, f.Delivered, f.Expected, strings.Join(f.Problems, "; "))
	}
	if r.webhooksErr != nil {
		fail("webhooks: %v", r.webhooksErr)
	}
	if wh := r.webhooks; wh == nil {
		fail("webhooks: phase not run")
	} else if wh.SendErrors > 0 || wh.Sent < r.opts.Webhooks || wh.Received-wh.Unmatched < wh.Sent || wh.BadSignatures > 0 {
		fail("webhooks: %d sent (%d errors), %d delivered, %d bad signatures: %s", wh.Sent, wh.SendErrors, wh.Received, wh.BadSignatures, strings.Join(wh.Problems, "; "))
	}
	if r.crashErr != nil {
		fail("kill -9: %v", r.crashErr)
	}
	if c := r.crash; c == nil && r.opts.Crash > 0 && r.crashErr == nil {
		fail("kill -9: phase not run")
	} else if c != nil && !c.withinBound() {
		fail("kill -9: %d operations lost, more than the %d answered in the bound (%s)", c.Lost, c.ServedInBound, ms(c.Bound))
	}
	for _, e := range r.stopErrs {
		fail("shutdown: %s", e)
	}
	return fs
}

// pairNames describe each mode's pair in the comparison table: Latchkey's side, then
// the stub's.
var pairNames = map[string]string{
	modeGraphQL: "GraphQL `{ viewer { apiKey { id } } }` vs bare gqlgen `{ __typename }`",
	modeVerify:  "`POST /v1/keys/verify`, valid consumer key, vs net/http decoding the same body",
}

// pairName is pairNames[mode], naming the number of consumer keys verified in turn
// when it is more than one.
func pairName(mode string, keys int) string {
	if mode == modeVerify && keys > 1 {
		return strings.Replace(pairNames[mode], "valid consumer key", fmt.Sprintf("%d valid consumer keys in turn", keys), 1)
	}
	return pairNames[mode]
}

// writeCompareTable prints the comparison phase's Markdown table: per setup and pair,
// the median requests/s of each side, their ratio beside its target, p50/p99 of each
// side and every round's figures (to judge the noise).
func writeCompareTable(w io.Writer, o options, machine string, took time.Duration, cmps []comparison) {
	fmt.Fprintf(w, "\nSide by side: %d alternating rounds of %s per side (after a warm-up), %d connections from %s, medians; %s; phase took %s.\n\n",
		o.CompareRounds, o.CompareDuration, o.CompareConns, generatorNames[o.CompareGenerator], machine, took.Round(time.Second))
	fmt.Fprintln(w, "| setup | Latchkey vs stub | stub req/s | Latchkey req/s | ratio | target | stub p50 / p99 | Latchkey p50 / p99 | rounds req/s (stub · Latchkey) | CPU per request (stub · Latchkey) | PostgreSQL + Redis CPU per Latchkey request |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|---|")
	for _, c := range cmps {
		sRPS, sP50, sP99 := medians(c.Stub)
		lRPS, lP50, lP99 := medians(c.Latchkey)
		back := "–"
		if hasBacking(c.Setup) {
			back = us(median(c.Latchkey, roundResult.BackingPerRequest))
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | **%.2f×** | %s | %s / %s | %s / %s | %s · %s | %s · %s | %s |\n",
			setupNames[c.Setup], pairName(c.Mode, o.CompareKeys), grouped(sRPS), grouped(lRPS), c.Ratio(), cell(goalText(c)),
			ms(sP50), ms(sP99), ms(lP50), ms(lP99), roundRates(c.Stub), roundRates(c.Latchkey),
			us(median(c.Stub, roundResult.CPUPerRequest)), us(median(c.Latchkey, roundResult.CPUPerRequest)), back)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "CPU per request: the answering process's CPU time (/proc) over its answers, median of the rounds; the harness, PostgreSQL and Redis are not in it. PostgreSQL + Redis: the CPU of every postgres and redis-server process over the Latchkey rounds, per answer (an upper bound: other users of those servers count too).")
	writeReferenceTable(w, cmps)
	writeFixedRateTable(w, o, cmps)
	for _, c := range cmps {
		if c.Profile != "" {
			fmt.Fprintf(w, "- CPU profile of Latchkey, %s %s (an extra round, not counted): %s (`go tool pprof -top -cum %s`)\n", setupNames[c.Setup], c.Mode, c.Profile, c.Profile)
		}
	}
}

// writeReferenceTable prints, for the GraphQL pairs, the reference rounds between
// the stub's and Latchkey's: bare gqlgen answering Latchkey's own query from
// constants, which splits the ratio into what gqlgen's executor costs for the real
// query's fields and what Latchkey adds to it.
func writeReferenceTable(w io.Writer, cmps []comparison) {
	if !slices.ContainsFunc(cmps, func(c comparison) bool { return len(c.Reference) > 0 }) {
		return
	}
	fmt.Fprintln(w, "\nWhere the GraphQL gap is: the same rounds, with bare gqlgen answering `{ viewer { apiKey { id } } }` from constants (no authentication, limits or recording) between each stub and Latchkey round, medians:")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| setup | bare gqlgen `{ __typename }` req/s | bare gqlgen, same query, req/s | Latchkey req/s | same query / `{ __typename }` | Latchkey / same query | CPU per request (`{ __typename }` · same query · Latchkey) |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|")
	for _, c := range cmps {
		if len(c.Reference) == 0 {
			continue
		}
		sRPS, _, _ := medians(c.Stub)
		rRPS, _, _ := medians(c.Reference)
		lRPS, _, _ := medians(c.Latchkey)
		fmt.Fprintf(w, "| %s | %s | %s | %s | %.2f× | %.2f× | %s · %s · %s |\n", setupNames[c.Setup], grouped(sRPS), grouped(rRPS), grouped(lRPS),
			rRPS/math.Max(1, sRPS), lRPS/math.Max(1, rRPS), us(median(c.Stub, roundResult.CPUPerRequest)),
			us(median(c.Reference, roundResult.CPUPerRequest)), us(median(c.Latchkey, roundResult.CPUPerRequest)))
	}
}

// writeFixedRateTable prints the latency rounds at a fixed rate, if any ran.
func writeFixedRateTable(w io.Writer, o options, cmps []comparison) {
	if !slices.ContainsFunc(cmps, func(c comparison) bool { return len(c.LatchkeyFixed) > 0 }) {
		return
	}
	fmt.Fprintf(w, "\nLatency at a fixed rate: %d alternating rounds of %s per side at %.0f%% of the stub's median requests/s above, open loop over %d connections from %s (latency from when a request was due if no connection was free by then), medians:\n\n",
		o.CompareRounds, o.CompareDuration, 100*o.CompareRate, o.CompareConns, generatorNames[generatorGo])
	fmt.Fprintln(w, "| setup | Latchkey vs stub | rate | requests/s sent (stub · Latchkey) | stub p50 / p99 | Latchkey p50 / p99 | target | CPU per request (stub · Latchkey) |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|")
	for _, c := range cmps {
		if len(c.LatchkeyFixed) == 0 {
			continue
		}
		sRPS, sP50, sP99 := medians(c.StubFixed)
		lRPS, lP50, lP99 := medians(c.LatchkeyFixed)
		target := "–"
		if v := c.FixedVerdict(); v != "" {
			target = "p99 < " + ms(c.Goal.P99) + ": " + v
		}
		fmt.Fprintf(w, "| %s | %s | %s/s | %s · %s | %s / %s | %s / %s | %s | %s · %s |\n",
			setupNames[c.Setup], pairName(c.Mode, o.CompareKeys), grouped(c.Rate), grouped(sRPS), grouped(lRPS),
			ms(sP50), ms(sP99), ms(lP50), ms(lP99), target,
			us(median(c.StubFixed, roundResult.CPUPerRequest)), us(median(c.LatchkeyFixed, roundResult.CPUPerRequest)))
	}
}

// goalText is the target cell: "≥ 0.90×, p99 < 2.00 ms: met" or the goal's note.
func goalText(c comparison) string {
	var parts []string
	if c.Goal.Ratio > 0 {
		parts = append(parts, fmt.Sprintf("≥ %.1f×", c.Goal.Ratio))
	}
	if c.Goal.P99 > 0 {
		parts = append(parts, "p99 < "+ms(c.Goal.P99))
	}
	if len(parts) == 0 {
		return c.Verdict()
	}
	return strings.Join(parts, ", ") + ": " + c.Verdict()
}

// roundRates lists the rounds' requests/s: "20.1k/19.8k/20.4k".
func roundRates(rounds []roundResult) string {
	if len(rounds) == 0 {
		return "none"
	}
	parts := make([]string, len(rounds))
	for i, r := range rounds {
		parts[i] = fmt.Sprintf("%.1fk", r.RPS()/1000)
	}
	return strings.Join(parts, "/")
}

// grouped formats v rounded to an integer with thousands separators: 12,345.
func grouped(v float64) string {
	s := fmt.Sprintf("%.0f", v)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}
