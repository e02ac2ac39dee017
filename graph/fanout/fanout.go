// Package fanout encodes a subscription event once per query shape instead of once
// per subscriber.
//
// gqlgen executes the selection set of every subscription for every event it
// delivers: with thousands of dashboards subscribed to the same tenant's usage, the
// same event is marshalled, field by field through the field middleware, thousands of
// times. Schema wraps an executable schema so that a subscription whose resolver hands
// its channel to Share gets, for an event value that another subscription of the same
// shape (query text, operation name and variables) has already encoded, the bytes of
// that encoding. The first subscription to receive an event encodes it through
// gqlgen as before; the ones that receive the same value (the same pointer: a stream's
// own copy, such as one carrying its droppedEvents count, is encoded on its own)
// reuse it. A response with errors or extensions (in the response or recorded in its
// context while encoding) is never shared.
//
// Only what the event and the query decide may be in the encoding: a field that
// depends on the subscriber (its viewer, its context) must not be selectable under a
// shared subscription.
package fanout

import (
	"context"
	"encoding/json"
	"sync"
	"sync/atomic"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/ast"
)

// maxShapes bounds the shapes remembered; past it the oldest half is forgotten.
const maxShapes = 512

// recent is how many events each shape remembers: a subscriber lagging further
// behind encodes its events itself.
const recent = 8

// Schema wraps an executable schema (see the package documentation). Its zero value
// is not usable; use Wrap.
type Schema struct {
	graphql.ExecutableSchema
	cache *cache
}

// Wrap returns s with shared encoding of the subscriptions that use Share.
func Wrap(s graphql.ExecutableSchema) *Schema {
	return &Schema{ExecutableSchema: s, cache: &cache{shapes: map[shape]*ring{}}}
}

type tapKey struct{}

// tap carries a subscription's event channel from its resolver (Share) to Exec.
type tap struct {
	// next receives the next event: its identity (nil when it is the subscriber's
	// own) and ok=false once the source closed or ctx ended.
	next func(ctx context.Context) (key any, ok bool)
	// feed hands the event last received to gqlgen's executor, end closes its channel.
	feed func()
	end  func()
}

// Share returns the channel the resolver should give gqlgen instead of src: when the
// operation runs under Schema, events are encoded once per query shape. T must be a
// pointer (or another comparable type whose equal values encode equally). Call it
// only on the resolver's successful path, with the channel it returns. own, when set,
// tells the events made for this subscriber alone (such as a copy carrying its count
// of dropped events): they are encoded without looking for or leaving a shared
// encoding.
func Share[T comparable](ctx context.Context, src <-chan T, own func(T) bool) <-chan T {
	t, _ := ctx.Value(tapKey{}).(*tap)
	if t == nil || t.next != nil {
		return src
	}
	proxy := make(chan T, 1)
	var last T
	t.next = func(ctx context.Context) (any, bool) {
		select {
		case v, ok := <-src:
			last = v
			if !ok || (own != nil && own(v)) {
				return nil, ok
			}
			return v, true
		case <-ctx.Done():
			return nil, false
		}
	}
	t.feed = func() { proxy <- last }
	t.end = func() { close(proxy) }
	return proxy
}

// Exec runs the operation; a subscription whose resolver called Share shares its
// encodings with the subscriptions of the same shape.
func (s *Schema) Exec(ctx context.Context) graphql.ResponseHandler {
	oc := graphql.GetOperationContext(ctx)
	if oc == nil || oc.Operation == nil || oc.Operation.Operation != ast.Subscription {
		return s.ExecutableSchema.Exec(ctx)
	}
	t := &tap{}
	inner := s.ExecutableSchema.Exec(context.WithValue(ctx, tapKey{}, t))
	if t.next == nil {
		return inner
	}
	vars, err := json.Marshal(oc.Variables)
	if err != nil {
		return inner
	}
	r := s.cache.ring(shape{query: oc.RawQuery, op: oc.OperationName, vars: string(vars)})
	ended := false
	return func(ctx context.Context) *graphql.Response {
		if ended {
			return inner(ctx)
		}
		key, ok := t.next(ctx)
		if !ok {
			ended = true
			t.end()
			return inner(ctx) // nil; gqlgen sends the stream's error or complete
		}
		if key == nil {
			t.feed()
			return inner(ctx)
		}
		e, first := r.entry(key)
		if !first {
			select {
			case <-e.done:
				if e.data != nil {
					return &graphql.Response{Data: e.data}
				}
			case <-ctx.Done():
			}
			t.feed()
			return inner(ctx)
		}
		defer close(e.done) // also when encoding panics: the others encode themselves
		t.feed()
		resp := inner(ctx)
		if resp != nil && len(resp.Errors) == 0 && len(resp.Extensions) == 0 && resp.Data != nil && clean(ctx) {
			// gqlgen reuses its buffer for the next event: keep a copy.
			e.data = append(json.RawMessage(nil), resp.Data...)
		}
		return resp
	}
}

// clean reports whether the event's response context holds no error and no extension:
// gqlgen's executor adds those to the response after the handler returns (a field
// that failed while encoding records its error there). Without a response context it
// reports false.
func clean(ctx context.Context) (ok bool) {
	defer func() {
		if recover() != nil { // gqlgen panics without a response context
			ok = false
		}
	}()
	return len(graphql.GetErrors(ctx)) == 0 && len(graphql.GetExtensions(ctx)) == 0
}

// shape is what decides an encoding besides the event.
type shape struct{ query, op, vars string }

// cache holds the recent encodings of every shape.
type cache struct {
	mu     sync.Mutex
	shapes map[shape]*ring
	order  []shape
}

func (c *cache) ring(k shape) *ring {
	c.mu.Lock()
	defer c.mu.Unlock()
	if r := c.shapes[k]; r != nil {
		return r
	}
	if len(c.order) >= maxShapes {
		for _, old := range c.order[:maxShapes/2] {
			delete(c.shapes, old)
		}
		c.order = append(c.order[:0], c.order[maxShapes/2:]...)
	}
	r := &ring{}
	c.shapes[k] = r
	c.order = append(c.order, k)
	return r
}

// ring is the last few events of one shape and their encodings.
type ring struct {
	last    atomic.Pointer[entry] // the newest entry: most subscribers look for it
	mu      sync.Mutex
	entries [recent]*entry
	next    int
}

// entry is one event's encoding: data is set (or left nil when the response could not
// be shared) before done closes.
type entry struct {
	key  any
	done chan struct{}
	data json.RawMessage
}

// entry returns the entry of key, and first=true when the caller created it and must
// encode the event, set data and close done.
func (r *ring) entry(key any) (e *entry, first bool) {
	if e := r.last.Load(); e != nil && e.key == key {
		return e, false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range r.entries {
		if e != nil && e.key == key {
			return e, false
		}
	}
	e = &entry{key: key, done: make(chan struct{})}
	r.entries[r.next] = e
	r.next = (r.next + 1) % recent
	r.last.Store(e)
	return e, true
}
