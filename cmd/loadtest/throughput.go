package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"time"
)

// viewerQuery is the operation of the throughput phase.
const viewerQuery = `{ viewer { apiKey { id } } }`

// throughputResult is what the throughput phase measured.
type throughputResult struct {
	Workers   int
	Elapsed   time.Duration
	Requests  int // answered requests (any status)
	Statuses  map[int]int
	GQLErrors int // 200 answers with an "errors" member
	Transport int // requests without an answer
	FirstErr  string
	Latency   summary // of answered requests
}

// RPS is answered requests per second.
func (r throughputResult) RPS() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Requests) / r.Elapsed.Seconds()
}

// runThroughput runs workers loops posting the viewer query with key for d (see
// closedLoop), worker w to instance w mod len(clients).
func runThroughput(ctx context.Context, clients []*client, key string, workers int, d time.Duration) throughputResult {
	body := requestBody(viewerQuery, nil)
	type tally struct {
		statuses  map[int]int
		gqlErrors int
		first     string
	}
	tallies := make([]tally, workers)
	l := closedLoop(ctx, workers, d, func(ctx context.Context, w int) (int, []byte, error) {
		resp, err := clients[w%len(clients)].post(ctx, key, true, body)
		if err != nil {
			return 0, nil, err
		}
		return resp.Status, resp.Body, nil
	}, func(w, status int, body []byte) {
		t := &tallies[w]
		if t.statuses == nil {
			t.statuses = map[int]int{}
		}
		t.statuses[status]++
		if status == http.StatusOK && bytes.Contains(body, []byte(`"errors"`)) {
			if t.gqlErrors++; t.first == "" {
				t.first = fmt.Sprintf("HTTP 200 with errors: %.300s", body)
			}
		} else if status != http.StatusOK && t.first == "" {
			t.first = fmt.Sprintf("HTTP %d: %.300s", status, body)
		}
	})
	res := throughputResult{Workers: workers, Elapsed: l.Elapsed, Requests: l.Requests, Statuses: map[int]int{},
		Transport: l.Errors, FirstErr: l.FirstErr, Latency: l.Latency}
	for _, t := range tallies {
		for s, n := range t.statuses {
			res.Statuses[s] += n
		}
		res.GQLErrors += t.gqlErrors
		if res.FirstErr == "" {
			res.FirstErr = t.first
		}
	}
	return res
}
