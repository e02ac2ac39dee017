package usage_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/latchkey/latchkey/ent"
	"github.com/latchkey/latchkey/ent/privacy"
	"github.com/latchkey/latchkey/ent/schema/rule"
	"github.com/latchkey/latchkey/ent/usagelog"
	"github.com/latchkey/latchkey/ent/usagerollup"
	"github.com/latchkey/latchkey/internal/data/store"
	"github.com/latchkey/latchkey/internal/data/testdb"
	"github.com/latchkey/latchkey/internal/domain/usage"
	"github.com/latchkey/latchkey/internal/platform/viewer"
)

func openStore(t testing.TB, dialect string) *store.Store {
	t.Helper()
	return openURL(t, testdb.URL(t, dialect))
}

// run starts r.Run and returns a function that stops it and waits for it to return.
// recordAll records evs with r (running) and waits until they are written.
func recordAll(t testing.TB, r *usage.Recorder, evs []usage.Event) {
	t.Helper()
	for _, ev := range evs {
		r.Record(ev)
	}
	if err := r.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func run(t testing.TB, r *usage.Recorder) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run returned %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func sys() context.Context { return rule.SystemContext(context.Background()) }

func countLogs(t testing.TB, c *ent.Client) int {
	t.Helper()
	n, err := c.UsageLog.Query().Count(sys())
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// sumRequests returns the total requests of the rollups of one granularity.
func sumRequests(t testing.TB, c *ent.Client, g usagerollup.Granularity) int {
	t.Helper()
	rows, err := c.UsageRollup.Query().Where(usagerollup.GranularityEQ(g)).All(sys())
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, r := range rows {
		n += int(r.Requests)
	}
	return n
}

const (
	tenantA, tenantB, tenantC = "ten_a", "ten_b", "ten_c"
)

var keyTenant = map[string]string{
	"key_a1": tenantA, "key_a2": tenantA,
	"key_b1": tenantB, "key_b2": tenantB,
	"key_c1": tenantC,
}

var keyIDs = []string{"key_a1", "key_a2", "key_b1", "key_b2", "key_c1"}

// fixtureEvents spreads n events of five keys in three tenants over several minutes,
// hours and days (crossing midnight), with known outcomes and latencies, some with a
// non-UTC time zone.
func fixtureEvents(n int) []usage.Event {
	base := time.Date(2026, 3, 9, 22, 51, 17, 0, time.UTC)
	zone := time.FixedZone("UTC-7", -7*3600)
	evs := make([]usage.Event, n)
	for i := range evs {
		key := keyIDs[(i*7)%len(keyIDs)]
		at := base.Add(time.Duration(i)*41*time.Second + time.Duration(i%3)*24*time.Hour + time.Duration(i%5)*time.Millisecond)
		if i%4 == 0 {
			at = at.In(zone)
		}
		outcome := usage.OutcomeOK
		switch {
		case i%11 == 0:
			outcome = usage.OutcomeError
		case i%13 == 0:
			outcome = usage.OutcomeForbidden
		case i%17 == 0:
			outcome = usage.OutcomeRateLimited
		case i%19 == 0:
			outcome = usage.OutcomeQuotaExceeded
		}
		lat := (i * 7919) % 2500
		if i%97 == 0 {
			lat = 70000
		}
		evs[i] = usage.Event{
			TenantID: keyTenant[key], APIKeyID: key,
			OperationName: fmt.Sprintf("Op%d", i%4), OperationType: []string{"query", "mutation"}[i%2],
			RootFields: []string{"viewer", "apiKeys"}[:1+i%2],
			Outcome:    outcome, LatencyMs: lat, IP: "10.0.0.1", At: at,
		}
	}
	return evs
}

// expected computes the buckets a query should return, independently of the recorder.
func expected(evs []usage.Event, keep func(usage.Event) bool, step time.Duration, from, to time.Time) ([]usage.Bucket, map[time.Time][]int) {
	byStart := map[time.Time]*usage.Bucket{}
	lats := map[time.Time][]int{}
	start := from.UTC().Truncate(step)
	for _, ev := range evs {
		s := ev.At.UTC().Truncate(step)
		if !keep(ev) || s.Before(start) || !s.Before(to) {
			continue
		}
		b := byStart[s]
		if b == nil {
			b = &usage.Bucket{Start: s}
			byStart[s] = b
		}
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
		lats[s] = append(lats[s], ev.LatencyMs)
	}
	var out []usage.Bucket
	for _, b := range byStart {
		b.P50Ms, b.P95Ms, b.P99Ms = b.Histogram.Quantile(0.5), b.Histogram.Quantile(0.95), b.Histogram.Quantile(0.99)
		out = append(out, *b)
	}
	slices.SortFunc(out, func(a, b usage.Bucket) int { return a.Start.Compare(b.Start) })
	return out, lats
}

// checkPercentiles checks that each percentile lies in the histogram bucket of the exact
// (nearest-rank) percentile of the raw latencies.
func checkPercentiles(t *testing.T, b usage.Bucket, lats []int) {
	t.Helper()
	slices.Sort(lats)
	for _, p := range []struct {
		q   float64
		got float64
	}{{0.5, b.P50Ms}, {0.95, b.P95Ms}, {0.99, b.P99Ms}} {
		exact := lats[int(math.Ceil(p.q*float64(len(lats))))-1]
		var h usage.Histogram
		h.Observe(exact)
		i := slices.Index(h[:], 1)
		lower, upper := 0.0, usage.BucketUpperBound(i)
		if i > 0 {
			lower = usage.BucketUpperBound(i - 1)
		}
		if math.IsInf(upper, 1) {
			upper = lower
		}
		if p.got < lower || p.got > upper {
			t.Errorf("bucket %s: p%v = %v, exact %d is in (%v, %v]", b.Start, p.q*100, p.got, exact, lower, upper)
		}
	}
	if b.P50Ms > b.P95Ms || b.P95Ms > b.P99Ms {
		t.Errorf("bucket %s: percentiles not monotonic: %v %v %v", b.Start, b.P50Ms, b.P95Ms, b.P99Ms)
	}
}

func TestRecordAndQuery(t *testing.T) {
	const n = 1500
	evs := fixtureEvents(n)
	bg := context.Background()
	ctxA := viewer.NewContext(bg, &viewer.Viewer{TenantID: tenantA, Scopes: []string{viewer.ScopeUsageRead}})
	ctxB := viewer.NewContext(bg, &viewer.Viewer{TenantID: tenantB, Scopes: []string{viewer.ScopeUsageRead}})
	admin := viewer.NewContext(bg, &viewer.Viewer{Admin: true})
	key := func(id string) *string { return &id }
	byKey := func(id string) func(usage.Event) bool { return func(ev usage.Event) bool { return ev.APIKeyID == id } }
	byTenant := func(id string) func(usage.Event) bool { return func(ev usage.Event) bool { return ev.TenantID == id } }
	first, last := evs[0].At, evs[0].At
	for _, ev := range evs {
		if ev.At.Before(first) {
			first = ev.At
		}
		if ev.At.After(last) {
			last = ev.At
		}
	}
	whole := [2]time.Time{first.Add(-time.Minute), last.Add(time.Minute)}
	// part starts and ends inside buckets of every interval.
	part := [2]time.Time{first.Add(26*time.Hour + 90*time.Second), first.Add(50*time.Hour + 30*time.Second)}

	cases := []struct {
		name   string
		ctx    context.Context
		key    *string
		keep   func(usage.Event) bool
		window [2]time.Time
	}{
		{"tenant A, own key", ctxA, key("key_a1"), byKey("key_a1"), whole},
		{"tenant A, all keys", ctxA, nil, byTenant(tenantA), whole},
		{"tenant A, all keys, partial range", ctxA, nil, byTenant(tenantA), part},
		{"tenant B, all keys", ctxB, nil, byTenant(tenantB), whole},
		{"tenant B, key of tenant A", ctxB, key("key_a1"), func(usage.Event) bool { return false }, whole},
		{"tenant A, key of tenant C", ctxA, key("key_c1"), func(usage.Event) bool { return false }, whole},
		{"admin, all keys", admin, nil, func(usage.Event) bool { return true }, whole},
		{"admin, key of tenant B", admin, key("key_b2"), byKey("key_b2"), whole},
		{"admin, partial range", admin, key("key_c1"), byKey("key_c1"), part},
	}
	intervals := []struct {
		interval usage.Interval
		step     time.Duration
	}{{usage.IntervalMinute, time.Minute}, {usage.IntervalHour, time.Hour}, {usage.IntervalDay, 24 * time.Hour}}

	// Each dialect runs two ways: with every event's minute already folded (the
	// recorder writes all three levels), and with the fold boundary in the middle of the
	// events (later minutes are written as minute rows only, and queries add them to the
	// hour and day rows), queried before and after the fold.
	folded := first.Add(25*time.Hour + 7*time.Minute).Truncate(time.Minute)
	results := map[string]map[string][]usage.Bucket{}
	for _, d := range testdb.Dialects {
		t.Run(d, func(t *testing.T) {
			for _, boundary := range []string{"written", "fold"} {
				t.Run(boundary, func(t *testing.T) {
					st := openStore(t, d)
					if boundary == "fold" {
						setFoldedBefore(t, st, folded)
					} else {
						setFoldedBefore(t, st, last.Add(time.Hour))
					}
					r := usage.NewRecorder(st, usage.Config{BatchSize: 400})
					run(t, r)
					recordAll(t, r, evs)
					if got := countLogs(t, st.Client); got != n {
						t.Fatalf("usage_logs has %d rows, want %d", got, n)
					}
					if s := r.Stats(); s.Recorded != n || s.Written != n || s.Dropped != 0 || s.Queued != 0 || s.Batches < n/400 {
						t.Errorf("stats %+v", s)
					}
					phases := []string{"written"}
					if boundary == "fold" {
						if got := sumRequests(t, st.Client, usagerollup.GranularityHour); got == n || got == 0 {
							t.Fatalf("hour rollups sum to %d requests before the fold: the boundary should split the events", got)
						}
						phases = []string{"unfolded", "folded"}
					}
					for _, phase := range phases {
						if phase == "folded" {
							if rows, err := r.Fold(bg, last.Add(3*time.Minute)); err != nil || rows == 0 {
								t.Fatalf("Fold: %d minute rows, %v", rows, err)
							}
							if got := foldedBefore(t, st); !got.Equal(last.Add(2 * time.Minute).Truncate(time.Minute)) {
								t.Fatalf("folded_before = %v after the fold, want %v", got, last.Add(2*time.Minute).Truncate(time.Minute))
							}
						}
						if phase != "unfolded" {
							for _, g := range []usagerollup.Granularity{usagerollup.GranularityMinute, usagerollup.GranularityHour, usagerollup.GranularityDay} {
								if got := sumRequests(t, st.Client, g); got != n {
									t.Errorf("%s: %s rollups sum to %d requests, want %d", phase, g, got, n)
								}
							}
						}
						if results[phase] == nil {
							results[phase] = map[string][]usage.Bucket{}
						}
						for _, tc := range cases {
							for _, iv := range intervals {
								name := fmt.Sprintf("%s/%s", tc.name, iv.interval)
								got, err := usage.Query(tc.ctx, st.Client, tc.key, tc.window[0], tc.window[1], iv.interval)
								if err != nil {
									t.Fatalf("%s: %s: %v", phase, name, err)
								}
								want, lats := expected(evs, tc.keep, iv.step, tc.window[0], tc.window[1])
								if len(got) != len(want) {
									t.Fatalf("%s: %s: %d buckets, want %d", phase, name, len(got), len(want))
								}
								for i := range got {
									g, w := got[i], want[i]
									if !g.Start.Equal(w.Start) || g.Start.Location() != time.UTC || g.Requests != w.Requests || g.Errors != w.Errors ||
										g.RateLimited != w.RateLimited || g.QuotaExceeded != w.QuotaExceeded || g.Histogram != w.Histogram ||
										g.P50Ms != w.P50Ms || g.P95Ms != w.P95Ms || g.P99Ms != w.P99Ms {
										t.Fatalf("%s: %s: bucket %d = %+v\nwant %+v", phase, name, i, g, w)
									}
									checkPercentiles(t, g, lats[w.Start])
								}
								results[phase][d+"/"+name] = got
							}
						}
					}

					// Without a viewer, privacy denies the query.
					if _, err := usage.Query(bg, st.Client, nil, whole[0], whole[1], usage.IntervalHour); !errors.Is(err, privacy.Deny) {
						t.Errorf("query without viewer: err = %v, want privacy deny", err)
					}
					// Raw rows are scoped by the same rules.
					if n, err := st.Client.UsageLog.Query().Where(usagelog.TenantIDNEQ(tenantB)).Count(ctxB); err != nil || n != 0 {
						t.Errorf("tenant B sees %d raw rows of other tenants (err %v)", n, err)
					}
				})
			}
		})
	}
	for phase, byName := range results {
		for name, got := range byName {
			sqliteName, ok := strings.CutPrefix(name, "sqlite/")
			if !ok {
				continue
			}
			want := byName["postgres/"+sqliteName]
			if len(got) != len(want) {
				t.Errorf("%s: %s: sqlite %d buckets, postgres %d", phase, sqliteName, len(got), len(want))
				continue
			}
			for i := range got {
				if !got[i].Start.Equal(want[i].Start) || got[i].Histogram != want[i].Histogram || got[i].P99Ms != want[i].P99Ms || got[i].Requests != want[i].Requests {
					t.Errorf("%s: %s: sqlite %+v, postgres %+v", phase, sqliteName, got[i], want[i])
				}
			}
		}
	}
}

// setFoldedBefore moves the fold boundary of st to at: the recorder writes the hour
// and day rollups of the minutes before it and leaves later ones to the fold.
func setFoldedBefore(t testing.TB, st *store.Store, at time.Time) {
	t.Helper()
	if err := st.Client.UsageFold.UpdateOneID(1).SetFoldedBefore(at.UTC()).Exec(sys()); err != nil {
		t.Fatal(err)
	}
}

// foldedBefore reads the fold boundary of st.
func foldedBefore(t testing.TB, st *store.Store) time.Time {
	t.Helper()
	f, err := st.Client.UsageFold.Get(sys(), 1)
	if err != nil {
		t.Fatal(err)
	}
	return f.FoldedBefore.UTC()
}

func TestQueryErrors(t *testing.T) {
	ctx := viewer.NewContext(context.Background(), &viewer.Viewer{Admin: true})
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	cases := []struct {
		name     string
		from, to time.Time
		interval usage.Interval
		field    string
	}{
		{"to equals from", t0, t0, usage.IntervalMinute, "to"},
		{"to before from", t0, t0.Add(-time.Hour), usage.IntervalHour, "to"},
		{"too many minutes", t0, t0.Add(10001 * time.Minute), usage.IntervalMinute, "to"},
		{"too many days", t0, t0.AddDate(30, 0, 0), usage.IntervalDay, "to"},
		{"far future", t0, time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC), usage.IntervalHour, "to"},
		{"unknown interval", t0, t0.Add(time.Hour), usage.Interval("WEEK"), "interval"},
		{"lowercase interval", t0, t0.Add(time.Hour), usage.Interval("hour"), "interval"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// Arguments are checked before the database is used.
			_, err := usage.Query(ctx, nil, nil, tc.from, tc.to, tc.interval)
			var qe *usage.QueryError
			if !errors.As(err, &qe) || qe.Field != tc.field || qe.Message == "" {
				t.Fatalf("err = %#v, want *QueryError on %s", err, tc.field)
			}
		})
	}
	// The largest allowed range passes validation (and the query runs).
	st := openStore(t, "sqlite")
	if _, err := usage.Query(ctx, st.Client, nil, t0.Add(30*time.Second), t0.Add(10000*time.Minute), usage.IntervalMinute); err != nil {
		t.Fatalf("10000 minutes: %v", err)
	}
}

// TestShutdownDrains records from many goroutines while Run writes, then cancels Run:
// every recorded event must be stored, in the raw rows and in every rollup level.
func TestShutdownDrains(t *testing.T) {
	const producers, perProducer = 16, 1250
	const n = producers * perProducer
	for _, d := range testdb.Dialects {
		t.Run(d, func(t *testing.T) {
			st := openStore(t, d)
			// A long flush interval leaves a partial batch and a queue behind at shutdown.
			r := usage.NewRecorder(st, usage.Config{BatchSize: 777, FlushInterval: time.Hour, BlockTimeout: time.Minute})
			stop := run(t, r)
			base := time.Now().Add(-time.Hour)
			var wg sync.WaitGroup
			for p := range producers {
				wg.Go(func() {
					for i := range perProducer {
						key := keyIDs[(p+i)%len(keyIDs)]
						r.Record(usage.Event{TenantID: keyTenant[key], APIKeyID: key, OperationType: "query",
							Outcome: usage.OutcomeOK, LatencyMs: i % 300, At: base.Add(time.Duration(i) * time.Second)})
					}
				})
			}
			wg.Wait()
			stop()
			if got := countLogs(t, st.Client); got != n {
				t.Fatalf("usage_logs has %d rows after shutdown, want %d", got, n)
			}
			// The hour and day rows get the minutes once they are folded (by the next
			// instance to run).
			if _, err := r.Fold(context.Background(), time.Now().Add(2*time.Minute)); err != nil {
				t.Fatal(err)
			}
			for _, g := range []usagerollup.Granularity{usagerollup.GranularityMinute, usagerollup.GranularityHour, usagerollup.GranularityDay} {
				if got := sumRequests(t, st.Client, g); got != n {
					t.Errorf("%s rollups sum to %d requests, want %d", g, got, n)
				}
			}
			if s := r.Stats(); s.Recorded != n || s.Written != n || s.Dropped != 0 || s.Queued != 0 {
				t.Errorf("stats %+v", s)
			}
		})
	}
}

func TestBackpressure(t *testing.T) {
	cases := []struct {
		name         string
		buffer       int
		blockTimeout time.Duration
		running      bool // Run consumes the queue
		attempts     int
		wantRecorded int
		minElapsed   time.Duration
	}{
		{"full queue drops at once", 8, 0, false, 50, 8, 0},
		{"full queue waits, then drops", 4, 30 * time.Millisecond, false, 6, 4, 60 * time.Millisecond},
		{"waiting writer keeps up", 2, 10 * time.Second, true, 300, 300, 0},
	}
	for _, d := range testdb.Dialects {
		for _, tc := range cases {
			t.Run(d+"/"+tc.name, func(t *testing.T) {
				st := openStore(t, d)
				var seen atomic.Int64
				r := usage.NewRecorder(st, usage.Config{BufferSize: tc.buffer, BatchSize: 3, FlushInterval: time.Millisecond,
					BlockTimeout: tc.blockTimeout, OnEvent: func(usage.Event) { seen.Add(1) }})
				if tc.running {
					run(t, r)
				}
				start := time.Now()
				for i := range tc.attempts {
					r.Record(usage.Event{TenantID: tenantA, APIKeyID: "key_a1", OperationType: "query", Outcome: usage.OutcomeOK, LatencyMs: i})
				}
				elapsed := time.Since(start)
				if elapsed < tc.minElapsed || (tc.blockTimeout == 0 && elapsed > time.Second) {
					t.Errorf("recording took %v", elapsed)
				}
				s := r.Stats()
				if s.Recorded+s.Dropped != uint64(tc.attempts) || s.Recorded != uint64(tc.wantRecorded) {
					t.Fatalf("stats %+v after %d attempts, want %d recorded", s, tc.attempts, tc.wantRecorded)
				}
				if !tc.running && s.Waits != s.Dropped {
					t.Errorf("stats %+v: every drop found the queue full, so Waits should equal Dropped", s)
				}
				if seen.Load() != int64(s.Recorded) {
					t.Errorf("OnEvent saw %d events, recorded %d", seen.Load(), s.Recorded)
				}
				if err := r.Flush(context.Background()); err != nil {
					t.Fatal(err)
				}
				if got := countLogs(t, st.Client); got != tc.wantRecorded {
					t.Errorf("stored %d events, recorded %d", got, tc.wantRecorded)
				}
				if s := r.Stats(); s.Written != s.Recorded || s.Queued != 0 {
					t.Errorf("after flush: %+v", s)
				}
			})
		}
	}
}

// blockFirstWrite makes r's first write wait inside its transaction: entered receives
// once the writer holds its batch, and the write goes on when release is closed.
func blockFirstWrite(r *usage.Recorder) (entered <-chan struct{}, release chan struct{}) {
	in := make(chan struct{})
	release = make(chan struct{})
	var writes atomic.Int32
	usage.SetWriteHook(r, func() error {
		if writes.Add(1) == 1 {
			close(in)
			<-release
		}
		return nil
	})
	return in, release
}

// waitUntil polls cond for up to 10 s (a liveness check: the alternative it rules out
// takes an hour).
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestBacklogBounded blocks the writer inside a write: the queue takes BufferSize
// more events, the next Record waits for room (backpressure, counted) instead of
// growing the backlog, and never more than BufferSize + BatchSize events are unwritten.
func TestBacklogBounded(t *testing.T) {
	const buffer, batch = 4, 3
	for _, d := range testdb.Dialects {
		t.Run(d, func(t *testing.T) {
			st := openStore(t, d)
			// An hour-long flush interval: only a full batch is written while running.
			r := usage.NewRecorder(st, usage.Config{BufferSize: buffer, BatchSize: batch, FlushInterval: time.Hour, BlockTimeout: time.Hour})
			entered, release := blockFirstWrite(r)
			run(t, r)
			rec := func(i int) {
				r.Record(usage.Event{TenantID: tenantA, APIKeyID: "key_a1", OperationType: "query", Outcome: usage.OutcomeOK, LatencyMs: i})
			}
			for i := range batch {
				rec(i)
			}
			<-entered // the writer holds the first (full) batch
			for i := range buffer {
				rec(batch + i)
			}
			if s := r.Stats(); s.Recorded != batch+buffer || s.Written != 0 || s.Waits != 0 || s.Queued != batch+buffer {
				t.Fatalf("with the writer blocked and the queue just full: %+v", s)
			}
			done := make(chan struct{})
			go func() { rec(99); close(done) }()
			waitUntil(t, "the extra Record waits", func() bool { return r.Stats().Waits == 1 })
			select {
			case <-done:
				t.Fatal("Record returned while the queue was full and the writer blocked")
			default:
			}
			if s := r.Stats(); s.Recorded-s.Written > buffer+batch || s.Dropped != 0 {
				t.Fatalf("backlog beyond BufferSize + BatchSize: %+v", s)
			}
			close(release)
			<-done // room again: the waiting Record got in
			if err := r.Flush(context.Background()); err != nil {
				t.Fatal(err)
			}
			if s := r.Stats(); s.Recorded != batch+buffer+1 || s.Written != s.Recorded || s.Dropped != 0 || s.Waits != 1 || s.Queued != 0 || s.Lag != 0 {
				t.Errorf("after flush: %+v", s)
			}
			if got := countLogs(t, st.Client); got != batch+buffer+1 {
				t.Errorf("stored %d rows, want %d", got, batch+buffer+1)
			}
		})
	}
}

// TestFlushDueFromRecord: an event that waited in the queue while a write was blocked
// is due FlushInterval after Record, not after the writer first sees it. On the
// recorder's (fake) clock the event waits an hour, as long as FlushInterval, behind
// the write: it must be written right after it, not an hour later. Stats().Lag reports the age
// of the oldest unwritten event on the same clock.
func TestFlushDueFromRecord(t *testing.T) {
	for _, d := range testdb.Dialects {
		t.Run(d, func(t *testing.T) {
			st := openStore(t, d)
			clock := struct {
				sync.Mutex
				t time.Time
			}{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
			now := func() time.Time { clock.Lock(); defer clock.Unlock(); return clock.t }
			advance := func(d time.Duration) { clock.Lock(); clock.t = clock.t.Add(d); clock.Unlock() }

			r := usage.NewRecorder(st, usage.Config{BatchSize: 2, FlushInterval: time.Hour})
			usage.SetClock(r, now)
			entered, release := blockFirstWrite(r)
			run(t, r)
			at := time.Now()
			rec := func() {
				r.Record(usage.Event{TenantID: tenantA, APIKeyID: "key_a1", OperationType: "query", Outcome: usage.OutcomeOK, At: at})
			}
			rec()
			rec() // a full batch: written at once
			<-entered
			advance(time.Minute)
			rec() // waits in the queue behind the blocked write
			advance(time.Hour)
			if lag := r.Stats().Lag; lag != time.Hour+time.Minute {
				t.Errorf("Lag = %v with the first batch recorded 61 minutes ago and unwritten, want 1h1m0s", lag)
			}
			close(release)
			waitUntil(t, "the third event is written", func() bool { return r.Stats().Written == 3 })
			if s := r.Stats(); s.Batches != 2 || s.Lag != 0 || s.Queued != 0 {
				t.Errorf("stats %+v", s)
			}
		})
	}
}

// TestFullBatchWrittenAtOnce: while the writer holds a batch and waits for its flush
// time, as soon as the batch and the events recorded since hold BatchSize events
// together, they are written, an hour before the flush time, however large the queue
// is; what is left waits for its own flush time. (A writer that took the queue only
// when half full, to be woken less often, failed this.)
func TestFullBatchWrittenAtOnce(t *testing.T) {
	for _, d := range testdb.Dialects {
		t.Run(d, func(t *testing.T) {
			st := openStore(t, d)
			r := usage.NewRecorder(st, usage.Config{BufferSize: 1000, BatchSize: 10, FlushInterval: time.Hour})
			run(t, r)
			rec := func(i int) {
				r.Record(usage.Event{TenantID: tenantA, APIKeyID: "key_a1", OperationType: "query", Outcome: usage.OutcomeOK, LatencyMs: i})
			}
			rec(0)
			waitUntil(t, "the writer holds the first event", func() bool { return r.Stats().Lag > 0 })
			for i := 1; i < 13; i++ {
				rec(i)
			}
			waitUntil(t, "a full batch is written", func() bool { return r.Stats().Written == 10 })
			time.Sleep(50 * time.Millisecond)
			if s := r.Stats(); s.Written != 10 || s.Batches != 1 || s.Queued != 3 {
				t.Fatalf("stats %+v, want the first 10 written in one batch and 3 waiting", s)
			}
		})
	}
}

// TestWriteRetry fails writes inside the transaction (after the raw rows): a transient
// failure is retried without duplicating rows; a permanent one drops and counts the batch.
func TestWriteRetry(t *testing.T) {
	for _, d := range testdb.Dialects {
		t.Run(d, func(t *testing.T) {
			st := openStore(t, d)
			r := usage.NewRecorder(st, usage.Config{})
			usage.SetRetry(r, 3, time.Millisecond)
			var failures atomic.Int32
			errBoom := errors.New("boom")
			usage.SetWriteHook(r, func() error {
				if failures.Add(-1) >= 0 {
					return errBoom
				}
				return nil
			})
			evs := fixtureEvents(50)
			record := func() {
				for _, ev := range evs {
					r.Record(ev)
				}
			}

			failures.Store(2) // transient
			record()
			if err := r.Flush(context.Background()); err != nil {
				t.Fatalf("flush after transient failures: %v", err)
			}
			if got := countLogs(t, st.Client); got != 50 {
				t.Fatalf("stored %d rows, want 50 (no duplicates from failed attempts)", got)
			}
			if s := r.Stats(); s.WriteErrors != 2 || s.Written != 50 || s.Dropped != 0 {
				t.Errorf("stats %+v", s)
			}

			failures.Store(100) // permanent
			record()
			if err := r.Flush(context.Background()); !errors.Is(err, errBoom) {
				t.Fatalf("flush with a failing database: err = %v, want boom", err)
			}
			if got := countLogs(t, st.Client); got != 50 {
				t.Errorf("stored %d rows, want 50", got)
			}
			if got := sumRequests(t, st.Client, usagerollup.GranularityMinute); got != 50 {
				t.Errorf("rollups count %d requests, want 50 (rolled back with the raw rows)", got)
			}
			if s := r.Stats(); s.WriteErrors != 5 || s.Written != 50 || s.Dropped != 50 || s.Recorded != 100 {
				t.Errorf("stats %+v", s)
			}
		})
	}
}

func TestPrune(t *testing.T) {
	now := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	ages := []struct {
		age               time.Duration
		n                 int
		keepLog, keepMins bool
	}{
		{time.Hour, 3, true, true},
		{29 * 24 * time.Hour, 4, true, true},
		{31 * 24 * time.Hour, 5, false, true},
		{61 * 24 * time.Hour, 6, false, false},
	}
	for _, d := range testdb.Dialects {
		t.Run(d, func(t *testing.T) {
			st := openStore(t, d)
			// Every minute recorded is after the fold boundary: none is pruned before it
			// is folded.
			setFoldedBefore(t, st, now.Add(-62*24*time.Hour))
			r := usage.NewRecorder(st, usage.Config{Retention: 30 * 24 * time.Hour})
			wantLogs, wantMinutes, total := 0, 0, 0
			for _, a := range ages {
				for i := range a.n {
					r.Record(usage.Event{TenantID: tenantA, APIKeyID: "key_a1", OperationType: "query", Outcome: usage.OutcomeOK,
						At: now.Add(-a.age).Add(time.Duration(i) * time.Minute)})
				}
				total += a.n
				if a.keepLog {
					wantLogs += a.n
				}
				if a.keepMins {
					wantMinutes += a.n
				}
			}
			if err := r.Flush(context.Background()); err != nil {
				t.Fatal(err)
			}
			logsBefore, rollups, err := r.Prune(context.Background(), now)
			if err != nil || rollups != 0 {
				t.Fatalf("before the fold, Prune deleted %d minute rollups (err %v), want none", rollups, err)
			}
			if got := sumRequests(t, st.Client, usagerollup.GranularityMinute); got != total {
				t.Fatalf("before the fold, minute rollups count %d, want %d", got, total)
			}
			if _, err := r.Fold(context.Background(), now); err != nil {
				t.Fatal(err)
			}
			logs, rollups, err := r.Prune(context.Background(), now)
			if err != nil {
				t.Fatal(err)
			}
			logs += logsBefore
			if int(logs) != total-wantLogs || int(rollups) != total-wantMinutes {
				t.Errorf("pruned %d logs and %d minute rollups, want %d and %d", logs, rollups, total-wantLogs, total-wantMinutes)
			}
			if got := countLogs(t, st.Client); got != wantLogs {
				t.Errorf("%d usage_logs left, want %d", got, wantLogs)
			}
			if got := sumRequests(t, st.Client, usagerollup.GranularityMinute); got != wantMinutes {
				t.Errorf("minute rollups count %d, want %d", got, wantMinutes)
			}
			for _, g := range []usagerollup.Granularity{usagerollup.GranularityHour, usagerollup.GranularityDay} {
				if got := sumRequests(t, st.Client, g); got != total {
					t.Errorf("%s rollups count %d, want %d (kept forever)", g, got, total)
				}
			}
		})
	}
}

func TestUsed(t *testing.T) {
	evs := fixtureEvents(2000)
	day := time.Date(2026, 3, 10, 0, 0, 0, 0, time.UTC)
	// The fold boundary: after every event (all written at every level), inside them, and
	// before them all; each read before and after the fold.
	boundaries := []struct {
		name string
		at   time.Time
	}{{"written", day.AddDate(0, 0, 6)}, {"fold inside", day.Add(37*time.Hour + 11*time.Minute)}, {"fold before all", day.AddDate(0, 0, -5)}}
	for _, d := range testdb.Dialects {
		for _, b := range boundaries {
			t.Run(d+"/"+b.name, func(t *testing.T) {
				st := openStore(t, d)
				setFoldedBefore(t, st, b.at)
				r := usage.NewRecorder(st, usage.Config{})
				for _, ev := range evs {
					r.Record(ev)
				}
				if err := r.Flush(context.Background()); err != nil {
					t.Fatal(err)
				}
				checkUsed(t, st, evs, day)
				if _, err := r.Fold(context.Background(), day.AddDate(0, 0, 6)); err != nil {
					t.Fatal(err)
				}
				checkUsed(t, st, evs, day)
			})
		}
	}
}

// checkUsed compares Used with the events since various times (TestUsed).
func checkUsed(t *testing.T, st *store.Store, evs []usage.Event, day time.Time) {
	t.Helper()
	cases := []struct {
		name  string
		key   string
		since time.Time
	}{
		{"since a day start", "key_a1", day},
		{"since the start", "key_b2", day.AddDate(0, 0, -5)},
		{"since an hour inside a day", "key_c1", day.Add(25 * time.Hour)},
		{"since a minute inside an hour", "key_a2", day.Add(37*time.Hour + 17*time.Minute)},
		{"rounded up to the minute", "key_a2", day.Add(37*time.Hour + 16*time.Minute + time.Second)},
		{"in another zone", "key_a1", day.Add(13 * time.Hour).In(time.FixedZone("X", 5*3600))},
		{"after everything", "key_a1", day.AddDate(1, 0, 0)},
		{"unknown key", "key_zz", day},
	}
	for _, tc := range cases {
		since := tc.since.UTC()
		if tr := since.Truncate(time.Minute); tr.Before(since) {
			since = tr.Add(time.Minute)
		}
		var want int64
		for _, ev := range evs {
			if ev.APIKeyID == tc.key && !ev.At.Before(since) && ev.Outcome != usage.OutcomeRateLimited && ev.Outcome != usage.OutcomeQuotaExceeded {
				want++
			}
		}
		got, err := usage.Used(context.Background(), st.Client, tc.key, tc.since)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got != want {
			t.Errorf("%s: Used = %d, want %d", tc.name, got, want)
		}
	}
}

// TestStoredValues checks what one raw row holds, including strings PostgreSQL would
// refuse as they are (NUL bytes, invalid UTF-8), and that At defaults to now. The rows
// go in one batch, in this order: the writer reuses a column's value while it repeats,
// so values also change back and forth between rows.
func TestStoredValues(t *testing.T) {
	at := time.Date(2026, 2, 3, 4, 5, 6, 789000000, time.FixedZone("X", 3600))
	long := strings.Repeat("é", 200) // 400 bytes, cut to 256
	cases := []struct {
		name      string
		ev        usage.Event
		wantName  string
		wantRoots []string
		wantOwner string // "" for NULL
	}{
		{"plain", usage.Event{OperationName: "GetKeys", RootFields: []string{"apiKeys", "viewer"}, OwnerID: "cust_1", At: at}, "GetKeys", []string{"apiKeys", "viewer"}, "cust_1"},
		{"no root fields", usage.Event{At: at}, "", nil, ""},
		{"nul and invalid utf-8", usage.Event{OperationName: "a\x00b\xffc", RootFields: []string{"x\"y\\z", "é\x00"}, OwnerID: "c\x00\xff", At: at}, "ab\uFFFDc", []string{"x\"y\\z", "é"}, "c\uFFFD"},
		{"zero time", usage.Event{OperationName: "Now", OwnerID: "cust_1"}, "Now", nil, "cust_1"},
		{"plain again", usage.Event{OperationName: "GetKeys", RootFields: []string{"apiKeys", "viewer"}, OwnerID: "cust_1", At: at}, "GetKeys", []string{"apiKeys", "viewer"}, "cust_1"},
		{"owner only nul", usage.Event{OperationName: long, RootFields: []string{"apiKeys", "viewer"}, OwnerID: "\x00", At: at}, long[:256], []string{"apiKeys", "viewer"}, ""},
		{"long name again", usage.Event{OperationName: long, RootFields: []string{"viewer"}, OwnerID: "cust_2", At: at}, long[:256], []string{"viewer"}, "cust_2"},
	}
	for _, d := range testdb.Dialects {
		t.Run(d, func(t *testing.T) {
			st := openStore(t, d)
			r := usage.NewRecorder(st, usage.Config{})
			before := time.Now()
			for _, tc := range cases {
				ev := tc.ev
				ev.TenantID, ev.APIKeyID, ev.OperationType, ev.Outcome, ev.IP, ev.LatencyMs = tenantA, "key_a1", "query", usage.OutcomeOK, "2001:db8::1", 42
				r.Record(ev)
			}
			if err := r.Flush(context.Background()); err != nil {
				t.Fatal(err)
			}
			rows, err := st.Client.UsageLog.Query().Order(ent.Asc(usagelog.FieldID)).All(sys())
			if err != nil {
				t.Fatal(err)
			}
			if len(rows) != len(cases) {
				t.Fatalf("%d rows, want %d", len(rows), len(cases))
			}
			for i, tc := range cases {
				row := rows[i]
				if row.OperationName != tc.wantName || !slices.Equal(row.RootFields, tc.wantRoots) ||
					row.TenantID != tenantA || row.APIKeyID != "key_a1" || row.LatencyMs != 42 || row.IP != "2001:db8::1" || row.Outcome != "ok" {
					t.Errorf("%s: row %+v", tc.name, row)
				}
				if owner := row.OwnerID; tc.wantOwner == "" && owner != nil || tc.wantOwner != "" && (owner == nil || *owner != tc.wantOwner) {
					t.Errorf("%s: owner = %v, want %q (empty: NULL)", tc.name, owner, tc.wantOwner)
				}
				wantAt := tc.ev.At
				if wantAt.IsZero() {
					if row.At.Before(before.Add(-time.Second)) || row.At.After(time.Now()) {
						t.Errorf("%s: at = %v, want about now", tc.name, row.At)
					}
				} else if !row.At.Equal(wantAt) {
					t.Errorf("%s: at = %v, want %v", tc.name, row.At, wantAt)
				}
			}
		})
	}
}

// TestConcurrentRecorders runs two recorders (two server instances) on one database:
// their upserts add to the same rollup rows.
func TestConcurrentRecorders(t *testing.T) {
	evs := fixtureEvents(3000)
	admin := viewer.NewContext(context.Background(), &viewer.Viewer{Admin: true})
	for _, d := range testdb.Dialects {
		t.Run(d, func(t *testing.T) {
			st := openStore(t, d)
			var wg sync.WaitGroup
			for range 2 {
				r := usage.NewRecorder(st, usage.Config{BatchSize: 250, FlushInterval: time.Millisecond})
				stop := run(t, r)
				wg.Go(func() {
					for _, ev := range evs {
						r.Record(ev)
					}
					stop()
				})
			}
			wg.Wait()
			if got := countLogs(t, st.Client); got != 2*len(evs) {
				t.Fatalf("stored %d rows, want %d", got, 2*len(evs))
			}
			from, to := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC), time.Date(2026, 4, 1, 0, 0, 0, 0, time.UTC)
			got, err := usage.Query(admin, st.Client, nil, from, to, usage.IntervalHour)
			if err != nil {
				t.Fatal(err)
			}
			want, _ := expected(append(slices.Clone(evs), evs...), func(usage.Event) bool { return true }, time.Hour, from, to)
			if len(got) != len(want) {
				t.Fatalf("%d buckets, want %d", len(got), len(want))
			}
			for i := range got {
				if got[i].Requests != want[i].Requests || got[i].Errors != want[i].Errors || got[i].Histogram != want[i].Histogram {
					t.Fatalf("bucket %d = %+v, want %+v", i, got[i], want[i])
				}
			}
		})
	}
}

// ChainUsed counts the usage of a rotation chain: the first key and the keys whose
// quota it counts, not the tenant's other keys.
func TestChainUsed(t *testing.T) {
	for _, d := range testdb.Dialects {
		t.Run(d, func(t *testing.T) {
			st := openStore(t, d)
			sys := rule.SystemContext(context.Background())
			ten := st.Client.Tenant.Create().SetName("chain").SetSlug("chain-" + d).SaveX(sys)
			newKey := func(name string, quotaKey *string) string {
				return st.Client.ApiKey.Create().SetTenantID(ten.ID).SetName(name).
					SetPrefix("lk_live_" + name).SetHash(fmt.Sprintf("%064x", len(name))).SetScopes([]string{}).
					SetNillableQuotaKey(quotaKey).SaveX(sys).ID
			}
			first := newKey("a", nil)
			next := newKey("bb", &first)
			other := newKey("ccc", nil)
			since := time.Date(2026, 3, 10, 0, 0, 0, 0, time.UTC)
			r := usage.NewRecorder(st, usage.Config{})
			for i, id := range []string{first, next, next, other, other, other} {
				r.Record(usage.Event{TenantID: ten.ID, APIKeyID: id, OperationType: "query", Outcome: usage.OutcomeOK, At: since.Add(time.Duration(i) * time.Hour)})
			}
			r.Record(usage.Event{TenantID: ten.ID, APIKeyID: next, OperationType: "query", Outcome: usage.OutcomeOK, At: since.Add(-time.Hour)})
			if err := r.Flush(context.Background()); err != nil {
				t.Fatal(err)
			}
			got, err := usage.ChainUsed(context.Background(), st.Client, first, since)
			if err != nil || got != 3 {
				t.Errorf("ChainUsed = %d, %v; want 3", got, err)
			}
			if got, err := usage.ChainUsed(context.Background(), st.Client, "key_none", since); err != nil || got != 0 {
				t.Errorf("ChainUsed of an unknown key = %d, %v; want 0", got, err)
			}
		})
	}
}
