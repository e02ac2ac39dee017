package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// hammer counts every answer, tells good ones from bad by status and body, and stops
// a worker that gets no answer instead of spinning on a closed port.
func TestHammer(t *testing.T) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if n.Add(1)%10 == 0 {
			http.Error(w, "nope", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte(`{"ok":true}`))
	}))
	tg := target{name: "test", url: srv.URL, body: []byte(`{}`), want: []byte(`"ok":true`), http: newHTTPClient(4)}
	res := hammer(context.Background(), tg, 4, 200*time.Millisecond)
	if res.Requests == 0 || int64(res.Requests) != n.Load() || res.Errors != 0 {
		t.Fatalf("%d answers, %d errors; the server saw %d", res.Requests, res.Errors, n.Load())
	}
	if want := res.Requests / 10; res.Bad < want-4 || res.Bad > want+4 || !strings.HasPrefix(res.FirstErr, "HTTP 503") {
		t.Fatalf("%d bad of %d (first %q), want about %d", res.Bad, res.Requests, res.FirstErr, want)
	}

	srv.Close()
	tg.http.CloseIdleConnections()
	start := time.Now()
	res = hammer(context.Background(), tg, 2, time.Minute)
	if res.Requests != 0 || res.Errors != 200 || time.Since(start) > 30*time.Second {
		t.Fatalf("closed port: %d answers, %d errors in %s, want 0 and 100 per worker", res.Requests, res.Errors, time.Since(start))
	}
}

// openLoop keeps to its schedule: it sends rate requests per second whatever the
// server's speed, and a request that waits for a free connection behind a slow server
// counts that wait in its latency.
func TestOpenLoop(t *testing.T) {
	var delay atomic.Int64
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		n.Add(1)
		time.Sleep(time.Duration(delay.Load()))
		_, _ = w.Write([]byte(`{"ok":true}`))
	}))
	defer srv.Close()
	tg := target{name: "test", url: srv.URL, body: []byte(`{}`), want: []byte(`"ok":true`), http: newHTTPClient(4)}

	res := fixedRateRound(context.Background(), tg, 4, 200, 500*time.Millisecond)
	if res.Requests != 100 || n.Load() != 100 || res.Bad != 0 || res.Errors != 0 {
		t.Fatalf("200/s for 0.5 s: %d answers (%d bad, %d errors), the server saw %d; want 100", res.Requests, res.Bad, res.Errors, n.Load())
	}
	if res.Elapsed < 450*time.Millisecond || res.Elapsed > 5*time.Second {
		t.Fatalf("200/s for 0.5 s took %s", res.Elapsed)
	}

	// One connection, a request due every 10 ms, each answered in 50 ms: the k-th
	// waits about 40k ms for the connection, and its latency says so.
	delay.Store(int64(50 * time.Millisecond))
	res = fixedRateRound(context.Background(), tg, 1, 100, 200*time.Millisecond)
	if res.Requests != 20 {
		t.Fatalf("%d answers, want 20", res.Requests)
	}
	if res.Latency.Max < 700*time.Millisecond {
		t.Fatalf("the last of 20 requests due 10 ms apart, served 50 ms each on one connection, took %s: the wait for the connection was not counted", res.Latency.Max)
	}
}

// TestPayloadInTurn: a target with several bodies sends them in turn from any number
// of workers, each the same number of times; without bodies it always sends its body.
func TestPayloadInTurn(t *testing.T) {
	bodies := [][]byte{[]byte("a"), []byte("b"), []byte("c")}
	tg := target{body: bodies[0], bodies: bodies, turn: new(atomic.Uint64)}
	var mu sync.Mutex
	seen := map[string]int{}
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 300 {
				b := string(tg.payload())
				mu.Lock()
				seen[b]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if seen["a"] != 400 || seen["b"] != 400 || seen["c"] != 400 {
		t.Fatalf("bodies sent %v, want each 400 times", seen)
	}
	if one := (target{body: []byte("x")}); string(one.payload()) != "x" || string(one.payload()) != "x" {
		t.Fatal("a target without bodies must send its body")
	}
}
