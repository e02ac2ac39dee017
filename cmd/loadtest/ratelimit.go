package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// rateLimitResult is what the accuracy phase measured.
type rateLimitResult struct {
	Limit, Sent       int
	Admitted, Denied  int
	Statuses          map[int]int
	Transport         int
	HeaderProblems    []string // 429s without Retry-After or RateLimit, answers without RateLimit
	RetryAfterSeconds []int    // distinct Retry-After values seen
	Elapsed           time.Duration
}

// Accuracy is admitted / limit.
func (r rateLimitResult) Accuracy() float64 { return float64(r.Admitted) / float64(r.Limit) }

// runRateLimit sends sent requests at once with key, which allows limit per hour,
// request i to bases[i mod len(bases)], and checks the answers: exactly limit
// admitted in all, the rest 429 with Retry-After and the RateLimit fields.
func runRateLimit(ctx context.Context, bases []string, l *ledger, key string, limit, sent int) rateLimitResult {
	// Clients of its own: sent connections at once, closed afterwards.
	clients := make([]*client, len(bases))
	for i, b := range bases {
		clients[i] = newClient(b, sent, l)
		defer clients[i].http.CloseIdleConnections()
	}
	body := requestBody(viewerQuery, nil)
	type answer struct {
		resp *response
		err  error
	}
	answers := make([]answer, sent)
	gate := make(chan struct{})
	var ready, wg sync.WaitGroup
	for i := range sent {
		ready.Add(1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			ready.Done()
			<-gate
			answers[i].resp, answers[i].err = clients[i%len(clients)].post(ctx, key, true, body)
		}()
	}
	ready.Wait()
	start := time.Now()
	close(gate)
	wg.Wait()
	res := rateLimitResult{Limit: limit, Sent: sent, Statuses: map[int]int{}, Elapsed: time.Since(start)}
	seenRetry := map[int]bool{}
	problem := func(format string, args ...any) {
		if len(res.HeaderProblems) < 10 {
			res.HeaderProblems = append(res.HeaderProblems, fmt.Sprintf(format, args...))
		}
	}
	for i, a := range answers {
		if a.err != nil {
			res.Transport++
			continue
		}
		r := a.resp
		res.Statuses[r.Status]++
		if r.Header.Get("RateLimit") == "" || r.Header.Get("RateLimit-Policy") == "" {
			problem("request %d (HTTP %d): no RateLimit/RateLimit-Policy header", i, r.Status)
		}
		switch r.Status {
		case http.StatusOK:
			res.Admitted++
		case http.StatusTooManyRequests:
			res.Denied++
			ra := r.Header.Get("Retry-After")
			secs, err := strconv.Atoi(ra)
			if err != nil || secs < 1 {
				problem("request %d: 429 with Retry-After %q", i, ra)
			} else if !seenRetry[secs] {
				seenRetry[secs] = true
				res.RetryAfterSeconds = append(res.RetryAfterSeconds, secs)
			}
			if rl := r.Header.Get("RateLimit"); !strings.Contains(rl, "r=0") {
				problem("request %d: 429 with RateLimit %q (want r=0)", i, rl)
			}
			var g gqlResponse
			if err := json.Unmarshal(r.Body, &g); err != nil || len(g.Errors) == 0 || g.Errors[0].code() != "RATE_LIMITED" {
				problem("request %d: 429 body is not a RATE_LIMITED error: %.200s", i, r.Body)
			}
		}
	}
	return res
}
