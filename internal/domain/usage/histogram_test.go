package usage

import (
	"math"
	"slices"
	"testing"
)

func TestHistogramObserve(t *testing.T) {
	cases := []struct {
		ms     int
		bucket int
	}{
		{-5, 0}, {0, 0}, {1, 0}, {2, 1}, {3, 2}, {5, 2}, {6, 3}, {10, 3}, {11, 4}, {20, 4},
		{50, 5}, {51, 6}, {100, 6}, {200, 7}, {500, 8}, {501, 9}, {1000, 9}, {2000, 10},
		{5000, 11}, {10000, 12}, {10001, 13}, {30000, 13}, {60000, 14}, {60001, 15}, {math.MaxInt32, 15},
	}
	for _, tc := range cases {
		var h Histogram
		h.Observe(tc.ms)
		if h[tc.bucket] != 1 || h.Count() != 1 {
			t.Errorf("Observe(%d): histogram %v, want one count in bucket %d", tc.ms, h, tc.bucket)
		}
		if tc.bucket < HistogramBuckets-1 && float64(tc.ms) > BucketUpperBound(tc.bucket) {
			t.Errorf("Observe(%d): above the bucket's bound %v", tc.ms, BucketUpperBound(tc.bucket))
		}
	}
	if !math.IsInf(BucketUpperBound(15), 1) || BucketUpperBound(14) != 60000 || BucketUpperBound(0) != 1 {
		t.Errorf("bounds: %v %v %v", BucketUpperBound(0), BucketUpperBound(14), BucketUpperBound(15))
	}
}

func hist(counts map[int]int64) Histogram {
	var h Histogram
	for i, c := range counts {
		h[i] = c
	}
	return h
}

func TestHistogramQuantile(t *testing.T) {
	cases := []struct {
		name string
		h    Histogram
		q    float64
		want float64
	}{
		{"empty", Histogram{}, 0.5, 0},
		{"one in first bucket, median", hist(map[int]int64{0: 1}), 0.5, 0.5},
		{"one in first bucket, max", hist(map[int]int64{0: 1}), 1, 1},
		{"uniform 100 in (50,100]", hist(map[int]int64{6: 100}), 0.5, 75},
		{"uniform 100 in (50,100], p99", hist(map[int]int64{6: 100}), 0.99, 99.5},
		{"two buckets, median at edge", hist(map[int]int64{3: 50, 4: 50}), 0.5, 10},
		{"two buckets, p75", hist(map[int]int64{3: 50, 4: 50}), 0.75, 15},
		{"skips empty buckets", hist(map[int]int64{1: 10, 9: 10}), 0.75, 750},
		{"+Inf bucket gives last finite bound", hist(map[int]int64{0: 1, 15: 9}), 0.5, 60000},
		{"q above 1 clamps", hist(map[int]int64{6: 100}), 2, 100},
		{"q 0 gives lower bound of first non-empty", hist(map[int]int64{6: 100}), 0, 50},
		{"NaN", hist(map[int]int64{6: 100}), math.NaN(), 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.h.Quantile(tc.q); math.Abs(got-tc.want) > 1e-9 {
				t.Errorf("Quantile(%v) = %v, want %v", tc.q, got, tc.want)
			}
		})
	}
}

// TestHistogramQuantileInBucket checks, for many distributions, that the estimate lies in
// the bucket of the exact (nearest-rank) quantile and that quantiles are monotonic.
func TestHistogramQuantileInBucket(t *testing.T) {
	dists := map[string]func(i int) int{
		"constant 7":  func(int) int { return 7 },
		"linear":      func(i int) int { return i },
		"quadratic":   func(i int) int { return i * i / 40 },
		"bimodal":     func(i int) int { return []int{3, 900}[i%2] },
		"with +Inf":   func(i int) int { return []int{1, 40, 90000}[i%3] },
		"mostly slow": func(i int) int { return 20000 + i%7 },
	}
	for name, f := range dists {
		for _, n := range []int{1, 2, 3, 10, 99, 1000} {
			var h Histogram
			vals := make([]int, n)
			for i := range n {
				vals[i] = f(i)
				h.Observe(vals[i])
			}
			slices.Sort(vals)
			prev := 0.0
			for _, q := range []float64{0.01, 0.25, 0.5, 0.9, 0.95, 0.99, 1} {
				got := h.Quantile(q)
				exact := vals[int(math.Ceil(q*float64(n)))-1]
				b := bucketOf(exact)
				lower, upper := 0.0, BucketUpperBound(b)
				if b > 0 {
					lower = BucketUpperBound(b - 1)
				}
				if b == HistogramBuckets-1 {
					upper = lower
				}
				if got < lower || got > upper || got < prev {
					t.Errorf("%s n=%d q=%v: %v, want in [%v, %v] (exact %d) and >= %v", name, n, q, got, lower, upper, exact, prev)
				}
				prev = got
			}
		}
	}
}

func TestHistogramMerge(t *testing.T) {
	cases := []struct {
		name string
		a, b []int
	}{
		{"both empty", nil, nil},
		{"into empty", nil, []int{1, 5, 70000}},
		{"from empty", []int{3, 3}, nil},
		{"overlapping", []int{1, 2, 3, 400}, []int{3, 400, 400, 59999}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var a, b, all Histogram
			for _, v := range tc.a {
				a.Observe(v)
				all.Observe(v)
			}
			for _, v := range tc.b {
				b.Observe(v)
				all.Observe(v)
			}
			a.Merge(&b)
			if a != all || a.Count() != int64(len(tc.a)+len(tc.b)) {
				t.Errorf("merged %v, want %v", a, all)
			}
		})
	}
}
