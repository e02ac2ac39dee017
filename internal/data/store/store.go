// Package store opens the database named by DATABASE_URL, applies the migrations and
// returns the ent client.
//
//	sqlite:PATH          embedded SQLite file (modernc.org/sqlite, foreign keys on)
//	postgres://...       PostgreSQL through lib/pq (sslmode defaults to disable on
//	                     loopback hosts and to require elsewhere)
package store

import (
	"context"
	"database/sql"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"entgo.io/ent/dialect"
	entsql "entgo.io/ent/dialect/sql"
	_ "github.com/lib/pq" // PostgreSQL driver
	"go.opentelemetry.io/otel/trace"
	_ "modernc.org/sqlite" // SQLite driver (pure Go)

	"github.com/latchkey/latchkey/ent"
	_ "github.com/latchkey/latchkey/ent/runtime" // registers hooks, policies and defaults
	"github.com/latchkey/latchkey/migrate"
)

// Store is an open database: the ent client plus what the rest of the server needs
// to know about it.
type Store struct {
	Client  *ent.Client
	DB      *sql.DB
	Dialect string // "sqlite" or "postgres"
	// EntDialect is the ent dialect name (dialect.SQLite or dialect.Postgres).
	EntDialect string
	// Applied is the number of migrations applied when the store was opened.
	Applied int
	// DSN is the driver connection string (for PostgreSQL LISTEN connections).
	DSN string
}

// Open connects to databaseURL, applies pending migrations and returns the store.
// It returns an error for an unsupported URL, an unreachable database or a failed
// migration.
// Extra ent options (e.g. ent.Debug for query logging in tests) are passed to the client.
func Open(ctx context.Context, databaseURL string, opts ...ent.Option) (*Store, error) {
	return OpenWith(ctx, databaseURL, Options{EntOptions: opts})
}

// Options change how OpenWith opens the store.
type Options struct {
	// EntOptions are passed to the ent client.
	EntOptions []ent.Option
	// Tracer, when set, gives every statement sent through the ent client a span.
	Tracer trace.Tracer
}

// OpenWith is Open with options.
func OpenWith(ctx context.Context, databaseURL string, o Options) (*Store, error) {
	opts := o.EntOptions
	dialectName, dsn, err := parseURL(databaseURL)
	if err != nil {
		return nil, err
	}
	name := map[string]string{dialect.SQLite: "sqlite", dialect.Postgres: "postgres"}[dialectName]
	db, err := sql.Open(name, dsn)
	if err != nil {
		return nil, fmt.Errorf("store: open: %w", err)
	}
	if dialectName == dialect.SQLite {
		// One writer at a time: SQLite serializes writes anyway, and a single
		// connection avoids SQLITE_BUSY under concurrent requests.
		db.SetMaxOpenConns(1)
	} else {
		db.SetMaxOpenConns(25)
		db.SetMaxIdleConns(25)
		db.SetConnMaxIdleTime(5 * time.Minute)
	}
	pingCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := db.PingContext(pingCtx); err != nil {
		db.Close()
		return nil, fmt.Errorf("store: connect to %s: %w", dialectName, err)
	}
	applied, err := migrate.Apply(db, name)
	if err != nil {
		db.Close()
		return nil, err
	}
	var drv dialect.Driver = entsql.OpenDB(dialectName, db)
	if o.Tracer != nil {
		system := map[string]string{dialect.SQLite: "sqlite", dialect.Postgres: "postgresql"}[dialectName]
		drv = &tracedDriver{Driver: drv, tr: o.Tracer, system: system}
	}
	client := ent.NewClient(append([]ent.Option{ent.Driver(drv)}, opts...)...)
	return &Store{Client: client, DB: db, Dialect: name, EntDialect: dialectName, Applied: applied, DSN: dsn}, nil
}

// Close closes the database.
func (s *Store) Close() error { return s.Client.Close() }

// Ping reports whether the database answers (used by /readyz).
func (s *Store) Ping(ctx context.Context) error { return s.DB.PingContext(ctx) }

// parseURL maps DATABASE_URL to an ent dialect and a driver DSN.
func parseURL(raw string) (dialectName, dsn string, err error) {
	switch {
	case raw == "":
		raw = "sqlite:latchkey.db"
		fallthrough
	case strings.HasPrefix(raw, "sqlite:"):
		path := strings.TrimPrefix(strings.TrimPrefix(raw, "sqlite:"), "//")
		if path == "" {
			return "", "", fmt.Errorf("store: DATABASE_URL %q names no file", raw)
		}
		q := url.Values{}
		q.Add("_pragma", "foreign_keys(1)")
		q.Add("_pragma", "journal_mode(WAL)")
		q.Add("_pragma", "busy_timeout(5000)")
		q.Add("_pragma", "synchronous(NORMAL)")
		// A 64 MiB page cache (the default is 2 MiB): with less, a usage batch evicts
		// the index pages it is inserting into and rereads them, and half of the
		// writer's time went to those reads and writes.
		q.Add("_pragma", "cache_size(-65536)")
		// Checkpoint the WAL every 10,000 pages (40 MiB) instead of 1,000: the usage
		// batches rewrite the same last pages of the log's B-trees, and a checkpoint
		// copies each page once however often it was rewritten since the last one
		// (7% less CPU per stored usage event, measured).
		q.Add("_pragma", "wal_autocheckpoint(10000)")
		// Times as "2006-01-02 15:04:05.999999999-07:00"; the usage recorder writes its
		// rows' times as this text itself (usage.sqliteTimeFormat): change both together.
		q.Set("_time_format", "sqlite")
		return dialect.SQLite, "file:" + path + "?" + q.Encode(), nil
	case strings.HasPrefix(raw, "postgres://"), strings.HasPrefix(raw, "postgresql://"):
		u, err := url.Parse(raw)
		if err != nil {
			return "", "", fmt.Errorf("store: invalid DATABASE_URL")
		}
		q := u.Query()
		if q.Get("sslmode") == "" {
			q.Set("sslmode", "require")
			if isLoopback(u.Hostname()) {
				q.Set("sslmode", "disable")
			}
			u.RawQuery = q.Encode()
		}
		return dialect.Postgres, u.String(), nil
	default:
		return "", "", fmt.Errorf("store: DATABASE_URL must start with sqlite: or postgres://")
	}
}

func isLoopback(host string) bool {
	if host == "localhost" || host == "" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
