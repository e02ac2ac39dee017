// Command latchkey runs the Latchkey GraphQL API server.
//
// Configuration comes from the environment (see the README). With nothing set it
// serves on :8080 with an embedded SQLite database in ./latchkey.db.
//
//	latchkey                          serve
//	latchkey admin-key [-name NAME]   mint a new platform admin key in the configured
//	                                  database, print it once (audited), and exit
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/latchkey/latchkey/internal/app"
	"github.com/latchkey/latchkey/internal/platform/config"
	"github.com/latchkey/latchkey/internal/platform/logging"
)

func main() { os.Exit(run()) }

// run serves until SIGINT or SIGTERM and returns the exit code: 2 for a configuration
// error, 1 for a failure to start or serve.
func run() int {
	if os.Getenv("GOGC") == "" {
		// The live heap is small (caches, the usage queue), so the default target of
		// 100 % ran a collection every few thousand requests: 400 % halves the CPU the
		// collector takes for tens of MB more memory (see README, Performance).
		debug.SetGCPercent(400)
	}
	cfg, err := config.FromEnv()
	if err != nil {
		slog.Error("configuration", "err", err)
		return 2
	}
	// Log lines are written in batches (at least every 100 ms): one write system
	// call per request was a tenth of the server's CPU under load.
	logs := logging.NewBuffered(os.Stderr, 100*time.Millisecond)
	defer logs.Close()
	logger, err := logging.New(logs, cfg.LogFormat, cfg.LogLevel)
	if err != nil {
		slog.Error("configuration", "err", err)
		return 2
	}
	slog.SetDefault(logger)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if len(os.Args) > 1 {
		return command(ctx, cfg, os.Args[1], os.Args[2:]) // returns: the deferred Close writes its log lines
	}
	a, err := app.New(ctx, cfg, app.Options{Out: os.Stdout})
	if err != nil {
		slog.Error("start", "err", err)
		return 1
	}
	err = a.ListenAndServe(ctx, func(addr net.Addr) {
		slog.Info("latchkey listening", "addr", addr.String(), "playground", cfg.PublicURL+"/", "console", cfg.PublicURL+"/console",
			"database", a.Store.Dialect, "tracing", a.Tracing != nil)
		_ = logs.Flush() // the start is worth seeing at once
	})
	if err != nil {
		slog.Error("serve", "err", err)
		return 1
	}
	return 0
}

// command runs a subcommand and returns the process's exit code.
func command(ctx context.Context, cfg config.Config, name string, args []string) int {
	switch name {
	case "admin-key":
		fs := flag.NewFlagSet("latchkey admin-key", flag.ContinueOnError)
		keyName := fs.String("name", "recovered admin", "name of the new key (as listed by apiKeys)")
		fs.Usage = func() {
			fmt.Fprintln(fs.Output(), "usage: latchkey admin-key [-name NAME]\n\nMints a new platform admin key in the database of DATABASE_URL, prints it once\nand records it in the audit log. Other keys are not changed.")
			fs.PrintDefaults()
		}
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return 0
			}
			return 2
		}
		if err := app.MintAdminKey(ctx, cfg, *keyName, os.Stdout); err != nil {
			slog.Error("admin-key", "err", err)
			return 1
		}
		return 0
	case "-h", "-help", "--help", "help":
		fmt.Println("usage: latchkey               serve (configuration from the environment, see the README)\n       latchkey admin-key     mint a new platform admin key (latchkey admin-key -h)")
		return 0
	}
	fmt.Fprintf(os.Stderr, "latchkey: unknown command %q (try latchkey help)\n", name)
	return 2
}
