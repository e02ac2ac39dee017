package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// fanoutRun is one fan-out round on a fresh server process.
type fanoutRun struct {
	Server string // "current" or the -against revision
	Round  int
	Result fanoutResult
	Err    error
	// The server's heap in use plus goroutine stacks (after a GC), and its resident
	// set, divided by the live subscriptions: their growth from before the first
	// connection to all subscriptions open and idle.
	HeapStackPerSub, RSSPerSub float64 // bytes
	// CPUPerDelivery is the server's CPU time over the measured events divided by the
	// deliveries.
	CPUPerDelivery time.Duration
	// HarnessCPUPerDelivery is the same for this process (the 5,000 clients reading
	// and decoding), which runs on the same cores.
	HarnessCPUPerDelivery time.Duration
	Profile               string // CPU profile of the measured events ("": none)
}

// runFanoutCommand is `loadtest fanout`: the fan-out phase alone, on a fresh server
// process per round (PostgreSQL + Redis by default), reporting delivery latency, the
// server's memory per idle subscription and its CPU per delivery; with -against REV,
// side by side with a server built from that git revision, in alternating rounds.
func runFanoutCommand(args []string) int {
	fs := flag.NewFlagSet("loadtest fanout", flag.ContinueOnError)
	subscribers := fs.Int("subscribers", 5000, "WebSocket subscribers (one subscription each)")
	events := fs.Int("events", 20, "operations fanned out to them, 200 ms apart")
	rounds := fs.Int("rounds", 2, "rounds per server")
	against := fs.String("against", "", "git revision to build a second server from and measure alternately (e.g. main)")
	setupName := fs.String("setup", "postgres", "postgres (PostgreSQL + Redis) or sqlite")
	profile := fs.String("profile", "", "directory for a CPU profile of each server's first round")
	timeout := fs.Duration("timeout", 15*time.Minute, "hard bound on the whole run")
	keep := fs.Bool("keep", false, "keep the temporary directory (binaries and server logs)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitHarness
	}
	if *subscribers < 1 || *events < 1 || *rounds < 1 || (*setupName != "postgres" && *setupName != "sqlite") {
		fmt.Fprintln(os.Stderr, "loadtest fanout: -subscribers, -events and -rounds must be at least 1, -setup postgres or sqlite")
		return exitHarness
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	harnessErr := func(format string, a ...any) int {
		logf("error: "+format, a...)
		return exitHarness
	}
	root, err := repoRoot(ctx)
	if err != nil {
		return harnessErr("%v", err)
	}
	tmp, err := os.MkdirTemp("", "latchkey-fanout-")
	if err != nil {
		return harnessErr("%v", err)
	}
	defer func() {
		if *keep {
			logf("kept %s", tmp)
		} else {
			os.RemoveAll(tmp)
		}
	}()
	type build struct{ name, bin string }
	var builds []build
	if *against != "" {
		bin, err := buildRevision(ctx, root, *against, filepath.Join(tmp, "against"))
		if err != nil {
			return harnessErr("build %s: %v", *against, err)
		}
		builds = append(builds, build{*against, bin})
	}
	cur := filepath.Join(tmp, "current")
	if err := os.MkdirAll(cur, 0o755); err != nil {
		return harnessErr("%v", err)
	}
	bin, err := buildServer(ctx, root, cur)
	if err != nil {
		return harnessErr("%v", err)
	}
	builds = append(builds, build{"current", bin})
	pgURL := envString("LOAD_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test?sslmode=disable")
	redisURL := envString("LOAD_REDIS_URL", "redis://127.0.0.1:6379/0")
	if *setupName == "postgres" {
		if err := checkRedis(redisURL); err != nil {
			return harnessErr("%v", err)
		}
	}

	var runs []fanoutRun
	code := exitOK
	for r := range *rounds {
		order := builds
		if r%2 == 1 { // ABBA: neither server always goes first
			order = []build{}
			for i := len(builds) - 1; i >= 0; i-- {
				order = append(order, builds[i])
			}
		}
		for _, b := range order {
			if ctx.Err() != nil {
				break
			}
			prof := ""
			if *profile != "" && r == 0 {
				prof = filepath.Join(*profile, "fanout-"+sanitize(b.name)+".pprof")
			}
			run := fanoutRound(ctx, b.bin, tmp, *setupName, pgURL, redisURL, *subscribers, *events, prof)
			run.Server, run.Round = b.name, r+1
			if run.Err != nil || run.Result.Delivered != run.Result.Expected || run.Result.Ready != *subscribers {
				code = exitFailed
				logf("fan-out %s round %d: error %v, problems %v", b.name, r+1, run.Err, run.Result.Problems)
			}
			logf("fan-out %s round %d: p50 %s, p99 %s, %d/%d delivered, %.1f KiB per idle subscription (heap+stacks), CPU %s per delivery",
				b.name, r+1, ms(run.Result.Latency.P50), ms(run.Result.Latency.P99), run.Result.Delivered, run.Result.Expected,
				run.HeapStackPerSub/1024, run.CPUPerDelivery)
			runs = append(runs, run)
		}
	}
	writeFanoutTable(os.Stdout, runs, *subscribers, *events, *setupName)
	for _, run := range runs {
		if run.Profile != "" {
			fmt.Printf("\nCPU profile, %s: %s\n```\n%s\n```\n", run.Server, run.Profile, pprofTop(ctx, root, run.Profile))
		}
	}
	return code
}

// sanitize makes a revision name usable in a file name.
func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '/' || r == ' ' || r == '~' || r == '^' {
			return '-'
		}
		return r
	}, s)
}

// buildRevision builds the server of git revision rev of the repository at root into
// dir, from `git archive` (the working tree is not touched).
func buildRevision(ctx context.Context, root, rev, dir string) (string, error) {
	src := filepath.Join(dir, "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		return "", err
	}
	archive := exec.CommandContext(ctx, "git", "-C", root, "archive", "--format=tar", rev)
	untar := exec.CommandContext(ctx, "tar", "-x", "-C", src)
	pipe, err := archive.StdoutPipe()
	if err != nil {
		return "", err
	}
	untar.Stdin = pipe
	archive.Stderr, untar.Stderr = os.Stderr, os.Stderr
	if err := untar.Start(); err != nil {
		return "", err
	}
	if err := archive.Run(); err != nil {
		return "", fmt.Errorf("git archive %s: %w", rev, err)
	}
	if err := untar.Wait(); err != nil {
		return "", fmt.Errorf("tar: %w", err)
	}
	logf("building %s (git archive %s)", rev, rev)
	return buildServer(ctx, src, dir)
}

// fanoutRound starts bin on a fresh database, runs the fan-out phase against it and
// stops it.
func fanoutRound(ctx context.Context, bin, tmp, setupName, pgURL, redisURL string, n, events int, profile string) (run fanoutRun) {
	port, err1 := freePort()
	pport, err2 := freePort()
	if err := errors.Join(err1, err2); err != nil {
		run.Err = err
		return run
	}
	adminToken := "load-admin-" + randomHex(16)
	pprofAddr := "127.0.0.1:" + strconv.Itoa(pport)
	settings := append(loopbackSettings(port, adminToken),
		"PPROF_ADDR="+pprofAddr,
		"MAX_SUBSCRIPTIONS_PER_KEY="+strconv.Itoa(max(1000, n)),
	)
	if setupName == "postgres" {
		db, err := createDatabase(ctx, pgURL)
		if err != nil {
			run.Err = err
			return run
		}
		defer func() {
			if err := db.drop(); err != nil {
				logf("warning: could not drop database %s: %v", db.name, err)
			}
		}()
		settings = append(settings, "DATABASE_URL="+db.url, "REDIS_URL="+redisURL)
	} else {
		settings = append(settings, "DATABASE_URL=sqlite:"+filepath.Join(tmp, "fanout-"+randomHex(4)+".db"))
	}
	logPath := filepath.Join(tmp, "fanout-"+randomHex(4)+".log")
	srv, err := startServer(ctx, bin, nil, logPath, port, settings)
	if err != nil {
		run.Err = err
		return run
	}
	defer func() {
		if err := srv.stop(30 * time.Second); err != nil && run.Err == nil {
			run.Err = fmt.Errorf("stop: %w", err)
		}
	}()
	pid := srv.cmd.Process.Pid
	c := newClient(srv.baseURL, 4, &ledger{})
	defer c.http.CloseIdleConnections()
	fx, err := setup(ctx, c, adminToken, 100)
	if err != nil {
		run.Err = fmt.Errorf("setup: %w", err)
		return run
	}
	before, err := serverMemory(ctx, pprofAddr, pid)
	if err != nil {
		run.Err = err
		return run
	}
	var cpu0, self0 time.Duration
	hooks := fanoutHooks{
		Idle: func(ready int) {
			after, err := serverMemory(ctx, pprofAddr, pid)
			if err != nil || ready == 0 {
				logf("fan-out: server memory: %v", err)
				return
			}
			run.HeapStackPerSub = float64(after.heapStack-before.heapStack) / float64(ready)
			run.RSSPerSub = float64(after.rss-before.rss) / float64(ready)
		},
		Events: func() func() {
			cpu0, _ = processCPU(pid)
			self0, _ = processCPU(os.Getpid())
			var profDone chan error
			if profile != "" {
				secs := int(time.Duration(events)*200*time.Millisecond/time.Second) + 1
				url := fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", pprofAddr, secs)
				profDone = make(chan error, 1)
				_ = os.MkdirAll(filepath.Dir(profile), 0o755)
				go func() { profDone <- download(ctx, url, profile, time.Duration(secs+30)*time.Second) }()
				time.Sleep(50 * time.Millisecond)
			}
			return func() {
				cpu1, _ := processCPU(pid)
				self1, _ := processCPU(os.Getpid())
				// Divided once the deliveries are counted.
				run.CPUPerDelivery, run.HarnessCPUPerDelivery = cpu1-cpu0, self1-self0
				if profDone != nil {
					if err := <-profDone; err != nil {
						logf("fan-out: CPU profile: %v", err)
					} else {
						run.Profile = profile
					}
				}
			}
		},
	}
	run.Result, run.Err = runFanout(ctx, []*client{c}, fx.Subscriber, fx.Fast, n, events, hooks)
	if run.Result.Delivered > 0 {
		run.CPUPerDelivery /= time.Duration(run.Result.Delivered)
		run.HarnessCPUPerDelivery /= time.Duration(run.Result.Delivered)
	}
	return run
}

// memSample is the server's memory at one moment.
type memSample struct {
	heapStack int64 // HeapInuse + StackInuse after a GC
	rss       int64
}

// serverMemory reads the server's heap in use and goroutine stacks after a garbage
// collection (from its pprof heap profile, which prints runtime.MemStats) and its
// resident set size from /proc.
func serverMemory(ctx context.Context, pprofAddr string, pid int) (memSample, error) {
	var m memSample
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+pprofAddr+"/debug/pprof/heap?debug=1&gc=1", nil)
	if err != nil {
		return m, err
	}
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		return m, err
	}
	defer resp.Body.Close()
	var heap, stack int64 = -1, -1
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, "# HeapInuse = "); ok {
			heap, _ = strconv.ParseInt(v, 10, 64)
		}
		if v, ok := strings.CutPrefix(line, "# Stack = "); ok {
			f, _, _ := strings.Cut(v, " ")
			stack, _ = strconv.ParseInt(f, 10, 64)
		}
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	if heap < 0 || stack < 0 {
		return m, errors.New("server memory: no HeapInuse or Stack in the heap profile")
	}
	m.heapStack = heap + stack
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
				kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
				m.rss = kb << 10
			}
		}
	}
	return m, nil
}

// writeFanoutTable prints the rounds as a Markdown table.
func writeFanoutTable(w io.Writer, runs []fanoutRun, n, events int, setupName string) {
	fmt.Fprintf(w, "\nfan-out, %d subscribers × %d events, server in its own process (%s), %s\n\n",
		n, events, setupNames[setupName], machineDescription())
	fmt.Fprintln(w, "| server | round | p50 | p99 | max | delivered | droppedEvents | per idle subscription: heap + stacks | RSS | CPU per delivery: server · clients |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|")
	for _, r := range runs {
		f := r.Result
		fmt.Fprintf(w, "| %s | %d | %s | %s | %s | %d / %d | %d | %.1f KiB | %.1f KiB | %.1f µs · %.1f µs |\n",
			r.Server, r.Round, ms(f.Latency.P50), ms(f.Latency.P99), ms(f.Latency.Max), f.Delivered, f.Expected, f.Dropped,
			r.HeapStackPerSub/1024, r.RSSPerSub/1024, float64(r.CPUPerDelivery.Nanoseconds())/1000,
			float64(r.HarnessCPUPerDelivery.Nanoseconds())/1000)
	}
}
