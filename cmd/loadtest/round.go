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

// hammer runs conns loops sending t's request for d, each waiting for its answer
// before the next (closed loop: the concurrency is conns). A loop checks the clock
// only between requests. With t.pid, it also measures that process's CPU time.
func hammer(ctx context.Context, t target, conns int, d time.Duration) roundResult {
	type worker struct {
		lat      []time.Duration
		bad, err int
		firstErr string
	}
	workers := make([]worker, conns)
	cpu0, cpuErr := processCPU(t.pid)
	start := time.Now()
	deadline := start.Add(d)
	var wg sync.WaitGroup
	for i := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := &workers[i]
			w.lat = make([]time.Duration, 0, 8192)
			note := func(format string, args ...any) {
				if w.firstErr == "" {
					w.firstErr = fmt.Sprintf(format, args...)
				}
			}
			for time.Now().Before(deadline) && ctx.Err() == nil {
				t0 := time.Now()
				status, body, err := t.send(ctx)
				lat := time.Since(t0)
				if err != nil {
					w.err++
					note("%v", err)
					if w.err >= 100 {
						return // the process is gone: stop hammering a closed port
					}
					time.Sleep(10 * time.Millisecond)
					continue
				}
				w.lat = append(w.lat, lat)
				if status != http.StatusOK || !bytes.Contains(body, t.want) {
					w.bad++
					note("HTTP %d: %.300s", status, body)
				}
			}
		}()
	}
	wg.Wait()
	res := roundResult{Elapsed: time.Since(start)}
	if cpu1, err := processCPU(t.pid); t.pid > 0 && cpuErr == nil && err == nil {
		res.CPU = cpu1 - cpu0
	}
	var all []time.Duration
	for _, w := range workers {
		all = append(all, w.lat...)
		res.Bad += w.bad
		res.Errors += w.err
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
