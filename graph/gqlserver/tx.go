package gqlserver

import (
	"context"
	"errors"
	"slices"
	"sync"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/ast"

	"github.com/latchkey/latchkey/ent"
	"github.com/latchkey/latchkey/internal/data/txn"
)

// transactions runs every mutation root field in a transaction of its own: the
// resolver and the fields selected below it see the transaction's client
// (ent.FromContext), work registered with txn.AfterCommit runs once it commits, and it
// commits when the resolver itself succeeded (an error in a selected sub-field does not
// undo the change, as with a resolver that committed before returning). Fields named
// in skip run without one (reads and hot paths such as verification).
type transactions struct {
	client *ent.Client
	skip   []string
}

type rootFieldFailed struct{}

// rootField is the root-field middleware.
func (t *transactions) rootField(ctx context.Context, next graphql.RootResolver) graphql.Marshaler {
	fc := graphql.GetRootFieldContext(ctx)
	oc := graphql.GetOperationContext(ctx)
	// (RootFieldContext.Object holds the field's name, not its type.)
	if t.client == nil || fc == nil || oc == nil || oc.Operation == nil || oc.Operation.Operation != ast.Mutation ||
		fc.Field.Name == "__typename" || slices.Contains(t.skip, fc.Field.Name) {
		return next(ctx)
	}
	tx, err := t.client.Tx(ctx)
	if err != nil {
		graphql.AddError(ctx, err) // presented as INTERNAL
		return graphql.Null
	}
	failed := new(bool)
	var out graphql.Marshaler
	ctx = context.WithValue(ent.NewContext(ent.NewTxContext(ctx, tx), tx.Client()), rootFieldFailed{}, failed)
	// The sub-fields of one mutation field share its transaction: run them one at a
	// time, as a database connection serves one statement at a time.
	ctx = withSerialFields(ctx)
	err = txn.Run(ctx, tx, func(ctx context.Context) error {
		out = next(ctx)
		if *failed {
			return errRolledBack
		}
		return nil
	})
	if err != nil && !errors.Is(err, errRolledBack) {
		graphql.AddError(ctx, err)
		return graphql.Null
	}
	return out
}

type rolledBack struct{}

func (rolledBack) Error() string { return "mutation failed: rolled back" }

var errRolledBack error = rolledBack{}

// field is the field middleware that tells rootField whether the mutation's own
// resolver failed, and serializes the sub-fields of a transactional mutation field.
func (t *transactions) field(ctx context.Context, next graphql.Resolver) (any, error) {
	if mu, ok := ctx.Value(serialKey{}).(*sync.Mutex); ok {
		fc := graphql.GetFieldContext(ctx)
		if fc != nil && fc.Object != "Mutation" {
			mu.Lock()
			defer mu.Unlock()
		}
	}
	res, err := next(ctx)
	if err != nil {
		if fc := graphql.GetFieldContext(ctx); fc != nil && fc.Object == "Mutation" {
			if failed, ok := ctx.Value(rootFieldFailed{}).(*bool); ok {
				*failed = true
			}
		}
	}
	return res, err
}

type serialKey struct{}

func withSerialFields(ctx context.Context) context.Context {
	return context.WithValue(ctx, serialKey{}, &sync.Mutex{})
}
