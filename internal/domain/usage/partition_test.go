package usage_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/latchkey/latchkey/ent/usagerollup"
	"github.com/latchkey/latchkey/internal/data/store"
	"github.com/latchkey/latchkey/internal/data/usagepart"
	"github.com/latchkey/latchkey/internal/domain/usage"
)

const day = 24 * time.Hour

type storedRow struct {
	id        int64
	partition string
	at        time.Time
}

// storedRows returns every usage_logs row with the partition that holds it, by id.
func storedRows(t *testing.T, st *store.Store) []storedRow {
	t.Helper()
	rows, err := st.DB.Query(`SELECT id, tableoid::regclass::text, at FROM usage_logs ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []storedRow
	for rows.Next() {
		var r storedRow
		if err := rows.Scan(&r.id, &r.partition, &r.at); err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func partitionDays(t *testing.T, st *store.Store) []time.Time {
	t.Helper()
	days, err := usagepart.Partitions(context.Background(), st.DB)
	if err != nil {
		t.Fatal(err)
	}
	return days
}

// On PostgreSQL usage_logs is partitioned by UTC day: the partitions of the coming days
// exist ahead of time, a batch spanning midnight lands in two partitions, a row outside
// every partition lands in the default one and moves to its own day's partition
// (same id), and retention drops whole expired partitions while the rollups stay.
func TestPartitions(t *testing.T) {
	ctx := context.Background()
	st := openStore(t, "postgres")
	now := time.Now().UTC()
	today := now.Truncate(day)

	// The migration prepared today and the next 7 days; Ensure adds what a later
	// clock needs, yesterday included, and is idempotent.
	days := partitionDays(t, st)
	for d := today; !d.After(today.Add(7 * day)); d = d.Add(day) {
		if !slices.ContainsFunc(days, d.Equal) {
			t.Fatalf("no partition for %s after migrating: %v", d.Format(time.DateOnly), days)
		}
	}
	later := now.Add(20 * day)
	n, err := usagepart.Ensure(ctx, st.DB, later, 3)
	if err != nil {
		t.Fatal(err)
	}
	if n != 5 { // later's yesterday, its day and 3 after
		t.Fatalf("Ensure created %d partitions, want 5", n)
	}
	if n, err := usagepart.Ensure(ctx, st.DB, later, 3); err != nil || n != 0 {
		t.Fatalf("second Ensure: %d, %v", n, err)
	}

	// A batch across midnight, and one row far outside every partition.
	r := usage.NewRecorder(st, usage.Config{Retention: 30 * day})
	midnight := today.Add(day)
	stray := time.Date(2020, 2, 29, 12, 0, 0, 0, time.UTC)
	ats := []time.Time{midnight.Add(-time.Microsecond), midnight, midnight.Add(time.Microsecond), stray, midnight.Add(-time.Hour)}
	for _, at := range ats {
		r.Record(usage.Event{TenantID: tenantA, APIKeyID: "key_a1", OperationType: "query", Outcome: usage.OutcomeOK, At: at})
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	rows := storedRows(t, st)
	if len(rows) != len(ats) {
		t.Fatalf("%d rows stored, want %d", len(rows), len(ats))
	}
	for i, row := range rows {
		want := usagepart.Name(ats[i])
		if ats[i].Equal(stray) {
			want = usagepart.DefaultPartition
		}
		if !row.at.Equal(ats[i]) || row.partition != want {
			t.Fatalf("row %d (id %d) at %v in %s, want %v in %s", i, row.id, row.at, row.partition, ats[i], want)
		}
		if i > 0 && row.id <= rows[i-1].id {
			t.Fatalf("ids not increasing: %+v", rows)
		}
	}

	if _, err := usagepart.Ensure(ctx, st.DB, now, usagepart.DefaultAhead); err != nil {
		t.Fatal(err)
	}
	moved := storedRows(t, st)
	for i, row := range moved {
		if row.id != rows[i].id || !row.at.Equal(rows[i].at) || row.partition != usagepart.Name(row.at) {
			t.Fatalf("after Ensure row %d = %+v, was %+v: want it in %s", i, row, rows[i], usagepart.Name(row.at))
		}
	}

	// Retention: the 2020 partition goes whole; the rows of today and tomorrow and
	// every hour and day rollup stay (folded first: tomorrow's minutes are after the
	// boundary); no partition within the retention is dropped.
	if _, err := r.Fold(ctx, midnight.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	logs, _, err := r.Prune(ctx, now)
	if err != nil {
		t.Fatal(err)
	}
	if logs != 1 {
		t.Fatalf("Prune dropped %d rows, want 1", logs)
	}
	if got := storedRows(t, st); len(got) != len(ats)-1 || slices.ContainsFunc(got, func(r storedRow) bool { return r.at.Equal(stray) }) {
		t.Fatalf("after Prune: %+v", got)
	}
	days = partitionDays(t, st)
	if days[0].Add(day).Before(now.Add(-30 * day)) {
		t.Fatalf("a partition older than the retention is left: %v", days)
	}
	for _, g := range []usagerollup.Granularity{usagerollup.GranularityHour, usagerollup.GranularityDay} {
		if got := sumRequests(t, st.Client, g); got != len(ats) {
			t.Errorf("%s rollups count %d, want %d (kept)", g, got, len(ats))
		}
	}

	// A partition is dropped only once its whole day is past the cutoff.
	noon := today.Add(12 * time.Hour)
	old := noon.Add(-30*day - 2*time.Hour) // before the cutoff, on the cutoff's day
	r.Record(usage.Event{TenantID: tenantA, APIKeyID: "key_a1", OperationType: "query", Outcome: usage.OutcomeOK, At: old})
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if _, _, err := r.Prune(ctx, noon); err != nil {
		t.Fatal(err)
	}
	if got := storedRows(t, st); len(got) != len(ats) || !got[len(got)-1].at.Equal(old) || got[len(got)-1].partition != usagepart.Name(old) {
		t.Fatalf("the row of the cutoff's day should stay: %+v", got)
	}
	if _, _, err := r.Prune(ctx, noon.Add(day)); err != nil {
		t.Fatal(err)
	}
	if got := storedRows(t, st); len(got) != len(ats)-1 {
		t.Fatalf("a day later the old row should be gone: %+v", got)
	}
}

// Several instances preparing partitions at once create each one exactly once, and
// none of them fails.
func TestPartitionsConcurrentEnsure(t *testing.T) {
	st := openStore(t, "postgres")
	later := time.Now().UTC().Add(40 * day)
	const instances = 4
	created := make(chan int, instances)
	errs := make(chan error, instances)
	for range instances {
		go func() {
			n, err := usagepart.Ensure(context.Background(), st.DB, later, 5)
			created <- n
			errs <- err
		}()
	}
	total := 0
	for range instances {
		total += <-created
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if total != 7 { // later's yesterday, its day and 5 after
		t.Fatalf("%d partitions created in all, want 7", total)
	}
}
