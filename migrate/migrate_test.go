package migrate_test

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

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
// migrateBefore opens a new database of dialect d and applies the migrations before
// the one named suffix (its file name after the version). It returns the database and
// the migrator, closed when the test ends.
func migrateBefore(t *testing.T, d, suffix string) (*sql.DB, *gm.Migrate) {
	t.Helper()
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
	t.Cleanup(func() { db.Close() })
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
	files, _ := filepath.Glob(filepath.Join(d, "*_"+suffix+".up.sql"))
	if len(files) != 1 {
		t.Fatalf("%s migration: %v", suffix, files)
	}
	version, _ := strconv.ParseUint(strings.SplitN(filepath.Base(files[0]), "_", 2)[0], 10, 64)
	prev, err := src.Prev(uint(version))
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Migrate(prev); err != nil {
		t.Fatal(err)
	}
	return db, m
}

// The usage_folds migration starts the fold at the epoch in a database without usage
// (nothing is folded yet), and at the next minute in one with rollups, which the
// recorder wrote at every level until then. SQLite's time is the text the server's
// driver writes, so that it compares with the rollups' times.
func TestUsageFoldsStart(t *testing.T) {
	for _, d := range testdb.Dialects {
		for _, withUsage := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/usage=%v", d, withUsage), func(t *testing.T) {
				db, m := migrateBefore(t, d, "usage_folds")
				if withUsage {
					if _, err := db.Exec(`INSERT INTO usage_rollups (tenant_id, api_key_id, granularity, bucket_start, requests, errors,
						rate_limited, quota_exceeded, uncharged, latency_sum_ms, lat_a, lat_b, lat_c, lat_d, lat_e, lat_f, lat_g, lat_h,
						lat_i, lat_j, lat_k, lat_l, lat_m, lat_n, lat_o, lat_p) VALUES ('ten_1', 'key_1', 'minute', '2026-11-01 10:00:00+00:00',
						1, 0, 0, 0, 0, 5, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)`); err != nil {
						t.Fatal(err)
					}
				}
				before := time.Now().UTC()
				if err := m.Up(); err != nil {
					t.Fatal(err)
				}
				after := time.Now().UTC()
				var raw any
				q := `SELECT folded_before FROM usage_folds WHERE id = 1`
				if d == "sqlite" {
					q = `SELECT CAST(folded_before AS TEXT) FROM usage_folds WHERE id = 1` // as stored
				}
				if err := db.QueryRow(q).Scan(&raw); err != nil {
					t.Fatal(err)
				}
				var got time.Time
				switch v := raw.(type) {
				case time.Time:
					got = v.UTC()
				case string:
					p, err := time.Parse("2006-01-02 15:04:05.999999999-07:00", v)
					if err != nil || p.UTC().Format("2006-01-02 15:04:05.999999999-07:00") != v {
						t.Fatalf("folded_before %q is not in the driver's form (%v)", v, err)
					}
					got = p.UTC()
				default:
					t.Fatalf("folded_before is a %T", raw)
				}
				if !withUsage {
					if !got.Equal(time.Unix(0, 0)) {
						t.Fatalf("folded_before = %v in a new database, want the epoch", got)
					}
					return
				}
				lo, hi := before.Truncate(time.Minute).Add(time.Minute), after.Truncate(time.Minute).Add(time.Minute)
				if got.Before(lo) || got.After(hi) || !got.Equal(got.Truncate(time.Minute)) {
					t.Fatalf("folded_before = %v, want the minute after the migration (%v to %v)", got, lo, hi)
				}
			})
		}
	}
}

func TestLockBackfill(t *testing.T) {
	for _, d := range testdb.Dialects {
		t.Run(d, func(t *testing.T) {
			db, m := migrateBefore(t, d, "key_limits_locked")
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

// The migration that partitions usage_logs (PostgreSQL) moves every row intact, each
// into its day's partition, and carries the id sequence on (ids of deleted rows are
// not reused); its down migration gives the same rows back in a plain table.
func TestUsageLogsPartitioned(t *testing.T) {
	db, m := migrateBefore(t, "postgres", "usage_logs_partitioned")
	exec := func(q string, args ...any) {
		t.Helper()
		if _, err := db.Exec(q, args...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	exec(`INSERT INTO usage_logs (id, tenant_id, api_key_id, owner_id, operation_name, operation_type, root_fields, outcome, latency_ms, ip, at) VALUES
		(1, 'ten_1', 'key_1', NULL, 'Op', 'query', '["viewer","node"]', 'ok', 12, '10.0.0.1', '2019-03-01T23:59:59.999999Z'),
		(2, 'ten_1', 'key_1', 'cust_1', 'GET /x', 'verify', NULL, 'valid', 0, '', '2019-03-02T00:00:00Z'),
		(7, 'ten_2', 'key_2', NULL, '', 'mutation', '[]', 'error', 99999, '::1', '2019-03-02T13:14:15.5Z'),
		(40, 'ten_2', 'key_2', NULL, 'Now', 'query', '["viewer"]', 'rate_limited', 3, '192.0.2.1', now())`)
	exec(`SELECT setval(pg_get_serial_sequence('usage_logs', 'id'), 50)`) // rows up to 50 were written, some pruned
	const dump = `SELECT id, tenant_id, api_key_id, coalesce(owner_id, '<nil>'), operation_name, operation_type,
		coalesce(root_fields::text, '<nil>'), outcome, latency_ms, ip, at FROM usage_logs ORDER BY id`
	read := func() []string {
		t.Helper()
		rows, err := db.Query(dump)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var out []string
		for rows.Next() {
			v := make([]any, 11)
			p := make([]any, 11)
			for i := range v {
				p[i] = &v[i]
			}
			if err := rows.Scan(p...); err != nil {
				t.Fatal(err)
			}
			s := ""
			for _, x := range v {
				if tm, ok := x.(time.Time); ok {
					x = tm.UTC().Format(time.RFC3339Nano)
				}
				s += fmt.Sprintf("%v|", x)
			}
			out = append(out, s)
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		return out
	}
	kind := func() string {
		t.Helper()
		var k string
		if err := db.QueryRow(`SELECT relkind FROM pg_class WHERE oid = 'usage_logs'::regclass`).Scan(&k); err != nil {
			t.Fatal(err)
		}
		return k
	}
	nextID := func() int64 {
		t.Helper()
		var id int64
		if err := db.QueryRow(`INSERT INTO usage_logs (tenant_id, api_key_id, operation_type, outcome, latency_ms, at) VALUES ('ten_1', 'key_1', 'query', 'ok', 1, now()) RETURNING id`).Scan(&id); err != nil {
			t.Fatal(err)
		}
		exec(`DELETE FROM usage_logs WHERE id = $1`, id)
		return id
	}
	before := read()

	if err := m.Steps(1); err != nil { // the partitioning migration
		t.Fatal(err)
	}
	if k := kind(); k != "p" {
		t.Fatalf("usage_logs relkind %q after the migration, want p (partitioned)", k)
	}
	if got := read(); !slices.Equal(got, before) {
		t.Fatalf("rows changed by the migration:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(before, "\n"))
	}
	parts := map[int64]string{}
	rows, err := db.Query(`SELECT id, tableoid::regclass::text FROM usage_logs`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id int64
		var p string
		if err := rows.Scan(&id, &p); err != nil {
			t.Fatal(err)
		}
		parts[id] = p
	}
	rows.Close()
	today := "usage_logs_p" + time.Now().UTC().Format("20060102")
	if want := map[int64]string{1: "usage_logs_p20190301", 2: "usage_logs_p20190302", 7: "usage_logs_p20190302", 40: today}; !maps.Equal(parts, want) {
		t.Fatalf("partitions %v, want %v", parts, want)
	}
	var ahead bool
	if err := db.QueryRow(`SELECT to_regclass($1) IS NOT NULL`, "usage_logs_p"+time.Now().UTC().Add(7*24*time.Hour).Format("20060102")).Scan(&ahead); err != nil || !ahead {
		t.Fatalf("no partition a week ahead: %v", err)
	}
	if id := nextID(); id != 51 {
		t.Fatalf("next id %d after the migration, want 51", id)
	}

	if err := m.Steps(-1); err != nil {
		t.Fatalf("down: %v", err)
	}
	if k := kind(); k != "r" {
		t.Fatalf("usage_logs relkind %q after the down migration, want r", k)
	}
	if got := read(); !slices.Equal(got, before) {
		t.Fatalf("rows changed by the down migration:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(before, "\n"))
	}
	if id := nextID(); id != 52 {
		t.Fatalf("next id %d after the down migration, want 52", id)
	}
	if err := m.Up(); err != nil {
		t.Fatalf("up again: %v", err)
	}
	if got := read(); !slices.Equal(got, before) {
		t.Fatal("rows changed by migrating up again")
	}
}

// The drift check ignores the partitioning of usage_logs and nothing else: another
// difference in that very table is still reported, the primary key is not.
func TestIgnorePartitionsOnlyPartitions(t *testing.T) {
	ctx := context.Background()
	s, err := store.Open(ctx, testdb.URL(t, "postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, q := range []string{`DROP INDEX usagelog_at`, `ALTER TABLE usage_logs DROP COLUMN ip`} {
		if _, err := s.DB.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	var buf bytes.Buffer
	if err := s.Client.Schema.WriteTo(ctx, &buf, migrate.IgnorePartitions()); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	if !strings.Contains(out, `"usagelog_at"`) || !strings.Contains(out, `ADD COLUMN "ip"`) {
		t.Fatalf("the index and column differences are not reported:\n%s", out)
	}
	if strings.Contains(strings.ToUpper(out), "PRIMARY KEY") || strings.Contains(out, "PARTITION") {
		t.Fatalf("the partitioning is reported:\n%s", out)
	}
}
