package main

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/latchkey/latchkey/cmd/loadtest/loadstub"
)

// round returns a round of rps requests/s over one second with the given latencies.
func round(rps int, p50, p99 time.Duration) roundResult {
	return roundResult{Elapsed: time.Second, Requests: rps, Latency: summary{P50: p50, P99: p99}}
}

func TestMediansAndVerdict(t *testing.T) {
	c := comparison{
		Goal: goal{Ratio: 0.9, P99: 2 * time.Millisecond},
		Stub: []roundResult{round(1000, 1, 9), round(3000, 3, 7), round(2000, 2, 8)},
		// The median round is not the same round for every figure.
		Latchkey: []roundResult{round(1900, 5, time.Millisecond), round(1800, 4, 3*time.Millisecond), round(1700, 6, time.Millisecond)},
	}
	rps, p50, p99 := medians(c.Stub)
	if rps != 2000 || p50 != 2 || p99 != 8 {
		t.Fatalf("stub medians = %v %v %v", rps, p50, p99)
	}
	if r := c.Ratio(); r != 0.9 {
		t.Fatalf("ratio = %v, want 0.9", r)
	}
	if v := c.Verdict(); v != "met" {
		t.Fatalf("verdict = %q", v)
	}
	c.Latchkey[0].Requests = 1750 // median 1750: 0.875
	c.Latchkey[2].Latency.P99 = 3 * time.Millisecond
	if v := c.Verdict(); v != "missed: ratio, p99" {
		t.Fatalf("verdict = %q", v)
	}
	if g := goalText(c); g != "≥ 0.9×, p99 < 2.00 ms: missed: ratio, p99" {
		t.Fatalf("goal text = %q", g)
	}
	c.Goal = goal{Note: "reported"}
	if g := goalText(c); g != "reported" {
		t.Fatalf("goal text without a goal = %q", g)
	}
	if rps, _, _ := medians([]roundResult{round(1, 0, 0), round(3, 0, 0)}); rps != 2 {
		t.Fatalf("median of two = %v", rps)
	}
	if (comparison{}).Ratio() != 0 {
		t.Fatal("ratio without rounds is not 0")
	}
}

func TestReferenceTable(t *testing.T) {
	cpu := func(r roundResult, d time.Duration) roundResult { r.CPU = d * time.Duration(r.Requests); return r }
	cmps := []comparison{
		{Setup: setupSQLite, Mode: modeGraphQL,
			Stub:      []roundResult{cpu(round(40000, 0, 0), 20*time.Microsecond)},
			Reference: []roundResult{cpu(round(30000, 0, 0), 27*time.Microsecond)},
			Latchkey:  []roundResult{cpu(round(24000, 0, 0), 35*time.Microsecond)}},
		{Setup: setupSQLite, Mode: modeVerify, Stub: []roundResult{round(1, 0, 0)}, Latchkey: []roundResult{round(1, 0, 0)}},
	}
	var b bytes.Buffer
	writeReferenceTable(&b, cmps)
	want := "| SQLite | 40,000 | 30,000 | 24,000 | 0.75× | 0.80× | 20 µs · 27 µs · 35 µs |\n"
	if !strings.Contains(b.String(), want) || strings.Count(b.String(), "| SQLite |") != 1 {
		t.Fatalf("table:\n%s\nwant the row %s", b.String(), want)
	}
	b.Reset()
	writeReferenceTable(&b, cmps[1:])
	if b.Len() != 0 {
		t.Fatalf("a table without references: %s", b.String())
	}
}

// TestSetupTables: every setup -compare-setups takes has a name, its stores and a
// goal (or a note) for both modes; only the setup without PostgreSQL or Redis has no
// backing CPU to report.
func TestSetupTables(t *testing.T) {
	for _, setup := range allSetups {
		if setupNames[setup] == "" {
			t.Errorf("%s: no name", setup)
		}
		if _, ok := setupStores[setup]; !ok {
			t.Errorf("%s: no stores", setup)
		}
		for _, mode := range []string{modeGraphQL, modeVerify} {
			if g := goals[[2]string{setup, mode}]; g.Ratio == 0 && g.Note == "" {
				t.Errorf("%s %s: neither a target nor a note", setup, mode)
			}
		}
		if hasBacking(setup) == (setup == setupSQLite) {
			t.Errorf("%s: hasBacking %v", setup, hasBacking(setup))
		}
	}
}

func TestComparisonProblems(t *testing.T) {
	c := comparison{Stub: []roundResult{round(10, 0, 0)}, Latchkey: []roundResult{round(10, 0, 0)}}
	if ps := c.problems(); len(ps) != 0 {
		t.Fatalf("clean pair has problems: %v", ps)
	}
	c.Latchkey[0].Bad, c.Latchkey[0].FirstErr = 2, "HTTP 429"
	if ps := c.problems(); len(ps) != 1 || !strings.Contains(ps[0], "Latchkey round 1: 2 bad answers") || !strings.Contains(ps[0], "HTTP 429") {
		t.Fatalf("problems = %v", ps)
	}
}

func TestParseSetups(t *testing.T) {
	for in, want := range map[string]string{"sqlite,postgres": "sqlite postgres", " postgres , sqlite,postgres": "postgres sqlite", "sqlite": "sqlite",
		"sqlite-redis,postgres-memory": "sqlite-redis postgres-memory"} {
		got, err := parseSetups(in)
		if err != nil || strings.Join(got, " ") != want {
			t.Errorf("parseSetups(%q) = %v, %v; want %s", in, got, err, want)
		}
	}
	for _, in := range []string{"", ",", "mysql", "sqlite,redis"} {
		if _, err := parseSetups(in); err == nil {
			t.Errorf("parseSetups(%q) accepted", in)
		}
	}
}

func TestGrouped(t *testing.T) {
	for v, want := range map[float64]string{0: "0", 999.4: "999", 1000: "1,000", 12345.6: "12,346", 1234567: "1,234,567"} {
		if got := grouped(v); got != want {
			t.Errorf("grouped(%v) = %q, want %q", v, got, want)
		}
	}
}

// The stubs answer what the comparison's targets expect, and refuse what the server
// would refuse as a malformed body.
func TestStubs(t *testing.T) {
	post := func(h http.Handler, path, body string) (int, string) {
		srv := httptest.NewServer(h)
		defer srv.Close()
		resp, err := http.Post(srv.URL+path, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	fx := &compareFixture{Viewer: "v", Verifier: "w", Consumers: []string{"lk_live_x"}}
	stub, ref, _ := pairTargets(modeGraphQL, "", "", fx, 1)
	for _, side := range []target{stub, ref} {
		if status, body := post(loadstub.GraphQL(), "/", string(side.body)); status != 200 || !strings.Contains(body, string(side.want)) {
			t.Fatalf("%s: %d %s", side.name, status, body)
		}
	}
	answer := `{"valid":true,"code":"VALID","keyId":"k"}`
	stub, ref, _ = pairTargets(modeVerify, "", "", fx, 1)
	if ref.url != "" || ref.body != nil {
		t.Errorf("verification has a reference: %+v", ref)
	}
	if status, body := post(loadstub.Verify([]byte(answer)), "/", string(stub.body)); status != 200 || body != answer || !bytes.Contains([]byte(body), stub.want) {
		t.Fatalf("verify stub: %d %s", status, body)
	}
	for _, bad := range []string{`{"kee":"x"}`, `{"permissions":[]}`, `{"key":"x"}{}`, strings.Repeat(" ", 17<<10) + `{"key":"x"}`} {
		if status, _ := post(loadstub.Verify([]byte(answer)), "/", bad); status != 400 {
			t.Errorf("verify stub took %.40q: %d", bad, status)
		}
	}
}

func TestCheckLoopback(t *testing.T) {
	for _, ok := range []string{"127.0.0.1:0", "[::1]:8080", "localhost:1"} {
		if err := checkLoopback(ok); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	for _, bad := range []string{":8080", "0.0.0.0:0", "10.0.0.1:80", "example.com:80", "127.0.0.1"} {
		if checkLoopback(bad) == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}

func TestProcessCPU(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc")
	}
	before, err := processCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	for start := time.Now(); time.Since(start) < 50*time.Millisecond; {
	}
	after, err := processCPU(os.Getpid())
	if err != nil || after <= before {
		t.Fatalf("CPU %v then %v, %v", before, after, err)
	}
	if _, err := processCPU(-1); err == nil {
		t.Fatal("no error for a process that does not exist")
	}
	r := roundResult{Requests: 1000, CPU: 50 * time.Millisecond}
	if got := r.CPUPerRequest(); got != 50*time.Microsecond {
		t.Fatalf("CPU per request = %v", got)
	}
	if got := (roundResult{Requests: 10}).CPUPerRequest(); got != 0 {
		t.Fatalf("unknown CPU per request = %v", got)
	}
}
