// Package txn runs ent transactions and the work that must wait for their commit
// (cache invalidations, waking the webhook dispatchers). It depends only on the
// generated ent client, so every package, the ent schema hooks' included, can use it.
package txn

import (
	"context"
	"errors"
	"fmt"

	"github.com/latchkey/latchkey/ent"
)

// WithTx runs fn in a transaction of client and commits it when fn returns nil, or
// rolls it back. When client is already transactional, fn joins that transaction and
// its caller commits. Functions registered with AfterCommit run after a successful
// commit. It returns fn's error, or the error of beginning or committing.
func WithTx(ctx context.Context, client *ent.Client, fn func(ctx context.Context, c *ent.Client) error) error {
	tx, err := client.Tx(ctx)
	if errors.Is(err, ent.ErrTxStarted) {
		return fn(ctx, client)
	}
	if err != nil {
		return err
	}
	hooks := &afterCommit{}
	ctx = context.WithValue(ctx, afterCommitKey{}, hooks)
	defer func() {
		if p := recover(); p != nil {
			_ = tx.Rollback()
			panic(p)
		}
	}()
	if err := fn(ctx, tx.Client()); err != nil {
		if rerr := tx.Rollback(); rerr != nil {
			return fmt.Errorf("%w (rollback: %v)", err, rerr)
		}
		return err
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	for _, f := range hooks.fns {
		f()
	}
	return nil
}

type afterCommitKey struct{}

type afterCommit struct{ fns []func() }

// AfterCommit runs f after the transaction of ctx (see WithTx) commits, or at once
// when ctx carries no transaction.
func AfterCommit(ctx context.Context, f func()) {
	if h, ok := ctx.Value(afterCommitKey{}).(*afterCommit); ok {
		h.fns = append(h.fns, f)
		return
	}
	f()
}
