// Command loadtest measures a real Latchkey server and prints Markdown tables.
//
// It builds the server binary once, starts it as a separate process against a fresh
// PostgreSQL database (created for the run and dropped at the end) and Redis, and runs
// these phases over loopback, one after the other:
//
//  1. throughput: N workers POST { viewer { apiKey { id } } } with an unlimited key for
//     a fixed duration (requests/s, p50 and p99 latency, HTTP status counts);
//  2. rate-limit accuracy: a burst of concurrent requests with a key limited to L per
//     hour must admit exactly L, and every 429 must carry Retry-After and RateLimit;
//  3. subscription fan-out: S WebSocket subscribers of usageEvents receive E operations
//     sent 200 ms apart (delay from the event's "at" to receipt, p50 and p99);
//  4. webhooks: M sendTestWebhook mutations to a local receiver (deliveries/s and p99
//     from the mutation's response to the receipt of its delivery, matched by
//     webhook-id; signatures are verified);
//  5. usage rows: after SIGTERM and a clean exit, the usage_logs rows must equal the
//     operations the harness was answered for with a tenant key (HTTP 200 and 429,
//     plus admitted subscriptions);
//  6. kill -9: a fresh server process on the same database is loaded like phase 1 with
//     a key of its own, then killed with SIGKILL while the load goes on. The operations
//     answered but not stored must not exceed those answered in the server's stated
//     bound before the kill (its flush interval plus one batch write, read from its
//     metrics); the phase prints the loss, the bound and the recorder's largest lag.
//  7. side by side (DESIGN, "Measuring speed"): on each setup — the embedded default
//     (a fresh SQLite file, no Redis) and production (a fresh PostgreSQL database and
//     Redis) — a fresh server process is measured against a stub process with the same
//     I/O: the authenticated, rate-limited and recorded { viewer { apiKey { id } } }
//     against bare gqlgen (the project's generated schema, POST transport only)
//     answering { __typename }, and POST /v1/keys/verify of a valid consumer key against
//     a plain net/http handler that decodes the same body and writes an answer of the
//     same bytes. Each pair runs in alternating rounds (stub, Latchkey, stub, …) after
//     an uncounted warm-up, with the same load generator and connection count; the
//     phase prints the median requests/s of each side, the ratio, p50/p99 latency and
//     the targets beside them (reported, not asserted). Closed loops at saturation
//     measure throughput; their latency is mostly queueing. So each pair then runs as
//     many alternating rounds at a fixed rate (-compare-rate, a fraction of the stub's
//     median requests/s; open loop from Go's client, latency counted from when a
//     request was due if it had to wait for a connection), and a second table prints
//     their p50/p99. Between each GraphQL stub and Latchkey round, a reference round
//     asks the stub Latchkey's own query, which it answers from constants (the same
//     fields through gqlgen's executor, nothing else), and a third table splits the
//     GraphQL ratio at it. With -profile DIR the servers
//     run with PPROF_ADDR, and one more Latchkey round per pair, not counted, is
//     recorded as a CPU profile in DIR (its top functions go to the log).
//
// The stubs are this program's `baseline` subcommand, a process of their own:
//
//	go run ./cmd/loadtest baseline -mode graphql|verify -addr 127.0.0.1:0 [-answer JSON]
//
// The fan-out phase alone, on a fresh server process per round, with the server's
// memory per idle subscription (heap and stacks after a GC, from its pprof heap
// profile; and RSS) and CPU per delivery, optionally side by side with a server built
// from another git revision (`git archive`), in alternating rounds:
//
//	go run ./cmd/loadtest fanout [-subscribers 5000] [-events 20] [-rounds 2] [-against main] [-setup postgres|sqlite] [-profile DIR]
//
// Run it from the repository with `make load` or `go run ./cmd/loadtest`. It needs
// PostgreSQL and Redis on 127.0.0.1 (see the README; `-compare-only
// -compare-setups sqlite` needs neither) and finishes in three to four minutes on a
// 2-core machine (phases 1–6 take under one). It exits 1 when a correctness check
// fails (admitted != limit, stored != served, missing deliveries, a server that does
// not shut down cleanly, a kill -9 losing more than the bound, a comparison round with
// errors or wrong answers), 2 when the harness itself could not run (`go run` reports
// either as exit status 1).
//
// Flags (each also read from the environment variable in brackets):
//
//	-duration 15s          throughput phase length [LOAD_DURATION]
//	-workers 32            throughput workers [LOAD_WORKERS]
//	-limit 100             rate limit of the accuracy key, per hour [LOAD_LIMIT]
//	-burst 300             concurrent requests sent with that key [LOAD_BURST]
//	-subscribers 500       WebSocket subscribers [LOAD_SUBSCRIBERS]
//	-events 20             operations fanned out to them, 200 ms apart [LOAD_EVENTS]
//	-webhooks 1000         sendTestWebhook mutations [LOAD_WEBHOOKS]
//	-webhook-workers 16    their concurrency [LOAD_WEBHOOK_WORKERS]
//	-instances 1           server processes sharing the database and Redis [LOAD_INSTANCES]
//	-crash 5s              load before the kill -9; 0 skips phase 6 [LOAD_CRASH]
//	-flush-interval 0      the servers' USAGE_FLUSH_INTERVAL; 0 keeps their default [LOAD_FLUSH_INTERVAL]
//	-compare               run phase 7, the side-by-side comparison (default true) [LOAD_COMPARE]
//	-compare-only          run only phase 7 [LOAD_COMPARE_ONLY]
//	-compare-setups sqlite,postgres  the setups of phase 7; also cluster: PostgreSQL and
//	                       the Redis Cluster of LOAD_REDIS_CLUSTER_URL (default the test
//	                       cluster of make redis-cluster); and the two halves of
//	                       postgres, each alone, to split its cost: sqlite-redis
//	                       (usage in SQLite, limits in Redis) and postgres-memory
//	                       (usage in PostgreSQL, limits in memory) [LOAD_COMPARE_SETUPS]
//	-compare-rounds 3      alternating rounds per side [LOAD_COMPARE_ROUNDS]
//	-compare-duration 3s   length of one round [LOAD_COMPARE_DURATION]
//	-compare-conns 32      connections (closed-loop workers) per round [LOAD_COMPARE_CONNS]
//	-compare-generator go  load generator: go (Go's net/http client in this process) or
//	                       wrk (wrk on PATH, one thread, a process of its own) [LOAD_COMPARE_GENERATOR]
//	-compare-rate 0.25     then as many alternating rounds at a fixed rate, this fraction
//	                       of the stub's median requests/s, for latency (open loop, Go's
//	                       client, -compare-conns connections; 0 skips them) [LOAD_COMPARE_RATE]
//	-compare-keys 1        the verification pairs verify this many consumer keys in
//	                       turn (one request each; GraphQL keeps one key) [LOAD_COMPARE_KEYS]
//	-profile DIR           write a CPU profile of each pair's real server into DIR [LOAD_PROFILE]
//	-timeout 5m            hard bound on the whole run [LOAD_TIMEOUT]
//	-keep                  keep the temporary directory (binary, server logs) [LOAD_KEEP]
//
// A quick smoke run: go run ./cmd/loadtest -duration 2s -subscribers 50 -events 5 -webhooks 100 -compare-duration 1s
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailed  = 1 // a correctness check failed
	exitHarness = 2 // the harness could not run (build, services, server start)
)

// options are the command-line settings.
type options struct {
	Duration       time.Duration
	Workers        int
	Limit          int
	Burst          int
	Subscribers    int
	Events         int
	Webhooks       int
	WebhookWorkers int
	Instances      int
	Crash          time.Duration
	FlushInterval  time.Duration
	Timeout        time.Duration
	Keep           bool

	Compare         bool
	CompareOnly     bool
	CompareSetups   []string
	CompareRounds   int
	CompareDuration time.Duration
	CompareConns    int
	// CompareGenerator is the load generator of phase 7: generatorGo or generatorWrk.
	CompareGenerator string
	// CompareRate is the fixed rate of phase 7's latency rounds, a fraction of the
	// stub's median requests/s (0: no such rounds).
	CompareRate float64
	// CompareKeys is how many consumer keys the verification pairs verify, in turn.
	CompareKeys int
	Profile     string // directory of the CPU profiles ("": none)

	PostgresURL string
	RedisURL    string
	// RedisClusterURL is the Redis Cluster of the "cluster" setup (LOAD_REDIS_CLUSTER_URL).
	RedisClusterURL string
}

func parseFlags(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("loadtest", flag.ContinueOnError)
	fs.DurationVar(&o.Duration, "duration", envDuration("LOAD_DURATION", 15*time.Second), "throughput phase length")
	fs.IntVar(&o.Workers, "workers", envInt("LOAD_WORKERS", 32), "throughput workers")
	fs.IntVar(&o.Limit, "limit", envInt("LOAD_LIMIT", 100), "rate limit (per hour) of the accuracy key")
	fs.IntVar(&o.Burst, "burst", envInt("LOAD_BURST", 300), "concurrent requests sent with the accuracy key")
	fs.IntVar(&o.Subscribers, "subscribers", envInt("LOAD_SUBSCRIBERS", 500), "WebSocket subscribers")
	fs.IntVar(&o.Events, "events", envInt("LOAD_EVENTS", 20), "operations fanned out to the subscribers")
	fs.IntVar(&o.Webhooks, "webhooks", envInt("LOAD_WEBHOOKS", 1000), "sendTestWebhook mutations")
	fs.IntVar(&o.WebhookWorkers, "webhook-workers", envInt("LOAD_WEBHOOK_WORKERS", 16), "sendTestWebhook concurrency")
	fs.IntVar(&o.Instances, "instances", envInt("LOAD_INSTANCES", 1), "server processes sharing the database and Redis")
	fs.DurationVar(&o.Crash, "crash", envDuration("LOAD_CRASH", 5*time.Second), "load before the kill -9 (0 skips that phase)")
	fs.DurationVar(&o.FlushInterval, "flush-interval", envDuration("LOAD_FLUSH_INTERVAL", 0), "the servers' USAGE_FLUSH_INTERVAL (0: their default)")
	fs.BoolVar(&o.Compare, "compare", envBool("LOAD_COMPARE", true), "run phase 7, the side-by-side comparison with the stubs")
	fs.BoolVar(&o.CompareOnly, "compare-only", envBool("LOAD_COMPARE_ONLY", false), "run only phase 7")
	setups := fs.String("compare-setups", envString("LOAD_COMPARE_SETUPS", "sqlite,postgres"), "setups of phase 7, comma-separated: sqlite, postgres, cluster (PostgreSQL + the Redis Cluster of LOAD_REDIS_CLUSTER_URL), and the halves of postgres alone: sqlite-redis (usage in SQLite, limits in Redis), postgres-memory (usage in PostgreSQL, limits in memory)")
	fs.IntVar(&o.CompareRounds, "compare-rounds", envInt("LOAD_COMPARE_ROUNDS", 3), "alternating rounds per side in phase 7")
	fs.DurationVar(&o.CompareDuration, "compare-duration", envDuration("LOAD_COMPARE_DURATION", 3*time.Second), "length of one round in phase 7")
	fs.IntVar(&o.CompareConns, "compare-conns", envInt("LOAD_COMPARE_CONNS", 32), "connections (closed-loop workers) per round in phase 7")
	fs.StringVar(&o.CompareGenerator, "compare-generator", envString("LOAD_COMPARE_GENERATOR", generatorGo), "load generator of phase 7: go (Go's net/http client in this process) or wrk (wrk on PATH, one thread)")
	fs.Float64Var(&o.CompareRate, "compare-rate", envFloat("LOAD_COMPARE_RATE", 0.25), "phase 7's latency rounds send at this fraction of the stub's median requests/s (open loop; 0 skips them)")
	fs.IntVar(&o.CompareKeys, "compare-keys", envInt("LOAD_COMPARE_KEYS", 1), "the verification pairs of phase 7 verify this many consumer keys in turn")
	fs.StringVar(&o.Profile, "profile", os.Getenv("LOAD_PROFILE"), "directory for a CPU profile of the real server per pair of phase 7 (off when empty)")
	fs.DurationVar(&o.Timeout, "timeout", envDuration("LOAD_TIMEOUT", 5*time.Minute), "hard bound on the whole run")
	fs.BoolVar(&o.Keep, "keep", os.Getenv("LOAD_KEEP") != "", "keep the temporary directory (binary and server log)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	var err error
	if o.CompareSetups, err = parseSetups(*setups); err != nil {
		return o, err
	}
	o.PostgresURL = envString("LOAD_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test?sslmode=disable")
	o.RedisURL = envString("LOAD_REDIS_URL", "redis://127.0.0.1:6379/0")
	o.RedisClusterURL = envString("LOAD_REDIS_CLUSTER_URL", "redis://127.0.0.1:7000?addr=127.0.0.1:7001&addr=127.0.0.1:7002")
	switch {
	case o.Duration <= 0 || o.Timeout <= 0:
		return o, errors.New("-duration and -timeout must be positive")
	case o.Crash < 0 || o.FlushInterval < 0:
		return o, errors.New("-crash and -flush-interval must not be negative")
	case o.Workers < 1 || o.WebhookWorkers < 1:
		return o, errors.New("-workers and -webhook-workers must be at least 1")
	case o.Limit < 1 || o.Burst < o.Limit:
		return o, errors.New("-limit must be at least 1 and -burst at least -limit")
	case o.Instances < 1 || o.Instances > 4:
		return o, errors.New("-instances must be between 1 and 4")
	case o.Subscribers < 1 || o.Events < 1 || o.Webhooks < 1:
		return o, errors.New("-subscribers, -events and -webhooks must be at least 1")
	case o.CompareOnly && !o.Compare:
		return o, errors.New("-compare-only needs -compare")
	case generatorNames[o.CompareGenerator] == "":
		return o, fmt.Errorf("-compare-generator must be %s or %s", generatorGo, generatorWrk)
	case o.CompareRate < 0 || o.CompareRate > 1:
		return o, errors.New("-compare-rate must be between 0 and 1")
	case o.CompareKeys < 1 || o.CompareKeys > maxCompareKeys:
		return o, fmt.Errorf("-compare-keys must be between 1 and %d", maxCompareKeys)
	case o.CompareRounds < 1 || o.CompareConns < 1 || o.CompareDuration < 100*time.Millisecond:
		return o, errors.New("-compare-rounds and -compare-conns must be at least 1, -compare-duration at least 100ms")
	}
	return o, nil
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "baseline" {
		os.Exit(runBaseline(os.Args[2:]))
	}
	if len(os.Args) > 1 && os.Args[1] == "fanout" {
		os.Exit(runFanoutCommand(os.Args[2:]))
	}
	o, err := parseFlags(os.Args[1:])
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(exitOK)
		}
		fmt.Fprintln(os.Stderr, "loadtest:", err)
		os.Exit(exitHarness)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	code := run(ctx, o)
	cancel()
	stop()
	os.Exit(code)
}

// logf prints a progress line to stderr.
func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s loadtest: %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
}

func envString(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func envInt(name string, def int) int {
	if v := os.Getenv(name); v != "" {
		if n, err := strconv.Atoi(v); err == nil {
			return n
		}
		fmt.Fprintf(os.Stderr, "loadtest: ignoring %s=%q: not an integer\n", name, v)
	}
	return def
}

func envFloat(name string, def float64) float64 {
	if v := os.Getenv(name); v != "" {
		if f, err := strconv.ParseFloat(v, 64); err == nil {
			return f
		}
		fmt.Fprintf(os.Stderr, "loadtest: ignoring %s=%q: not a number\n", name, v)
	}
	return def
}

func envBool(name string, def bool) bool {
	if v := os.Getenv(name); v != "" {
		if b, err := strconv.ParseBool(v); err == nil {
			return b
		}
		fmt.Fprintf(os.Stderr, "loadtest: ignoring %s=%q: not true or false\n", name, v)
	}
	return def
}

func envDuration(name string, def time.Duration) time.Duration {
	if v := os.Getenv(name); v != "" {
		if d, err := time.ParseDuration(v); err == nil {
			return d
		}
		fmt.Fprintf(os.Stderr, "loadtest: ignoring %s=%q: not a duration\n", name, v)
	}
	return def
}
