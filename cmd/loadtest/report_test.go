package main

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"
)

// passing returns a report whose every check passes.
func passing() *report {
	return &report{
		opts:       options{Webhooks: 10, Crash: time.Second},
		throughput: &throughputResult{Requests: 5, Statuses: map[int]int{200: 5}},
		rateLimit:  &rateLimitResult{Limit: 100, Sent: 300, Admitted: 100, Denied: 200},
		fanout:     &fanoutResult{Subscribers: 2, Ready: 2, Expected: 4, Delivered: 4},
		webhooks:   &webhookResult{Sent: 10, Received: 10},
		served:     7, stored: 7,
		crash: &crashResult{Served: 100, Stored: 97, Lost: 3, ServedInBound: 5},
	}
}

func TestFailures(t *testing.T) {
	if fs := passing().failures(); len(fs) != 0 {
		t.Fatalf("passing report fails: %v", fs)
	}
	for _, tc := range []struct {
		name    string
		breakIt func(r *report)
		want    string
	}{
		{"stored != served", func(r *report) { r.stored = 6 }, "usage rows: 6 stored, 7 operations served"},
		{"count failed", func(r *report) { r.storedErr = errors.New("boom") }, "usage rows: boom"},
		{"over-admitted", func(r *report) { r.rateLimit.Admitted, r.rateLimit.Denied = 101, 199 }, "rate limit: 101 admitted"},
		{"missing Retry-After", func(r *report) { r.rateLimit.HeaderProblems = []string{"no Retry-After"} }, "no Retry-After"},
		{"5xx under load", func(r *report) { r.throughput.Statuses[500] = 1; r.throughput.Requests++ }, "500: 1"},
		{"lost fan-out event", func(r *report) { r.fanout.Delivered = 3 }, "3 of 4 events"},
		{"lost webhook", func(r *report) { r.webhooks.Received = 9 }, "9 delivered"},
		{"bad signature", func(r *report) { r.webhooks.BadSignatures = 1 }, "1 bad signatures"},
		{"unclean shutdown", func(r *report) { r.stopErrs = []string{"server 1: killed"} }, "shutdown: server 1: killed"},
		{"phase skipped", func(r *report) { r.fanout = nil }, "fan-out: phase not run"},
		{"kill -9 beyond the bound", func(r *report) { r.crash.Lost = 6 }, "kill -9: 6 operations lost, more than the 5"},
		{"kill -9 not run", func(r *report) { r.crash = nil }, "kill -9: phase not run"},
		{"kill -9 failed", func(r *report) { r.crash, r.crashErr = nil, errors.New("boom") }, "kill -9: boom"},
	} {
		r := passing()
		tc.breakIt(r)
		fs := r.failures()
		if len(fs) != 1 || !strings.Contains(fs[0], tc.want) {
			t.Errorf("%s: failures = %q, want one containing %q", tc.name, fs, tc.want)
		}
	}
}

func TestVerifySignature(t *testing.T) {
	// The Standard Webhooks specification's example.
	key := mustBase64(t, "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	body := []byte(`{"test": 2432232314}`)
	const sig = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
	if !verifySignature(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", body, "v1,bm90IGl0 "+sig) {
		t.Fatal("the specification's example does not verify")
	}
	if verifySignature(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265331", body, sig) {
		t.Fatal("a different timestamp verifies")
	}
}

func mustBase64(t *testing.T, s string) []byte {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
