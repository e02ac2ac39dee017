package client

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// MiddlewareOptions configure Middleware. The zero value verifies with cost 1, no
// permissions and no tag, and answers 503 when Latchkey cannot be asked.
type MiddlewareOptions struct {
	// Verify is sent with every verification: cost, permissions, tag.
	Verify VerifyOptions
	// PerRequest, when set, chooses the verification options for each request
	// instead of Verify (a cost by body size, permissions by method, a tag by route).
	PerRequest func(r *http.Request) VerifyOptions
	// Key, when set, reads the consumer key from a request instead of
	// KeyFromRequest; "" is a missing key.
	Key func(r *http.Request) string
	// FailOpen passes requests on unverified when Latchkey cannot be asked
	// (ErrUnavailable: unreachable, timed out, or answering 5xx) instead of answering
	// 503. Such a request carries no Result: FromContext reports false, and the
	// handler must treat the caller as unknown. A missing key is still 401, a request
	// whose own context ended (the caller hung up, its deadline passed) is never
	// passed on, and a Latchkey that refuses the management key or throttles still
	// refuses: failing open covers an outage, never a misconfiguration.
	FailOpen bool
	// OnError is told of every error verifying (never of a key that is merely
	// invalid), e.g. to log or count them. Nil logs them with log/slog's default
	// logger (an error, or a warning when failing open).
	OnError func(r *http.Request, err error)
}

// Middleware returns net/http middleware that admits only requests carrying a valid
// consumer key. It reads the key with KeyFromRequest (or opts.Key), verifies it with
// opts, and then:
//
//   - valid: puts the Result in the request's context (FromContext) and calls the
//     next handler;
//   - missing key (MISSING_KEY), NOT_FOUND, REVOKED, EXPIRED, DISABLED,
//     TENANT_INACTIVE: 401 with WWW-Authenticate: Bearer; a key over MaxKeyBytes is
//     NOT_FOUND without asking Latchkey;
//   - INSUFFICIENT_PERMISSIONS: 403;
//   - RATE_LIMITED, QUOTA_EXCEEDED, USAGE_EXCEEDED: 429, with Retry-After (whole
//     seconds, at least 1) where the answer has a reset (Result.RetryAfter);
//   - Latchkey unavailable (ErrUnavailable): 503 UNAVAILABLE, with Latchkey's own
//     Retry-After if it sent one, or the next handler with FailOpen;
//   - Latchkey throttling this backend (ErrTooManyRequests: too many unknown keys
//     verified lately): 429 TOO_MANY_REQUESTS with its Retry-After;
//   - any other error (the management key refused, options Latchkey rejects as a bad
//     request, a wrong URL): 500 INTERNAL.
//
// Refusals are a JSON body {"error": {"code", "message"}}, the code being the
// verification code or the one named above. Whenever the answer carries the key's
// rate limit, the response has the headers
//
//	RateLimit: "default";r=REMAINING;t=SECONDS_UNTIL_FULL
//	X-RateLimit-Limit: LIMIT
//	X-RateLimit-Remaining: REMAINING
//	X-RateLimit-Reset: UNIX_SECONDS_WHEN_FULL
//
// (the IETF draft's RateLimit field and the common X- fields). RateLimit-Policy is
// not sent: its window is not part of Latchkey's answer.
func (c *Client) Middleware(opts MiddlewareOptions) func(http.Handler) http.Handler {
	keyOf := opts.Key
	if keyOf == nil {
		keyOf = KeyFromRequest
	}
	onError := opts.OnError
	if onError == nil {
		onError = func(r *http.Request, err error) {
			if opts.FailOpen && errors.Is(err, ErrUnavailable) {
				slog.WarnContext(r.Context(), "latchkey: could not verify the API key, admitting (fail open)", "error", err)
				return
			}
			slog.ErrorContext(r.Context(), "latchkey: could not verify the API key", "error", err)
		}
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			key := keyOf(r)
			switch {
			case key == "":
				refuse(w, http.StatusUnauthorized, codeMissingKey, "an API key is required (X-API-Key or Authorization: Bearer)")
				return
			case len(key) > MaxKeyBytes:
				refuse(w, http.StatusUnauthorized, string(CodeNotFound), messageOf(CodeNotFound))
				return
			}
			vo := opts.Verify
			if opts.PerRequest != nil {
				vo = opts.PerRequest(r)
			}
			res, err := c.Verify(r.Context(), key, vo)
			if err != nil {
				onError(r, err)
				// Never fail open for a request that is itself over: a caller could
				// otherwise hang up at once to run a handler unverified.
				if opts.FailOpen && errors.Is(err, ErrUnavailable) && r.Context().Err() == nil {
					next.ServeHTTP(w, r)
					return
				}
				refuseError(w, err)
				return
			}
			now := time.Now()
			setRateLimitHeaders(w.Header(), res.RateLimit, now)
			if res.Valid && res.Code == CodeValid {
				next.ServeHTTP(w, r.WithContext(NewContext(r.Context(), res)))
				return
			}
			status := res.Code.HTTPStatus()
			if status == http.StatusOK { // "valid": false with code VALID: never admit
				status = http.StatusUnauthorized
			}
			if d, ok := res.RetryAfter(now); ok && status == http.StatusTooManyRequests {
				w.Header().Set("Retry-After", strconv.Itoa(retrySeconds(d)))
			}
			refuse(w, status, string(res.Code), messageOf(res.Code))
		})
	}
}

// Codes of the middleware's own refusals (the others are verification codes).
const (
	codeMissingKey      = "MISSING_KEY"
	codeUnavailable     = "UNAVAILABLE"
	codeTooManyRequests = "TOO_MANY_REQUESTS"
	codeInternal        = "INTERNAL"
)

// refuseError answers a request whose key could not be verified.
func refuseError(w http.ResponseWriter, err error) {
	var e *Error
	errors.As(err, &e)
	retryAfter := func() {
		if e != nil && e.RetryAfter > 0 {
			w.Header().Set("Retry-After", strconv.Itoa(retrySeconds(e.RetryAfter)))
		}
	}
	switch {
	case errors.Is(err, ErrUnavailable):
		retryAfter()
		refuse(w, http.StatusServiceUnavailable, codeUnavailable, "the API key cannot be checked right now, try again")
	case errors.Is(err, ErrTooManyRequests):
		retryAfter()
		refuse(w, http.StatusTooManyRequests, codeTooManyRequests, "too many requests with unknown API keys, try again later")
	default:
		refuse(w, http.StatusInternalServerError, codeInternal, "the API key cannot be checked")
	}
}

// messageOf is the message of a refusal by verification code.
func messageOf(c Code) string {
	switch c {
	case CodeNotFound:
		return "the API key is not valid"
	case CodeRevoked:
		return "the API key has been revoked"
	case CodeExpired:
		return "the API key has expired"
	case CodeDisabled:
		return "the API key is disabled"
	case CodeTenantInactive:
		return "the API key is not active"
	case CodeInsufficientPermissions:
		return "the API key lacks a permission this request needs"
	case CodeRateLimited:
		return "rate limit exceeded, slow down"
	case CodeQuotaExceeded:
		return "quota exhausted for this period"
	case CodeUsageExceeded:
		return "usage limit exhausted"
	}
	return "the API key was refused"
}

// refuse writes {"error": {"code", "message"}} with status.
func refuse(w http.ResponseWriter, status int, code, message string) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	if status == http.StatusUnauthorized {
		h.Set("WWW-Authenticate", "Bearer")
	}
	w.WriteHeader(status)
	body, _ := json.Marshal(map[string]map[string]string{"error": {"code": code, "message": message}})
	_, _ = w.Write(append(body, '\n'))
}

// setRateLimitHeaders writes the rate-limit headers of l (nothing when nil).
func setRateLimitHeaders(h http.Header, l *RateLimit, now time.Time) {
	if l == nil {
		return
	}
	secs := int64(math.Ceil(max(l.ResetAt.Sub(now), 0).Seconds()))
	reset := l.ResetAt.Unix()
	if l.ResetAt.Nanosecond() > 0 {
		reset++ // never earlier than the real reset
	}
	h.Set("RateLimit", `"default";r=`+strconv.Itoa(l.Remaining)+";t="+strconv.FormatInt(secs, 10))
	h.Set("X-RateLimit-Limit", strconv.Itoa(l.Limit))
	h.Set("X-RateLimit-Remaining", strconv.Itoa(l.Remaining))
	h.Set("X-RateLimit-Reset", strconv.FormatInt(reset, 10))
}

// retrySeconds rounds d up to whole seconds, at least 1: a Retry-After of 0 invites
// a client to retry at once, in a loop.
func retrySeconds(d time.Duration) int {
	return max(int(math.Ceil(d.Seconds())), 1)
}

// KeyFromRequest returns the consumer key of r: the X-API-Key header or else the
// token of an Authorization: Bearer header (the scheme in any case), trimmed of
// spaces; "" when neither is set.
func KeyFromRequest(r *http.Request) string {
	if k := strings.TrimSpace(r.Header.Get("X-API-Key")); k != "" {
		return k
	}
	scheme, token, ok := strings.Cut(strings.TrimSpace(r.Header.Get("Authorization")), " ")
	if ok && strings.EqualFold(scheme, "Bearer") {
		return strings.TrimSpace(token)
	}
	return ""
}

type contextKey struct{}

// NewContext returns a copy of ctx carrying res, as Middleware does for the next
// handler (useful to test such handlers without a Latchkey server).
func NewContext(ctx context.Context, res *Result) context.Context {
	return context.WithValue(ctx, contextKey{}, res)
}

// FromContext returns the Result Middleware verified for this request, and false
// when there is none (a request that did not pass the middleware, or one admitted
// unverified by FailOpen).
func FromContext(ctx context.Context) (*Result, bool) {
	res, ok := ctx.Value(contextKey{}).(*Result)
	return res, ok && res != nil
}
