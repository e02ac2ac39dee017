package pubsub

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/latchkey/latchkey/internal/data/testdb"
)

// A bus that missed a master switch (it believes its subscription is on a master the
// sentinels no longer name) follows at the next check: it moves its subscription,
// runs the OnReconnect callbacks once the new one is confirmed and again
// SentinelSettle later, and messages go on flowing. With the master it knows, the
// checks change nothing. The real Sentinel setup, without a failover (the app's
// TestSentinelFailover makes one).
func TestSentinelCheck(t *testing.T) {
	opt, err := redis.ParseFailoverURL(testdb.RedisSentinelURL(t))
	if err != nil {
		t.Fatal(err)
	}
	client := redis.NewFailoverClient(opt)
	t.Cleanup(func() { _ = client.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	channel := "latchkey:test:" + t.Name() + fmt.Sprint(time.Now().UnixNano())
	newBus := func() *redisBus {
		b, err := NewRedis(ctx, client, RedisConfig{Channel: channel, Tick: 5 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = b.Close() })
		return b.(*redisBus)
	}
	a, b := newBus(), newBus()
	reconnected := make(chan time.Time, 10)
	b.OnReconnect(func() { reconnected <- time.Now() })
	sub := b.Subscribe("t", 10)

	for _, tc := range []struct {
		name  string
		known string // what the bus believes its master is ("": ask the sentinels)
		runs  int    // OnReconnect runs expected
	}{
		{"up to date", "", 0},
		{"missed switch", "127.0.0.1:1", 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fctx, stop := context.WithCancel(ctx)
			done := make(chan struct{})
			start := time.Now()
			go func() {
				defer close(done)
				b.followSentinel(fctx, opt, tc.known)
			}()
			// Two checks, and the settle time of a move made at the first one.
			wait := time.After(2*SentinelCheck + SentinelSettle + 500*time.Millisecond)
			var runs []time.Duration
		collect:
			for {
				select {
				case at := <-reconnected:
					runs = append(runs, at.Sub(start).Round(time.Millisecond))
				case <-wait:
					break collect
				}
			}
			stop()
			<-done
			if len(runs) != tc.runs {
				t.Fatalf("OnReconnect ran %d times (after %v), want %d", len(runs), runs, tc.runs)
			}
			if tc.runs > 0 && runs[0] > SentinelCheck+time.Second {
				t.Errorf("the missed switch was followed after %v, want within a check (%v)", runs[0], SentinelCheck)
			}
			for i := range 3 {
				want := fmt.Sprintf("%s %d", tc.name, i)
				a.Publish("t", []byte(want))
				if m := recv(t, sub, 2*time.Second); string(m) != want {
					t.Fatalf("got %q, want %q", m, want)
				}
			}
		})
	}
}
