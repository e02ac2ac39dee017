package usage_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/latchkey/latchkey/internal/data/testdb"
	"github.com/latchkey/latchkey/internal/domain/usage"
	"github.com/latchkey/latchkey/internal/platform/viewer"
)

// expectedGrouped computes the grouped buckets a query should return, independently
// of the recorder and the database: whole buckets starting in [from, to).
func expectedGrouped(evs []usage.Event, keep func(usage.Event) bool, group func(usage.Event) string, step time.Duration, from, to time.Time) map[string]usage.Bucket {
	out := map[string]usage.Bucket{}
	start := from.UTC().Truncate(step)
	for _, ev := range evs {
		s := ev.At.UTC().Truncate(step)
		if !keep(ev) || s.Before(start) || !s.Before(to) {
			continue
		}
		k := s.Format(time.RFC3339) + " " + group(ev)
		b := out[k]
		b.Start = s
		b.Requests++
		switch ev.Outcome {
		case usage.OutcomeError, usage.OutcomeForbidden:
			b.Errors++
		case usage.OutcomeRateLimited:
			b.RateLimited++
		case usage.OutcomeQuotaExceeded:
			b.QuotaExceeded++
		}
		b.Histogram.Observe(ev.LatencyMs)
		out[k] = b
	}
	return out
}

// Usage grouped by key (rollups) and by operation (the stored events) gives the same
// counts and histograms as the events themselves, per tenant, on both databases.
func TestQueryGrouped(t *testing.T) {
	const n = 1200
	evs := fixtureEvents(n)
	bg := context.Background()
	ctxA := viewer.NewContext(bg, &viewer.Viewer{TenantID: tenantA, Scopes: []string{viewer.ScopeUsageRead}})
	byTenant := func(ev usage.Event) bool { return ev.TenantID == tenantA }
	first := evs[0].At
	for _, ev := range evs {
		if ev.At.Before(first) {
			first = ev.At
		}
	}
	// The range starts and ends inside buckets of every interval.
	from, to := first.Add(26*time.Hour+90*time.Second), first.Add(50*time.Hour+30*time.Second)
	groups := []struct {
		by  usage.GroupBy
		key func(usage.Event) string
		of  func(usage.Bucket) string
	}{
		{usage.GroupKey, func(ev usage.Event) string { return ev.APIKeyID }, func(b usage.Bucket) string { return b.APIKeyID }},
		{usage.GroupOperation, func(ev usage.Event) string { return ev.OperationType + "/" + ev.OperationName },
			func(b usage.Bucket) string { return b.OperationType + "/" + b.OperationName }},
	}
	for _, d := range testdb.Dialects {
		t.Run(d, func(t *testing.T) {
			st := openStore(t, d)
			r := usage.NewRecorder(st, usage.Config{BatchSize: 400})
			run(t, r)
			recordAll(t, r, evs)
			for _, g := range groups {
				for _, iv := range []struct {
					interval usage.Interval
					step     time.Duration
				}{{usage.IntervalMinute, time.Minute}, {usage.IntervalHour, time.Hour}, {usage.IntervalDay, 24 * time.Hour}} {
					got, err := usage.QueryGrouped(ctxA, st.Client, st.Dialect, nil, from, to, iv.interval, g.by)
					if err != nil {
						t.Fatalf("%s %s: %v", g.by, iv.interval, err)
					}
					want := expectedGrouped(evs, byTenant, g.key, iv.step, from, to)
					if len(got) != len(want) || len(got) == 0 {
						t.Fatalf("%s %s: %d buckets, want %d", g.by, iv.interval, len(got), len(want))
					}
					if !slices.IsSortedFunc(got, func(a, b usage.Bucket) int {
						return strings.Compare(a.Start.Format(time.RFC3339)+g.of(a), b.Start.Format(time.RFC3339)+g.of(b))
					}) {
						t.Errorf("%s %s: buckets not ordered by start, then group", g.by, iv.interval)
					}
					for _, b := range got {
						k := b.Start.Format(time.RFC3339) + " " + g.of(b)
						w, ok := want[k]
						if !ok {
							t.Fatalf("%s %s: unexpected bucket %s", g.by, iv.interval, k)
						}
						if b.Requests != w.Requests || b.Errors != w.Errors || b.RateLimited != w.RateLimited ||
							b.QuotaExceeded != w.QuotaExceeded || b.Histogram != w.Histogram {
							t.Fatalf("%s %s %s:\n got %+v\nwant %+v", g.by, iv.interval, k, b, w)
						}
						if b.P99Ms != w.Histogram.Quantile(0.99) {
							t.Fatalf("%s %s %s: p99 %v", g.by, iv.interval, k, b.P99Ms)
						}
					}
				}
			}
			if _, err := usage.QueryGrouped(ctxA, st.Client, st.Dialect, nil, from, to, usage.IntervalDay, "TAG"); err == nil {
				t.Fatal("unknown grouping accepted")
			}
		})
	}
}

// BenchmarkUsageByOperation measures usage(groupBy: OPERATION) over a day of 100,000
// stored events (20 operations, 10 keys) against the per-key rollups of the same day.
func BenchmarkUsageByOperation(b *testing.B) {
	for _, d := range testdb.Dialects {
		b.Run(d, func(b *testing.B) {
			st := openStore(b, d)
			r := usage.NewRecorder(st, usage.Config{BlockTimeout: time.Minute})
			stop := run(b, r)
			day := time.Now().UTC().Truncate(24 * time.Hour).Add(-24 * time.Hour)
			const n = 100_000
			for i := range n {
				r.Record(usage.Event{
					TenantID: tenantA, APIKeyID: fmt.Sprintf("key_%d", i%10),
					OperationName: fmt.Sprintf("Op%d", i%20), OperationType: "query", RootFields: []string{"viewer"},
					Outcome: usage.OutcomeOK, LatencyMs: i % 300, IP: "203.0.113.9",
					At: day.Add(time.Duration(i) * (24 * time.Hour / n)),
				})
			}
			if err := r.Flush(context.Background()); err != nil {
				b.Fatal(err)
			}
			stop()
			ctx := viewer.NewContext(context.Background(), &viewer.Viewer{TenantID: tenantA, Scopes: []string{viewer.ScopeUsageRead}})
			for _, g := range []usage.GroupBy{usage.GroupOperation, usage.GroupKey} {
				b.Run(string(g), func(b *testing.B) {
					for b.Loop() {
						got, err := usage.QueryGrouped(ctx, st.Client, st.Dialect, nil, day, day.Add(24*time.Hour), usage.IntervalHour, g)
						if err != nil || len(got) == 0 {
							b.Fatal(err, len(got))
						}
					}
				})
			}
		})
	}
}
