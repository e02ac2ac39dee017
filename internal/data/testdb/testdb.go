// Package testdb creates throwaway databases for tests and for the migration generator.
//
// Tests run every storage path on SQLite and on PostgreSQL. PostgreSQL is required:
// when it cannot be reached the tests fail with a message saying what they need; they
// never skip. TEST_POSTGRES_URL points at the server (default: the local trust-auth
// server, database test).
package testdb

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/lib/pq"
)

// DefaultPostgresURL is the server the tests use when TEST_POSTGRES_URL is unset.
const DefaultPostgresURL = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

// Dialects are the storage back ends every storage test runs on.
var Dialects = []string{"sqlite", "postgres"}

// CreatePostgres creates a fresh, empty database on the server at serverURL (or the
// default) and returns its URL and a function that drops it.
// It returns an error when the server cannot be reached.
func CreatePostgres(ctx context.Context, serverURL string) (string, func(), error) {
	if serverURL == "" {
		serverURL = DefaultPostgresURL
	}
	admin, err := sql.Open("postgres", serverURL)
	if err != nil {
		return "", nil, err
	}
	pingCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := admin.PingContext(pingCtx); err != nil {
		admin.Close()
		return "", nil, fmt.Errorf("PostgreSQL at %s is not reachable (%v); start it (see README: Tests) or set TEST_POSTGRES_URL", redact(serverURL), err)
	}
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	name := "latchkey_t_" + hex.EncodeToString(b)
	if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+pq.QuoteIdentifier(name)); err != nil {
		admin.Close()
		return "", nil, fmt.Errorf("create database: %w", err)
	}
	u, err := url.Parse(serverURL)
	if err != nil {
		admin.Close()
		return "", nil, err
	}
	u.Path = "/" + name
	cleanup := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, _ = admin.ExecContext(ctx, "DROP DATABASE IF EXISTS "+pq.QuoteIdentifier(name)+" WITH (FORCE)")
		admin.Close()
	}
	return u.String(), cleanup, nil
}

// URL returns a DATABASE_URL for a fresh database of the given dialect ("sqlite" or
// "postgres"), removed when the test ends. A PostgreSQL server that cannot be reached
// fails the test.
func URL(t testing.TB, dialect string) string {
	t.Helper()
	switch dialect {
	case "sqlite":
		return "sqlite:" + filepath.Join(t.TempDir(), "test.db")
	case "postgres":
		u, cleanup, err := CreatePostgres(context.Background(), os.Getenv("TEST_POSTGRES_URL"))
		if err != nil {
			t.Fatalf("testdb: %v", err)
		}
		t.Cleanup(cleanup)
		return u
	default:
		t.Fatalf("testdb: unknown dialect %q", dialect)
		return ""
	}
}

func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(invalid URL)"
	}
	return u.Redacted()
}
