package main

import (
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	ds := func(vs ...int) []time.Duration {
		out := make([]time.Duration, len(vs))
		for i, v := range vs {
			out[i] = time.Duration(v)
		}
		return out
	}
	hundred := make([]int, 100)
	for i := range hundred {
		hundred[i] = i + 1
	}
	for _, tc := range []struct {
		name string
		in   []time.Duration
		q    float64
		want time.Duration
	}{
		{"empty", nil, 0.5, 0},
		{"one", ds(7), 0.99, 7},
		{"median of odd", ds(1, 2, 3), 0.5, 2},
		{"median of even is the lower", ds(1, 2, 3, 4), 0.5, 2},
		{"p99 of 100", ds(hundred...), 0.99, 99},
		{"p50 of 100", ds(hundred...), 0.50, 50},
		{"p100", ds(hundred...), 1, 100},
		{"tiny q is the minimum", ds(3, 4, 5), 0.0001, 3},
	} {
		if got := percentile(tc.in, tc.q); got != tc.want {
			t.Errorf("%s: percentile(%v, %v) = %v, want %v", tc.name, tc.in, tc.q, got, tc.want)
		}
	}
}

func TestSummarizeSorts(t *testing.T) {
	s := summarize([]time.Duration{5, 1, 4, 2, 3})
	if s.N != 5 || s.P50 != 3 || s.P99 != 5 || s.Max != 5 {
		t.Fatalf("summarize = %+v", s)
	}
}

func TestFormatStatuses(t *testing.T) {
	if got := formatStatuses(nil); got != "none" {
		t.Errorf("formatStatuses(nil) = %q", got)
	}
	if got := formatStatuses(map[int]int{429: 2, 200: 10}); got != "200: 10, 429: 2" {
		t.Errorf("formatStatuses = %q", got)
	}
}
