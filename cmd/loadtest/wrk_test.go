package main

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const wrkSample = `Running 1s test @ http://127.0.0.1:18081/x
  1 threads and 4 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.08ms    1.41ms  22.17ms   95.44%
    Req/Sec     1.97k   154.50     2.26k    81.82%
  Latency Distribution
     50%  652.00us
     75%    2.27ms
     90%    2.79ms
     99%    7.95ms
  2154 requests in 1.10s, 1.07MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 12
Requests/sec:   1957.74
Transfer/sec:      0.97MB
`

func TestParseWrk(t *testing.T) {
	for _, tc := range []struct {
		name, out string
		want      roundResult
		err       string
	}{
		{name: "full", out: wrkSample, want: roundResult{Elapsed: 1100 * time.Millisecond, Requests: 2154, Bad: 12, Errors: 3,
			FirstErr: "Socket errors: connect 0, read 2, write 0, timeout 1",
			Latency:  summary{N: 2154, P50: 652 * time.Microsecond, P99: 7950 * time.Microsecond, Max: 22170 * time.Microsecond}}},
		{name: "clean", out: strings.NewReplacer("  Socket errors: connect 0, read 2, write 0, timeout 1\n", "", "  Non-2xx or 3xx responses: 12\n", "").Replace(wrkSample),
			want: roundResult{Elapsed: 1100 * time.Millisecond, Requests: 2154,
				Latency: summary{N: 2154, P50: 652 * time.Microsecond, P99: 7950 * time.Microsecond, Max: 22170 * time.Microsecond}}},
		{name: "no distribution", out: strings.Replace(wrkSample, "99%", "98%", 1), err: "latency distribution"},
		{name: "nothing", out: "unable to connect to 127.0.0.1:1 Connection refused\n", err: "no request count"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseWrk([]byte(tc.out))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %+v, %v\nwant %+v", got, err, tc.want)
			}
		})
	}
}

func TestLuaString(t *testing.T) {
	if got, want := luaString("a\"b\\c\né"), `"a\034b\092c\010\195\169"`; got != want {
		t.Fatalf("luaString = %s, want %s", got, want)
	}
}

// A wrk round sends the target's method, headers and body, counts what the server
// answered and reports its latency. It needs wrk (apt-get install wrk), and fails
// without it; .ci/run installs it.
func TestWrkRound(t *testing.T) {
	if _, err := exec.LookPath("wrk"); err != nil {
		t.Fatalf("wrk is missing (apt-get install wrk): %v", err)
	}
	var n, wrong atomic.Int64
	body := `{"key":"lk_live_\"x\"","tag":"é"}`
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		got, _ := io.ReadAll(r.Body)
		if r.Method != http.MethodPost || string(got) != body || r.Header.Get("Authorization") != "Bearer k" {
			wrong.Add(1)
			http.Error(w, "wrong request", http.StatusBadRequest)
			return
		}
		_, _ = w.Write([]byte(`{"code":"VALID"}`))
	}))
	defer srv.Close()
	tg := target{name: "net/http stub", url: srv.URL + "/v1/keys/verify", header: [][2]string{{"Authorization", "Bearer k"}},
		body: []byte(body), want: []byte(`"VALID"`), http: newHTTPClient(1)}
	gen, err := newGenerator(generatorWrk, t.TempDir(), 4, tg)
	if err != nil {
		t.Fatal(err)
	}
	res := gen(context.Background(), tg, time.Second)
	if res.Requests == 0 || res.Errors != 0 || res.Bad != 0 || wrong.Load() != 0 {
		t.Fatalf("round %+v; %d wrong requests", res, wrong.Load())
	}
	// The server also saw the answer checked before the round (and wrk may have
	// counted a few less than it sent in its last instant).
	if seen := n.Load(); int64(res.Requests) > seen || int64(res.Requests) < seen-50 {
		t.Fatalf("wrk counted %d answers; the server saw %d requests", res.Requests, seen)
	}
	if res.Latency.P50 <= 0 || res.Latency.P99 < res.Latency.P50 || res.Elapsed < time.Second/2 {
		t.Fatalf("latency %+v over %s", res.Latency, res.Elapsed)
	}

	if _, err := newGenerator("ab", t.TempDir(), 4, tg); err == nil {
		t.Fatal("an unknown generator was accepted")
	}
}

// TestWrkRoundInTurn: a target with several bodies has wrk send them in turn, as Go's
// client does (TestPayloadInTurn).
func TestWrkRoundInTurn(t *testing.T) {
	if _, err := exec.LookPath("wrk"); err != nil {
		t.Fatalf("wrk is missing (apt-get install wrk): %v", err)
	}
	bodies := [][]byte{[]byte(`{"key":"a"}`), []byte(`{"key":"b\"é"}`), []byte(`{"key":"c"}`)}
	var mu sync.Mutex
	seen := map[string]int{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, _ := io.ReadAll(r.Body)
		mu.Lock()
		seen[string(got)]++
		mu.Unlock()
		_, _ = w.Write([]byte(`{"code":"VALID"}`))
	}))
	defer srv.Close()
	tg := target{name: "several", url: srv.URL + "/v1/keys/verify", body: bodies[0], bodies: bodies,
		turn: new(atomic.Uint64), want: []byte(`"VALID"`), http: newHTTPClient(1)}
	gen, err := newGenerator(generatorWrk, t.TempDir(), 2, tg)
	if err != nil {
		t.Fatal(err)
	}
	if res := gen(context.Background(), tg, time.Second); res.Requests < 30 || res.Errors != 0 || res.Bad != 0 {
		t.Fatalf("round %+v", res)
	}
	mu.Lock()
	defer mu.Unlock()
	total := 0
	for _, n := range seen {
		total += n
	}
	for _, b := range bodies {
		if n := seen[string(b)]; n < total/4 {
			t.Errorf("body %s sent %d times of %d", b, n, total)
		}
	}
	if len(seen) != len(bodies) {
		t.Errorf("bodies sent: %v", seen)
	}
}
