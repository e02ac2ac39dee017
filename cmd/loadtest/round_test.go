package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
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
