package usage

import (
	"math/rand/v2"
	"slices"
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

// rowOrder groups a batch's rows by tenant, then key, and keeps each group's arrival
// order; the batch itself is not reordered.
func TestRowOrder(t *testing.T) {
	for _, tc := range []struct {
		name string
		evs  [][2]string // tenant, key
		want []int32
	}{
		{"empty", nil, []int32{}},
		{"one key", [][2]string{{"t1", "k1"}, {"t1", "k1"}, {"t1", "k1"}}, []int32{0, 1, 2}},
		{"keys interleaved", [][2]string{{"t1", "k2"}, {"t1", "k1"}, {"t1", "k2"}, {"t1", "k1"}}, []int32{1, 3, 0, 2}},
		{"tenants first", [][2]string{{"t2", "a"}, {"t1", "z"}, {"t2", "a"}, {"t1", "b"}}, []int32{3, 1, 0, 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			evs := make([]Event, len(tc.evs))
			for i, e := range tc.evs {
				evs[i] = Event{TenantID: e[0], APIKeyID: e[1], LatencyMs: i}
			}
			var w writer
			got := w.rowOrder(evs)
			if !slices.Equal(got, tc.want) {
				t.Fatalf("order %v, want %v", got, tc.want)
			}
			for i := range evs {
				if evs[i].LatencyMs != i {
					t.Fatalf("the batch was reordered: %+v", evs)
				}
			}
		})
	}
}
