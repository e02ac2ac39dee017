package app_test

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/latchkey/latchkey/internal/app/apptest"
	"github.com/latchkey/latchkey/internal/platform/config"
)

// GraphQL over HTTP: methods, media types and status codes.
func TestGraphQLOverHTTP(t *testing.T) {
	e := apptest.New(t, "sqlite", appOptions(), nil)
	tid := e.Tenant("http")
	_, key := e.Key(e.AdminToken, tid, apptest.AllScopes...)

	req := func(method, path, contentType, accept, body string) *http.Request {
		r, _ := http.NewRequest(method, e.Server.URL+path, strings.NewReader(body))
		if contentType != "" {
			r.Header.Set("Content-Type", contentType)
		}
		if accept != "" {
			r.Header.Set("Accept", accept)
		}
		r.Header.Set("X-API-Key", key)
		return r
	}
	q := url.QueryEscape(`{ viewer { isAdmin } }`)
	mut := url.QueryEscape(`mutation { revokeApiKey(id: "x") { id } }`)
	cases := []struct {
		name                     string
		r                        *http.Request
		wantStatus               int
		wantCode, wantCT, inBody string
	}{
		{"POST json", req("POST", "/query", "application/json", "", `{"query":"{ viewer { isAdmin } }"}`), 200, "", "application/json", `"isAdmin":false`},
		{"POST json charset", req("POST", "/query", "application/json; charset=utf-8", "", `{"query":"{ viewer { isAdmin } }"}`), 200, "", "application/json", `"isAdmin":false`},
		{"POST graphql-response+json", req("POST", "/query", "application/json", "application/graphql-response+json", `{"query":"{ viewer { isAdmin } }"}`), 200, "", "application/graphql-response+json", `"isAdmin":false`},
		{"POST application/graphql", req("POST", "/query", "application/graphql", "", `{ viewer { isAdmin } }`), 200, "", "application/json", `"isAdmin":false`},
		{"GET query", req("GET", "/query?query="+q, "", "", ""), 200, "", "application/json", `"isAdmin":false`},
		{"GET mutation", req("GET", "/query?query="+mut, "", "", ""), 405, "", "", ""},
		{"POST text/plain", req("POST", "/query", "text/plain", "", `{"query":"{ viewer { isAdmin } }"}`), 415, "BAD_USER_INPUT", "application/json", ""},
		{"malformed JSON", req("POST", "/query", "application/json", "", `{"query":`), 400, "BAD_USER_INPUT", "application/json", ""},
		{"parse error, graphql-response+json", req("POST", "/query", "application/json", "application/graphql-response+json", `{"query":"{ viewer { "}`), 400, "GRAPHQL_PARSE_FAILED", "application/graphql-response+json", ""},
		{"unknown field, graphql-response+json", req("POST", "/query", "application/json", "application/graphql-response+json", `{"query":"{ nope }"}`), 400, "GRAPHQL_VALIDATION_FAILED", "application/graphql-response+json", ""},
		{"body too large", req("POST", "/query", "application/json", "", `{"query":"`+strings.Repeat(" ", 2<<20)+`{ viewer { isAdmin } }"}`), 413, "BAD_USER_INPUT", "application/json", ""},
		{"too deep", req("POST", "/query", "application/json", "", `{"query":"{ viewer { apiKey { tenant { apiKeys { edges { node { tenant { apiKeys { edges { node { tenant { apiKeys { edges { node { id } } } } } } } } } } } } } } }"}`), 200, "BAD_USER_INPUT", "application/json", "depth"},
		{"too complex", req("POST", "/query", "application/json", "", `{"query":"{ apiKeys(first: 100) { edges { node { tenant { apiKeys(first: 100) { edges { node { id name } } } } } } } }"}`), 200, "BAD_USER_INPUT", "application/json", "complexity"},
		{"deep introspection (GraphiQL's schema query)", req("POST", "/query", "application/json", "", `{"query":"{ __schema { types { name fields { name type { name ofType { name ofType { name ofType { name ofType { name ofType { name ofType { name ofType { name } } } } } } } } } } } }"}`), 200, "", "application/json", `"__schema"`},
		{"first and last", req("POST", "/query", "application/json", "", `{"query":"{ apiKeys(first: 5, last: 5) { totalCount } }"}`), 200, "BAD_USER_INPUT", "application/json", "either first or last"},
		{"huge idIn filter", req("POST", "/query", "application/json", "", `{"query":"query($ids: [ID!]) { apiKeys(where: {idIn: $ids}) { totalCount } }","variables":{"ids":[`+strings.TrimSuffix(strings.Repeat(`"key_x",`, 600), ",")+`]}}`), 200, "BAD_USER_INPUT", "application/json", "500 values"},
		{"deeply nested filter", req("POST", "/query", "application/json", "", `{"query":"query($w: ApiKeyWhereInput) { apiKeys(where: $w) { totalCount } }","variables":{"w":`+strings.Repeat(`{"not":`, 20)+`{"name":"x"}`+strings.Repeat(`}`, 20)+`}}`), 200, "BAD_USER_INPUT", "application/json", "nested deeper"},
		{"nested edge filter within limits", req("POST", "/query", "application/json", "", `{"query":"{ viewer { tenant { apiKeys(first: 5, where: {nameContains: \"k\", not: {revokedAtNotNil: true}}) { totalCount } } } }"}`), 200, "", "application/json", "totalCount"},
		{"page too large", req("POST", "/query", "application/json", "", `{"query":"{ apiKeys(first: 1000) { totalCount } }"}`), 200, "BAD_USER_INPUT", "application/json", ""},
		{"wrong variable type", req("POST", "/query", "application/json", "", `{"query":"query($n: Int) { apiKeys(first: $n) { totalCount } }","variables":{"n":"ten"}}`), 422, "GRAPHQL_VALIDATION_FAILED", "application/json", ""},
		{"bad time", req("POST", "/query", "application/json", "", `{"query":"mutation { createApiKey(input: {name: \"x\", scopes: [], expiresAt: \"yesterday\"}) { secret } }"}`), 200, "BAD_USER_INPUT", "application/json", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := e.Send(tc.r)
			if r.Status != tc.wantStatus {
				t.Fatalf("status %d, want %d: %s", r.Status, tc.wantStatus, r.Raw)
			}
			if tc.wantCode != "" && r.Code() != tc.wantCode {
				t.Fatalf("code %q, want %q: %s", r.Code(), tc.wantCode, r.Raw)
			}
			if tc.wantCT != "" && !strings.HasPrefix(r.Header.Get("Content-Type"), tc.wantCT) {
				t.Fatalf("content type %q, want %q", r.Header.Get("Content-Type"), tc.wantCT)
			}
			if !strings.Contains(r.Raw, tc.inBody) {
				t.Fatalf("body lacks %q: %s", tc.inBody, r.Raw)
			}
			assertNoLeak(t, r.Raw)
		})
	}
}

// Automatic persisted queries: the Apollo/urql protocol (sha256Hash in extensions).
func TestPersistedQueries(t *testing.T) {
	e := apptest.New(t, "sqlite", appOptions(), nil)
	query := `{ viewer { isAdmin } }`
	sum := sha256.Sum256([]byte(query))
	ext := map[string]any{"persistedQuery": map[string]any{"version": 1, "sha256Hash": hex.EncodeToString(sum[:])}}
	post := func(body map[string]any) *apptest.Response {
		b, _ := json.Marshal(body)
		r, _ := http.NewRequest("POST", e.Server.URL+"/query", strings.NewReader(string(b)))
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set("X-API-Key", e.AdminToken)
		return e.Send(r)
	}
	if r := post(map[string]any{"extensions": ext}); !strings.Contains(r.Raw, "PersistedQueryNotFound") {
		t.Fatalf("unknown hash: %s", r.Raw)
	}
	if r := post(map[string]any{"query": query, "extensions": ext}); r.Code() != "" || !strings.Contains(r.Raw, `"isAdmin":true`) {
		t.Fatalf("register: %s", r.Raw)
	}
	if r := post(map[string]any{"extensions": ext}); r.Code() != "" || !strings.Contains(r.Raw, `"isAdmin":true`) {
		t.Fatalf("by hash: %s", r.Raw)
	}
	// GET with the hash only, as Apollo's useGETForHashedQueries does.
	extJSON, _ := json.Marshal(ext)
	r, _ := http.NewRequest("GET", e.Server.URL+"/query?extensions="+url.QueryEscape(string(extJSON)), nil)
	r.Header.Set("X-API-Key", e.AdminToken)
	if resp := e.Send(r); resp.Status != 200 || !strings.Contains(resp.Raw, `"isAdmin":true`) {
		t.Fatalf("GET by hash: HTTP %d %s", resp.Status, resp.Raw)
	}
	wrong := map[string]any{"persistedQuery": map[string]any{"version": 1, "sha256Hash": strings.Repeat("0", 64)}}
	if r := post(map[string]any{"query": query, "extensions": wrong}); r.Code() == "" {
		t.Fatalf("mismatched hash accepted: %s", r.Raw)
	}
}

func TestCORS(t *testing.T) {
	e := apptest.New(t, "sqlite", appOptions(), func(c *config.Config) {
		c.AllowedOrigins = []string{"https://dash.example.com"}
	})
	preflight := func(origin string) *http.Response {
		r, _ := http.NewRequest(http.MethodOptions, e.Server.URL+"/query", nil)
		r.Header.Set("Origin", origin)
		r.Header.Set("Access-Control-Request-Method", "POST")
		r.Header.Set("Access-Control-Request-Headers", "content-type,x-api-key")
		resp, err := e.Server.Client().Do(r)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	ok := preflight("https://dash.example.com")
	if ok.StatusCode/100 != 2 || ok.Header.Get("Access-Control-Allow-Origin") != "https://dash.example.com" {
		t.Fatalf("allowed origin preflight: %d %v", ok.StatusCode, ok.Header)
	}
	allowed := strings.ToLower(ok.Header.Get("Access-Control-Allow-Headers"))
	if !strings.Contains(allowed, "x-api-key") || !strings.Contains(allowed, "content-type") {
		t.Fatalf("allow headers: %q", allowed)
	}
	if ok.Header.Get("Access-Control-Allow-Credentials") != "" {
		t.Fatal("credentials allowed")
	}
	if bad := preflight("https://evil.example.com"); bad.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("foreign origin allowed: %v", bad.Header)
	}
	// An actual request exposes the rate-limit headers to the browser.
	r, _ := http.NewRequest("POST", e.Server.URL+"/query", strings.NewReader(`{"query":"{ viewer { isAdmin } }"}`))
	r.Header.Set("Origin", "https://dash.example.com")
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("X-API-Key", e.AdminToken)
	resp := e.Send(r)
	if !strings.Contains(resp.Header.Get("Access-Control-Expose-Headers"), "Ratelimit") && !strings.Contains(resp.Header.Get("Access-Control-Expose-Headers"), "RateLimit") {
		t.Fatalf("expose headers: %q", resp.Header.Get("Access-Control-Expose-Headers"))
	}
}

func TestHealthAndPlayground(t *testing.T) {
	e := apptest.New(t, "postgres", appOptions(), nil)
	for _, tc := range []struct{ path, ct, body string }{
		{"/healthz", "application/json", `"ok"`},
		{"/readyz", "application/json", `"ok"`},
		{"/", "text/html", "X-API-Key"},
	} {
		resp, err := e.Server.Client().Get(e.Server.URL + tc.path)
		if err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		_, _ = bufioCopy(&b, resp)
		if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), tc.ct) || !strings.Contains(b.String(), tc.body) {
			t.Fatalf("%s: %d %s %s", tc.path, resp.StatusCode, resp.Header.Get("Content-Type"), b.String())
		}
	}
	// readyz fails when the database is gone.
	e.App.Store.DB.Close()
	resp, err := e.Server.Client().Get(e.Server.URL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("readyz with closed DB: %d", resp.StatusCode)
	}
}
