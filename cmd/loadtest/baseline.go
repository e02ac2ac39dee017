package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/latchkey/latchkey/cmd/loadtest/loadstub"
)

// Baseline modes: what the stub serves.
const (
	modeGraphQL = "graphql" // POST /query: bare gqlgen, for { __typename }
	modeVerify  = "verify"  // POST /v1/keys/verify: decode the body, write a fixed answer
)

// runBaseline is the `baseline` subcommand: a stub server with the I/O of a measured
// endpoint and none of its work, the floor the comparison phase divides by. It is a
// process of its own, like the server, so both are measured on equal footing
// (loopback HTTP, keep-alive connections, the same cores and load generator).
//
//	go run ./cmd/loadtest baseline -mode graphql|verify -addr 127.0.0.1:0 [-answer JSON]
//
// It prints "listening on http://ADDR" on stdout, answers GET /readyz, and exits on
// SIGTERM or SIGINT, when the process that started it ends, or after -lifetime.
func runBaseline(args []string) int {
	fs := flag.NewFlagSet("loadtest baseline", flag.ContinueOnError)
	mode := fs.String("mode", modeGraphQL, "graphql (bare gqlgen on POST /query) or verify (plain net/http on POST /v1/keys/verify)")
	addr := fs.String("addr", "127.0.0.1:0", "listen address (loopback only)")
	answer := fs.String("answer", `{"valid":true,"code":"VALID"}`, "verify: the JSON answer written to every request (give a real one for the same size)")
	lifetime := fs.Duration("lifetime", 15*time.Minute, "exit after this long at the latest")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitHarness
	}
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, "loadtest baseline:", err)
		return exitHarness
	}
	if err := checkLoopback(*addr); err != nil {
		return fail(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	switch *mode {
	case modeGraphQL:
		mux.Handle("POST /query", loadstub.GraphQL())
	case modeVerify:
		if !json.Valid([]byte(*answer)) {
			return fail(errors.New("-answer is not JSON"))
		}
		mux.Handle("POST /v1/keys/verify", loadstub.Verify([]byte(*answer)))
	default:
		return fail(fmt.Errorf("-mode %q: want graphql or verify", *mode))
	}

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return fail(err)
	}
	// The same connection settings as the server's (internal/app).
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
	}
	fmt.Printf("listening on http://%s\n", ln.Addr())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *lifetime)
	defer cancel()
	select {
	case err := <-errc:
		return fail(err)
	case <-ctx.Done():
	case <-parentGone(ctx):
	}
	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer scancel()
	_ = srv.Shutdown(sctx)
	return exitOK
}

// checkLoopback refuses a listen address that is not on a loopback interface: the
// harness's traffic never leaves the machine.
func checkLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("-addr %q: %w", addr, err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return fmt.Errorf("-addr %q: listen on a loopback address (127.0.0.1)", addr)
	}
	return nil
}

// parentGone returns a channel closed when the process that started this one has
// ended (the parent process id changes), so a stub never outlives its harness.
func parentGone(ctx context.Context) <-chan struct{} {
	gone := make(chan struct{})
	parent := os.Getppid()
	go func() {
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if os.Getppid() != parent {
					close(gone)
					return
				}
			}
		}
	}()
	return gone
}
