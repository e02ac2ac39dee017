package usage

import "math"

// HistogramBuckets is the number of latency buckets of a Histogram (the lat_a..lat_p
// columns of a usage rollup).
const HistogramBuckets = 16

// upperBounds are the inclusive upper bounds, in milliseconds, of the finite buckets;
// the last bucket (index 15) holds everything above 60000 ms.
var upperBounds = [HistogramBuckets - 1]int{1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 30000, 60000}

// lastFinite is the largest finite bound, reported for quantiles in the +Inf bucket.
const lastFinite = 60000

// Histogram counts latencies in fixed, log-spaced buckets with upper bounds (ms)
// 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 30000, 60000 and +Inf.
// Bucket i holds latencies in (bound[i-1], bound[i]]; bucket 0 holds everything up to
// 1 ms (negative values included). Histograms of different buckets, keys or instances
// merge by adding counts, which is why rollups store them instead of percentiles.
// The zero value is an empty histogram.
type Histogram [HistogramBuckets]int64

// BucketUpperBound returns the upper bound in ms of bucket i (0 <= i < 16); +Inf for the
// last bucket.
func BucketUpperBound(i int) float64 {
	if i >= len(upperBounds) {
		return math.Inf(1)
	}
	return float64(upperBounds[i])
}

// bucketOf returns the index of the bucket that holds a latency of ms.
func bucketOf(ms int) int {
	// A linear scan over 15 small ints is as fast as a binary search here and
	// branch-predicts well for the common, fast latencies.
	for i, b := range upperBounds {
		if ms <= b {
			return i
		}
	}
	return HistogramBuckets - 1
}

// Observe adds one latency of ms milliseconds.
func (h *Histogram) Observe(ms int) { h[bucketOf(ms)]++ }

// Merge adds the counts of o to h.
func (h *Histogram) Merge(o *Histogram) {
	for i := range h {
		h[i] += o[i]
	}
}

// Count returns the number of observations.
func (h *Histogram) Count() int64 {
	var n int64
	for _, c := range h {
		n += c
	}
	return n
}

// Quantile returns the q-quantile (0 < q <= 1) in ms, linearly interpolated inside the
// bucket that holds it (as Prometheus' histogram_quantile does): 0 for an empty
// histogram, and 60000 (the last finite bound) when the quantile falls in the +Inf
// bucket. q is clamped to [0, 1]; a NaN q gives 0. It returns no error.
func (h *Histogram) Quantile(q float64) float64 {
	n := h.Count()
	if n == 0 || math.IsNaN(q) {
		return 0
	}
	q = min(max(q, 0), 1)
	rank := q * float64(n)
	var cum int64
	for i, c := range h {
		if c == 0 {
			continue
		}
		if float64(cum+c) >= rank {
			if i == HistogramBuckets-1 {
				return lastFinite
			}
			lower := 0.0
			if i > 0 {
				lower = float64(upperBounds[i-1])
			}
			upper := float64(upperBounds[i])
			return lower + (upper-lower)*(rank-float64(cum))/float64(c)
		}
		cum += c
	}
	return lastFinite // only reached through float rounding at q == 1
}
