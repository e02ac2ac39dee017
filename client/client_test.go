package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/latchkey/latchkey/client"
)

const mgmtKey = "acme_live_managementkeyforverifyingxxxxxxxx"

// fake is a stand-in Latchkey: it answers POST /v1/keys/verify with status, header
// and body, and records what it was sent.
type fake struct {
	*httptest.Server
	mu     sync.Mutex
	status int
	header map[string]string
	body   string
	calls  int
	last   *http.Request
	sent   map[string]any // the decoded request body
}

func newFake(t *testing.T, status int, body string) *fake {
	t.Helper()
	f := &fake{status: status, body: body}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw, _ := io.ReadAll(r.Body)
		f.mu.Lock()
		defer f.mu.Unlock()
		f.calls++
		f.last = r
		f.sent = nil
		_ = json.Unmarshal(raw, &f.sent)
		for k, v := range f.header {
			w.Header().Set(k, v)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(f.status)
		_, _ = io.WriteString(w, f.body)
	}))
	t.Cleanup(f.Close)
	return f
}

func (f *fake) answer(status int, body string, header map[string]string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.status, f.body, f.header = status, body, header
}

func (f *fake) request() (*http.Request, map[string]any, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.last, f.sent, f.calls
}

// validAnswer is a full answer as Latchkey writes it.
const validAnswer = `{"valid":true,"code":"VALID","keyId":"key_01","ownerId":"cust_1","name":"c",
 "meta":{"plan":"gold","seats":3,"tags":["a"]},"permissions":["documents:read"],"environment":"TEST",
 "expiresAt":"2027-01-02T03:04:05Z","rateLimit":{"limit":10,"remaining":9,"resetAt":"2026-12-01T00:00:06Z"},
 "quota":{"limit":100000,"used":1,"remaining":99999,"resetAt":"2027-01-01T00:00:00Z"},"addedLater":1}`

func TestVerifySendsTheRequest(t *testing.T) {
	f := newFake(t, 200, validAnswer)
	tests := []struct {
		name  string
		opts  client.VerifyOptions
		extra []client.Option
		want  map[string]any
		ua    string
	}{
		{"defaults: no cost sent, Latchkey charges 1", client.VerifyOptions{}, nil,
			map[string]any{"key": "k"}, client.DefaultUserAgent},
		{"cost 0 is sent", client.VerifyOptions{Cost: client.Cost(0)}, nil,
			map[string]any{"key": "k", "cost": 0.0}, client.DefaultUserAgent},
		{"everything", client.VerifyOptions{Cost: client.Cost(5), Permissions: []string{"documents:read", "documents:write"}, Tag: "GET /documents"},
			[]client.Option{client.WithUserAgent("acme-backend/1.0")},
			map[string]any{"key": "k", "cost": 5.0, "permissions": []any{"documents:read", "documents:write"}, "tag": "GET /documents"},
			"acme-backend/1.0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := client.New(f.URL+"/", mgmtKey, tt.extra...)
			if _, err := c.Verify(context.Background(), "k", tt.opts); err != nil {
				t.Fatal(err)
			}
			r, sent, _ := f.request()
			if r.Method != http.MethodPost || r.URL.Path != "/v1/keys/verify" {
				t.Errorf("request %s %s, want POST /v1/keys/verify", r.Method, r.URL.Path)
			}
			for h, want := range map[string]string{
				"Authorization": "Bearer " + mgmtKey,
				"Content-Type":  "application/json",
				"Accept":        "application/json",
				"User-Agent":    tt.ua,
			} {
				if got := r.Header.Get(h); got != want {
					t.Errorf("%s = %q, want %q", h, got, want)
				}
			}
			if !reflect.DeepEqual(sent, tt.want) {
				t.Errorf("body = %v, want %v", sent, tt.want)
			}
		})
	}
}

func TestVerifyKeepsAPathPrefix(t *testing.T) {
	f := newFake(t, 200, validAnswer)
	if _, err := client.New(f.URL+"/latchkey/", mgmtKey).Verify(context.Background(), "k", client.VerifyOptions{}); err != nil {
		t.Fatal(err)
	}
	if r, _, _ := f.request(); r.URL.Path != "/latchkey/v1/keys/verify" {
		t.Errorf("path = %s", r.URL.Path)
	}
}

func TestVerifyDecodesTheAnswer(t *testing.T) {
	exp := time.Date(2027, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name, body string
		want       client.Result
	}{
		{"valid, every field (and a field this version does not know)", validAnswer, client.Result{
			Valid: true, Code: client.CodeValid, KeyID: "key_01", OwnerID: "cust_1", Name: "c",
			Meta:        map[string]any{"plan": "gold", "seats": 3.0, "tags": []any{"a"}},
			Permissions: []string{"documents:read"}, Environment: client.EnvironmentTest, ExpiresAt: &exp,
			RateLimit: &client.RateLimit{Limit: 10, Remaining: 9, ResetAt: time.Date(2026, 12, 1, 0, 0, 6, 0, time.UTC)},
			Quota:     &client.Quota{Limit: 100000, Used: 1, Remaining: 99999, ResetAt: time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)},
		}},
		{"not found: nulls", `{"valid":false,"code":"NOT_FOUND","keyId":null,"ownerId":null,"name":null,"meta":null,
			"permissions":null,"environment":null,"expiresAt":null,"rateLimit":null,"quota":null}`,
			client.Result{Code: client.CodeNotFound}},
		{"revoked: details without limits", `{"valid":false,"code":"REVOKED","keyId":"key_02","ownerId":null,"name":"old",
			"meta":null,"permissions":[],"environment":"LIVE","expiresAt":null,"rateLimit":null,"quota":null}`,
			client.Result{Code: client.CodeRevoked, KeyID: "key_02", Name: "old", Permissions: []string{}, Environment: client.EnvironmentLive}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake(t, 200, tt.body)
			res, err := client.New(f.URL, mgmtKey).Verify(context.Background(), "k", client.VerifyOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(*res, tt.want) {
				t.Errorf("got  %+v\nwant %+v", *res, tt.want)
			}
		})
	}
}

func TestVerifyErrors(t *testing.T) {
	categories := []error{client.ErrBadRequest, client.ErrUnauthorized, client.ErrForbidden, client.ErrTooManyRequests, client.ErrUnavailable}
	inAMinute := time.Now().Add(61 * time.Second).UTC().Format(http.TimeFormat)
	tests := []struct {
		name       string
		status     int
		header     map[string]string
		body       string
		category   error // nil: none
		code, msg  string
		details    map[string]any
		retryAfter time.Duration // at least this (and less than this + 2s)
		cause      bool          // Err is set
	}{
		{"400 bad input", 400, nil, `{"error":{"code":"BAD_USER_INPUT","message":"tag must be printable ASCII","field":"tag"}}`,
			client.ErrBadRequest, "BAD_USER_INPUT", "tag must be printable ASCII", map[string]any{"field": "tag"}, 0, false},
		{"401 management key refused", 401, map[string]string{"WWW-Authenticate": `Bearer realm="latchkey"`},
			`{"error":{"code":"UNAUTHENTICATED","message":"API key revoked","reason":"revoked"}}`,
			client.ErrUnauthorized, "UNAUTHENTICATED", "API key revoked", map[string]any{"reason": "revoked"}, 0, false},
		{"403 without keys:verify", 403, nil, `{"error":{"code":"FORBIDDEN","message":"the calling key lacks the scope keys:verify","requiredScopes":["keys:verify"]}}`,
			client.ErrForbidden, "FORBIDDEN", "the calling key lacks the scope keys:verify", map[string]any{"requiredScopes": []any{"keys:verify"}}, 0, false},
		{"429 throttled, Retry-After in seconds", 429, map[string]string{"Retry-After": "30"},
			`{"error":{"code":"RATE_LIMITED","message":"too many unknown credentials: try again later","reason":"too_many_failed_credentials","retryAfterSeconds":30}}`,
			client.ErrTooManyRequests, "RATE_LIMITED", "too many unknown credentials: try again later",
			map[string]any{"reason": "too_many_failed_credentials", "retryAfterSeconds": 30.0}, 30 * time.Second, false},
		{"429, Retry-After as a date", 429, map[string]string{"Retry-After": inAMinute}, `{"error":{"code":"RATE_LIMITED","message":"slow down"}}`,
			client.ErrTooManyRequests, "RATE_LIMITED", "slow down", nil, 59 * time.Second, false},
		{"503 limit stores down", 503, map[string]string{"Retry-After": "1"},
			`{"error":{"code":"INTERNAL","message":"rate limiter unavailable, try again","reason":"rate_limiter_unavailable"}}`,
			client.ErrUnavailable, "INTERNAL", "rate limiter unavailable, try again", map[string]any{"reason": "rate_limiter_unavailable"}, time.Second, false},
		{"502 from a proxy, not JSON", 502, nil, `<html>bad gateway</html>`,
			client.ErrUnavailable, "", "Bad Gateway", nil, 0, false},
		{"200 that is not an answer", 200, nil, `<html>captive portal</html>`,
			client.ErrUnavailable, "", "", nil, 0, true},
		{"200 without a code", 200, nil, `{"ok":true}`,
			client.ErrUnavailable, "", "", nil, 0, true},
		{"404: a wrong base URL", 404, nil, `404 page not found`,
			nil, "", "Not Found", nil, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake(t, tt.status, tt.body)
			f.answer(tt.status, tt.body, tt.header)
			res, err := client.New(f.URL, mgmtKey).Verify(context.Background(), "acme_live_secretconsumerkey", client.VerifyOptions{})
			if res != nil || err == nil {
				t.Fatalf("got %+v, %v; want an error", res, err)
			}
			var e *client.Error
			if !errors.As(err, &e) {
				t.Fatalf("error %T is not a *client.Error", err)
			}
			for _, c := range categories {
				if got := errors.Is(err, c); got != (c == tt.category) {
					t.Errorf("errors.Is(err, %v) = %v", c, got)
				}
			}
			wantStatus := tt.status
			if e.StatusCode != wantStatus || e.Code != tt.code || e.Message != tt.msg || !reflect.DeepEqual(e.Details, tt.details) {
				t.Errorf("got status %d code %q message %q details %v", e.StatusCode, e.Code, e.Message, e.Details)
			}
			if e.RetryAfter < tt.retryAfter || e.RetryAfter > tt.retryAfter+2*time.Second {
				t.Errorf("RetryAfter = %v, want about %v", e.RetryAfter, tt.retryAfter)
			}
			if (e.Err != nil) != tt.cause {
				t.Errorf("Err = %v", e.Err)
			}
			if s := err.Error(); strings.Contains(s, "secretconsumerkey") || strings.Contains(s, mgmtKey) || !strings.HasPrefix(s, "latchkey: verify") {
				t.Errorf("Error() = %q", s)
			}
		})
	}
}

func TestVerifyUnreachable(t *testing.T) {
	f := newFake(t, 200, validAnswer)
	url := f.URL
	f.Close()
	_, err := client.New(url, mgmtKey).Verify(context.Background(), "k", client.VerifyOptions{})
	var e *client.Error
	if !errors.As(err, &e) || !errors.Is(err, client.ErrUnavailable) || e.StatusCode != 0 || e.Err == nil {
		t.Fatalf("got %#v, want an unavailable *Error with a cause", err)
	}
}

func TestVerifyTimeout(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	defer srv.Close()
	defer close(release)
	tests := []struct {
		name string
		opts []client.Option
		ctx  func() (context.Context, context.CancelFunc)
	}{
		{"the client's timeout", []client.Option{client.WithTimeout(50 * time.Millisecond)},
			func() (context.Context, context.CancelFunc) { return context.WithCancel(context.Background()) }},
		{"the caller's deadline", []client.Option{client.WithTimeout(0)},
			func() (context.Context, context.CancelFunc) {
				return context.WithTimeout(context.Background(), 50*time.Millisecond)
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := tt.ctx()
			defer cancel()
			start := time.Now()
			_, err := client.New(srv.URL, mgmtKey, tt.opts...).Verify(ctx, "k", client.VerifyOptions{})
			if !errors.Is(err, client.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("err = %v, want unavailable and deadline exceeded", err)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("took %v", d)
			}
		})
	}
}

type countingTransport struct {
	n    int
	next http.RoundTripper
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.n++
	return c.next.RoundTrip(r)
}

func TestWithHTTPClient(t *testing.T) {
	f := newFake(t, 200, validAnswer)
	tr := &countingTransport{next: http.DefaultTransport}
	c := client.New(f.URL, mgmtKey, client.WithHTTPClient(&http.Client{Transport: tr}), client.WithHTTPClient(nil))
	if _, err := c.Verify(context.Background(), "k", client.VerifyOptions{}); err != nil {
		t.Fatal(err)
	}
	if tr.n != 1 {
		t.Errorf("transport used %d times", tr.n)
	}
}

func TestResultRetryAfter(t *testing.T) {
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	rl := &client.RateLimit{Limit: 10, ResetAt: now.Add(42 * time.Second)}
	q := &client.Quota{Limit: 5, Used: 5, ResetAt: now.Add(24 * time.Hour)}
	tests := []struct {
		name   string
		res    client.Result
		want   time.Duration
		wantOK bool
	}{
		{"rate limited: until the limit is full", client.Result{Code: client.CodeRateLimited, RateLimit: rl, Quota: q}, 42 * time.Second, true},
		{"rate limited, cost above the limit: no reset", client.Result{Code: client.CodeRateLimited}, 0, false},
		{"quota exceeded: the next period", client.Result{Code: client.CodeQuotaExceeded, RateLimit: rl, Quota: q}, 24 * time.Hour, true},
		{"usage exceeded: no reset", client.Result{Code: client.CodeUsageExceeded, RateLimit: rl, Quota: q}, 0, false},
		{"valid", client.Result{Valid: true, Code: client.CodeValid, RateLimit: rl}, 0, false},
		{"a reset in the past", client.Result{Code: client.CodeRateLimited, RateLimit: &client.RateLimit{ResetAt: now.Add(-time.Second)}}, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := tt.res.RetryAfter(now)
			if got != tt.want || ok != tt.wantOK {
				t.Errorf("RetryAfter = %v, %v; want %v, %v", got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

func TestCodeHTTPStatus(t *testing.T) {
	for code, want := range map[client.Code]int{
		client.CodeValid:                   200,
		client.CodeNotFound:                401,
		client.CodeRevoked:                 401,
		client.CodeExpired:                 401,
		client.CodeDisabled:                401,
		client.CodeTenantInactive:          401,
		client.CodeInsufficientPermissions: 403,
		client.CodeRateLimited:             429,
		client.CodeQuotaExceeded:           429,
		client.CodeUsageExceeded:           429,
		"SOMETHING_NEW":                    401,
	} {
		if got := code.HTTPStatus(); got != want {
			t.Errorf("%s: %d, want %d", code, got, want)
		}
	}
}

// A base URL that is no http(s) URL is a misconfiguration, not an outage: it matches
// no category, so that failing open does not open the API.
func TestVerifyBadBaseURL(t *testing.T) {
	categories := []error{client.ErrBadRequest, client.ErrUnauthorized, client.ErrForbidden, client.ErrTooManyRequests, client.ErrUnavailable}
	for _, base := range []string{"", "localhost:8080", "ftp://latchkey.example.com", "http://", "://latchkey"} {
		t.Run(base, func(t *testing.T) {
			_, err := client.New(base, mgmtKey).Verify(context.Background(), "k", client.VerifyOptions{})
			var e *client.Error
			if !errors.As(err, &e) || e.Err == nil || e.StatusCode != 0 {
				t.Fatalf("got %#v", err)
			}
			for _, c := range categories {
				if errors.Is(err, c) {
					t.Errorf("matches %v", c)
				}
			}
			var called atomic.Int32
			h := client.New(base, mgmtKey).Middleware(client.MiddlewareOptions{FailOpen: true, OnError: func(*http.Request, error) {}})(reached(&called))
			req := httptest.NewRequest("GET", "/", nil)
			req.Header.Set("X-API-Key", consumerKey)
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != 500 || called.Load() != 0 {
				t.Errorf("middleware failing open: %d, next called %d times", rec.Code, called.Load())
			}
		})
	}
}
