package main

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// crashResult is what the kill -9 phase measured: how many operations the server
// answered before it was killed, how many of them are stored, and the bound the loss
// must stay within.
type crashResult struct {
	Workers  int
	Load     time.Duration // load before the kill
	Served   int64         // tenant-key answers (HTTP 200 or 429) received
	InFlight int64         // requests without an answer (sent before or at the kill)
	Stored   int64         // usage rows of the phase's key after the kill
	Lost     int64         // Served - Stored: operations answered but not stored (at least)
	RPS      float64

	// NewestStoredAge is the kill time minus the start of the newest stored operation:
	// the stretch of load whose usage was lost, in time.
	NewestStoredAge time.Duration

	// FlushInterval is the server's; WriteMax an upper bound of its longest batch write
	// (from the latchkey_usage_write_seconds histogram just before the kill; 0 when
	// the server does not export it). Bound = FlushInterval + WriteMax, or two writes
	// when a write took longer than FlushInterval.
	FlushInterval time.Duration
	WriteMax      time.Duration
	Bound         time.Duration
	// ServedInBound counts the answers received in the last Bound before the kill:
	// the most the server may lose.
	ServedInBound int64

	// MaxLag and MaxQueue are the largest latchkey_usage_lag_seconds and
	// latchkey_usage_queue_depth sampled during the load (every 50 ms).
	MaxLag   time.Duration
	MaxQueue int64
	Samples  int
	// Waits and Dropped are the server's Record waits (backpressure) and dropped
	// events at the last sample.
	Waits, Dropped int64
}

// withinBound reports whether the loss stayed within the stated bound.
func (r crashResult) withinBound() bool { return r.Lost <= r.ServedInBound }

// runCrash loads srv with workers posting the viewer query with key for load, then
// sends it SIGKILL while the load goes on, and compares the usage rows stored for key
// with the operations answered. adminToken reads the server's metrics.
func runCrash(ctx context.Context, srv *server, db *database, key, keyID, adminToken string, workers int, load time.Duration) (crashResult, error) {
	res := crashResult{Workers: workers, Load: load}
	l := &ledger{}
	c := newClient(srv.baseURL, workers, l)
	defer c.http.CloseIdleConnections()
	body := requestBody(viewerQuery, nil)

	// Every answer's arrival time, per worker; the kill stops the workers.
	answers := make([][]time.Time, workers)
	var inFlight atomic.Int64
	killed := make(chan struct{})
	var wg sync.WaitGroup
	start := time.Now()
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			times := make([]time.Time, 0, 65536)
			defer func() { answers[w] = times }()
			for ctx.Err() == nil {
				select {
				case <-killed:
					return
				default:
				}
				resp, err := c.post(ctx, key, true, body)
				if err != nil {
					inFlight.Add(1)
					return // the server is gone
				}
				if resp.Status == http.StatusOK || resp.Status == http.StatusTooManyRequests {
					times = append(times, time.Now())
				}
			}
		}()
	}

	// Sample the recorder's lag and queue while the load runs.
	sampler := &http.Client{Timeout: time.Second}
	var last map[string]float64
	var lastHist []bucket
	deadline := start.Add(load)
	tick := time.NewTicker(50 * time.Millisecond)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		<-tick.C
		m, hist, err := scrapeMetrics(ctx, sampler, srv.baseURL, adminToken)
		if err != nil {
			continue
		}
		res.Samples++
		last, lastHist = m, hist
		res.MaxLag = max(res.MaxLag, time.Duration(m["latchkey_usage_lag_seconds"]*float64(time.Second)))
		res.MaxQueue = max(res.MaxQueue, int64(m["latchkey_usage_queue_depth"]))
	}
	tick.Stop()
	res.Waits = int64(last["latchkey_usage_record_waits_total"])
	res.Dropped = int64(last["latchkey_usage_events_dropped_total"])
	res.WriteMax = histogramMax(lastHist)
	res.FlushInterval = time.Duration(last["latchkey_usage_flush_interval_seconds"] * float64(time.Second))
	if res.FlushInterval <= 0 {
		res.FlushInterval = 500 * time.Millisecond // servers that do not export it
	}
	flush := res.FlushInterval

	killAt := time.Now()
	if err := srv.kill(); err != nil {
		close(killed)
		wg.Wait()
		return res, fmt.Errorf("kill: %w", err)
	}
	close(killed)
	wg.Wait()
	for _, ts := range answers {
		res.Served += int64(len(ts))
	}
	res.InFlight = inFlight.Load()
	res.RPS = float64(res.Served) / killAt.Sub(start).Seconds()

	res.Bound = flush + res.WriteMax
	if res.WriteMax > flush {
		res.Bound = 2 * res.WriteMax
	}
	cut := killAt.Add(-res.Bound)
	for _, ts := range answers {
		i, _ := slices.BinarySearchFunc(ts, cut, func(t, cut time.Time) int { return t.Compare(cut) })
		res.ServedInBound += int64(len(ts) - i)
	}

	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
	defer cancel()
	newest, err := db.keyRows(cctx, keyID, &res.Stored)
	if err != nil {
		return res, err
	}
	if !newest.IsZero() {
		res.NewestStoredAge = killAt.Sub(newest)
	}
	res.Lost = res.Served - res.Stored
	return res, nil
}

// keyRows counts the usage rows of apiKeyID into n and returns the newest row's time.
func (d *database) keyRows(ctx context.Context, apiKeyID string, n *int64) (time.Time, error) {
	db, err := sql.Open("postgres", d.url)
	if err != nil {
		return time.Time{}, err
	}
	defer db.Close()
	var newest sql.NullTime
	if err := db.QueryRowContext(ctx, "SELECT count(*), max(at) FROM usage_logs WHERE api_key_id = $1", apiKeyID).Scan(n, &newest); err != nil {
		return time.Time{}, fmt.Errorf("count usage rows: %w", err)
	}
	return newest.Time, nil
}

// bucket is one cumulative histogram bucket.
type bucket struct {
	le    float64
	count float64
}

// scrapeMetrics reads the server's /metrics (as the platform admin) and returns the
// plain samples by name and the buckets of latchkey_usage_write_seconds.
func scrapeMetrics(ctx context.Context, c *http.Client, base, adminToken string) (map[string]float64, []bucket, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("X-API-Key", adminToken)
	resp, err := c.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, nil, fmt.Errorf("GET /metrics: HTTP %d", resp.StatusCode)
	}
	m := map[string]float64{}
	var hist []bucket
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		i := bytes.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(string(line[i+1:]), 64)
		if err != nil {
			continue
		}
		name := string(line[:i])
		if rest, ok := strings.CutPrefix(name, `latchkey_usage_write_seconds_bucket{le="`); ok {
			le, err := strconv.ParseFloat(strings.TrimSuffix(rest, `"}`), 64)
			if err == nil {
				hist = append(hist, bucket{le: le, count: v})
			}
			continue
		}
		m[name] = v
	}
	return m, hist, sc.Err()
}

// histogramMax returns the upper bound of the lowest bucket holding every observation
// (0 for no observations or no histogram).
func histogramMax(hist []bucket) time.Duration {
	if len(hist) == 0 {
		return 0
	}
	total := hist[len(hist)-1].count
	if total == 0 {
		return 0
	}
	for _, b := range hist {
		if b.count >= total && !math.IsInf(b.le, 1) {
			return time.Duration(b.le * float64(time.Second))
		}
	}
	return time.Duration(math.MaxInt64)
}

// kill sends SIGKILL and waits for the process to end.
func (s *server) kill() error {
	if !s.alive() {
		return fmt.Errorf("server had already exited: %v", s.exitErr)
	}
	if err := s.cmd.Process.Kill(); err != nil {
		return err
	}
	<-s.done
	s.stopOnce.Do(func() {}) // stop is a no-op from now on
	return nil
}

// crashPhase starts a fresh server process with start, creates an unlimited key of
// tenantID on it and runs the kill -9 measurement. It returns the process (killed) for
// its log, even on error.
func crashPhase(ctx context.Context, o options, tenantID, adminToken string, db *database, start func(name string) (*server, error)) (*server, *crashResult, error) {
	srv, err := start("crash")
	if err != nil {
		return nil, nil, fmt.Errorf("start: %w", err)
	}
	c := newClient(srv.baseURL, 1, &ledger{})
	keyID, key, err := createKey(ctx, c, adminToken, map[string]any{"tenantID": tenantID, "name": "crash", "scopes": []string{},
		"rateLimit": 1_000_000_000, "rateLimitWindowSeconds": 3600, "quota": 0})
	c.http.CloseIdleConnections()
	if err != nil {
		srv.stop(10 * time.Second)
		return srv, nil, err
	}
	logf("kill -9: %d workers for %s, then SIGKILL while they go on", o.Workers, o.Crash)
	res, err := runCrash(ctx, srv, db, key, keyID, adminToken, o.Workers, o.Crash)
	if err != nil {
		srv.stop(10 * time.Second)
		return srv, &res, err
	}
	logf("kill -9: %d answered at %.0f/s, %d stored, %d lost (newest stored operation started %s before the kill); bound: flush interval %s + one write (≤ %s) = %s, %d answered in it; largest lag %s, largest queue %d (%d samples), %d Record waits, %d dropped, %d without an answer",
		res.Served, res.RPS, res.Stored, res.Lost, ms(res.NewestStoredAge), ms(res.FlushInterval), ms(res.WriteMax), ms(res.Bound), res.ServedInBound,
		ms(res.MaxLag), res.MaxQueue, res.Samples, res.Waits, res.Dropped, res.InFlight)
	return srv, &res, nil
}
