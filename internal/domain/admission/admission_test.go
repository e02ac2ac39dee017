package admission_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/latchkey/latchkey/internal/data/ratelimit"
	"github.com/latchkey/latchkey/internal/data/testdb"
	"github.com/latchkey/latchkey/internal/domain/admission"
	"github.com/latchkey/latchkey/internal/platform/viewer"
)

// A caller that goes away while its check waits (a client closing its connection
// under load) is neither a store failure to log at ERROR nor a reason to fail open.
func TestCallerGoneWhileChecking(t *testing.T) {
	addr := testdb.SilentRedisAddr(t)
	for _, failOpen := range []bool{false, true} {
		t.Run(map[bool]string{false: "failClosed", true: "failOpen"}[failOpen], func(t *testing.T) {
			// The check's read gives up after a second, well after the caller went away
			// (go-redis does not end a read in flight when its context ends).
			client := redis.NewClient(&redis.Options{Addr: addr, ReadTimeout: time.Second, MaxRetries: -1})
			t.Cleanup(func() { client.Close() })
			checker, err := ratelimit.NewRedisChecker(client, "test:", nil)
			if err != nil {
				t.Fatal(err)
			}
			var logged bytes.Buffer
			prev := slog.Default()
			slog.SetDefault(slog.New(slog.NewTextHandler(&logged, &slog.HandlerOptions{Level: slog.LevelWarn})))
			t.Cleanup(func() { slog.SetDefault(prev) })

			s := &admission.Service{Checker: checker, FailOpen: failOpen}
			v := &viewer.Viewer{TenantID: "ten_1", APIKeyID: "key_1", RateLimit: 10, RateWindow: time.Minute}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			time.AfterFunc(100*time.Millisecond, cancel)
			d := s.Admit(ctx, admission.Request{Viewer: v})
			if d.Err == nil {
				t.Fatal("admitted a caller whose check never came back")
			}
			if d.Err.Code != "INTERNAL" || d.Err.Extensions["reason"] != "canceled" {
				t.Fatalf("refusal = %s %v, want INTERNAL, reason canceled", d.Err.Code, d.Err.Extensions)
			}
			if strings.Contains(logged.String(), "unavailable") {
				t.Fatalf("logged a store failure:\n%s", logged.String())
			}
		})
	}
}
