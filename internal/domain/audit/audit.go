// Package audit holds the context switches the ent audit hook reads.
//
// The hook itself lives with the ent schema (ent/schema/hooks.go) so that every
// mutation, from any code path, writes its audit row in the same transaction.
package audit

import "context"

type actionKey struct{}

// WithAction names the audit action of the mutations run with ctx, overriding the
// name the hook would derive (e.g. "api_key.rotated" for the key that a rotation creates).
// An empty action suppresses the audit row for those mutations.
func WithAction(ctx context.Context, action string) context.Context {
	return context.WithValue(ctx, actionKey{}, &action)
}

// ActionFrom returns the action set by WithAction and whether one was set.
func ActionFrom(ctx context.Context) (string, bool) {
	a, ok := ctx.Value(actionKey{}).(*string)
	if !ok {
		return "", false
	}
	return *a, true
}
