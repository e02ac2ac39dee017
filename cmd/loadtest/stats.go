package main

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"time"
)

// percentile returns the q-th quantile (0 < q <= 1) of sorted by the nearest-rank
// method: the smallest value with at least q of the values at or below it. It returns
// 0 for no values.
func percentile(sorted []time.Duration, q float64) time.Duration {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	rank := int(math.Ceil(q * float64(n)))
	rank = min(max(rank, 1), n)
	return sorted[rank-1]
}

// summary is the distribution of a set of durations.
type summary struct {
	N             int
	P50, P99, Max time.Duration
}

// summarize sorts ds in place and returns its p50, p99 and maximum.
func summarize(ds []time.Duration) summary {
	slices.Sort(ds)
	s := summary{N: len(ds), P50: percentile(ds, 0.50), P99: percentile(ds, 0.99)}
	if len(ds) > 0 {
		s.Max = ds[len(ds)-1]
	}
	return s
}

// ms formats d in milliseconds with a precision that suits its size.
func ms(d time.Duration) string {
	v := float64(d) / float64(time.Millisecond)
	switch {
	case v < 10:
		return fmt.Sprintf("%.2f ms", v)
	case v < 100:
		return fmt.Sprintf("%.1f ms", v)
	default:
		return fmt.Sprintf("%.0f ms", v)
	}
}

// us formats d in whole microseconds ("?" for 0: unknown).
func us(d time.Duration) string {
	if d <= 0 {
		return "?"
	}
	return fmt.Sprintf("%d µs", d.Round(time.Microsecond)/time.Microsecond)
}

// formatStatuses renders HTTP status counts in status order: "200: 10, 429: 2", or
// "none".
func formatStatuses(m map[int]int) string {
	if len(m) == 0 {
		return "none"
	}
	codes := make([]int, 0, len(m))
	for c := range m {
		codes = append(codes, c)
	}
	sort.Ints(codes)
	parts := make([]string, len(codes))
	for i, c := range codes {
		parts[i] = fmt.Sprintf("%d: %d", c, m[c])
	}
	return strings.Join(parts, ", ")
}
