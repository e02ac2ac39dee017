package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
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
	// bodies, when set, are sent in turn instead of body (body is the first); turn
	// counts the requests sent.
	bodies [][]byte
	turn   *atomic.Uint64
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
	return checkedRound(t, conns, func(send sender, answer answerer) loopResult { return closedLoop(ctx, conns, d, send, answer) })
}

// fixedRateRound sends t's request at rate per second for d over conns connections (see
// openLoop), each answer checked, and measures t.pid's CPU time like hammer.
func fixedRateRound(ctx context.Context, t target, conns int, rate float64, d time.Duration) roundResult {
	return measured(t.pid, func() roundResult {
		return checkedRound(t, conns, func(send sender, answer answerer) loopResult { return openLoop(ctx, conns, rate, d, send, answer) })
	})
}

// sender sends worker w's next request and returns the status and body of its answer,
// or an error when none came; answerer sees each answer of worker w, on w's goroutine,
// after its latency was taken.
type (
	sender   func(ctx context.Context, w int) (int, []byte, error)
	answerer func(w, status int, body []byte)
)

// checkedRound runs loop with t's request and counts the answers that are not HTTP 200
// with t.want in the body.
func checkedRound(t target, conns int, loop func(sender, answerer) loopResult) roundResult {
	type tally struct {
		bad   int
		first string
	}
	tallies := make([]tally, conns)
	l := loop(func(ctx context.Context, _ int) (int, []byte, error) { return t.send(ctx) },
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

// loopResult is what closedLoop or openLoop measured.
type loopResult struct {
	Elapsed  time.Duration
	Requests int // answered requests (any status)
	Errors   int // requests without an answer
	FirstErr string
	Latency  summary // of answered requests
}

// loopWorker is what one worker of a loop saw.
type loopWorker struct {
	lat      []time.Duration
	errors   int
	firstErr string
	inARow   int // errors since the last answer
}

// exchange sends the worker's next request and notes its latency, counted from
// since, or its error. It reports false after 100 errors in a row (the process is
// gone: no hammering of a closed port).
func (w *loopWorker) exchange(ctx context.Context, i int, since time.Time, send sender, answer answerer) bool {
	status, body, err := send(ctx, i)
	lat := time.Since(since)
	if err != nil {
		if w.errors++; w.firstErr == "" {
			w.firstErr = err.Error()
		}
		w.inARow++
		time.Sleep(10 * time.Millisecond)
		return w.inARow < 100
	}
	w.inARow = 0
	w.lat = append(w.lat, lat)
	answer(i, status, body)
	return true
}

// runWorkers runs loop on workers goroutines and sums up what they saw.
func runWorkers(workers int, loop func(i int, w *loopWorker)) loopResult {
	ws := make([]loopWorker, workers)
	start := time.Now()
	var wg sync.WaitGroup
	for i := range ws {
		wg.Go(func() {
			ws[i].lat = make([]time.Duration, 0, 8192)
			loop(i, &ws[i])
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

// closedLoop runs workers loops that send for d, each waiting for its answer before
// it sends again (closed loop: the concurrency is workers). A loop checks the clock
// only between requests: a request is never abandoned half-way, so that every request
// the server served was also counted here. A latency is that of one exchange; a loop
// stops after 100 errors in a row.
func closedLoop(ctx context.Context, workers int, d time.Duration, send sender, answer answerer) loopResult {
	deadline := time.Now().Add(d)
	return runWorkers(workers, func(i int, w *loopWorker) {
		for time.Now().Before(deadline) && ctx.Err() == nil {
			if !w.exchange(ctx, i, time.Now(), send, answer) {
				return
			}
		}
	})
}

// openLoop sends rate requests per second for d (open loop: the schedule does not
// follow the server's speed): request k is due at k/rate seconds, and the first of
// workers connections to be free sends it. A request's latency counts from when it
// was due when no connection was free by then, so that waiting behind a slow server
// is counted (no coordinated omission), and from when it was sent otherwise, so that
// the lateness of this process's timers is not (they wake up to a millisecond late).
// Every request of the schedule is sent, however late; a loop stops after 100 errors
// in a row.
func openLoop(ctx context.Context, workers int, rate float64, d time.Duration, send sender, answer answerer) loopResult {
	total := int64(d.Seconds() * rate)
	interval := float64(time.Second) / rate
	var next atomic.Int64
	start := time.Now()
	return runWorkers(workers, func(i int, w *loopWorker) {
		for ctx.Err() == nil {
			k := next.Add(1) - 1
			if k >= total {
				return
			}
			due := start.Add(time.Duration(float64(k) * interval))
			since := due
			if wait := time.Until(due); wait > 0 {
				time.Sleep(wait)
				since = time.Now()
			}
			if !w.exchange(ctx, i, since, send, answer) {
				return
			}
		}
	})
}

// payload is the body of t's next request.
func (t target) payload() []byte {
	if len(t.bodies) == 0 {
		return t.body
	}
	return t.bodies[(t.turn.Add(1)-1)%uint64(len(t.bodies))]
}

// send posts t's request once and returns the status and body.
func (t target) send(ctx context.Context) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.url, bytes.NewReader(t.payload()))
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
