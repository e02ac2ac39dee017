// Command benchscale measures whether the cost of usage storage on PostgreSQL grows
// with the amount stored (`make bench-scale`; opt-in, minutes to run, gigabytes of
// disk while it runs).
//
// It creates two fresh databases on the PostgreSQL server (TEST_POSTGRES_URL, or the
// local one), migrates them, and fills usage_logs in the database with -rows rows
// (large) and -small rows (small), spread evenly over the -days days before today,
// generated inside PostgreSQL with generate_series (a day's rows go into a table of
// their own, which is then attached as that day's partition, indexes built at once),
// with hour and day rollups aggregated from them. Tenants and keys follow a skewed
// spread: one hot tenant has a fifth of the traffic. Then, in alternating rounds
// (small, large, small, ...), it measures on each database:
//
//   - ingest: the real usage recorder writing -ingest events in batches (COPY and the
//     rollup upsert, the server's defaults), events/s and the median batch write;
//   - usage: the `usage` query of the hot tenant, last 24 hours by HOUR and last
//     -days days by DAY (rollups), and grouped by OPERATION over the last hour (raw log);
//   - usageLogs: the request log's first page of 50 and the next one (cursor), of the
//     hot tenant and of one key, as the resolver pages it but without totalCount; and
//     the tenant's totalCount on its own, which is what a page with pageInfo or
//     totalCount also runs (entgql counts the whole connection then).
//
// It prints medians side by side with the ratio large/small, and the bytes stored per
// usage event (table, indexes and TOAST of all partitions, divided by the rows). The
// databases are dropped at the end unless -keep.
package main

import (
	"context"
	"database/sql"
	"flag"
	"fmt"
	"log"
	"os"
	"slices"
	"strings"
	"time"

	entsql "entgo.io/ent/dialect/sql"
	"github.com/lib/pq"

	"github.com/latchkey/latchkey/ent"
	"github.com/latchkey/latchkey/ent/usagelog"
	"github.com/latchkey/latchkey/internal/data/store"
	"github.com/latchkey/latchkey/internal/data/testdb"
	"github.com/latchkey/latchkey/internal/data/usagepart"
	"github.com/latchkey/latchkey/internal/domain/usage"
	"github.com/latchkey/latchkey/internal/platform/viewer"
)

type options struct {
	rows, small       int64
	days              int
	tenants, keys     int
	ingest            int
	rounds, queryRuns int
	keep              bool
}

func main() {
	var o options
	flag.Int64Var(&o.rows, "rows", 50_000_000, "usage rows of the large database")
	flag.Int64Var(&o.small, "small", 100_000, "usage rows of the small database")
	flag.IntVar(&o.days, "days", 30, "days the rows are spread over (the retention)")
	flag.IntVar(&o.tenants, "tenants", 100, "tenants")
	flag.IntVar(&o.keys, "keys", 1000, "API keys, spread over the tenants")
	flag.IntVar(&o.ingest, "ingest", 100_000, "events the recorder writes per ingest round")
	flag.IntVar(&o.rounds, "rounds", 3, "alternating rounds")
	flag.IntVar(&o.queryRuns, "runs", 15, "runs of each query per round")
	flag.BoolVar(&o.keep, "keep", false, "keep the databases (their URLs are printed)")
	flag.Parse()
	log.SetFlags(log.Ltime)
	if err := run(context.Background(), o); err != nil {
		log.Fatal(err)
	}
}

type target struct {
	name string
	rows int64
	st   *store.Store
}

func run(ctx context.Context, o options) error {
	var targets []*target
	for _, t := range []struct {
		name string
		rows int64
	}{{"small", o.small}, {"large", o.rows}} {
		url, cleanup, err := testdb.CreatePostgres(ctx, os.Getenv("TEST_POSTGRES_URL"))
		if err != nil {
			return err
		}
		if o.keep {
			log.Printf("%s database: %s", t.name, url)
		} else {
			defer cleanup()
		}
		st, err := store.Open(ctx, url)
		if err != nil {
			return err
		}
		defer st.Close()
		began := time.Now()
		if err := fill(ctx, st.DB, t.rows, o); err != nil {
			return fmt.Errorf("fill %s: %w", t.name, err)
		}
		took := time.Since(began)
		log.Printf("%s: %d rows in %s (%.0f rows/s)", t.name, t.rows, took.Round(time.Second), float64(t.rows)/took.Seconds())
		targets = append(targets, &target{name: t.name, rows: t.rows, st: st})
	}

	results := map[string]map[string][]float64{} // measure -> target -> values (ms or events/s)
	add := func(measure, target string, v float64) {
		if results[measure] == nil {
			results[measure] = map[string][]float64{}
		}
		results[measure][target] = append(results[measure][target], v)
	}
	var order []string
	for round := range o.rounds {
		for _, t := range targets {
			ms, err := measure(ctx, t, o)
			if err != nil {
				return fmt.Errorf("round %d, %s: %w", round+1, t.name, err)
			}
			for _, m := range ms {
				if round == 0 && t == targets[0] {
					order = append(order, m.name)
				}
				add(m.name, t.name, m.value)
			}
			log.Printf("round %d: %s measured", round+1, t.name)
		}
	}

	fmt.Printf("\nusage storage at scale: %d vs %d stored rows over %d days, %d tenants, %d keys; medians of %d alternating rounds\n\n",
		o.small, o.rows, o.days, o.tenants, o.keys, o.rounds)
	fmt.Printf("| measure | %s rows | %s rows | large / small |\n|---|---|---|---|\n", human(o.small), human(o.rows))
	for _, name := range order {
		s, l := median(results[name]["small"]), median(results[name]["large"])
		fmt.Printf("| %s | %s | %s | %.2f |\n", name, format(name, s), format(name, l), l/s)
	}
	fmt.Println()
	for _, t := range targets {
		b, n, err := bytesPerRow(ctx, t.st.DB)
		if err != nil {
			return err
		}
		fmt.Printf("PostgreSQL, %s: %d rows stored, %.0f bytes per usage event (heap %.0f + indexes %.0f), %.1f GB\n",
			t.name, n, b.total, b.heap, b.indexes, b.total*float64(n)/1e9)
		if err := printIndexes(ctx, t.st.DB, n); err != nil {
			return err
		}
	}
	return sqliteBytes(ctx, o)
}

// printIndexes prints the bytes per row of each index of usage_logs, over every
// partition.
func printIndexes(ctx context.Context, db *sql.DB, n int64) error {
	rows, err := db.QueryContext(ctx, `SELECT p.relname, sum(pg_relation_size(c.oid))
		FROM pg_class p JOIN pg_inherits i ON i.inhparent = p.oid JOIN pg_class c ON c.oid = i.inhrelid
		WHERE p.relkind = 'I' AND p.oid IN (SELECT indexrelid FROM pg_index WHERE indrelid = 'usage_logs'::regclass)
		GROUP BY 1 ORDER BY 1`)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var name string
		var size int64
		if err := rows.Scan(&name, &size); err != nil {
			return err
		}
		fmt.Printf("  index %s: %.0f bytes per event\n", name, float64(size)/float64(n))
	}
	return rows.Err()
}

// sqliteBytes writes o.ingest events with the recorder into a fresh SQLite file and
// prints the bytes per usage event of usage_logs and of each of its indexes (dbstat).
func sqliteBytes(ctx context.Context, o options) error {
	dir, err := os.MkdirTemp("", "benchscale")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	st, err := store.Open(ctx, "sqlite:"+dir+"/usage.db")
	if err != nil {
		return err
	}
	defer st.Close()
	n := max(o.ingest, 200_000)
	if _, _, err := ingest(ctx, st, options{ingest: n, keys: o.keys, tenants: o.tenants}); err != nil {
		return err
	}
	rows, err := st.DB.QueryContext(ctx, `SELECT name, sum(pgsize) FROM dbstat
		WHERE name = 'usage_logs' OR name IN (SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'usage_logs')
		GROUP BY name ORDER BY name = 'usage_logs' DESC, name`)
	if err != nil {
		return fmt.Errorf("sqlite dbstat: %w", err)
	}
	defer rows.Close()
	var total int64
	var lines []string
	for rows.Next() {
		var name string
		var size int64
		if err := rows.Scan(&name, &size); err != nil {
			return err
		}
		total += size
		lines = append(lines, fmt.Sprintf("  %s: %.0f bytes per event", name, float64(size)/float64(n)))
	}
	if err := rows.Err(); err != nil {
		return err
	}
	fmt.Printf("SQLite: %d rows stored, %.0f bytes per usage event, indexes included\n%s\n", n, float64(total)/float64(n), strings.Join(lines, "\n"))
	return nil
}

func human(n int64) string {
	switch {
	case n >= 1_000_000:
		return fmt.Sprintf("%gM", float64(n)/1e6)
	case n >= 1_000:
		return fmt.Sprintf("%gk", float64(n)/1e3)
	}
	return fmt.Sprint(n)
}

func format(name string, v float64) string {
	if strings.HasSuffix(name, "events/s") {
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.2f ms", v)
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}

// ID of tenant i and key k, shaped like real ones (ten_ + 26 characters).
const idSQL = `'%s_01jd' || lpad((%s)::text, 22, '0')`

func tenantSQL(expr string) string { return fmt.Sprintf(idSQL, "ten", expr) }
func keySQL(expr string) string    { return fmt.Sprintf(idSQL, "key", expr) }

// fill stores rows usage rows over the o.days days before today: each day in a table
// of its own, attached as the day's partition (PostgreSQL builds its indexes then),
// and the day's hour and day rollups.
func fill(ctx context.Context, db *sql.DB, rows int64, o options) error {
	today := time.Now().UTC().Truncate(24 * time.Hour)
	perDay := rows / int64(o.days)
	var next int64
	for i := o.days; i >= 1; i-- {
		d := today.Add(-time.Duration(i) * 24 * time.Hour)
		n := perDay
		if i == 1 {
			n = rows - next // the rest
		}
		name := usagepart.Name(d)
		q := pq.QuoteIdentifier(name)
		lo, hi := d.Format(time.RFC3339), d.Add(24*time.Hour).Format(time.RFC3339)
		// key k (0 <= k < keys) belongs to tenant k % tenants; every fifth row is the
		// hot tenant's (tenant 0: keys 0, tenants, 2*tenants, ...).
		hotKeys := (o.keys + o.tenants - 1) / o.tenants
		k := fmt.Sprintf(`CASE WHEN g %% 5 = 0 THEN ((g / 5) %% %d) * %d ELSE (g * 7919) %% %d END`, hotKeys, o.tenants, o.keys)
		stmts := []string{
			`DROP TABLE IF EXISTS ` + q, // an empty partition the server made (yesterday)
			`CREATE TABLE ` + q + ` (LIKE usage_logs INCLUDING DEFAULTS)`,
			fmt.Sprintf(`INSERT INTO %s (id, tenant_id, api_key_id, owner_id, operation_name, operation_type, root_fields, outcome, latency_ms, ip, at)
				SELECT %d + g, %s, %s,
					CASE WHEN g %% 4 = 3 THEN 'cust_' || (g %% 5000) END,
					(ARRAY['GetKeys', 'ListWebhooks', 'Viewer', 'GET /documents'])[1 + g %% 4],
					(ARRAY['query', 'mutation', 'query', 'verify'])[1 + g %% 4],
					(ARRAY['["apiKeys"]'::jsonb, '["updateApiKey"]'::jsonb, '["viewer"]'::jsonb, NULL])[1 + g %% 4],
					CASE WHEN g %% 97 = 0 THEN 'rate_limited' WHEN g %% 89 = 0 THEN 'error' WHEN g %% 4 = 3 THEN 'valid' ELSE 'ok' END,
					(g * 7) %% 700, '203.0.113.' || (g %% 250),
					%s::timestamptz + (g - 1) * interval '86400 seconds' / %d
				FROM generate_series(1::bigint, %d) g`,
				q, next, tenantSQL("("+k+") % "+fmt.Sprint(o.tenants)), keySQL(k), pq.QuoteLiteral(lo), n, n),
			fmt.Sprintf(`ALTER TABLE %s ADD CONSTRAINT bench_range CHECK (at >= %s AND at < %s)`, q, pq.QuoteLiteral(lo), pq.QuoteLiteral(hi)),
			fmt.Sprintf(`ALTER TABLE usage_logs ATTACH PARTITION %s FOR VALUES FROM (%s) TO (%s)`, q, pq.QuoteLiteral(lo), pq.QuoteLiteral(hi)),
			`ALTER TABLE ` + q + ` DROP CONSTRAINT bench_range`,
		}
		for _, gran := range []string{"hour", "day"} {
			stmts = append(stmts, fmt.Sprintf(`INSERT INTO usage_rollups (tenant_id, api_key_id, granularity, bucket_start, requests, errors, rate_limited,
					quota_exceeded, uncharged, latency_sum_ms, lat_a, lat_b, lat_c, lat_d, lat_e, lat_f, lat_g, lat_h, lat_i, lat_j, lat_k, lat_l, lat_m, lat_n, lat_o, lat_p)
				SELECT tenant_id, api_key_id, '%s', date_trunc('%s', at, 'UTC'), count(*), count(*) FILTER (WHERE outcome = 'error'),
					count(*) FILTER (WHERE outcome = 'rate_limited'), 0, 0, sum(latency_ms), 0, 0, 0, 0, 0, count(*), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0
				FROM %s GROUP BY 1, 2, 4`, gran, gran, q))
		}
		for _, s := range stmts {
			if _, err := db.ExecContext(ctx, s); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
		}
		next += n
		log.Printf("  %s: %d rows (%d of %d)", name, n, next, rows)
	}
	if _, err := db.ExecContext(ctx, `SELECT setval(pg_get_serial_sequence('usage_logs', 'id'), $1)`, max(next, 1)); err != nil {
		return err
	}
	_, err := db.ExecContext(ctx, `ANALYZE usage_logs; ANALYZE usage_rollups`)
	return err
}

type result struct {
	name  string
	value float64
}

// measure runs one round of every measure on t.
func measure(ctx context.Context, t *target, o options) ([]result, error) {
	var out []result
	rate, batch, err := ingest(ctx, t.st, o)
	if err != nil {
		return nil, err
	}
	out = append(out, result{"ingest, events/s", rate}, result{"ingest, median batch write", batch})

	hot := tenantID(0)
	hotKey := keyID(0)
	vctx := viewer.NewContext(ctx, &viewer.Viewer{APIKeyID: "key_bench", TenantID: hot, Scopes: []string{"usage:read"}})
	now := time.Now()
	client := t.st.Client
	queries := []struct {
		name string
		f    func() error
	}{
		{"usage, 24 h by HOUR", func() error {
			_, err := usage.QueryGrouped(vctx, client, "postgres", nil, now.Add(-24*time.Hour), now, usage.IntervalHour, usage.GroupNone)
			return err
		}},
		{fmt.Sprintf("usage, %d days by DAY", o.days), func() error {
			_, err := usage.QueryGrouped(vctx, client, "postgres", nil, now.Add(-time.Duration(o.days)*24*time.Hour), now, usage.IntervalDay, usage.GroupNone)
			return err
		}},
		{"usage, last hour by OPERATION (raw log)", func() error {
			_, err := usage.QueryGrouped(vctx, client, "postgres", nil, now.Add(-time.Hour), now, usage.IntervalMinute, usage.GroupOperation)
			return err
		}},
		{"usageLogs, tenant: first page and next", func() error { return pages(vctx, client, nil) }},
		{"usageLogs, one key: first page and next", func() error { return pages(vctx, client, &hotKey) }},
		{"usageLogs totalCount (tenant)", func() error {
			_, err := client.UsageLog.Query().Count(vctx)
			return err
		}},
	}
	for _, q := range queries {
		var ms []float64
		for range o.queryRuns {
			began := time.Now()
			if err := q.f(); err != nil {
				return nil, fmt.Errorf("%s: %w", q.name, err)
			}
			ms = append(ms, float64(time.Since(began).Microseconds())/1000)
		}
		out = append(out, result{q.name, median(ms)})
	}
	return out, nil
}

func tenantID(i int) string { return fmt.Sprintf("ten_01jd%022d", i) }
func keyID(k int) string    { return fmt.Sprintf("key_01jd%022d", k) }

// pages reads the request log's first page of 50, newest first, and the next one, as
// the usageLogs resolver does, without totalCount (no GraphQL field context here:
// entgql would count; the count is measured on its own).
func pages(ctx context.Context, client *ent.Client, apiKeyID *string) error {
	first := 50
	q := func() *ent.UsageLogQuery {
		q := client.UsageLog.Query().Order(usagelog.ByAt(entsql.OrderDesc()), usagelog.ByID(entsql.OrderDesc())).Limit(first + 1)
		if apiKeyID != nil {
			q = q.Where(usagelog.APIKeyID(*apiKeyID))
		}
		return q
	}
	rows, err := q().All(ctx)
	if err != nil {
		return err
	}
	if len(rows) < first+1 {
		return fmt.Errorf("first page: %d rows", len(rows))
	}
	last := rows[first-1]
	rows, err = q().Where(usagelog.Or(usagelog.AtLT(last.At), usagelog.And(usagelog.AtEQ(last.At), usagelog.IDLT(last.ID)))).All(ctx)
	if err != nil {
		return err
	}
	if len(rows) == 0 {
		return fmt.Errorf("second page empty")
	}
	return nil
}

// ingest writes o.ingest events of the hot tenant's keys and others with a running
// recorder (the server's defaults, waiting instead of dropping), and returns events/s
// from the first Record to the end of Flush and the median batch write in ms.
func ingest(ctx context.Context, st *store.Store, o options) (float64, float64, error) {
	var writes []float64
	r := usage.NewRecorder(st, usage.Config{BlockTimeout: time.Minute, OnWrite: func(n int, took time.Duration, err error) {
		if err == nil && n == usage.DefaultBatchSize {
			writes = append(writes, float64(took.Microseconds())/1000)
		}
	}})
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- r.Run(rctx) }()
	defer func() { cancel(); <-done }() // Run returns once its queue is written
	now := time.Now()
	began := time.Now()
	for i := range o.ingest {
		k := (i * 7919) % o.keys
		if i%5 == 0 {
			k = ((i / 5) % ((o.keys + o.tenants - 1) / o.tenants)) * o.tenants
		}
		r.Record(usage.Event{
			TenantID: tenantID(k % o.tenants), APIKeyID: keyID(k), OperationName: "GetKeys", OperationType: "query",
			RootFields: []string{"apiKeys"}, Outcome: usage.OutcomeOK, LatencyMs: i % 700, IP: "203.0.113.9",
			At: now.Add(time.Duration(i) * time.Microsecond),
		})
	}
	if err := r.Flush(ctx); err != nil {
		return 0, 0, err
	}
	took := time.Since(began)
	if s := r.Stats(); s.Dropped != 0 {
		return 0, 0, fmt.Errorf("ingest dropped %d events", s.Dropped)
	}
	return float64(o.ingest) / took.Seconds(), median(writes), nil
}

type sizes struct{ total, heap, indexes float64 }

// bytesPerRow returns the bytes per usage_logs row, over every partition: heap (with
// TOAST) and indexes.
func bytesPerRow(ctx context.Context, db *sql.DB) (sizes, int64, error) {
	var heap, idx, n int64
	err := db.QueryRowContext(ctx, `SELECT coalesce(sum(pg_table_size(c.oid)), 0), coalesce(sum(pg_indexes_size(c.oid)), 0)
		FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'usage_logs'::regclass`).Scan(&heap, &idx)
	if err != nil {
		return sizes{}, 0, err
	}
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM usage_logs`).Scan(&n); err != nil {
		return sizes{}, 0, err
	}
	if n == 0 {
		return sizes{}, 0, nil
	}
	f := float64(n)
	return sizes{total: float64(heap+idx) / f, heap: float64(heap) / f, indexes: float64(idx) / f}, n, nil
}
