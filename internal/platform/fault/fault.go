// Package fault defines the errors the domain returns to callers: a public code (the
// `extensions.code` clients see), a message safe to show, and details. It knows nothing
// of GraphQL or HTTP; the API floor (graph/gqlerr) presents these errors, and turns every
// other error into a safe INTERNAL one.
package fault

import "fmt"

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

// Error is an error with a public code, a safe message and optional details (the
// `extensions` of a GraphQL error, the fields of a JSON error body).
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
