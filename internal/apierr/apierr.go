// Package apierr defines the error codes clients see in `extensions.code` and turns
// every other error into a safe INTERNAL error: no SQL, stack or internal message
// ever reaches a client.
package apierr

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
)

// Error codes of the public contract.
const (
	Unauthenticated = "UNAUTHENTICATED"
	Forbidden       = "FORBIDDEN"
	NotFound        = "NOT_FOUND"
	BadUserInput    = "BAD_USER_INPUT"
	RateLimited     = "RATE_LIMITED"
	QuotaExceeded   = "QUOTA_EXCEEDED"
	Internal        = "INTERNAL"
)

// Error is an error with a public code, message and optional extensions.
type Error struct {
	Code       string
	Message    string
	Extensions map[string]any
}

func (e *Error) Error() string { return e.Message }

// New returns an error with code and message.
func New(code, message string) *Error { return &Error{Code: code, Message: message} }

// With returns a copy of e with an extension set.
func (e *Error) With(key string, value any) *Error {
	c := *e
	c.Extensions = make(map[string]any, len(e.Extensions)+1)
	for k, v := range e.Extensions {
		c.Extensions[k] = v
	}
	c.Extensions[key] = value
	return &c
}

// BadInput returns a BAD_USER_INPUT error naming the offending field.
func BadInput(field, format string, args ...any) *Error {
	return New(BadUserInput, fmt.Sprintf(format, args...)).With("field", field)
}

// ErrNotFound is returned for missing objects and for other tenants' objects alike.
var ErrNotFound = New(NotFound, "not found")

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
func classify(ctx context.Context, err error, gqlErr *gqlerror.Error) *Error {
	var e *Error
	var ve *ent.ValidationError
	switch {
	case errors.As(err, &e):
		return e
	case gqlErr.Extensions["code"] != nil:
		return nil // produced by gqlgen or entgql with a code of its own
	case ent.IsNotFound(err), errors.Is(err, privacy.Deny):
		return ErrNotFound
	case errors.As(err, &ve):
		return BadInput(ve.Name, "invalid value for %s", ve.Name)
	case ent.IsConstraintError(err):
		return New(BadUserInput, "conflicts with an existing object (duplicate or missing reference)")
	case isArgumentError(ctx, gqlErr), isRequestError(ctx, err):
		// gqlgen's own message about the request (a malformed Time, undecodable JSON,
		// a persisted-query hash mismatch), safe to show.
		return New(BadUserInput, gqlErr.Message)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return New(Internal, "request canceled")
	default:
		slog.ErrorContext(ctx, "internal error", "err", err, "path", graphql.GetPath(ctx).String())
		return New(Internal, "internal error")
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
	return New(Internal, "internal error")
}

// GQL returns the gqlerror form of e, for responses built outside the executor.
func (e *Error) GQL() *gqlerror.Error {
	ext := map[string]any{"code": e.Code}
	for k, v := range e.Extensions {
		ext[k] = v
	}
	return &gqlerror.Error{Message: e.Message, Extensions: ext}
}
