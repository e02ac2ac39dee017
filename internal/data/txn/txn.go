// Package txn runs ent transactions and the work that must wait for their commit
// (cache invalidations, waking the webhook dispatchers), on ent's own transaction
// support: the transaction travels in the context (ent.NewTxContext) and work after
// commit is an ent commit hook (Tx.OnCommit).
package txn

import (
	"context"
	"errors"
	"fmt"

	"github.com/latchkey/latchkey/ent"
)

// WithTx runs fn in a transaction of client and commits it when fn returns nil, or
// rolls it back. When ctx already carries a transaction (or client is transactional),
// fn joins it and its owner commits. It returns fn's error, or the error of beginning
// or committing.
func WithTx(ctx context.Context, client *ent.Client, fn func(ctx context.Context, c *ent.Client) error) error {
	if tx := ent.TxFromContext(ctx); tx != nil {
		return fn(ctx, tx.Client())
	}
	tx, err := client.Tx(ctx)
	if errors.Is(err, ent.ErrTxStarted) {
		return fn(ctx, client)
	}
	if err != nil {
		return err
	}
	return Run(ent.NewTxContext(ctx, tx), tx, func(ctx context.Context) error { return fn(ctx, tx.Client()) })
}

// Run runs fn with the open transaction tx (already in ctx) and then commits it, or
// rolls it back when fn fails or panics. It returns fn's error or the commit's.
func Run(ctx context.Context, tx *ent.Tx, fn func(ctx context.Context) error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			_ = tx.Rollback()
			panic(p)
		}
	}()
	if err := fn(ctx); err != nil {
		if rerr := tx.Rollback(); rerr != nil {
			return fmt.Errorf("%w (rollback: %v)", err, rerr)
		}
		return err
	}
	return tx.Commit()
}

// AfterCommit runs f after the transaction of ctx commits (ent's Tx.OnCommit), or at
// once when ctx carries no transaction. A rolled-back transaction never runs f.
func AfterCommit(ctx context.Context, f func()) {
	OnCommit(ent.TxFromContext(ctx), f)
}

// OnCommit runs f after tx commits, or at once when tx is nil.
func OnCommit(tx *ent.Tx, f func()) {
	if tx == nil {
		f()
		return
	}
	tx.OnCommit(func(next ent.Committer) ent.Committer {
		return ent.CommitFunc(func(ctx context.Context, tx *ent.Tx) error {
			if err := next.Commit(ctx, tx); err != nil {
				return err
			}
			f()
			return nil
		})
	})
}
