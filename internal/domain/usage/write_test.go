package usage

import (
	"math/rand/v2"
	"testing"
	"time"
)

// sqliteTime writes what the SQLite driver writes for a time (t.Format with the
// store's layout), byte for byte, including when consecutive rows share a second or
// not, and for fractions with trailing zeros or none.
func TestSQLiteTime(t *testing.T) {
	base := time.Date(2026, 11, 30, 23, 59, 59, 0, time.UTC)
	times := []time.Time{
		base,
		base.Add(120 * time.Microsecond),
		base.Add(999999 * time.Microsecond),
		base.Add(time.Second), // the next day
		base.Add(time.Second + 100*time.Millisecond),
		base.Add(time.Second + time.Microsecond),
		base.Add(time.Second + 123456789), // nanoseconds, as only a direct caller would give
		base,                              // back to an earlier second
		time.Date(1999, 1, 2, 3, 4, 5, 600000000, time.UTC),
		time.Date(2026, 3, 4, 5, 6, 7, 8000, time.FixedZone("X", 3600)), // not UTC
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		times = append(times, time.Unix(rng.Int64N(4e9), 0).UTC().Add(time.Duration(rng.IntN(1e6))*time.Microsecond))
	}
	var w writer
	for _, tm := range times {
		if got, want := w.sqliteTime(tm), tm.Format(sqliteTimeFormat); got != want {
			t.Fatalf("sqliteTime(%v) = %q, want %q", tm, got, want)
		}
	}
}
