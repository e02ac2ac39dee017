package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/latchkey/latchkey/client"
)

const consumerKey = "acme_live_consumerkeyofacustomerxxxxxxxxxx"

// reached is the next handler: it answers 200 with the verified owner, or "unverified".
func reached(called *atomic.Int32) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		called.Add(1)
		res, ok := client.FromContext(r.Context())
		if !ok {
			_, _ = fmt.Fprint(w, "unverified")
			return
		}
		_, _ = fmt.Fprint(w, "owner "+res.OwnerID)
	})
}

// answer builds a Latchkey answer with code and, when reset > 0, a rate limit and a
// quota resetting that far from now.
func answer(code client.Code, remaining int, rateReset, quotaReset time.Duration) string {
	a := map[string]any{"valid": code == client.CodeValid, "code": code, "keyId": "key_01", "ownerId": "cust_1"}
	if rateReset > 0 {
		a["rateLimit"] = map[string]any{"limit": 10, "remaining": remaining, "resetAt": time.Now().Add(rateReset)}
	}
	if quotaReset > 0 {
		a["quota"] = map[string]any{"limit": 100, "used": 100, "remaining": 0, "resetAt": time.Now().Add(quotaReset)}
	}
	b, _ := json.Marshal(a)
	return string(b)
}

type refusal struct {
	Error struct{ Code, Message string } `json:"error"`
}

func TestMiddlewareOutcomes(t *testing.T) {
	tests := []struct {
		name       string
		body       string
		status     int
		code       string // the refusal's code; "" for an admitted request
		retryAfter int    // expected Retry-After in seconds (±1); 0: none
		rateLimit  bool   // RateLimit headers expected
	}{
		{"valid", answer(client.CodeValid, 9, 6*time.Second, 0), 200, "", 0, true},
		{"valid without limits", answer(client.CodeValid, 0, 0, 0), 200, "", 0, false},
		{"not found", answer(client.CodeNotFound, 0, 0, 0), 401, "NOT_FOUND", 0, false},
		{"revoked", answer(client.CodeRevoked, 0, 0, 0), 401, "REVOKED", 0, false},
		{"expired", answer(client.CodeExpired, 0, 0, 0), 401, "EXPIRED", 0, false},
		{"disabled", answer(client.CodeDisabled, 0, 0, 0), 401, "DISABLED", 0, false},
		{"tenant inactive", answer(client.CodeTenantInactive, 0, 0, 0), 401, "TENANT_INACTIVE", 0, false},
		{"a code this version does not know", answer("OWNER_SUSPENDED", 0, 0, 0), 401, "OWNER_SUSPENDED", 0, false},
		{"valid false with code VALID", `{"valid":false,"code":"VALID"}`, 401, "VALID", 0, false},
		{"insufficient permissions", answer(client.CodeInsufficientPermissions, 0, 0, 0), 403, "INSUFFICIENT_PERMISSIONS", 0, false},
		{"rate limited", answer(client.CodeRateLimited, 0, 42*time.Second, 0), 429, "RATE_LIMITED", 42, true},
		{"rate limited, reset already past", answer(client.CodeRateLimited, 0, time.Nanosecond, 0), 429, "RATE_LIMITED", 1, true},
		{"rate limited, cost above the limit", answer(client.CodeRateLimited, 0, 0, 0), 429, "RATE_LIMITED", 0, false},
		{"quota exceeded", answer(client.CodeQuotaExceeded, 5, 6*time.Second, time.Hour), 429, "QUOTA_EXCEEDED", 3600, true},
		{"usage exceeded", answer(client.CodeUsageExceeded, 5, 6*time.Second, 0), 429, "USAGE_EXCEEDED", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake(t, 200, tt.body)
			var called atomic.Int32
			h := client.New(f.URL, mgmtKey).Middleware(client.MiddlewareOptions{})(reached(&called))
			req := httptest.NewRequest("GET", "/documents", nil)
			req.Header.Set("X-API-Key", consumerKey)
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)

			if rec.Code != tt.status {
				t.Fatalf("status %d, want %d: %s", rec.Code, tt.status, rec.Body)
			}
			if tt.code == "" {
				if called.Load() != 1 || rec.Body.String() != "owner cust_1" {
					t.Errorf("next handler: called %d times, answered %q", called.Load(), rec.Body)
				}
			} else {
				if called.Load() != 0 {
					t.Error("next handler called for a refused key")
				}
				var body refusal
				if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || body.Error.Code != tt.code || body.Error.Message == "" {
					t.Errorf("body %s (%v), want code %s", rec.Body, err, tt.code)
				}
				if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
					t.Errorf("Content-Type %q", ct)
				}
			}
			if got := rec.Header().Get("WWW-Authenticate"); (got == "Bearer") != (tt.status == 401) {
				t.Errorf("WWW-Authenticate = %q", got)
			}
			ra := rec.Header().Get("Retry-After")
			if tt.retryAfter == 0 && ra != "" {
				t.Errorf("Retry-After = %q, want none", ra)
			}
			if tt.retryAfter > 0 {
				if n, err := strconv.Atoi(ra); err != nil || n < tt.retryAfter || n > tt.retryAfter+1 {
					t.Errorf("Retry-After = %q, want %d", ra, tt.retryAfter)
				}
			}
			h2 := rec.Header()
			if !tt.rateLimit {
				for _, k := range []string{"RateLimit", "X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset", "RateLimit-Policy"} {
					if v := h2.Get(k); v != "" {
						t.Errorf("%s = %q, want none", k, v)
					}
				}
				return
			}
			var a struct{ RateLimit client.RateLimit }
			_ = json.Unmarshal([]byte(tt.body), &a)
			secs := int(time.Until(a.RateLimit.ResetAt).Seconds() + 0.999)
			rl := h2.Get("RateLimit")
			if rl != fmt.Sprintf(`"default";r=%d;t=%d`, a.RateLimit.Remaining, secs) && rl != fmt.Sprintf(`"default";r=%d;t=%d`, a.RateLimit.Remaining, secs+1) {
				t.Errorf("RateLimit = %q (reset in %ds)", rl, secs)
			}
			if h2.Get("X-RateLimit-Limit") != "10" || h2.Get("X-RateLimit-Remaining") != strconv.Itoa(a.RateLimit.Remaining) {
				t.Errorf("X-RateLimit-Limit/Remaining = %q/%q", h2.Get("X-RateLimit-Limit"), h2.Get("X-RateLimit-Remaining"))
			}
			if reset, _ := strconv.ParseInt(h2.Get("X-RateLimit-Reset"), 10, 64); reset < a.RateLimit.ResetAt.Unix() || reset > a.RateLimit.ResetAt.Unix()+1 {
				t.Errorf("X-RateLimit-Reset = %q, want %d", h2.Get("X-RateLimit-Reset"), a.RateLimit.ResetAt.Unix())
			}
			if h2.Get("RateLimit-Policy") != "" {
				t.Error("RateLimit-Policy set: its window is not known")
			}
		})
	}
}

func TestMiddlewareAsksOnlyWithAKey(t *testing.T) {
	tests := []struct {
		name   string
		header map[string]string
		status int
		code   string
	}{
		{"no key", nil, 401, "MISSING_KEY"},
		{"empty X-API-Key", map[string]string{"X-API-Key": "  "}, 401, "MISSING_KEY"},
		{"Basic is not a key", map[string]string{"Authorization": "Basic dXNlcjpwYXNz"}, 401, "MISSING_KEY"},
		{"a key too long to be one", map[string]string{"X-API-Key": strings.Repeat("k", client.MaxKeyBytes+1)}, 401, "NOT_FOUND"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake(t, 200, answer(client.CodeValid, 9, time.Second, 0))
			var called atomic.Int32
			h := client.New(f.URL, mgmtKey).Middleware(client.MiddlewareOptions{})(reached(&called))
			req := httptest.NewRequest("GET", "/", nil)
			for k, v := range tt.header {
				req.Header.Set(k, v)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			var body refusal
			_ = json.Unmarshal(rec.Body.Bytes(), &body)
			if rec.Code != tt.status || body.Error.Code != tt.code {
				t.Errorf("got %d %s, want %d %s", rec.Code, rec.Body, tt.status, tt.code)
			}
			if _, _, calls := f.request(); calls != 0 || called.Load() != 0 {
				t.Errorf("Latchkey asked %d times, next handler called %d times", calls, called.Load())
			}
		})
	}
}

func TestKeyFromRequest(t *testing.T) {
	tests := []struct {
		name   string
		header map[string]string
		want   string
	}{
		{"X-API-Key", map[string]string{"X-API-Key": " k1 "}, "k1"},
		{"Bearer", map[string]string{"Authorization": "Bearer k2"}, "k2"},
		{"bearer in lower case", map[string]string{"Authorization": "bearer  k3 "}, "k3"},
		{"X-API-Key first", map[string]string{"X-API-Key": "k4", "Authorization": "Bearer k5"}, "k4"},
		{"Basic", map[string]string{"Authorization": "Basic abc"}, ""},
		{"scheme alone", map[string]string{"Authorization": "Bearer"}, ""},
		{"none", nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/", nil)
			for k, v := range tt.header {
				r.Header.Set(k, v)
			}
			if got := client.KeyFromRequest(r); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestMiddlewareSendsItsOptions(t *testing.T) {
	tests := []struct {
		name string
		opts client.MiddlewareOptions
		path string
		want map[string]any
	}{
		{"none", client.MiddlewareOptions{}, "/", map[string]any{"key": consumerKey}},
		{"static", client.MiddlewareOptions{Verify: client.VerifyOptions{Cost: client.Cost(2), Permissions: []string{"documents:read"}, Tag: "GET /documents"}},
			"/documents", map[string]any{"key": consumerKey, "cost": 2.0, "permissions": []any{"documents:read"}, "tag": "GET /documents"}},
		{"per request, instead of the static ones", client.MiddlewareOptions{
			Verify: client.VerifyOptions{Permissions: []string{"ignored"}},
			PerRequest: func(r *http.Request) client.VerifyOptions {
				return client.VerifyOptions{Cost: client.Cost(0), Permissions: []string{"documents:" + strings.TrimPrefix(r.URL.Path, "/")}}
			}}, "/write", map[string]any{"key": consumerKey, "cost": 0.0, "permissions": []any{"documents:write"}}},
		{"the key from elsewhere", client.MiddlewareOptions{Key: func(r *http.Request) string { return r.URL.Query().Get("api_key") }},
			"/?api_key=other", map[string]any{"key": "other"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake(t, 200, answer(client.CodeValid, 9, time.Second, 0))
			var called atomic.Int32
			h := client.New(f.URL, mgmtKey).Middleware(tt.opts)(reached(&called))
			req := httptest.NewRequest("GET", tt.path, nil)
			req.Header.Set("Authorization", "Bearer "+consumerKey)
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != 200 {
				t.Fatalf("status %d: %s", rec.Code, rec.Body)
			}
			if _, sent, _ := f.request(); !reflect.DeepEqual(sent, tt.want) {
				t.Errorf("sent %v, want %v", sent, tt.want)
			}
		})
	}
}

func TestMiddlewareWhenLatchkeyFails(t *testing.T) {
	down := newFake(t, 200, "")
	downURL := down.URL
	down.Close()
	tests := []struct {
		name       string
		status     int // Latchkey's; 0: unreachable
		header     map[string]string
		body       string
		failOpen   bool
		want       int
		code       string // "": passed on unverified
		retryAfter string
	}{
		{"unreachable", 0, nil, "", false, 503, "UNAVAILABLE", ""},
		{"unreachable, fail open", 0, nil, "", true, 200, "", ""},
		{"503", 503, map[string]string{"Retry-After": "1"}, `{"error":{"code":"INTERNAL","message":"rate limiter unavailable, try again"}}`, false, 503, "UNAVAILABLE", "1"},
		{"503, fail open", 503, nil, `{"error":{"code":"INTERNAL","message":"x"}}`, true, 200, "", ""},
		{"an answer that is not one, fail open", 200, nil, `<html>`, true, 200, "", ""},
		{"throttled", 429, map[string]string{"Retry-After": "17"}, `{"error":{"code":"RATE_LIMITED","message":"too many unknown credentials"}}`, false, 429, "TOO_MANY_REQUESTS", "17"},
		{"throttled, fail open does not apply", 429, map[string]string{"Retry-After": "17"}, `{"error":{"code":"RATE_LIMITED","message":"x"}}`, true, 429, "TOO_MANY_REQUESTS", "17"},
		{"management key refused, fail open does not apply", 401, nil, `{"error":{"code":"UNAUTHENTICATED","message":"API key revoked"}}`, true, 500, "INTERNAL", ""},
		{"management key without keys:verify", 403, nil, `{"error":{"code":"FORBIDDEN","message":"x"}}`, false, 500, "INTERNAL", ""},
		{"options Latchkey refuses", 400, nil, `{"error":{"code":"BAD_USER_INPUT","message":"tag must be printable ASCII"}}`, false, 500, "INTERNAL", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			url := downURL
			if tt.status != 0 {
				f := newFake(t, tt.status, tt.body)
				f.answer(tt.status, tt.body, tt.header)
				url = f.URL
			}
			var called atomic.Int32
			var errs []error
			h := client.New(url, mgmtKey).Middleware(client.MiddlewareOptions{
				FailOpen: tt.failOpen,
				OnError:  func(_ *http.Request, err error) { errs = append(errs, err) },
			})(reached(&called))
			req := httptest.NewRequest("GET", "/", nil)
			req.Header.Set("X-API-Key", consumerKey)
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)

			if rec.Code != tt.want {
				t.Fatalf("status %d, want %d: %s", rec.Code, tt.want, rec.Body)
			}
			if tt.code == "" {
				if rec.Body.String() != "unverified" {
					t.Errorf("next handler answered %q, want it to see no Result", rec.Body)
				}
			} else {
				var body refusal
				if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || body.Error.Code != tt.code {
					t.Errorf("body %s, want code %s", rec.Body, tt.code)
				}
				if called.Load() != 0 {
					t.Error("next handler called")
				}
			}
			if got := rec.Header().Get("Retry-After"); got != tt.retryAfter {
				t.Errorf("Retry-After = %q, want %q", got, tt.retryAfter)
			}
			var e *client.Error
			if len(errs) != 1 || !errors.As(errs[0], &e) {
				t.Errorf("OnError told %v, want one *client.Error", errs)
			}
		})
	}
}

// A caller that hangs up must not get a handler run unverified by failing open.
func TestMiddlewareFailOpenNotForAnEndedRequest(t *testing.T) {
	srv := newFake(t, 200, "")
	url := srv.URL
	srv.Close()
	var called atomic.Int32
	h := client.New(url, mgmtKey).Middleware(client.MiddlewareOptions{FailOpen: true, OnError: func(*http.Request, error) {}})(reached(&called))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	req := httptest.NewRequest("POST", "/documents", nil).WithContext(ctx)
	req.Header.Set("X-API-Key", consumerKey)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if called.Load() != 0 || rec.Code != 503 {
		t.Errorf("next handler called %d times, status %d", called.Load(), rec.Code)
	}
}

func TestContext(t *testing.T) {
	if res, ok := client.FromContext(context.Background()); ok || res != nil {
		t.Errorf("empty context: %v, %v", res, ok)
	}
	if _, ok := client.FromContext(client.NewContext(context.Background(), nil)); ok {
		t.Error("a nil Result is reported")
	}
	want := &client.Result{Valid: true, Code: client.CodeValid, OwnerID: "cust_1"}
	if res, ok := client.FromContext(client.NewContext(context.Background(), want)); !ok || res != want {
		t.Errorf("got %v, %v", res, ok)
	}
}
