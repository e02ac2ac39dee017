package ratelimit

import (
	"context"
	"slices"
	"sync"

	"github.com/redis/go-redis/v9"
)

// maxPipeline bounds the script calls one round trip carries; the rest wait for the next.
const maxPipeline = 128

// coalescer sends concurrent calls of checkScript to Redis together: while one round
// trip is in flight, the calls that arrive queue up, and the next round trip carries
// all of them as one pipeline (one write and one read on one connection, however many
// checks). Alone, a call goes out at once, as a plain EVALSHA: coalescing adds no wait,
// it only takes what is already waiting. Each call is still its own atomic script, so
// limits stay exact; only the system calls, wake-ups and Redis's per-command I/O are
// shared.
//
// No extra goroutine: the caller that finds no round trip in flight sends its own; when
// it returns, it hands what queued meanwhile to the first caller in the queue, which
// sends that batch. A call therefore waits for at most one round trip before its own.
type coalescer struct {
	client redis.UniversalClient
	script *redis.Script // checkLua

	mu      sync.Mutex
	busy    bool // a round trip is in flight, or about to be
	pending []*scriptCall
}

// scriptCall is one queued call of checkScript and, once done is closed, its reply.
type scriptCall struct {
	keys  []string
	args  []any
	reply []int64
	err   error
	// batch, when not nil, makes the woken caller the sender of these calls (its own first).
	batch []*scriptCall
	done  chan struct{}
}

// run evaluates checkScript with keys and args and returns its reply, or the error of
// the Redis client (a NOSCRIPT reply is answered by loading the script, as
// redis.Script.Run does). Concurrent calls share round trips. When ctx ends while a
// call waits in the queue, run returns ctx's error; the call may still be sent (and
// charge) with the batch it was queued in, as a call whose reply was lost would.
func (c *coalescer) run(ctx context.Context, keys []string, args []any) ([]int64, error) {
	c.mu.Lock()
	if !c.busy {
		c.busy = true
		c.mu.Unlock()
		reply, err := c.script.Run(ctx, c.client, keys, args...).Int64Slice()
		c.handOff()
		return reply, err
	}
	call := &scriptCall{keys: keys, args: args, done: make(chan struct{})}
	c.pending = append(c.pending, call)
	c.mu.Unlock()
	select {
	case <-call.done:
	case <-ctx.Done():
		if !c.withdraw(call) {
			return nil, ctx.Err()
		}
	}
	if call.batch != nil {
		c.send(context.WithoutCancel(ctx), call.batch)
		c.handOff()
	}
	return call.reply, call.err
}

// withdraw handles a call whose caller stopped waiting: a call still queued leaves the
// queue (false: return); one already taken into a batch reports true only if its
// caller must send that batch (it was handed the turn), so that the turn is never lost.
func (c *coalescer) withdraw(call *scriptCall) bool {
	c.mu.Lock()
	if i := slices.Index(c.pending, call); i >= 0 {
		c.pending = slices.Delete(c.pending, i, i+1)
		c.mu.Unlock()
		return false
	}
	c.mu.Unlock()
	select {
	case <-call.done: // closed under mu when handed the turn, so closed by now if it was
		return call.batch != nil
	default:
		return false
	}
}

// handOff ends this caller's turn: the calls queued meanwhile (at most maxPipeline)
// go to the first of them, which sends them; with none, nothing is in flight.
func (c *coalescer) handOff() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.pending) == 0 {
		c.busy = false
		return
	}
	n := min(len(c.pending), maxPipeline)
	batch := make([]*scriptCall, n)
	copy(batch, c.pending)
	rest := copy(c.pending, c.pending[n:])
	clear(c.pending[rest:])
	c.pending = c.pending[:rest]
	batch[0].batch = batch
	close(batch[0].done)
}

// send evaluates batch in one pipeline and wakes every call but the first (the caller's
// own, which returns by itself). A call that finds the script unknown to its server is
// sent again alone, loading the script.
func (c *coalescer) send(ctx context.Context, batch []*scriptCall) {
	if len(batch) == 1 {
		call := batch[0]
		call.reply, call.err = c.script.Run(ctx, c.client, call.keys, call.args...).Int64Slice()
		return
	}
	pipe := c.client.Pipeline()
	cmds := make([]*redis.Cmd, len(batch))
	for i, call := range batch {
		cmds[i] = c.script.EvalSha(ctx, pipe, call.keys, call.args...)
	}
	_, _ = pipe.Exec(ctx) // each command carries its own error
	for i, call := range batch {
		call.reply, call.err = cmds[i].Int64Slice()
		if call.err != nil && redis.HasErrorPrefix(call.err, "NOSCRIPT") {
			call.reply, call.err = c.script.Run(ctx, c.client, call.keys, call.args...).Int64Slice()
		}
		if i > 0 {
			close(call.done)
		}
	}
}
