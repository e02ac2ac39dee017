package pubsub

import (
	"bytes"
	"runtime"
	"strings"
	"testing"
	"time"
)

// goroutines returns the stacks of all goroutines, keyed by their header line's id.
func goroutines() map[string]string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	m := make(map[string]string)
	for _, g := range bytes.Split(buf, []byte("\n\n")) {
		header, _, _ := strings.Cut(string(g), "\n")
		// "goroutine 42 [chan receive]:"
		f := strings.Fields(header)
		if len(f) >= 2 && f[0] == "goroutine" {
			m[f[1]] = string(g)
		}
	}
	return m
}

// leakCheck snapshots the running goroutines and returns a function that fails the
// test if, within a few seconds, goroutines started since then are still running.
// (A hand-written go.uber.org/goleak.IgnoreCurrent, to keep go.mod untouched.)
func leakCheck(t *testing.T) func() {
	t.Helper()
	before := goroutines()
	return func() {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			var extra []string
			for id, stack := range goroutines() {
				if _, ok := before[id]; !ok && !strings.Contains(stack, "leakCheck") {
					extra = append(extra, stack)
				}
			}
			if len(extra) == 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("%d goroutine(s) left behind:\n\n%s", len(extra), strings.Join(extra, "\n\n"))
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}
