package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"
)

// target is one side of a comparison: one request, sent again and again, and what a
// good answer contains. The stub and Latchkey get the same headers and body shape,
// and the load generator does the same work for each.
type target struct {
	name   string
	url    string
	header [][2]string // name, value
	body   []byte
	want   []byte // a good answer is HTTP 200 with a body containing want
	http   *http.Client
	pid    int // the process answering, whose CPU time a round measures (0: none)
}

// roundResult is what one round against one target measured.
type roundResult struct {
	Elapsed  time.Duration
	Requests int // answered requests (any status)
	Bad      int // answers that are not 200 or lack target.want
	Errors   int // requests without an answer
	FirstErr string
	Latency  summary       // of answered requests
	CPU      time.Duration // CPU time of the answering process during the round (0: unknown)
	// Backing is the CPU time PostgreSQL and Redis used during the round (see
	// backingCPU; 0: unknown or not measured).
	Backing time.Duration
}

// BackingPerRequest is PostgreSQL's and Redis's CPU time per answered request (0: unknown).
func (r roundResult) BackingPerRequest() time.Duration {
	if r.Backing <= 0 || r.Requests == 0 {
		return 0
	}
	return r.Backing / time.Duration(r.Requests)
}

// CPUPerRequest is the answering process's CPU time per answered request (0: unknown).
func (r roundResult) CPUPerRequest() time.Duration {
	if r.CPU <= 0 || r.Requests == 0 {
		return 0
	}
	return r.CPU / time.Duration(r.Requests)
}

// RPS is answered requests per second.
func (r roundResult) RPS() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Requests) / r.Elapsed.Seconds()
}

// measured runs one round and adds the CPU time that the answering process pid
// (0: none) and PostgreSQL and Redis spent during it (see backingCPU).
func measured(pid int, round func() roundResult) roundResult {
	cpu0, cpuErr := processCPU(pid)
	back0, backOK := backingCPU()
	res := round()
	if cpu1, err := processCPU(pid); pid > 0 && cpuErr == nil && err == nil {
		res.CPU = cpu1 - cpu0
	}
	if back1, ok := backingCPU(); backOK && ok {
		res.Backing = back1 - back0
	}
	return res
}

// hammer runs conns loops sending t's request for d (see closedLoop). With t.pid, it
// also measures that process's CPU time.
func hammer(ctx context.Context, t target, conns int, d time.Duration) roundResult {
	return measured(t.pid, func() roundResult { return closedRound(ctx, t, conns, d) })
}

// closedRound is hammer's round: conns closed loops, each answer checked.
func closedRound(ctx context.Context, t target, conns int, d time.Duration) roundResult {
	type tally struct {
		bad   int
		first string
	}
	tallies := make([]tally, conns)
	l := closedLoop(ctx, conns, d, func(ctx context.Context, _ int) (int, []byte, error) { return t.send(ctx) },
		func(w, status int, body []byte) {
			if status != http.StatusOK || !bytes.Contains(body, t.want) {
				if tallies[w].bad++; tallies[w].first == "" {
					tallies[w].first = fmt.Sprintf("HTTP %d: %.300s", status, body)
				}
			}
		})
	res := roundResult{Elapsed: l.Elapsed, Requests: l.Requests, Errors: l.Errors, FirstErr: l.FirstErr, Latency: l.Latency}
	for _, t := range tallies {
		res.Bad += t.bad
		if res.FirstErr == "" {
			res.FirstErr = t.first
		}
	}
	return res
}

// loopResult is what closedLoop measured.
type loopResult struct {
	Elapsed  time.Duration
	Requests int // answered requests (any status)
	Errors   int // requests without an answer
	FirstErr string
	Latency  summary // of answered requests
}

// closedLoop runs workers loops that send for d, each waiting for its answer before
// it sends again (closed loop: the concurrency is workers). A loop checks the clock
// only between requests: a request is never abandoned half-way, so that every request
// the server served was also counted here. send returns the status and body of an
// answer, or an error when none came; a loop stops after 100 errors in a row (the
// process is gone: no hammering of a closed port). answer sees each answer of worker
// w, on w's goroutine, after its latency was taken.
func closedLoop(ctx context.Context, workers int, d time.Duration,
	send func(ctx context.Context, w int) (int, []byte, error), answer func(w, status int, body []byte)) loopResult {
	type worker struct {
		lat      []time.Duration
		errors   int
		firstErr string
	}
	ws := make([]worker, workers)
	start := time.Now()
	deadline := start.Add(d)
	var wg sync.WaitGroup
	for i := range ws {
		wg.Go(func() {
			w := &ws[i]
			w.lat = make([]time.Duration, 0, 8192)
			for inARow := 0; inARow < 100 && time.Now().Before(deadline) && ctx.Err() == nil; {
				t0 := time.Now()
				status, body, err := send(ctx, i)
				lat := time.Since(t0)
				if err != nil {
					if w.errors++; w.firstErr == "" {
						w.firstErr = err.Error()
					}
					inARow++
					time.Sleep(10 * time.Millisecond)
					continue
				}
				inARow = 0
				w.lat = append(w.lat, lat)
				answer(i, status, body)
			}
		})
	}
	wg.Wait()
	res := loopResult{Elapsed: time.Since(start)}
	var all []time.Duration
	for _, w := range ws {
		all = append(all, w.lat...)
		res.Errors += w.errors
		if res.FirstErr == "" {
			res.FirstErr = w.firstErr
		}
	}
	res.Requests = len(all)
	res.Latency = summarize(all)
	return res
}

// send posts t's request once and returns the status and body.
func (t target) send(ctx context.Context) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.url, bytes.NewReader(t.body))
	if err != nil {
		return 0, nil, err
	}
	for _, h := range t.header {
		req.Header.Set(h[0], h[1])
	}
	resp, err := t.http.Do(req)
	if err != nil {
		return 0, nil, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp.StatusCode, body, err
}
