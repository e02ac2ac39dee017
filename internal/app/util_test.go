package app_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/latchkey/latchkey/ent/schema/rule"
	"github.com/latchkey/latchkey/internal/app"
)

func stringsReader(s string) io.Reader { return strings.NewReader(s) }

func systemContext(ctx context.Context) context.Context { return rule.SystemContext(ctx) }

func appOptions() app.Options { return app.Options{} }

func bufioCopy(w io.Writer, resp *http.Response) (int64, error) {
	defer resp.Body.Close()
	return io.Copy(w, resp.Body)
}

// assertNoLeak fails when a client-visible body carries SQL, driver or Go internals.
func assertNoLeak(t *testing.T, body string) {
	t.Helper()
	for _, s := range []string{"SELECT ", "INSERT ", "UPDATE ", "pq:", "sqlite", "SQL", "constraint", "goroutine", ".go:", "panic", "ent:"} {
		if strings.Contains(body, s) {
			t.Fatalf("response leaks %q: %s", s, body)
		}
	}
}

// syncWriter serializes writes from concurrent loggers.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }
