package migrate_test

import (
	"bytes"
	"context"
	"database/sql"
	"maps"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	gm "github.com/golang-migrate/migrate/v4"
	"github.com/golang-migrate/migrate/v4/database"
	"github.com/golang-migrate/migrate/v4/database/postgres"
	"github.com/golang-migrate/migrate/v4/database/sqlite"
	"github.com/golang-migrate/migrate/v4/source/iofs"
	_ "github.com/lib/pq"
	_ "modernc.org/sqlite"

	"github.com/latchkey/latchkey/internal/data/store"
	"github.com/latchkey/latchkey/internal/data/testdb"
	"github.com/latchkey/latchkey/migrate"
)

// The migrations apply on a fresh database, a second start applies nothing, and the
// migrated schema equals the ent schema (so a schema change without a new migration
// fails here).
func TestMigrationsApplyOnceAndMatchSchema(t *testing.T) {
	for _, d := range testdb.Dialects {
		t.Run(d, func(t *testing.T) {
			ctx := context.Background()
			url := testdb.URL(t, d)
			s, err := store.Open(ctx, url)
			if err != nil {
				t.Fatal(err)
			}
			if s.Applied == 0 {
				t.Fatal("first open applied no migration")
			}
			s.Close()
			s, err = store.Open(ctx, url)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if s.Applied != 0 {
				t.Fatalf("second open applied %d migrations, want 0", s.Applied)
			}
			var buf bytes.Buffer
			if err := s.Client.Schema.WriteTo(ctx, &buf, migrate.IgnorePartitions()); err != nil {
				t.Fatal(err)
			}
			var pending []string
			for _, line := range strings.Split(buf.String(), "\n") {
				line = strings.TrimSpace(line)
				if line == "" || line == "BEGIN;" || line == "COMMIT;" || strings.HasPrefix(line, "--") {
					continue
				}
				pending = append(pending, line)
			}
			if len(pending) > 0 {
				t.Fatalf("ent schema differs from the migrations; run `go run ./migrate/gen -name NAME`:\n%s", strings.Join(pending, "\n"))
			}
		})
	}
}

// Keys that existed before limits_locked and expiry_locked did: who set their limits
// and expiries was not recorded, so the migration locks every tenant key's settings
// that were set (a platform admin can unlock them); admin keys and unset settings
// stay unlocked. The migration also reverses.
func TestLockBackfill(t *testing.T) {
	for _, d := range testdb.Dialects {
		t.Run(d, func(t *testing.T) {
			url := testdb.URL(t, d)
			var (
				db  *sql.DB
				err error
				drv database.Driver
			)
			if d == "sqlite" {
				db, err = sql.Open("sqlite", "file:"+strings.TrimPrefix(url, "sqlite:")+"?_pragma=foreign_keys(1)")
			} else {
				db, err = sql.Open("postgres", url)
			}
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			if d == "sqlite" {
				drv, err = sqlite.WithInstance(db, &sqlite.Config{})
			} else {
				drv, err = postgres.WithInstance(db, &postgres.Config{})
			}
			if err != nil {
				t.Fatal(err)
			}
			src, err := iofs.New(os.DirFS("."), d)
			if err != nil {
				t.Fatal(err)
			}
			m, err := gm.NewWithInstance("iofs", src, d, drv)
			if err != nil {
				t.Fatal(err)
			}
			files, _ := filepath.Glob(filepath.Join(d, "*_key_limits_locked.up.sql"))
			if len(files) != 1 {
				t.Fatalf("key_limits_locked migration: %v", files)
			}
			version, _ := strconv.ParseUint(strings.SplitN(filepath.Base(files[0]), "_", 2)[0], 10, 64)
			prev, err := src.Prev(uint(version))
			if err != nil {
				t.Fatal(err)
			}
			if err := m.Migrate(prev); err != nil {
				t.Fatal(err)
			}
			const at = `'2026-11-01T00:00:00Z'`
			stmts := []string{
				`INSERT INTO tenants (id, created_at, updated_at, name, slug) VALUES ('ten_1', ` + at + `, ` + at + `, 'T', 'tee')`,
			}
			for _, k := range []struct{ id, tenant, cols, vals string }{
				{"key_plain", "'ten_1'", "", ""},
				{"key_rate", "'ten_1'", ", rate_limit, rate_limit_window_seconds", ", 5, 60"},
				{"key_quota", "'ten_1'", ", quota, quota_period", ", 50, 'MONTH'"},
				{"key_expiry", "'ten_1'", ", expires_at", ", " + at},
				{"key_admin", "NULL", ", rate_limit, expires_at", ", 5, " + at},
			} {
				stmts = append(stmts, `INSERT INTO api_keys (id, created_at, updated_at, name, prefix, hash, scopes, tenant_id`+k.cols+`) VALUES ('`+k.id+`', `+at+`, `+at+`, 'k', 'lk_live_x', '`+k.id+`', '[]', `+k.tenant+k.vals+`)`)
			}
			for _, s := range stmts {
				if _, err := db.Exec(s); err != nil {
					t.Fatalf("%s: %v", s, err)
				}
			}
			if err := m.Up(); err != nil {
				t.Fatal(err)
			}
			rows, err := db.Query(`SELECT id, limits_locked, expiry_locked FROM api_keys ORDER BY id`)
			if err != nil {
				t.Fatal(err)
			}
			got := map[string][2]bool{}
			for rows.Next() {
				var id string
				var l, e bool
				if err := rows.Scan(&id, &l, &e); err != nil {
					t.Fatal(err)
				}
				got[id] = [2]bool{l, e}
			}
			if err := rows.Err(); err != nil {
				t.Fatal(err)
			}
			want := map[string][2]bool{
				"key_plain": {false, false}, "key_rate": {true, false}, "key_quota": {true, false},
				"key_expiry": {false, true}, "key_admin": {false, false},
			}
			if !maps.Equal(got, want) {
				t.Fatalf("locks (limits, expiry) = %v, want %v", got, want)
			}
			if err := m.Steps(-1); err != nil {
				t.Fatalf("down: %v", err)
			}
			if err := m.Up(); err != nil {
				t.Fatalf("up again: %v", err)
			}
		})
	}
}
