package logging

import (
	"bytes"
	"strings"
	"sync"
	"testing"
	"time"
)

type countingWriter struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	writes int
}

func (c *countingWriter) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.writes++
	return c.buf.Write(p)
}

func (c *countingWriter) snapshot() (string, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.String(), c.writes
}

// Lines written concurrently all arrive, whole, in far fewer writes; Close writes the
// rest.
func TestBuffered(t *testing.T) {
	out := &countingWriter{}
	b := NewBuffered(out, time.Hour) // only size and Close flush in this test
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 1000 {
				_, _ = b.Write([]byte(strings.Repeat("x", g) + "line " + string(rune('a'+i%26)) + "\n"))
			}
		})
	}
	wg.Wait()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	s, writes := out.snapshot()
	if n := strings.Count(s, "\n"); n != 8000 {
		t.Fatalf("%d lines, want 8000", n)
	}
	for _, l := range strings.Split(strings.TrimSuffix(s, "\n"), "\n") {
		if !strings.Contains(l, "line ") {
			t.Fatalf("torn line %q", l)
		}
	}
	if writes > 8000/100 {
		t.Fatalf("%d writes for 8000 lines", writes)
	}
}

// The periodic flush writes lines without Close.
func TestBufferedInterval(t *testing.T) {
	out := &countingWriter{}
	b := NewBuffered(out, 10*time.Millisecond)
	defer b.Close()
	_, _ = b.Write([]byte("hello\n"))
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		if s, _ := out.snapshot(); s == "hello\n" {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatal("the line was not written by the periodic flush")
}
