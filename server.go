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

	"github.com/latchkey/latchkey/internal/app"
	"github.com/latchkey/latchkey/internal/platform/config"
	"github.com/latchkey/latchkey/internal/platform/logging"
)

func main() {
	cfg, err := config.FromEnv()
	if err != nil {
		slog.Error("configuration", "err", err)
		os.Exit(2)
	}
	logger, err := logging.New(os.Stderr, cfg.LogFormat, cfg.LogLevel)
	if err != nil {
		slog.Error("configuration", "err", err)
		os.Exit(2)
	}
	slog.SetDefault(logger)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	a, err := app.New(ctx, cfg, app.Options{Out: os.Stdout})
	if err != nil {
		slog.Error("start", "err", err)
		os.Exit(1)
	}
	err = a.ListenAndServe(ctx, func(addr net.Addr) {
		slog.Info("latchkey listening", "addr", addr.String(), "playground", cfg.PublicURL+"/", "database", a.Store.Dialect)
	})
	if err != nil {
		slog.Error("serve", "err", err)
		os.Exit(1)
	}
}
