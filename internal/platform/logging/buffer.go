package logging

import (
	"bufio"
	"io"
	"sync"
	"time"
)

// Buffered collects log lines in memory and writes them to the underlying writer when
// 64 KiB have gathered or every interval, whichever comes first: under load one write
// system call carries hundreds of lines instead of one each. A crash loses at most the
// last interval of lines. Close writes what is left. It is safe for concurrent use.
type Buffered struct {
	mu   sync.Mutex
	w    *bufio.Writer
	stop chan struct{}
	done chan struct{}
}

// NewBuffered returns a Buffered writing to w at least every interval.
func NewBuffered(w io.Writer, interval time.Duration) *Buffered {
	b := &Buffered{w: bufio.NewWriterSize(w, 64<<10), stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(b.done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-b.stop:
				return
			case <-t.C:
				b.Flush()
			}
		}
	}()
	return b
}

// Write buffers p (one log line); it returns the underlying writer's error when the
// buffer had to be written out.
func (b *Buffered) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.w.Write(p)
}

// Flush writes the buffered lines now and returns the underlying writer's error.
func (b *Buffered) Flush() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.w.Flush()
}

// Close stops the periodic writes and writes what is left; it returns Flush's error.
func (b *Buffered) Close() error {
	select {
	case <-b.stop:
	default:
		close(b.stop)
	}
	<-b.done
	return b.Flush()
}
