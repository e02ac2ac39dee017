// Package client verifies Latchkey consumer keys from a Go backend: Verify asks
// Latchkey's POST /v1/keys/verify about one key, and Middleware protects a net/http
// handler with it.
//
// The client calls Latchkey with a management key holding the keys:verify scope; the
// keys it verifies are the consumer keys a tenant issued to its own customers. It
// depends only on the standard library.
//
//	c := client.New("https://latchkey.example.com", os.Getenv("LATCHKEY_KEY"))
//	mux.Handle("GET /documents", c.Middleware(client.MiddlewareOptions{
//		Verify: client.VerifyOptions{Permissions: []string{"documents:read"}},
//	})(documents))
//
// Every verification outcome, valid or not, is a *Result; an error means Latchkey
// could not answer the question (see Error).
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"
)

// DefaultTimeout bounds one verification unless WithTimeout says otherwise.
const DefaultTimeout = 5 * time.Second

// DefaultUserAgent is the User-Agent sent unless WithUserAgent says otherwise.
const DefaultUserAgent = "latchkey-go"

// MaxKeyBytes is the longest key Latchkey verifies; Verify of a longer key gets a
// 400 (ErrBadRequest), and Middleware answers such a key as NOT_FOUND without asking.
const MaxKeyBytes = 256

// maxAnswerBytes bounds the answer read from Latchkey (meta is at most 4 KiB, 100
// permissions of 64 characters: far below).
const maxAnswerBytes = 1 << 20

// Client verifies consumer keys against one Latchkey server. It is safe for
// concurrent use; create it once and share it.
type Client struct {
	endpoint  string
	badURL    error // why baseURL is no http(s) URL; reported by every Verify
	key       string
	http      *http.Client
	timeout   time.Duration
	userAgent string
}

// Option configures a Client.
type Option func(*Client)

// WithHTTPClient makes the Client send its requests with hc (its transport, proxy and
// TLS settings). By default it uses a client of its own on http.DefaultTransport.
// A nil hc is ignored.
func WithHTTPClient(hc *http.Client) Option {
	return func(c *Client) {
		if hc != nil {
			c.http = hc
		}
	}
}

// WithTimeout bounds each verification, on top of the caller's context (default
// DefaultTimeout). Zero or a negative d leaves only the context's deadline.
func WithTimeout(d time.Duration) Option {
	return func(c *Client) { c.timeout = d }
}

// WithUserAgent sets the User-Agent header of every request (default
// DefaultUserAgent).
func WithUserAgent(ua string) Option {
	return func(c *Client) { c.userAgent = ua }
}

// New returns a Client for the Latchkey server at baseURL (e.g.
// "https://latchkey.example.com"; a path prefix is kept, a trailing slash dropped)
// calling it with managementKey, a key of the tenant holding the keys:verify scope.
// New does not contact the server: a wrong URL or key shows in the first Verify (a
// baseURL that is not an http or https URL as an *Error matching no category).
func New(baseURL, managementKey string, opts ...Option) *Client {
	c := &Client{
		endpoint:  strings.TrimRight(baseURL, "/") + "/v1/keys/verify",
		key:       managementKey,
		http:      &http.Client{},
		timeout:   DefaultTimeout,
		userAgent: DefaultUserAgent,
	}
	if u, err := url.Parse(c.endpoint); err != nil {
		c.badURL = err
	} else if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		c.badURL = fmt.Errorf("%q is not an http(s) URL", baseURL)
	}
	for _, o := range opts {
		o(c)
	}
	return c
}

// VerifyOptions are what a verification asks besides the key.
type VerifyOptions struct {
	// Cost is charged to the key's rate limit, 0 to 10,000. Nil sends none and
	// Latchkey charges 1; Cost(0) checks the key and its limits without charging.
	Cost *int
	// Permissions must all be held by the key (else INSUFFICIENT_PERMISSIONS).
	Permissions []string
	// Tag names the verification in the tenant's usage log, e.g. "GET /documents"
	// (at most 128 printable ASCII characters); "" records "verify". Prefer a route
	// to a path with IDs in it: the tag is a dimension of the usage breakdowns.
	Tag string
	// Charges are named limits of the key to charge besides its rate limit, e.g.
	// {"tokens": 250} for a key with a "tokens" limit (at most 10; an unknown name or a
	// charge above the limit is ErrBadRequest).
	Charges map[string]int
}

// Cost returns a pointer to n, for VerifyOptions.Cost: Cost(0) checks without
// charging, Cost(5) charges 5.
func Cost(n int) *int { return &n }

// Code is the outcome of a verification.
type Code string

// Verification codes. Only CodeValid admits; Latchkey checks in this order and stops
// at the first that fails: NOT_FOUND, REVOKED, EXPIRED, DISABLED, TENANT_INACTIVE,
// INSUFFICIENT_PERMISSIONS, then the key's limits.
const (
	CodeValid                   Code = "VALID"
	CodeNotFound                Code = "NOT_FOUND" // unknown, malformed, another tenant's, or a management key
	CodeRevoked                 Code = "REVOKED"
	CodeExpired                 Code = "EXPIRED"
	CodeDisabled                Code = "DISABLED"
	CodeTenantInactive          Code = "TENANT_INACTIVE" // the tenant that issued the key is deactivated
	CodeInsufficientPermissions Code = "INSUFFICIENT_PERMISSIONS"
	CodeRateLimited             Code = "RATE_LIMITED"
	CodeQuotaExceeded           Code = "QUOTA_EXCEEDED"
	CodeUsageExceeded           Code = "USAGE_EXCEEDED"
)

// HTTPStatus is the status Middleware answers for c: 200 for VALID; 401 for
// NOT_FOUND, REVOKED, EXPIRED, DISABLED and TENANT_INACTIVE (and any code this
// version does not know); 403 for INSUFFICIENT_PERMISSIONS; 429 for RATE_LIMITED,
// QUOTA_EXCEEDED and USAGE_EXCEEDED.
func (c Code) HTTPStatus() int {
	switch c {
	case CodeValid:
		return http.StatusOK
	case CodeInsufficientPermissions:
		return http.StatusForbidden
	case CodeRateLimited, CodeQuotaExceeded, CodeUsageExceeded:
		return http.StatusTooManyRequests
	}
	return http.StatusUnauthorized
}

// Environment is the environment written in a key: LIVE (<prefix>_live_…) or TEST
// (<prefix>_test_…). TEST keys are limited and charged like LIVE ones.
type Environment string

// Key environments.
const (
	EnvironmentLive Environment = "LIVE"
	EnvironmentTest Environment = "TEST"
)

// Result is Latchkey's answer about one key. For NOT_FOUND only Valid and Code are
// set; for a found key the key's details are set whatever the outcome.
type Result struct {
	// Valid is true only for CodeValid.
	Valid bool `json:"valid"`
	Code  Code `json:"code"`
	// KeyID is the key's Latchkey ID (key_…).
	KeyID string `json:"keyId"`
	// OwnerID is the customer or user the tenant issued the key to ("" if none).
	OwnerID string `json:"ownerId"`
	Name    string `json:"name"`
	// Meta is the JSON object stored with the key (nil if none).
	Meta        map[string]any `json:"meta"`
	Permissions []string       `json:"permissions"`
	Environment Environment    `json:"environment"`
	// ExpiresAt is nil for a key that never expires.
	ExpiresAt *time.Time `json:"expiresAt"`
	// RateLimit is the key's rate limit after this check; nil when no limit was
	// checked (a refusal before the limits) or none applies.
	RateLimit *RateLimit `json:"rateLimit"`
	// Quota is the key's quota after this check; nil as for RateLimit.
	Quota *Quota `json:"quota"`
	// RetryAfterSeconds is, for a refusal by a limit, how long until the same
	// check could pass, as the server computed it (nil otherwise, and from servers
	// that do not send it).
	RetryAfterSeconds *int `json:"retryAfterSeconds"`
	// LimitScope names the limit that refused the check: "key", "owner" (the limits
	// shared by the owner's keys), "tenant" (the tenant's plan caps), "credits" or
	// "named:<name>"; "" otherwise.
	LimitScope string `json:"limitScope"`
	// Credits is the key's credit balance after this check (nil for a key without
	// credits); a spent balance refuses with USAGE_EXCEEDED.
	Credits *int64 `json:"credits"`
	// OwnerMeta is the meta of the key owner's record, kept by the tenant (nil if none).
	OwnerMeta map[string]any `json:"ownerMeta"`
}

// RateLimit is a rate limit's state after a verification.
type RateLimit struct {
	// Limit is the burst: requests of cost 1 a full limit admits at once.
	Limit int `json:"limit"`
	// Remaining is how many requests of cost 1 it would admit now.
	Remaining int `json:"remaining"`
	// ResetAt is when it is full again.
	ResetAt time.Time `json:"resetAt"`
}

// Quota is a quota's state after a verification (a quota counts 1 per verification).
type Quota struct {
	Limit     int64     `json:"limit"`
	Used      int64     `json:"used"`
	Remaining int64     `json:"remaining"`
	ResetAt   time.Time `json:"resetAt"` // the start of the next period
}

// RetryAfter reports how long after now the check that refused this key could pass:
// the server's retryAfterSeconds when it sends one, else the rate limit's ResetAt for
// RATE_LIMITED (when it is full again: an upper bound) or the quota's for
// QUOTA_EXCEEDED. It returns false for every other code, and when the answer carries
// no reset. The duration is never negative.
func (r *Result) RetryAfter(now time.Time) (time.Duration, bool) {
	if r.RetryAfterSeconds != nil && *r.RetryAfterSeconds > 0 {
		return time.Duration(*r.RetryAfterSeconds) * time.Second, true
	}
	var at time.Time
	switch {
	case r.Code == CodeRateLimited && r.RateLimit != nil:
		at = r.RateLimit.ResetAt
	case r.Code == CodeQuotaExceeded && r.Quota != nil:
		at = r.Quota.ResetAt
	default:
		return 0, false
	}
	return max(at.Sub(now), 0), true
}

// verifyRequest is the JSON body of POST /v1/keys/verify.
type verifyRequest struct {
	Key         string   `json:"key"`
	Cost        *int     `json:"cost,omitempty"`
	Permissions []string `json:"permissions,omitempty"`
	Tag         string   `json:"tag,omitempty"`
	Charges     []charge `json:"charges,omitempty"`
}

type charge struct {
	Name string `json:"name"`
	Cost int    `json:"cost"`
}

// chargesOf lists m in name order (a stable request body).
func chargesOf(m map[string]int) []charge {
	if len(m) == 0 {
		return nil
	}
	out := make([]charge, 0, len(m))
	for name, cost := range m {
		out = append(out, charge{name, cost})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Verify asks Latchkey about key: is it a valid consumer key of this tenant, does it
// hold opts.Permissions, and is it within its limits (charging opts.Cost). Every
// verification outcome, valid or not, is a *Result with a nil error; check
// Result.Valid, or Result.Code for why not.
//
// The error, when not nil, is an *Error and matches with errors.Is:
//   - ErrBadRequest (400): the request was refused: a key over MaxKeyBytes, an empty
//     key, a cost outside 0–10,000, an invalid permission name or tag;
//   - ErrUnauthorized (401): the management key is missing, unknown, revoked or
//     expired;
//   - ErrForbidden (403): the management key lacks the keys:verify scope;
//   - ErrTooManyRequests (429): this management key or address verified too many
//     unknown keys lately (Error.RetryAfter says how long to wait);
//   - ErrUnavailable: no usable answer: Latchkey answered 5xx (503 when its limit
//     stores are down), could not be reached, timed out, or sent what is not an
//     answer, or ctx ended first; the cause, if any, is wrapped (errors.Is(err,
//     context.DeadlineExceeded), errors.Is(err, context.Canceled)).
//
// Any other status (a wrong base URL's 404, say) is an *Error matching none of them,
// and so is a base URL that is not an http or https URL: a misconfiguration, never
// ErrUnavailable, so that failing open does not open an API that was never checked.
func (c *Client) Verify(ctx context.Context, key string, opts VerifyOptions) (*Result, error) {
	if c.badURL != nil {
		return nil, &Error{Message: "invalid Latchkey URL", Err: c.badURL, misconfigured: true}
	}
	body, err := json.Marshal(verifyRequest{Key: key, Cost: opts.Cost, Permissions: opts.Permissions, Tag: opts.Tag, Charges: chargesOf(opts.Charges)})
	if err != nil { // cannot happen for these types
		return nil, &Error{Err: err}
	}
	if c.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.endpoint, bytes.NewReader(body))
	if err != nil { // cannot happen: the URL parsed in New
		return nil, &Error{Message: "invalid Latchkey URL", Err: err, misconfigured: true}
	}
	req.Header.Set("Authorization", "Bearer "+c.key)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	if c.userAgent != "" {
		req.Header.Set("User-Agent", c.userAgent)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, &Error{Err: err}
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswerBytes+1))
	if err != nil {
		return nil, &Error{StatusCode: resp.StatusCode, Err: fmt.Errorf("reading the answer: %w", err)}
	}
	if len(raw) > maxAnswerBytes {
		return nil, &Error{StatusCode: resp.StatusCode, Err: fmt.Errorf("answer larger than %d bytes", maxAnswerBytes)}
	}
	if resp.StatusCode != http.StatusOK {
		return nil, errorOf(resp, raw)
	}
	var res Result
	if err := json.Unmarshal(raw, &res); err != nil {
		return nil, &Error{StatusCode: resp.StatusCode, Err: fmt.Errorf("decoding the answer: %w", err)}
	}
	if res.Code == "" {
		return nil, &Error{StatusCode: resp.StatusCode, Err: errors.New("decoding the answer: no code")}
	}
	return &res, nil
}
