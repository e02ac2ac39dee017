package logging

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
)

func TestRequestIDOnEveryLine(t *testing.T) {
	var buf bytes.Buffer
	l, err := New(&buf, "json", "info")
	if err != nil {
		t.Fatal(err)
	}
	ctx := WithRequestID(context.Background(), "abc123")
	l.InfoContext(ctx, "one", "k", 1)
	l.With("component", "x").WarnContext(ctx, "two")
	l.DebugContext(ctx, "hidden")
	l.Info("no context")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("lines: %q", lines)
	}
	for i, line := range lines[:2] {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil || m["request_id"] != "abc123" {
			t.Fatalf("line %d: %s", i, line)
		}
	}
	if strings.Contains(lines[2], "request_id") {
		t.Fatalf("request id without context: %s", lines[2])
	}
}

func TestNewErrors(t *testing.T) {
	for _, tc := range []struct{ format, level string }{{"xml", "info"}, {"json", "loud"}} {
		if _, err := New(&bytes.Buffer{}, tc.format, tc.level); err == nil {
			t.Fatalf("New(%q, %q) accepted", tc.format, tc.level)
		}
	}
	if l, err := New(&bytes.Buffer{}, "text", "debug"); err != nil || !l.Enabled(context.Background(), slog.LevelDebug) {
		t.Fatal("text/debug")
	}
}

func TestValidRequestID(t *testing.T) {
	cases := map[string]bool{"abc-123_X.y": true, "": false, strings.Repeat("a", 65): false, "a b": false, "a\nb": false, "é": false}
	for in, want := range cases {
		if got := ValidRequestID(in); got != want {
			t.Errorf("ValidRequestID(%q) = %v", in, got)
		}
	}
}
