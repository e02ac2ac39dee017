package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// gateHook holds the first command a client sends until release is closed, and notes
// the scripts sent: "evalsha" alone, "pipeline of N" for N in one pipeline.
type gateHook struct {
	once    sync.Once
	held    chan struct{} // closed when the first command is being held
	release chan struct{}
	mu      sync.Mutex
	sent    []string
}

func (h *gateHook) note(s string) {
	h.mu.Lock()
	h.sent = append(h.sent, s)
	h.mu.Unlock()
}

func (h *gateHook) taken() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := h.sent
	h.sent = nil
	return s
}

func (h *gateHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *gateHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		first := false
		h.once.Do(func() { first = true })
		if first {
			close(h.held)
			<-h.release
		}
		if cmd.Name() == "evalsha" {
			h.note("evalsha")
		}
		return next(ctx, cmd)
	}
}

func (h *gateHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if len(cmds) > 0 && cmds[0].Name() == "evalsha" { // not a new connection's HELLO
			h.note(fmt.Sprintf("pipeline of %d", len(cmds)))
		}
		return next(ctx, cmds)
	}
}

// queued waits until n checks wait behind the round trip in flight.
func queued(t *testing.T, c *coalescer, n int) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		c.mu.Lock()
		got := len(c.pending)
		c.mu.Unlock()
		if got == n {
			return
		}
	}
	t.Fatalf("%d checks never queued", n)
}

// TestRedisCheckCoalesced: checks that arrive while a round trip is in flight go out
// together in the next one (checks of one key as one script call), each still exact; a
// check whose context ends while it is queued leaves the queue uncharged, and the
// checker goes on.
func TestRedisCheckCoalesced(t *testing.T) {
	ctx := context.Background()
	client, gate := gatedClient(t)
	rc := newTestRedisChecker(t, client, nil)
	limit := []Counter{rateC("key:k", 5, time.Hour, 1)}

	results := make(chan Decision, 10)
	check := func(ctx context.Context) error {
		d, err := rc.Check(ctx, "ten_1", limit, nil)
		if err == nil {
			results <- d
		}
		return err
	}
	var wg sync.WaitGroup
	wg.Go(func() { _ = check(ctx) }) // the first: sent alone, held by the gate
	<-gate.held
	for range 6 {
		wg.Go(func() { _ = check(ctx) })
	}
	queued(t, &rc.co, 6)
	gone, cancel := context.WithCancel(ctx)
	cancelled := make(chan error, 1)
	go func() { cancelled <- check(gone) }()
	queued(t, &rc.co, 7)
	cancel()
	if err := <-cancelled; !errors.Is(err, context.Canceled) {
		t.Fatalf("a check whose context ended while queued: %v", err)
	}
	queued(t, &rc.co, 6)
	close(gate.release)
	wg.Wait()
	close(results)
	allowed := 0
	for d := range results {
		if d.Allowed {
			allowed++
		}
	}
	if allowed != 5 {
		t.Fatalf("7 checks of a limit of 5: %d allowed", allowed)
	}
	if got := gate.taken(); !slices.Equal(got, []string{"evalsha", "evalsha"}) {
		t.Fatalf("round trips %v, want one check alone and the six queued behind it in one script call", got)
	}
	if d, err := rc.Check(ctx, "ten_1", []Counter{rateC("key:k", 5, time.Hour, 0)}, nil); err != nil || d.Results[0].Remaining != 0 {
		t.Fatalf("after the batch: %+v, %v", d, err)
	}
	if got := gate.taken(); !slices.Equal(got, []string{"evalsha"}) {
		t.Fatalf("a check alone: %v", got)
	}
}

// TestRedisCheckCoalescedNoScript: a pipeline that finds the script unknown (a Redis
// restart, SCRIPT FLUSH) loads it and still answers every check.
func TestRedisCheckCoalescedNoScript(t *testing.T) {
	client := newRedisClient(t)
	ctx := context.Background()
	rc := newTestRedisChecker(t, client, nil)
	// The same script under another digest: unknown to the server, whatever ran before
	// (flushing the server's scripts would disturb tests running beside this one).
	rc.co.script = redis.NewScript(checkScript + "-- " + testPrefix(t, client) + "\n")
	batch := make([]*scriptCall, 3)
	for i := range batch {
		batch[i] = scriptCallOf(t, rc, "ten_ns", rateC("key:k", 10, time.Hour, 1))
	}
	rc.co.send(ctx, batch)
	for i, call := range batch {
		// reply[3]: how far the bucket was ahead of now, i checks of a tenth of an hour
		if step := int64(time.Hour / 10); call.err != nil || len(call.reply) != 4 || call.reply[0] != 1 ||
			call.reply[3] > int64(i)*step || call.reply[3] < int64(i)*step-int64(time.Second) {
			t.Fatalf("call %d: %v, %v", i, call.reply, call.err)
		}
	}
}

// TestRedisCheckCoalescedKeys: a batch of checks of several keys goes as one pipeline
// of one script call per key, and each check gets its own decision, in the order the
// checks queued within each key.
func TestRedisCheckCoalescedKeys(t *testing.T) {
	ctx := context.Background()
	client, hook := gatedClient(t)
	close(hook.release)
	rc := newTestRedisChecker(t, client, nil)
	keys := []string{"key:a", "key:b", "key:a", "key:c", "key:a", "key:b"}
	batch := make([]*scriptCall, len(keys))
	for i, k := range keys {
		batch[i] = scriptCallOf(t, rc, "ten_k", rateC(k, 2, time.Hour, 1))
	}
	rc.co.send(ctx, batch)
	if got := hook.taken(); !slices.Equal(got, []string{"pipeline of 3"}) {
		t.Fatalf("round trips %v, want one pipeline of a call per key", got)
	}
	// a: allowed, allowed, denied (a burst of 2); b: allowed twice; c: allowed.
	want := []int64{1, 1, 1, 1, 0, 1}
	for i, call := range batch {
		if call.err != nil || len(call.reply) != 4 || call.reply[0] != want[i] {
			t.Fatalf("check %d (%s): %v, %v; want ok = %d", i, keys[i], call.reply, call.err, want[i])
		}
	}
}

// TestMergedChecksAsSequential: checks of the same counters merged into one script call
// decide and charge exactly as the same checks sent one by one: every kind of counter,
// advisory ones, a cost of 0, and a denial between allowed checks; on one Redis server
// and on the Redis Cluster.
func TestMergedChecksAsSequential(t *testing.T) {
	forEachRedis(t, testMergedChecksAsSequential)
}

func testMergedChecksAsSequential(t *testing.T, client redis.UniversalClient) {
	ctx := context.Background()
	rc := newTestRedisChecker(t, client, nil)
	counters := func(cost int64) []Counter {
		return []Counter{
			rateC("key:k", 10, time.Hour, cost),
			quotaC("quota:k", 6, PeriodDay, cost),
			creditsC("credits:k", 7, "", cost),
			advisory(quotaC("tenant", 2, PeriodMonth, cost)),
		}
	}
	costs := []int64{1, 2, 0, 5, 3, 1, 1} // the quota denies the 5, then the second 1
	calls := func(group string) []*scriptCall {
		batch := make([]*scriptCall, len(costs))
		for i, cost := range costs {
			batch[i] = scriptCallOf(t, rc, group, counters(cost)...)
		}
		return batch
	}
	merged := calls("ten_merged")
	if groups := rc.co.merge(merged); len(groups) != 1 {
		t.Fatalf("%d groups, want the checks of one key merged into one", len(groups))
	}
	rc.co.send(ctx, merged)
	for i, one := range calls("ten_one_by_one") {
		rc.co.send(ctx, []*scriptCall{one})
		got := merged[i]
		if one.err != nil || got.err != nil || len(got.reply) != len(one.reply) {
			t.Fatalf("check %d (cost %d): merged %v, %v; alone %v, %v", i, costs[i], got.reply, got.err, one.reply, one.err)
		}
		if got.reply[0] != one.reply[0] || !slices.Equal(got.reply[4:], one.reply[4:]) ||
			abs(got.reply[3]-one.reply[3]) > int64(time.Second) { // the rate's offset from now
			t.Fatalf("check %d (cost %d): merged %v, alone %v", i, costs[i], got.reply, one.reply)
		}
	}
	// The counters end where the one-by-one ones do.
	for _, group := range []string{"ten_merged", "ten_one_by_one"} {
		d, err := rc.Check(ctx, group, counters(0), nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := []int64{d.Results[1].Used, d.Results[2].Remaining, d.Results[3].Used}; !slices.Equal(got, []int64{6, 1, 6}) {
			t.Fatalf("%s after the checks: quota used, balance, tenant used %v; want [6 1 6]", group, got)
		}
	}
}

func abs(x int64) int64 {
	if x < 0 {
		return -x
	}
	return x
}

// gatedClient returns a Redis client that knows checkScript and notes, through the
// returned hook, the round trips it sends, holding the first until hook.release closes.
func gatedClient(t *testing.T) (*redis.Client, *gateHook) {
	t.Helper()
	client := newRedisClient(t)
	if err := checkLua.Load(context.Background(), client).Err(); err != nil {
		t.Fatal(err)
	}
	hook := &gateHook{held: make(chan struct{}), release: make(chan struct{})}
	client.AddHook(hook)
	return client, hook
}

// scriptCallOf returns the queued script call of rc's check of counters in group.
func scriptCallOf(t *testing.T, rc *RedisChecker, group string, counters ...Counter) *scriptCall {
	t.Helper()
	var cl call
	rc.build(&cl, group, counters, mustPlans(t, group, counters...), time.Now())
	return &scriptCall{keys: cl.keys, args: cl.args, done: make(chan struct{})}
}

func mustPlans(t *testing.T, group string, counters ...Counter) []plan {
	t.Helper()
	plans, err := planCounters(nil, group, counters)
	if err != nil {
		t.Fatal(err)
	}
	return plans
}
