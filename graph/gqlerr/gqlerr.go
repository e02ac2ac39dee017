// Package gqlerr presents errors to GraphQL clients, once, for every resolver and every
// response built outside the executor: domain errors (fault.Error) keep their code,
// message and details; ent's not-found and privacy denials become NOT_FOUND (the same
// answer whether an object does not exist or belongs to another tenant); validation and
// constraint errors BAD_USER_INPUT; anything else is logged and becomes INTERNAL with a
// generic message. No SQL, stack or internal message ever reaches a client.
package gqlerr

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"

	"entgo.io/ent/privacy"
	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/gqlerror"

	"github.com/latchkey/latchkey/ent"
	"github.com/latchkey/latchkey/internal/platform/fault"
)

// Presenter converts resolver errors into GraphQL errors with `extensions.code`.
// ent not-found and privacy denials become NOT_FOUND (the same answer whether the
// object does not exist or belongs to another tenant); validation and constraint
// errors and malformed arguments become BAD_USER_INPUT; anything unknown is logged
// and becomes INTERNAL with a generic message.
func Presenter(ctx context.Context, err error) *gqlerror.Error {
	gqlErr := graphql.DefaultErrorPresenter(ctx, err)
	e := classify(ctx, err, gqlErr)
	if e == nil {
		return gqlErr
	}
	gqlErr.Message = e.Message
	gqlErr.Err = e
	gqlErr.Extensions = map[string]any{"code": e.Code}
	for k, v := range e.Extensions {
		gqlErr.Extensions[k] = v
	}
	return gqlErr
}

// classify maps err to a public error, or nil when gqlgen already gave it a code.
func classify(ctx context.Context, err error, gqlErr *gqlerror.Error) *fault.Error {
	var e *fault.Error
	var ae interface{ APIError() *fault.Error }
	var ve *ent.ValidationError
	switch {
	case errors.As(err, &e):
		return e
	case errors.As(err, &ae): // domain errors that say how clients see them
		return ae.APIError()
	case gqlErr.Extensions["code"] != nil:
		return nil // produced by gqlgen or entgql with a code of its own
	case ent.IsNotFound(err), errors.Is(err, privacy.Deny):
		return fault.ErrNotFound
	case errors.As(err, &ve):
		return fault.BadInput(ve.Name, "invalid value for %s", ve.Name)
	case ent.IsConstraintError(err):
		return fault.New(fault.BadUserInput, "conflicts with an existing object (duplicate or missing reference)")
	case isArgumentError(ctx, gqlErr), isRequestError(ctx, err):
		// gqlgen's own message about the request (a malformed Time, undecodable JSON,
		// a persisted-query hash mismatch), safe to show.
		return fault.New(fault.BadUserInput, gqlErr.Message)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return fault.New(fault.Internal, "request canceled")
	default:
		slog.ErrorContext(ctx, "internal error", "err", err, "path", graphql.GetPath(ctx).String())
		return fault.New(fault.Internal, "internal error")
	}
}

// isRequestError reports whether err is one gqlgen raised about the request itself,
// outside any field: a *gqlerror.Error with no underlying cause.
func isRequestError(ctx context.Context, err error) bool {
	ge, ok := err.(*gqlerror.Error)
	return ok && ge.Err == nil && graphql.GetFieldContext(ctx) == nil
}

// isArgumentError reports whether gqlErr was raised while coercing a field's arguments:
// its path then runs past the field into the argument ("createApiKey.input.expiresAt").
func isArgumentError(ctx context.Context, gqlErr *gqlerror.Error) bool {
	fc := graphql.GetFieldContext(ctx)
	return fc != nil && len(gqlErr.Path) > len(fc.Path())
}

// Recover turns a resolver panic into an INTERNAL error and logs the stack server-side.
func Recover(ctx context.Context, p any) error {
	slog.ErrorContext(ctx, "panic in resolver", "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
	return fault.New(fault.Internal, "internal error")
}

// From returns the GraphQL form of e, for responses built outside the executor.
func From(e *fault.Error) *gqlerror.Error {
	ext := make(map[string]any, len(e.Extensions)+1)
	ext["code"] = e.Code
	for k, v := range e.Extensions {
		ext[k] = v
	}
	return &gqlerror.Error{Message: e.Message, Extensions: ext}
}
