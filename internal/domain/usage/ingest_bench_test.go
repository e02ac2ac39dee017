package usage_test

import (
	"context"
	"fmt"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/latchkey/latchkey/internal/domain/usage"
)

// BenchmarkRecorderIngestPostgres measures sustained ingest into PostgreSQL: b.N events
// of 50 keys recorded with Run going, then Flush and Fold; events/s covers the time
// from the first Record to the end of the fold, when every event is stored at every
// rollup level.
func BenchmarkRecorderIngestPostgres(b *testing.B) { benchmarkIngest(b, "postgres", 50) }

// BenchmarkRecorderIngestPostgresManyKeys is the same with the events of 1,000 keys: a
// batch then adds to about one minute rollup row per event instead of sharing them, as
// traffic spread over many keys does.
func BenchmarkRecorderIngestPostgresManyKeys(b *testing.B) { benchmarkIngest(b, "postgres", 1000) }

// BenchmarkRecorderIngestSQLite is the same on the embedded database.
func BenchmarkRecorderIngestSQLite(b *testing.B) { benchmarkIngest(b, "sqlite", 50) }

// BenchmarkRecorderIngestSQLiteManyKeys is BenchmarkRecorderIngestPostgresManyKeys on
// the embedded database.
func BenchmarkRecorderIngestSQLiteManyKeys(b *testing.B) { benchmarkIngest(b, "sqlite", 1000) }

func benchmarkIngest(b *testing.B, dialect string, keys int) {
	st := openStore(b, dialect)
	// BlockTimeout makes the producer wait for the writer instead of dropping, so
	// that the number measures the writer.
	r := usage.NewRecorder(st, usage.Config{BlockTimeout: time.Minute})
	stop := run(b, r)
	evs := make([]usage.Event, max(1000, keys))
	now := time.Now()
	for i := range evs {
		key := fmt.Sprintf("key_%02d", i%keys)
		evs[i] = usage.Event{
			TenantID: fmt.Sprintf("ten_%d", i%5), APIKeyID: key, OperationName: "GetKeys", OperationType: "query",
			RootFields: []string{"apiKeys", "viewer"}[:1+i%2], Outcome: usage.OutcomeOK, LatencyMs: i % 700,
			IP: "203.0.113.9", At: now.Add(time.Duration(i) * time.Millisecond),
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for i := range b.N {
		r.Record(evs[i%len(evs)])
	}
	if err := r.Flush(context.Background()); err != nil {
		b.Fatal(err)
	}
	if _, err := r.Fold(context.Background(), now.Add(time.Hour)); err != nil {
		b.Fatal(err)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "events/s")
	stop()
	if s := r.Stats(); s.Written != uint64(b.N) || s.Dropped != 0 {
		b.Fatalf("stats %+v, want %d written", s, b.N)
	}
	if got := countLogs(b, st.Client); got != b.N {
		b.Fatalf("stored %d rows, want %d", got, b.N)
	}
}

// BenchmarkFold measures one fold of a minute of 1,000 keys: it reads their 1,000
// minute rows and adds them to 1,000 hour and 1,000 day rows, then reads them again
// under the lock of the boundary (ms-locked/op: what batches wait for). Each iteration
// moves the boundary back and folds the same minute again (the hour and day rows grow;
// the work is the same).
func BenchmarkFold(b *testing.B) {
	for _, d := range []string{"postgres", "sqlite"} {
		b.Run(d, func(b *testing.B) {
			st := openStore(b, d)
			minute := time.Date(2026, 5, 4, 10, 7, 0, 0, time.UTC)
			setFoldedBefore(b, st, minute)
			r := usage.NewRecorder(st, usage.Config{})
			const keys = 1000
			for k := range keys {
				r.Record(usage.Event{TenantID: fmt.Sprintf("ten_%d", k%5), APIKeyID: fmt.Sprintf("key_%04d", k),
					OperationType: "verify", Outcome: usage.OutcomeValid, LatencyMs: k % 700, At: minute.Add(time.Duration(k%60) * time.Second)})
			}
			if err := r.Flush(context.Background()); err != nil {
				b.Fatal(err)
			}
			var locked time.Duration
			var lockedFrom time.Time
			usage.SetFoldHook(r, func() { lockedFrom = time.Now() })
			for b.Loop() {
				setFoldedBefore(b, st, minute)
				if n, err := r.Fold(context.Background(), minute.Add(2*time.Minute)); err != nil || n != keys {
					b.Fatalf("Fold: %d minute rows, %v", n, err)
				}
				locked += time.Since(lockedFrom)
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/keys, "µs/minute-row")
			// What the batches wait for: from the lock of the boundary to the commit.
			b.ReportMetric(float64(locked.Microseconds())/float64(b.N)/1000, "ms-locked/op")
		})
	}
}

// BenchmarkRecorderPacedSQLite records at a moderate, steady rate (8 producers, 10,000
// events/s in all: a server far from saturation, as most are) into the embedded
// database with Run going, and reports the process's CPU time per event
// (getrusage), producers' timers included. The writer's share is what a batch costs
// plus how often recording wakes it.
func BenchmarkRecorderPacedSQLite(b *testing.B) {
	st := openStore(b, "sqlite")
	r := usage.NewRecorder(st, usage.Config{BlockTimeout: time.Minute})
	stop := run(b, r)
	ev := usage.Event{TenantID: "ten_1", APIKeyID: "key_1", OperationName: "load", OperationType: "verify",
		Outcome: usage.OutcomeOK, IP: "203.0.113.9"}
	const producers, rate = 8, 10000
	interval := time.Duration(producers) * time.Second / rate
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := processCPU(b)
	start := time.Now()
	var wg sync.WaitGroup
	for p := range producers {
		wg.Go(func() {
			for k := 0; k*producers+p < b.N; k++ {
				time.Sleep(time.Until(start.Add(time.Duration(k) * interval)))
				r.Record(ev)
			}
		})
	}
	wg.Wait()
	if err := r.Flush(context.Background()); err != nil {
		b.Fatal(err)
	}
	cpu := processCPU(b) - cpu0
	b.StopTimer()
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/event")
	stop()
	if s := r.Stats(); s.Written != uint64(b.N) || s.Dropped != 0 {
		b.Fatalf("stats %+v, want %d written", s, b.N)
	}
}

// processCPU is the user and system CPU time this process has used.
func processCPU(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
