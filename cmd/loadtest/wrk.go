package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Load generators of the comparison phase (-compare-generator).
const (
	generatorGo  = "go"  // closedLoop: Go's net/http client in this process
	generatorWrk = "wrk" // wrk, a C load generator in a process of its own
)

// generatorNames describe the generators in the comparison's report; a kind not in
// it is refused.
var generatorNames = map[string]string{
	generatorGo:  "Go's net/http client in the harness",
	generatorWrk: "wrk, one thread",
}

// The Go generator costs about as much CPU per request as the stubs it measures, on
// the same two cores: its own scheduling and garbage collection land in every
// answer's latency, so neither side's p99 says much about the server. wrk (Debian's
// package) sends the same request from one thread at a fraction of that cost. It
// cannot check each answer's body: one answer is checked before the round (the
// target's want), and wrk counts every status other than 2xx/3xx.

// wrkRunner runs t's rounds with wrk; script is the Lua file that sets the method,
// headers and body, written once per target.
type wrkRunner struct {
	bin    string
	script string
}

// newWrkRunner finds wrk on PATH and writes t's request into a Lua script in dir (with
// t.bodies, a script that sends them in turn). It returns an error when wrk is missing
// or the script cannot be written.
func newWrkRunner(t target, dir string) (*wrkRunner, error) {
	bin, err := exec.LookPath("wrk")
	if err != nil {
		return nil, fmt.Errorf("-compare-generator wrk: %w (Debian: apt-get install wrk)", err)
	}
	base := filepath.Join(dir, "wrk-"+strings.NewReplacer(" ", "-", "/", "-", ",", "").Replace(t.name))
	// Each body goes in a file of its own, read by the script: no quoting of it in Lua.
	bodies := t.bodies
	if len(bodies) == 0 {
		bodies = [][]byte{t.body}
	}
	var s strings.Builder
	s.WriteString("wrk.method = \"POST\"\nlocal bodies = {}\n")
	for i, b := range bodies {
		name := fmt.Sprintf("%s.%d.body", base, i)
		if err := os.WriteFile(name, b, 0o600); err != nil {
			return nil, err
		}
		fmt.Fprintf(&s, "do local f = assert(io.open(%s, \"rb\")); bodies[%d] = f:read(\"*a\"); f:close() end\n", luaString(name), i+1)
	}
	s.WriteString("wrk.body = bodies[1]\n")
	for _, h := range t.header {
		fmt.Fprintf(&s, "wrk.headers[%s] = %s\n", luaString(h[0]), luaString(h[1]))
	}
	if len(bodies) > 1 {
		// Built once per body, then sent in turn: no formatting per request.
		s.WriteString("local reqs, n = {}, 0\n")
		s.WriteString("init = function(args) for i, b in ipairs(bodies) do reqs[i] = wrk.format(nil, nil, nil, b) end end\n")
		s.WriteString("request = function() n = n % #reqs + 1; return reqs[n] end\n")
	}
	if err := os.WriteFile(base+".lua", []byte(s.String()), 0o600); err != nil {
		return nil, err
	}
	return &wrkRunner{bin: bin, script: base + ".lua"}, nil
}

// luaString quotes s as a Lua string literal (every byte outside printable ASCII, and
// the quote and backslash, as a decimal escape).
func luaString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			fmt.Fprintf(&b, "\\%03d", c)
			continue
		}
		b.WriteByte(c)
	}
	b.WriteByte('"')
	return b.String()
}

// hammer runs one round of d against t with conns connections from one wrk thread,
// after checking one answer with Go's client; with t.pid, it also measures that
// process's CPU time, as the Go generator's hammer does.
func (w *wrkRunner) hammer(ctx context.Context, t target, conns int, d time.Duration) roundResult {
	if status, body, err := t.send(ctx); err != nil || status != http.StatusOK || !bytes.Contains(body, t.want) {
		return roundResult{Errors: 1, FirstErr: fmt.Sprintf("answer before the round: HTTP %d, %v: %.300s", status, err, body)}
	}
	secs := max(1, int(d.Round(time.Second)/time.Second))
	return measured(t.pid, func() roundResult {
		cmd := exec.CommandContext(ctx, w.bin, "-t", "1", "-c", strconv.Itoa(conns), "-d", strconv.Itoa(secs)+"s",
			"--timeout", "10s", "--latency", "-s", w.script, t.url)
		out, err := cmd.CombinedOutput()
		res, perr := parseWrk(out)
		if err != nil || perr != nil {
			return roundResult{Errors: 1, FirstErr: fmt.Sprintf("wrk: %v, %v: %.500s", err, perr, out)}
		}
		return res
	})
}

var (
	wrkTotal   = regexp.MustCompile(`(?m)^\s*(\d+) requests in ([0-9.]+)(us|ms|s|m|h),`)
	wrkPercent = regexp.MustCompile(`(?m)^\s*(50|99)%\s+([0-9.]+)(us|ms|s|m|h)\s*$`)
	wrkMax     = regexp.MustCompile(`(?m)^\s*Latency\s+[0-9.]+[a-z]+\s+[0-9.]+[a-z]+\s+([0-9.]+)(us|ms|s|m|h)`)
	wrkSocket  = regexp.MustCompile(`Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
	wrkNon2xx  = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`)
)

// parseWrk reads what `wrk --latency` printed: the answered requests and the time
// they took, p50, p99 and the maximum latency, socket errors and non-2xx answers.
// It returns an error when a figure it needs is missing.
func parseWrk(out []byte) (roundResult, error) {
	var res roundResult
	m := wrkTotal.FindSubmatch(out)
	if m == nil {
		return res, errors.New("no request count in wrk's output")
	}
	res.Requests, _ = strconv.Atoi(string(m[1]))
	res.Elapsed = wrkDuration(m[2], m[3])
	res.Latency.N = res.Requests
	found := 0
	for _, p := range wrkPercent.FindAllSubmatch(out, -1) {
		switch d := wrkDuration(p[2], p[3]); string(p[1]) {
		case "50":
			res.Latency.P50, found = d, found+1
		case "99":
			res.Latency.P99, found = d, found+1
		}
	}
	if found != 2 {
		return res, errors.New("no latency distribution in wrk's output (run it with --latency)")
	}
	if m := wrkMax.FindSubmatch(out); m != nil {
		res.Latency.Max = wrkDuration(m[1], m[2])
	}
	if m := wrkSocket.FindSubmatch(out); m != nil {
		for _, n := range m[1:] {
			v, _ := strconv.Atoi(string(n))
			res.Errors += v
		}
		if res.Errors > 0 {
			res.FirstErr = string(m[0])
		}
	}
	if m := wrkNon2xx.FindSubmatch(out); m != nil {
		res.Bad, _ = strconv.Atoi(string(m[1]))
		if res.Bad > 0 && res.FirstErr == "" {
			res.FirstErr = string(m[0])
		}
	}
	return res, nil
}

// wrkUnits are the units of wrk's durations.
var wrkUnits = map[string]time.Duration{"us": time.Microsecond, "ms": time.Millisecond, "s": time.Second, "m": time.Minute, "h": time.Hour}

// wrkDuration converts one of wrk's figures ("652.00", "us") to a duration.
func wrkDuration(num, unit []byte) time.Duration {
	v, _ := strconv.ParseFloat(string(num), 64)
	return time.Duration(v * float64(wrkUnits[string(unit)]))
}

// generator runs one round of d against t (see newGenerator).
type generator func(ctx context.Context, t target, d time.Duration) roundResult

// newGenerator returns the round runner of kind (generatorGo or generatorWrk) for
// targets, each sent with conns connections; wrk's scripts go in dir. It returns an
// error for an unknown kind or when wrk cannot be set up.
func newGenerator(kind, dir string, conns int, targets ...target) (generator, error) {
	switch kind {
	case generatorGo:
		return func(ctx context.Context, t target, d time.Duration) roundResult { return hammer(ctx, t, conns, d) }, nil
	case generatorWrk:
		runners := make(map[string]*wrkRunner, len(targets))
		for _, t := range targets {
			w, err := newWrkRunner(t, dir)
			if err != nil {
				return nil, err
			}
			runners[t.name] = w
		}
		return func(ctx context.Context, t target, d time.Duration) roundResult {
			w := runners[t.name]
			if w == nil {
				return roundResult{Errors: 1, FirstErr: "no wrk script for " + t.name}
			}
			return w.hammer(ctx, t, conns, d)
		}, nil
	}
	return nil, fmt.Errorf("unknown load generator %q (want %s or %s)", kind, generatorGo, generatorWrk) // parseFlags refuses it first
}
