package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"sync"
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

// runThroughput runs workers loops posting the viewer query with key for d, worker w
// to instance w mod len(clients). A loop checks the clock only between requests: a
// request is never abandoned half-way, so that every request the server recorded was
// also counted here.
func runThroughput(ctx context.Context, clients []*client, key string, workers int, d time.Duration) throughputResult {
	body := requestBody(viewerQuery, nil)
	type workerResult struct {
		lat       []time.Duration
		statuses  map[int]int
		gqlErrors int
		transport int
		firstErr  string
	}
	results := make([]workerResult, workers)
	start := time.Now()
	deadline := start.Add(d)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := &results[w]
			c := clients[w%len(clients)]
			r.lat = make([]time.Duration, 0, 16384)
			r.statuses = map[int]int{}
			consecutive := 0
			for time.Now().Before(deadline) && ctx.Err() == nil {
				t0 := time.Now()
				resp, err := c.post(ctx, key, true, body)
				lat := time.Since(t0)
				if err != nil {
					r.transport++
					if r.firstErr == "" {
						r.firstErr = err.Error()
					}
					if consecutive++; consecutive >= 100 {
						return // the server is gone: stop hammering a closed port
					}
					time.Sleep(10 * time.Millisecond)
					continue
				}
				consecutive = 0
				r.lat = append(r.lat, lat)
				r.statuses[resp.Status]++
				if resp.Status == http.StatusOK && bytes.Contains(resp.Body, []byte(`"errors"`)) {
					if r.gqlErrors++; r.firstErr == "" {
						r.firstErr = fmt.Sprintf("HTTP 200 with errors: %.300s", resp.Body)
					}
				} else if resp.Status != http.StatusOK && r.firstErr == "" {
					r.firstErr = fmt.Sprintf("HTTP %d: %.300s", resp.Status, resp.Body)
				}
			}
		}()
	}
	wg.Wait()
	res := throughputResult{Workers: workers, Elapsed: time.Since(start), Statuses: map[int]int{}}
	var all []time.Duration
	for _, r := range results {
		all = append(all, r.lat...)
		for s, n := range r.statuses {
			res.Statuses[s] += n
		}
		res.GQLErrors += r.gqlErrors
		res.Transport += r.transport
		if res.FirstErr == "" {
			res.FirstErr = r.firstErr
		}
	}
	res.Requests = len(all)
	res.Latency = summarize(all)
	return res
}
