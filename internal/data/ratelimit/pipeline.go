package ratelimit

import (
	"context"
	"slices"
	"sync"

	"github.com/redis/go-redis/v9"
)

// maxPipeline bounds the calls one round trip carries; the rest wait for the next.
const maxPipeline = 128

// coalescer sends concurrent calls of checkScript to Redis together: while one round
// trip is in flight, the calls that arrive queue up, and the next round trip carries
// all of them as one pipeline (one write and one read on one connection, however many
// checks). Alone, a call goes out at once, as a plain EVALSHA: coalescing adds no wait,
// it only takes what is already waiting. Calls of the same counters (a hot key's) go as
// one script call that decides them one after the other; every other call is its own
// script. Each call is thus decided atomically, on the state the calls before it left,
// so limits stay exact; what is shared is the system calls, the wake-ups, Redis's
// per-command I/O and, for a hot key, the script call and its reads and writes.
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

	// Buffers of merge, reused: only the caller whose turn it is (busy) sends. byKey
	// indexes a batch's groups by their first key; firsts holds each group's first
	// call, sizes its size; of is each call's group; ordered holds the calls group
	// after group, and groups slices it.
	byKey   map[string]int
	firsts  []*scriptCall
	sizes   []int
	of      []int
	ordered []*scriptCall
	groups  [][]*scriptCall
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

// send evaluates batch in one round trip and wakes every call but the first (the
// caller's own, which returns by itself). Calls of the same counters (a hot key) go as
// one script call that evaluates them in order (see checkScript); the rest go beside
// it in one pipeline. A command that finds the script unknown to its server is sent
// again alone, loading the script.
func (c *coalescer) send(ctx context.Context, batch []*scriptCall) {
	groups := c.merge(batch)
	if len(groups) == 1 {
		g := groups[0]
		reply, err := c.script.Run(ctx, c.client, g[0].keys, mergedArgs(g)...).Int64Slice()
		split(g, reply, err)
	} else {
		pipe := c.client.Pipeline()
		cmds := make([]*redis.Cmd, len(groups))
		for i, g := range groups {
			cmds[i] = c.script.EvalSha(ctx, pipe, g[0].keys, mergedArgs(g)...)
		}
		_, _ = pipe.Exec(ctx) // each command carries its own error
		for i, g := range groups {
			reply, err := cmds[i].Int64Slice()
			if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
				reply, err = c.script.Run(ctx, c.client, g[0].keys, mergedArgs(g)...).Int64Slice()
			}
			split(g, reply, err)
		}
	}
	clear(c.ordered) // no reference kept to calls answered
	clear(c.firsts)
	for _, call := range batch[1:] {
		close(call.done)
	}
}

// merge cuts batch into groups of calls that check the same counters with the same
// arguments but their costs, each group in the order of batch, the groups in the
// order of their first calls. The groups live in the coalescer's buffers, valid until
// the next merge.
func (c *coalescer) merge(batch []*scriptCall) [][]*scriptCall {
	c.groups = c.groups[:0]
	if len(batch) == 1 {
		return append(c.groups, batch)
	}
	if c.byKey == nil {
		c.byKey = make(map[string]int)
	}
	clear(c.byKey)
	// Number the groups, then lay their calls out one group after another.
	c.firsts, c.sizes, c.of = c.firsts[:0], c.sizes[:0], c.of[:0]
	for _, call := range batch {
		g, ok := c.byKey[call.keys[0]]
		if !ok || !mergeable(c.firsts[g], call) {
			g = len(c.firsts)
			c.byKey[call.keys[0]] = g
			c.firsts = append(c.firsts, call)
			c.sizes = append(c.sizes, 0)
		}
		c.of = append(c.of, g)
		c.sizes[g]++
	}
	c.ordered = slices.Grow(c.ordered[:0], len(batch))[:len(batch)]
	start := 0
	for _, n := range c.sizes {
		c.groups = append(c.groups, c.ordered[start:start:start+n])
		start += n
	}
	for i, call := range batch {
		g := c.of[i]
		c.groups[g] = append(c.groups[g], call)
	}
	return c.groups
}

// mergeable reports whether b checks the same counters as a, with the same arguments
// but the costs, so that one call of checkScript can evaluate both.
func mergeable(a, b *scriptCall) bool {
	n := len(a.keys)
	if len(b.keys) != n || len(a.args) != scriptHeaderArgs+scriptCounterArgs*n || len(b.args) != len(a.args) {
		return false
	}
	if !slices.Equal(a.keys, b.keys) {
		return false
	}
	for j := range a.args {
		if j >= scriptHeaderArgs && (j-scriptHeaderArgs)%scriptCounterArgs == scriptCostArg {
			continue
		}
		if a.args[j] != b.args[j] {
			return false
		}
	}
	return true
}

// mergedArgs returns the arguments of one call of checkScript evaluating the calls of g
// in order: the first's, then the costs of each other.
func mergedArgs(g []*scriptCall) []any {
	if len(g) == 1 {
		return g[0].args
	}
	n := len(g[0].keys)
	args := make([]any, 0, len(g[0].args)+(len(g)-1)*n)
	args = append(args, g[0].args...)
	for _, call := range g[1:] {
		for i := range n {
			args = append(args, call.args[scriptHeaderArgs+scriptCounterArgs*i+scriptCostArg])
		}
	}
	return args
}

// split hands each call of g its part of the reply of their one script call: its
// decision, or the whole reply when that is not a list of len(g) decisions (a reply
// that changed nothing, such as missing counters, answers them all; a malformed one is
// reported by each).
func split(g []*scriptCall, reply []int64, err error) {
	size := scriptHeaderReply + len(g[0].keys)
	whole := err != nil || len(g) == 1 || len(reply) != len(g)*size || reply[0] < 0
	for k, call := range g {
		call.reply, call.err = reply, err
		if !whole {
			call.reply = reply[k*size : (k+1)*size : (k+1)*size]
		}
	}
}
