package pubsub

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// recv returns the next message of s, failing the test after timeout.
func recv(t *testing.T, s *Subscription, timeout time.Duration) []byte {
	t.Helper()
	select {
	case m, ok := <-s.C():
		if !ok {
			t.Fatal("subscription channel closed")
		}
		return m
	case <-time.After(timeout):
		t.Fatalf("no message within %v", timeout)
		return nil
	}
}

// expectNone fails the test if s receives a message within d.
func expectNone(t *testing.T, s *Subscription, d time.Duration) {
	t.Helper()
	select {
	case m, ok := <-s.C():
		if ok {
			t.Fatalf("unexpected message %q", m)
		}
		t.Fatal("subscription channel closed")
	case <-time.After(d):
	}
}

// drain returns the messages buffered in s without waiting.
func drain(s *Subscription) [][]byte {
	var out [][]byte
	for {
		select {
		case m, ok := <-s.C():
			if !ok {
				return out
			}
			out = append(out, m)
		default:
			return out
		}
	}
}

// The tests below are the contract of every Bus, run against each implementation
// (see implementations): what a single instance's subscribers see.

func TestFanOutAndIsolation(t *testing.T) {
	forEachBus(t, testFanOutAndIsolation)
}

func testFanOutAndIsolation(t *testing.T, newBus func(t *testing.T) Bus) {
	tests := []struct {
		name      string
		subs      map[string]int // topic -> number of subscribers
		publish   []string       // topics, in order; payload = "<topic>#<i>"
		wantTopic map[string]int // topic -> messages each of its subscribers gets
	}{
		{
			name:      "one subscriber",
			subs:      map[string]int{"a": 1},
			publish:   []string{"a", "a"},
			wantTopic: map[string]int{"a": 2},
		},
		{
			name:      "fan-out to several subscribers",
			subs:      map[string]int{"a": 5},
			publish:   []string{"a", "a", "a"},
			wantTopic: map[string]int{"a": 3},
		},
		{
			name:      "topics are isolated",
			subs:      map[string]int{"a": 2, "b": 3, "c": 1},
			publish:   []string{"a", "b", "a", "x", "b", "b"},
			wantTopic: map[string]int{"a": 2, "b": 3, "c": 0},
		},
		{
			name:      "no subscribers",
			subs:      map[string]int{},
			publish:   []string{"a", "b"},
			wantTopic: map[string]int{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bus := newBus(t)
			defer bus.Close()
			subs := map[string][]*Subscription{}
			for topic, n := range tt.subs {
				for range n {
					subs[topic] = append(subs[topic], bus.Subscribe(topic, 16))
				}
			}
			for i, topic := range tt.publish {
				bus.Publish(topic, fmt.Appendf(nil, "%s#%d", topic, i))
			}
			var wantDelivered uint64
			for topic, ss := range subs {
				var want []string
				for i, p := range tt.publish {
					if p == topic {
						want = append(want, fmt.Sprintf("%s#%d", topic, i))
					}
				}
				if len(want) != tt.wantTopic[topic] {
					t.Fatalf("test table: topic %s: %d messages, want %d", topic, len(want), tt.wantTopic[topic])
				}
				for _, s := range ss {
					got := drain(s)
					if len(got) != len(want) {
						t.Fatalf("topic %s: got %d messages, want %d", topic, len(got), len(want))
					}
					for i := range got {
						if string(got[i]) != want[i] {
							t.Errorf("topic %s message %d: got %q, want %q", topic, i, got[i], want[i])
						}
					}
					wantDelivered += uint64(len(want))
				}
			}
			st := bus.Stats()
			if st.Published != uint64(len(tt.publish)) || st.Delivered != wantDelivered || st.Dropped != 0 {
				t.Errorf("stats = %+v, want Published %d, Delivered %d, Dropped 0", st, len(tt.publish), wantDelivered)
			}
		})
	}
}

func TestSlowSubscriber(t *testing.T) {
	forEachBus(t, testSlowSubscriber)
}

func testSlowSubscriber(t *testing.T, newBus func(t *testing.T) Bus) {
	const n = 10_000
	bus := newBus(t)
	defer bus.Close()
	slow := bus.Subscribe("t", 1) // never read
	fast := bus.Subscribe("t", 64)

	got := make(chan int)
	go func() {
		count := 0
		for range fast.C() {
			count++
			if count == n {
				break
			}
		}
		got <- count
	}()

	done := make(chan struct{})
	go func() {
		for i := range n {
			bus.Publish("t", []byte{byte(i)})
			// The fast reader reads concurrently; give it a chance so that its
			// buffer of 64 does not overflow on a busy machine.
			if i%32 == 31 {
				for len(fast.C()) > 32 {
					time.Sleep(10 * time.Microsecond)
				}
			}
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Publish blocked on a slow subscriber")
	}
	select {
	case c := <-got:
		if c != n {
			t.Fatalf("fast subscriber got %d messages, want %d", c, n)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("fast subscriber did not get every message")
	}
	if fast.Dropped() != 0 {
		t.Errorf("fast.Dropped() = %d, want 0", fast.Dropped())
	}

	if d := slow.Dropped(); d != n-1 {
		t.Errorf("slow.Dropped() = %d, want %d", d, n-1)
	}
	if d := slow.TakeDropped(); d != n-1 {
		t.Errorf("slow.TakeDropped() = %d, want %d", d, n-1)
	}
	if d := slow.Dropped(); d != 0 {
		t.Errorf("Dropped() after TakeDropped = %d, want 0", d)
	}
	if m := recv(t, slow, time.Second); len(m) != 1 || m[0] != 0 {
		t.Errorf("slow subscriber's buffered message = %v, want the first one", m)
	}
	bus.Publish("t", []byte{1})
	if d := slow.TakeDropped(); d != 0 {
		t.Errorf("TakeDropped() with room in the buffer = %d, want 0", d)
	}
	st := bus.Stats()
	// Delivered: fast n+1, slow 2 (the first and the last message).
	if st.Published != n+1 || st.Dropped != n-1 || st.Delivered != n+3 {
		t.Errorf("stats = %+v, want Published %d, Dropped %d, Delivered %d", st, n+1, n-1, n+3)
	}
}

func TestClose(t *testing.T) {
	forEachBus(t, testClose)
}

func testClose(t *testing.T, newBus func(t *testing.T) Bus) {
	check := leakCheck(t)
	bus := newBus(t)
	a := bus.Subscribe("a", 4)
	b := bus.Subscribe("b", 4)
	c := bus.Subscribe("a", 4)

	// Subscription.Close is idempotent and unsubscribes.
	c.Close()
	c.Close()
	if _, ok := <-c.C(); ok {
		t.Fatal("closed subscription's channel is open")
	}
	bus.Publish("a", []byte("x"))
	if got := bus.Stats().Delivered; got != 1 {
		t.Errorf("Delivered = %d after unsubscribing, want 1", got)
	}

	if err := bus.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := bus.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	// Buffered messages remain readable, then the channel is closed.
	if m := recv(t, a, time.Second); string(m) != "x" {
		t.Fatalf("got %q, want x", m)
	}
	for _, s := range []*Subscription{a, b} {
		select {
		case _, ok := <-s.C():
			if ok {
				t.Fatal("message after Close")
			}
		case <-time.After(time.Second):
			t.Fatal("Close did not close a subscription's channel")
		}
		s.Close() // idempotent after the bus's Close
	}

	bus.Publish("a", []byte("y")) // no-op, no panic
	if st := bus.Stats(); st.Published != 1 {
		t.Errorf("Published = %d, want 1 (Publish after Close is ignored)", st.Published)
	}
	late := bus.Subscribe("a", 1)
	if _, ok := <-late.C(); ok {
		t.Fatal("Subscribe after Close returned an open channel")
	}
	late.Close()
	check()
}

// TestConcurrent publishes, subscribes, unsubscribes and closes the bus all at
// once (under the race detector in CI). It checks the contract: nothing panics or
// blocks, every message received was one published, every subscription's channel ends
// closed once the bus is, and nothing is delivered after Close.
func TestConcurrent(t *testing.T) {
	forEachBus(t, testConcurrent)
}

func testConcurrent(t *testing.T, newBus func(t *testing.T) Bus) {
	bus := newBus(t)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	var received, bogus atomic.Int64
	for p := range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				bus.Publish(fmt.Sprint("t", (p+i)%3), []byte("m"))
			}
		})
	}
	open := make(chan *Subscription, 8)
	for s := range 8 {
		wg.Go(func() {
			for i := 0; i < 200; i++ {
				sub := bus.Subscribe(fmt.Sprint("t", (s+i)%3), 2)
				for range 3 {
					select {
					case m, ok := <-sub.C():
						if ok {
							received.Add(1)
							if string(m) != "m" {
								bogus.Add(1)
							}
						}
					case <-time.After(time.Millisecond):
					}
				}
				sub.TakeDropped()
				if i == 199 {
					open <- sub // left open: the bus's Close must close it
					return
				}
				sub.Close()
			}
		})
	}
	time.Sleep(50 * time.Millisecond)
	_ = bus.Close() // concurrently with everything above
	close(stop)
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("publishers or subscribers blocked")
	}
	close(open)
	for sub := range open {
		for range sub.C() { // drains what was buffered, then must end
		}
	}
	if received.Load() == 0 || bogus.Load() != 0 {
		t.Fatalf("received %d messages, %d of them not published", received.Load(), bogus.Load())
	}
	published := bus.Stats().Published
	bus.Publish("t0", []byte("late"))
	late := bus.Subscribe("t0", 1)
	if _, ok := <-late.C(); ok {
		t.Fatal("a subscription made after Close received a message")
	}
	if bus.Stats().Published != published {
		t.Fatal("Publish after Close counted a message")
	}
}

// BenchmarkLocalPublish publishes a 200-byte payload on a topic with 100 subscribers.
//
//   - delivered: every message is delivered (buffers are emptied, off the clock, every
//     1024 messages): the cost of Publish itself.
//   - draining: each subscriber has a goroutine reading its channel concurrently;
//     with fewer cores than subscribers the readers cannot keep up, so part is dropped.
//   - full: nobody reads, every delivery is a counted drop (a stuck consumer).
func BenchmarkLocalPublish(b *testing.B) {
	const subscribers, buf = 100, 1024
	payload := make([]byte, 200)
	for _, mode := range []string{"delivered", "draining", "full"} {
		b.Run(mode, func(b *testing.B) {
			bus := NewLocal()
			defer bus.Close()
			var wg sync.WaitGroup
			subs := make([]*Subscription, subscribers)
			for i := range subs {
				subs[i] = bus.Subscribe("usage", buf)
				if mode == "draining" {
					s := subs[i]
					wg.Go(func() {
						for range s.C() {
						}
					})
				}
			}
			if mode == "full" {
				for range buf {
					bus.Publish("usage", payload)
				}
			}
			b.ReportAllocs()
			before := bus.Stats()
			n := 0
			for b.Loop() {
				bus.Publish("usage", payload)
				if n++; mode == "delivered" && n%buf == 0 {
					b.StopTimer()
					for _, s := range subs {
						drain(s)
					}
					b.StartTimer()
				}
			}
			b.StopTimer()
			after := bus.Stats()
			b.ReportMetric(float64(after.Delivered-before.Delivered)/float64(n), "delivered/op")
			b.ReportMetric(float64(after.Dropped-before.Dropped)/float64(n), "dropped/op")
			_ = bus.Close()
			wg.Wait()
		})
	}
}

func ExampleNewLocal() {
	bus := NewLocal()
	defer bus.Close()

	sub := bus.Subscribe("usage:key1", 1)
	defer sub.Close()
	bus.Publish("usage:key1", []byte(`{"op":"viewer"}`))
	bus.Publish("usage:key1", []byte(`{"op":"apiKeys"}`)) // buffer full: dropped
	bus.Publish("usage:key2", []byte(`{"op":"usage"}`))   // other topic

	fmt.Printf("%s, dropped %d\n", <-sub.C(), sub.TakeDropped())
	// Output: {"op":"viewer"}, dropped 1
}
