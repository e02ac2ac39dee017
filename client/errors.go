package client

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Categories of *Error, for errors.Is. They are about the call to Latchkey, never
// about the key verified: an invalid key is a Result, not an error.
var (
	// ErrBadRequest: Latchkey refused the verification request (HTTP 400).
	ErrBadRequest = errors.New("latchkey: bad request")
	// ErrUnauthorized: the management key is missing, unknown, revoked or expired
	// (HTTP 401).
	ErrUnauthorized = errors.New("latchkey: management key not accepted")
	// ErrForbidden: the management key lacks the keys:verify scope (HTTP 403).
	ErrForbidden = errors.New("latchkey: management key lacks keys:verify")
	// ErrTooManyRequests: Latchkey throttles this caller, which verified too many
	// unknown keys lately (HTTP 429; Error.RetryAfter says how long).
	ErrTooManyRequests = errors.New("latchkey: too many requests")
	// ErrUnavailable: no usable answer: HTTP 5xx, a network failure or timeout, or an
	// answer that does not decode.
	ErrUnavailable = errors.New("latchkey: unavailable")
)

// Error is a verification that got no answer about the key. StatusCode and Code say
// what Latchkey answered, Err what failed before an answer could be read.
type Error struct {
	// StatusCode is the HTTP status of Latchkey's answer; 0 when none arrived.
	StatusCode int
	// Code is the error code of Latchkey's answer (UNAUTHENTICATED, FORBIDDEN,
	// BAD_USER_INPUT, RATE_LIMITED, INTERNAL, …); "" when there was none.
	Code string
	// Message is Latchkey's message (safe to log; it never contains the key).
	Message string
	// Details holds the other fields of Latchkey's error object, e.g. "reason",
	// "field", "requiredScopes".
	Details map[string]any
	// RetryAfter is the answer's Retry-After; 0 when it had none.
	RetryAfter time.Duration
	// Err is the cause when no usable answer arrived (a network error, a timeout,
	// an answer that does not decode, a base URL that is no http(s) URL); nil
	// otherwise.
	Err error

	misconfigured bool // the request could not be made: never ErrUnavailable
}

// Error describes the failure; it never contains a key.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("latchkey: verify")
	if e.StatusCode != 0 {
		b.WriteString(": HTTP ")
		b.WriteString(strconv.Itoa(e.StatusCode))
	}
	if e.Code != "" {
		b.WriteString(" ")
		b.WriteString(e.Code)
	}
	if e.Message != "" {
		b.WriteString(": ")
		b.WriteString(e.Message)
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

// Unwrap returns the cause (nil when Latchkey answered with an error).
func (e *Error) Unwrap() error { return e.Err }

// Is reports whether e falls in the category target (ErrBadRequest,
// ErrUnauthorized, ErrForbidden, ErrTooManyRequests, ErrUnavailable).
func (e *Error) Is(target error) bool {
	switch target {
	case ErrUnavailable:
		return !e.misconfigured && (e.Err != nil || e.StatusCode >= 500)
	case ErrBadRequest:
		return e.Err == nil && e.StatusCode == http.StatusBadRequest
	case ErrUnauthorized:
		return e.Err == nil && e.StatusCode == http.StatusUnauthorized
	case ErrForbidden:
		return e.Err == nil && e.StatusCode == http.StatusForbidden
	case ErrTooManyRequests:
		return e.Err == nil && e.StatusCode == http.StatusTooManyRequests
	}
	return false
}

// errorOf reads an error answer: {"error": {"code", "message", ...details}} and the
// Retry-After header. An answer in another shape (a proxy's HTML page) keeps its
// status with the status text as message.
func errorOf(resp *http.Response, raw []byte) *Error {
	e := &Error{StatusCode: resp.StatusCode, RetryAfter: parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())}
	var body struct {
		Error map[string]any `json:"error"`
	}
	if json.Unmarshal(raw, &body) == nil && body.Error != nil {
		e.Code, _ = body.Error["code"].(string)
		e.Message, _ = body.Error["message"].(string)
		delete(body.Error, "code")
		delete(body.Error, "message")
		if len(body.Error) > 0 {
			e.Details = body.Error
		}
	}
	if e.Message == "" {
		e.Message = http.StatusText(resp.StatusCode)
	}
	return e
}

// parseRetryAfter reads a Retry-After value in seconds or as an HTTP date; 0 when
// absent, invalid or past.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if secs, err := strconv.Atoi(v); err == nil {
		return max(time.Duration(secs)*time.Second, 0)
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0)
	}
	return 0
}
