package fanout

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"
)

type event struct {
	name    string
	dropped int
	fail    bool
}

// fakeSchema stands for gqlgen's generated schema: its resolver shares src, and its
// handler "encodes" each event, counting the encodings.
type fakeSchema struct {
	graphql.ExecutableSchema
	src     chan *event
	encodes *atomic.Int32
}

func (f fakeSchema) Exec(ctx context.Context) graphql.ResponseHandler {
	ch := Share(ctx, f.src, func(e *event) bool { return e.dropped > 0 })
	return func(ctx context.Context) *graphql.Response {
		e, ok := <-ch
		if !ok {
			return nil
		}
		f.encodes.Add(1)
		if e.fail {
			// A field failing while encoding: gqlgen records the error in the
			// response context, not in the response.
			graphql.AddError(ctx, &gqlerror.Error{Message: "boom"})
		}
		return &graphql.Response{Data: []byte(fmt.Sprintf(`{"name":%q,"dropped":%d}`, e.name, e.dropped))}
	}
}

// subscribe runs one subscription of query under s and returns its source and handler.
func subscribe(s *Schema, encodes *atomic.Int32, query string) (chan *event, graphql.ResponseHandler) {
	src := make(chan *event, 8)
	s.ExecutableSchema = fakeSchema{src: src, encodes: encodes}
	ctx := graphql.WithOperationContext(context.Background(), &graphql.OperationContext{
		RawQuery:  query,
		Operation: &ast.OperationDefinition{Operation: ast.Subscription},
		Variables: map[string]any{},
	})
	return src, s.Exec(ctx)
}

func TestShareEncodesOncePerShape(t *testing.T) {
	var encodes atomic.Int32
	s := Wrap(nil)
	type sub struct {
		src chan *event
		h   graphql.ResponseHandler
	}
	var a, b []sub
	for range 3 {
		src, h := subscribe(s, &encodes, "subscription { a }")
		a = append(a, sub{src, h})
		src, h = subscribe(s, &encodes, "subscription { b }")
		b = append(b, sub{src, h})
	}
	next := func(s sub, e *event) string {
		t.Helper()
		s.src <- e
		resp := s.h(eventContext())
		if resp == nil {
			t.Fatal("no response")
		}
		return string(resp.Data)
	}
	expect := func(step string, want int32) {
		t.Helper()
		if got := encodes.Swap(0); got != want {
			t.Errorf("%s: %d encodings, want %d", step, got, want)
		}
	}

	e1 := &event{name: "e1"}
	for _, s := range append(a, b...) {
		if got := next(s, e1); got != `{"name":"e1","dropped":0}` {
			t.Fatalf("got %s", got)
		}
	}
	expect("one event, two shapes", 2)

	// A subscriber's own copy is encoded on its own, and not left for others.
	own := &event{name: "e2", dropped: 3}
	if got := next(a[0], own); got != `{"name":"e2","dropped":3}` {
		t.Fatalf("own copy: got %s", got)
	}
	next(a[1], own)
	expect("own copies", 2)

	// A response with errors is not shared.
	bad := &event{name: "e3", fail: true}
	for _, s := range a {
		next(s, bad)
	}
	expect("failed encodings", 3)

	// The source closing ends the stream.
	close(a[2].src)
	if resp := a[2].h(eventContext()); resp != nil {
		t.Fatalf("after close: %s", resp.Data)
	}
}

// eventContext is the context gqlgen's executor gives each event: a fresh response
// context.
func eventContext() context.Context {
	return graphql.WithResponseContext(context.Background(), graphql.DefaultErrorPresenter, nil)
}

func TestShareOutsideSchema(t *testing.T) {
	src := make(chan *event)
	if got := Share(context.Background(), src, nil); got != (<-chan *event)(src) {
		t.Fatal("without Schema, Share must return src itself")
	}
}
