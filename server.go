// Command latchkey runs the Latchkey GraphQL API server.
//
// Configuration comes from the environment (see the README). With nothing set it
// serves on :8080 with an embedded SQLite database in ./latchkey.db.
package main

import (
	"context"
	"log/slog"
	"net"
	"os"
	"os/signal"
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
	a, err := app.New(ctx, cfg, app.Options{Out: os.Stdout})
	if err != nil {
		slog.Error("start", "err", err)
		return 1
	}
	err = a.ListenAndServe(ctx, func(addr net.Addr) {
		slog.Info("latchkey listening", "addr", addr.String(), "playground", cfg.PublicURL+"/", "database", a.Store.Dialect)
		_ = logs.Flush() // the start is worth seeing at once
	})
	if err != nil {
		slog.Error("serve", "err", err)
		return 1
	}
	return 0
}
