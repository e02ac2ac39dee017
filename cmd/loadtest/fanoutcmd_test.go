package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
)

// TestServerMemory reads HeapInuse and the stack in use from the text heap profile
// that net/http/pprof serves with debug=1.
func TestServerMemory(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/debug/pprof/heap" || r.URL.Query().Get("gc") != "1" {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write([]byte("heap profile: 1: 2 [3: 4] @ heap/1048576\n\n# runtime.MemStats\n# Alloc = 10\n# HeapInuse = 4096\n# Stack = 1024 / 2048\n# MSpan = 1 / 2\n"))
	}))
	defer srv.Close()
	m, err := serverMemory(context.Background(), strings.TrimPrefix(srv.URL, "http://"), os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if m.heapStack != 4096+1024 {
		t.Errorf("heap + stacks = %d, want %d", m.heapStack, 4096+1024)
	}
	if m.rss <= 0 {
		t.Errorf("RSS of this process = %d", m.rss)
	}

	empty := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer empty.Close()
	if _, err := serverMemory(context.Background(), strings.TrimPrefix(empty.URL, "http://"), os.Getpid()); err == nil {
		t.Error("no error for a profile without MemStats")
	}
}
