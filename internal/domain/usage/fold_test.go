package usage_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/latchkey/latchkey/ent/privacy"
	"github.com/latchkey/latchkey/ent/usagerollup"
	"github.com/latchkey/latchkey/internal/data/store"
	"github.com/latchkey/latchkey/internal/data/testdb"
	"github.com/latchkey/latchkey/internal/domain/usage"
	"github.com/latchkey/latchkey/internal/platform/viewer"
)

var levels = []usagerollup.Granularity{usagerollup.GranularityMinute, usagerollup.GranularityHour, usagerollup.GranularityDay}

// checkLevels checks that the rollups of every level hold every event, and the
// queries (checkQueries).
func checkLevels(t *testing.T, st *store.Store, evs []usage.Event, from, to time.Time) {
	t.Helper()
	for _, g := range levels {
		if got := sumRequests(t, st.Client, g); got != len(evs) {
			t.Errorf("%s rollups sum to %d requests, want %d", g, got, len(evs))
		}
	}
	checkQueries(t, st, evs, from, to)
}

// checkQueries checks that hourly and daily usage queried as an admin is what the
// events give.
func checkQueries(t *testing.T, st *store.Store, evs []usage.Event, from, to time.Time) {
	t.Helper()
	admin := viewer.NewContext(context.Background(), &viewer.Viewer{Admin: true})
	for _, iv := range []struct {
		interval usage.Interval
		step     time.Duration
	}{{usage.IntervalHour, time.Hour}, {usage.IntervalDay, 24 * time.Hour}} {
		got, err := usage.Query(admin, st.Client, nil, from, to, iv.interval)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := expected(evs, func(usage.Event) bool { return true }, iv.step, from, to)
		if len(got) != len(want) {
			t.Fatalf("%s: %d buckets, want %d", iv.interval, len(got), len(want))
		}
		for i := range got {
			if !got[i].Start.Equal(want[i].Start) || got[i].Requests != want[i].Requests || got[i].Errors != want[i].Errors || got[i].Histogram != want[i].Histogram {
				t.Fatalf("%s: bucket %d = %+v, want %+v", iv.interval, i, got[i], want[i])
			}
		}
	}
}

// openURL opens a store on the database at url (another instance's, when opened
// again), closed when the test ends.
func openURL(t testing.TB, url string) *store.Store {
	t.Helper()
	st, err := store.Open(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func event(key string, at time.Time, outcome usage.Outcome, latency int) usage.Event {
	return usage.Event{TenantID: keyTenant[key], APIKeyID: key, OperationType: "query", Outcome: outcome, LatencyMs: latency, At: at}
}

// TestFoldLateEvent: an event whose minute is already folded (a batch retried after
// an outage) goes to the hour and day rows directly, and a later fold does not add it
// again.
func TestFoldLateEvent(t *testing.T) {
	base := time.Date(2026, 5, 4, 10, 0, 0, 0, time.UTC)
	for _, d := range testdb.Dialects {
		t.Run(d, func(t *testing.T) {
			ctx := context.Background()
			st := openStore(t, d)
			setFoldedBefore(t, st, base)
			r := usage.NewRecorder(st, usage.Config{})
			var evs []usage.Event
			for i := range 30 {
				evs = append(evs, event(keyIDs[i%len(keyIDs)], base.Add(time.Duration(i)*97*time.Second), usage.OutcomeOK, i*40))
			}
			recordAll(t, r, evs)
			if got := sumRequests(t, st.Client, usagerollup.GranularityHour); got != 0 {
				t.Fatalf("hour rollups hold %d requests before the fold, want 0", got)
			}
			from, to := base.Add(-time.Hour), base.Add(48*time.Hour)
			checkQueries(t, st, evs, from, to)
			now := base.Add(3 * time.Hour)
			rows, err := r.Fold(ctx, now)
			if err != nil {
				t.Fatal(err)
			}
			if rows != 30 { // one minute row per event: 97 s apart
				t.Errorf("Fold read %d minute rows, want 30", rows)
			}
			if got, want := foldedBefore(t, st), now.Add(-time.Minute); !got.Equal(want) {
				t.Errorf("folded_before = %v, want %v", got, want)
			}
			checkLevels(t, st, evs, from, to)

			late := event("key_b1", base.Add(5*time.Minute+3*time.Second), usage.OutcomeRateLimited, 3)
			r.Record(late)
			if err := r.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			evs = append(evs, late)
			checkLevels(t, st, evs, from, to)
			if rows, err := r.Fold(ctx, now.Add(time.Hour)); err != nil || rows != 0 {
				t.Fatalf("second Fold: %d minute rows, %v; want none", rows, err)
			}
			checkLevels(t, st, evs, from, to)
		})
	}
}

// TestFoldCatchesUp: after a long stop, one Fold goes through every minute with rows,
// a transaction per hour of them, and skips the days without any.
func TestFoldCatchesUp(t *testing.T) {
	base := time.Date(2026, 5, 4, 10, 0, 0, 0, time.UTC)
	for _, d := range testdb.Dialects {
		t.Run(d, func(t *testing.T) {
			ctx := context.Background()
			st := openStore(t, d)
			setFoldedBefore(t, st, base.Add(-30*24*time.Hour))
			r := usage.NewRecorder(st, usage.Config{})
			var evs []usage.Event
			for i := range 200 { // 3 hours of minutes, then a gap of ten days, then more
				at := base.Add(time.Duration(i) * time.Minute)
				if i >= 180 {
					at = base.Add(10*24*time.Hour + time.Duration(i)*time.Second)
				}
				evs = append(evs, event(keyIDs[i%len(keyIDs)], at, usage.OutcomeOK, i))
			}
			recordAll(t, r, evs)
			now := base.Add(12 * 24 * time.Hour)
			rows, err := r.Fold(ctx, now)
			if err != nil {
				t.Fatal(err)
			}
			if rows != 180+5 { // 180 minutes, then 20 events of the five keys within one minute
				t.Errorf("Fold read %d minute rows, want 185", rows)
			}
			if got, want := foldedBefore(t, st), now.Add(-time.Minute); !got.Equal(want) {
				t.Errorf("folded_before = %v, want %v", got, want)
			}
			checkLevels(t, st, evs, base.Add(-time.Hour), now)
		})
	}
}

// TestFoldConcurrentWriters: two instances record events of minutes around the fold
// boundary while a third folds minute after minute. Every event counts once in every
// level: a fold waits for the batches that read the boundary before it moved, and a
// batch that reads it after writes by the new one. Each write sleeps inside its
// transaction to make the overlap likely.
func TestFoldConcurrentWriters(t *testing.T) {
	base := time.Date(2026, 5, 4, 23, 40, 0, 0, time.UTC) // crosses midnight
	const minutes, perWriter = 40, 800
	for _, d := range testdb.Dialects {
		t.Run(d, func(t *testing.T) {
			ctx := context.Background()
			url := testdb.URL(t, d)
			st := openURL(t, url)
			setFoldedBefore(t, st, base)
			var (
				wg  sync.WaitGroup
				mu  sync.Mutex
				all []usage.Event
			)
			done := make(chan struct{})
			for w := range 2 {
				ist := st
				if d == "postgres" {
					ist = openURL(t, url) // an instance of its own: its own connections
				}
				r := usage.NewRecorder(ist, usage.Config{BatchSize: 25, FlushInterval: time.Millisecond})
				usage.SetWriteHook(r, func() error { time.Sleep(time.Millisecond); return nil })
				stop := run(t, r)
				wg.Go(func() {
					defer stop()
					for i := range perWriter {
						// Minutes move forward with i, as the fold does, with some behind.
						m := (i*minutes/perWriter + (i%3)*-2 + minutes) % minutes
						ev := event(keyIDs[(i+w)%len(keyIDs)], base.Add(time.Duration(m)*time.Minute+time.Duration(i%60)*time.Second), usage.OutcomeOK, i%300)
						r.Record(ev)
						mu.Lock()
						all = append(all, ev)
						mu.Unlock()
						if i%10 == 0 {
							time.Sleep(100 * time.Microsecond)
						}
					}
				})
			}
			folder := usage.NewRecorder(st, usage.Config{})
			folds := make(chan int, 1)
			go func() {
				n := 0
				for k := 0; ; k = (k + 1) % (minutes + 2) {
					select {
					case <-done:
						folds <- n
						return
					default:
					}
					// Fold up to base + k minutes (the boundary only moves forward).
					if rows, err := folder.Fold(ctx, base.Add(time.Duration(k+1)*time.Minute)); err != nil {
						t.Error(err)
					} else if rows > 0 {
						n++
					}
					time.Sleep(200 * time.Microsecond)
				}
			}()
			wg.Wait()
			close(done)
			if n := <-folds; n < 5 {
				t.Logf("only %d folds moved rows while the writers ran", n)
			}
			if _, err := folder.Fold(ctx, base.Add(2*time.Hour)); err != nil {
				t.Fatal(err)
			}
			if got := countLogs(t, st.Client); got != len(all) {
				t.Fatalf("stored %d rows, want %d", got, len(all))
			}
			slices.SortFunc(all, func(a, b usage.Event) int { return a.At.Compare(b.At) })
			checkLevels(t, st, all, base.Add(-time.Hour), base.Add(2*time.Hour))
		})
	}
}

// TestFoldCountsWritesDuringFold: a fold reads and adds the minutes before it locks
// the boundary, so batches still write minute rows meanwhile; what they wrote is added
// under the lock (PostgreSQL: SQLite's single connection leaves no meanwhile).
func TestFoldCountsWritesDuringFold(t *testing.T) {
	ctx := context.Background()
	base := time.Date(2026, 5, 4, 10, 0, 0, 0, time.UTC)
	url := testdb.URL(t, "postgres")
	st, other := openURL(t, url), openURL(t, url) // two instances on one database
	setFoldedBefore(t, st, base)
	r := usage.NewRecorder(st, usage.Config{})
	var evs []usage.Event
	for i := range 40 {
		evs = append(evs, event(keyIDs[i%len(keyIDs)], base.Add(time.Duration(i)*13*time.Second), usage.OutcomeOK, i))
	}
	recordAll(t, r, evs)
	// Meanwhile, another instance adds to minutes the fold has read (and to one it
	// has not: a key without a row yet), and to one after its range.
	meanwhile := []usage.Event{
		event("key_a1", base.Add(10*time.Second), usage.OutcomeError, 7),
		event("key_c1", base.Add(3*time.Minute), usage.OutcomeRateLimited, 70),
		event("key_b2", base.Add(5*time.Minute+1*time.Second), usage.OutcomeOK, 700),
		event("key_b2", base.Add(50*time.Minute), usage.OutcomeOK, 1),
	}
	hooked := false
	usage.SetFoldHook(r, func() {
		if hooked {
			return
		}
		hooked = true
		w := usage.NewRecorder(other, usage.Config{})
		for _, ev := range meanwhile {
			w.Record(ev)
		}
		if err := w.Flush(ctx); err != nil {
			t.Error(err)
		}
	})
	if _, err := r.Fold(ctx, base.Add(20*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if !hooked {
		t.Fatal("the fold never ran its hook")
	}
	if got, want := foldedBefore(t, st), base.Add(19*time.Minute); !got.Equal(want) {
		t.Fatalf("folded_before = %v, want %v", got, want)
	}
	all := append(slices.Clone(evs), meanwhile...)
	slices.SortFunc(all, func(a, b usage.Event) int { return a.At.Compare(b.At) })
	checkQueries(t, st, all, base.Add(-time.Hour), base.Add(2*time.Hour))
	if got, want := sumRequests(t, st.Client, usagerollup.GranularityHour), len(all)-1; got != want {
		t.Errorf("hour rollups hold %d requests, want %d (all but the minute after the fold's range)", got, want)
	}
	if _, err := r.Fold(ctx, base.Add(2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	checkLevels(t, st, all, base.Add(-time.Hour), base.Add(2*time.Hour))
}

// TestFoldStats: Stats says where this recorder last saw the boundary and how many
// folds failed (the fold lag and error metrics).
func TestFoldStats(t *testing.T) {
	ctx := context.Background()
	st := openStore(t, "sqlite")
	base := time.Date(2026, 5, 4, 10, 0, 0, 0, time.UTC)
	setFoldedBefore(t, st, base)
	r := usage.NewRecorder(st, usage.Config{})
	if s := r.Stats(); !s.FoldedBefore.IsZero() || s.FoldErrors != 0 {
		t.Fatalf("before any fold: %+v", s)
	}
	r.Record(event("key_a1", base.Add(time.Minute), usage.OutcomeOK, 1))
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Fold(ctx, base.Add(10*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if s := r.Stats(); !s.FoldedBefore.Equal(base.Add(9*time.Minute)) || s.FoldErrors != 0 {
		t.Fatalf("after a fold: %+v, want folded before %v", s, base.Add(9*time.Minute))
	}
	// Nothing to fold: the boundary seen stays.
	if _, err := r.Fold(ctx, base.Add(9*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if s := r.Stats(); !s.FoldedBefore.Equal(base.Add(9 * time.Minute)) {
		t.Fatalf("after an empty fold: %+v", s)
	}
	st.Close()
	if _, err := r.Fold(ctx, base.Add(20*time.Minute)); err == nil {
		t.Fatal("Fold on a closed database succeeded")
	}
	if s := r.Stats(); s.FoldErrors != 1 || !s.FoldedBefore.Equal(base.Add(9*time.Minute)) {
		t.Fatalf("after a failed fold: %+v", s)
	}
}

// TestRunFolds: Run folds by itself, beside the writer, and stops folding when it
// returns.
func TestRunFolds(t *testing.T) {
	for _, d := range testdb.Dialects {
		t.Run(d, func(t *testing.T) {
			st := openStore(t, d)
			now := time.Now().UTC()
			setFoldedBefore(t, st, now.Add(-time.Hour).Truncate(time.Minute))
			r := usage.NewRecorder(st, usage.Config{FlushInterval: 10 * time.Millisecond})
			usage.SetFoldEvery(r, 20*time.Millisecond)
			stop := run(t, r)
			var evs []usage.Event
			for i := range 30 {
				evs = append(evs, event(keyIDs[i%len(keyIDs)], now.Add(-time.Duration(i+2)*time.Minute), usage.OutcomeOK, i))
			}
			for _, ev := range evs {
				r.Record(ev)
			}
			waitUntil(t, "the recorder to fold what it wrote", func() bool {
				return sumRequests(t, st.Client, usagerollup.GranularityDay) == len(evs)
			})
			stop()
			if s := r.Stats(); s.FoldErrors != 0 || s.FoldedBefore.Before(now.Add(-2*time.Minute).Truncate(time.Minute)) {
				t.Errorf("stats after folding: %+v", s)
			}
			slices.SortFunc(evs, func(a, b usage.Event) int { return a.At.Compare(b.At) })
			checkLevels(t, st, evs, now.Add(-2*time.Hour), now.Add(time.Hour))
		})
	}
}

// TestUsageFoldSystemOnly: no viewer reads or moves the fold boundary, a platform admin
// included (a moved boundary would count minutes twice or not at all); the system
// context does.
func TestUsageFoldSystemOnly(t *testing.T) {
	st := openStore(t, "sqlite")
	bg := context.Background()
	at := time.Date(2026, 5, 4, 10, 0, 0, 0, time.UTC)
	setFoldedBefore(t, st, at)
	for name, ctx := range map[string]context.Context{
		"no viewer": bg,
		"tenant":    viewer.NewContext(bg, &viewer.Viewer{TenantID: tenantA, Scopes: []string{viewer.ScopeUsageRead}}),
		"admin":     viewer.NewContext(bg, &viewer.Viewer{Admin: true}),
	} {
		if _, err := st.Client.UsageFold.Query().All(ctx); !errors.Is(err, privacy.Deny) {
			t.Errorf("%s reads usage_folds: err = %v, want privacy deny", name, err)
		}
		if err := st.Client.UsageFold.UpdateOneID(1).SetFoldedBefore(at.Add(time.Hour)).Exec(ctx); !errors.Is(err, privacy.Deny) {
			t.Errorf("%s moves the boundary: err = %v, want privacy deny", name, err)
		}
		if err := st.Client.UsageFold.Create().SetID(2).SetFoldedBefore(at).Exec(ctx); !errors.Is(err, privacy.Deny) {
			t.Errorf("%s adds a boundary: err = %v, want privacy deny", name, err)
		}
	}
	if got := foldedBefore(t, st); !got.Equal(at) {
		t.Fatalf("folded_before = %v after the denied changes, want %v", got, at)
	}
}
