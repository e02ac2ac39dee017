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
}

// roundResult is what one round against one target measured.
type roundResult struct {
	Elapsed  time.Duration
	Requests int // answered requests (any status)
	Bad      int // answers that are not 200 or lack target.want
	Errors   int // requests without an answer
	FirstErr string
	Latency  summary // of answered requests
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
// only between requests.
func hammer(ctx context.Context, t target, conns int, d time.Duration) roundResult {
	type worker struct {
		lat      []time.Duration
		bad, err int
		firstErr string
	}
	workers := make([]worker, conns)
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
