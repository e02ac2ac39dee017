// Package gqlenum marshals domain values that the GraphQL schema shows as enums, so the
// domain types need no GraphQL methods and no resolver goroutine per field.
package gqlenum

import (
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/99designs/gqlgen/graphql"

	"github.com/latchkey/latchkey/internal/domain/live"
)

// MarshalUsageOutcome writes a usage outcome ("rate_limited") as the enum value of
// UsageOutcome (RATE_LIMITED).
func MarshalUsageOutcome(o live.Outcome) graphql.Marshaler {
	return graphql.WriterFunc(func(w io.Writer) {
		_, _ = io.WriteString(w, strconv.Quote(strings.ToUpper(string(o))))
	})
}

// UnmarshalUsageOutcome reads an enum value of UsageOutcome. It returns an error for
// anything but a string.
func UnmarshalUsageOutcome(v any) (live.Outcome, error) {
	s, ok := v.(string)
	if !ok {
		return "", fmt.Errorf("UsageOutcome must be a string")
	}
	return live.Outcome(strings.ToLower(s)), nil
}

// MarshalUsageOutcomeString writes a stored outcome (the request log's outcome column,
// lower case) as the enum value of UsageOutcome.
func MarshalUsageOutcomeString(o string) graphql.Marshaler {
	return MarshalUsageOutcome(live.Outcome(o))
}

// UnmarshalUsageOutcomeString reads an enum value of UsageOutcome as the stored, lower
// case outcome (for the request log's where filters).
func UnmarshalUsageOutcomeString(v any) (string, error) {
	o, err := UnmarshalUsageOutcome(v)
	return string(o), err
}
