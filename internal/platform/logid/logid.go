// Package logid is the ID of a stored usage event (a row of the request log).
package logid

import (
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Prefix is the type prefix of the request log's rows ("log_123").
const Prefix = "log"

// ID is the numeric ID of a stored usage event (a row of the request log). The
// database numbers the rows; outside it they read "log_<n>", so a Relay node ID names
// its type like every other ID.
type ID int64

// String returns "log_<n>".
func (id ID) String() string { return Prefix + "_" + strconv.FormatInt(int64(id), 10) }

// Parse reads "log_<n>" (or a bare number).
func Parse(s string) (ID, error) {
	n, err := strconv.ParseInt(strings.TrimPrefix(s, Prefix+"_"), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("invalid request log id %q", s)
	}
	return ID(n), nil
}

// MarshalGQL writes the ID as a GraphQL ID string (gqlgen's Marshaler, by signature).
func (id ID) MarshalGQL(w io.Writer) { _, _ = io.WriteString(w, strconv.Quote(id.String())) }

// UnmarshalGQL reads a GraphQL ID (gqlgen's Unmarshaler, by signature).
func (id *ID) UnmarshalGQL(v any) error {
	s, ok := v.(string)
	if !ok {
		return fmt.Errorf("%T is not an ID", v)
	}
	n, err := Parse(s)
	if err != nil {
		return err
	}
	*id = n
	return nil
}
