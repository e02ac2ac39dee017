package app_test

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/latchkey/latchkey/internal/app"
	"github.com/latchkey/latchkey/internal/app/apptest"
	"github.com/latchkey/latchkey/internal/platform/config"
)

// post sends body (a JSON request) to /query with key ("" for none).
func post(e *apptest.Env, key, body string) *apptest.Response {
	e.T.Helper()
	r, _ := http.NewRequest(http.MethodPost, e.Server.URL+"/query", strings.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	if key != "" {
		r.Header.Set("X-API-Key", key)
	}
	return e.Send(r)
}

func queryBody(q string) string {
	b, _ := json.Marshal(map[string]string{"query": q})
	return string(b)
}

// Hostile documents are refused before validation does expensive work: anonymously
// with 401, with a key with BAD_USER_INPUT naming the budget. (The work itself is
// measured by BenchmarkHostileDocuments and bounded by querybudget's tests.)
func TestHostileDocuments(t *testing.T) {
	e := apptest.New(t, "sqlite", appOptions(), nil)
	tid := e.Tenant("hostile")
	_, key := e.Key(e.AdminToken, tid, apptest.AllScopes...)
	cases := []struct {
		name, key, body string
		status          int
		code, budget    string
	}{
		{"anonymous doubling fragments (1 KB)", "", queryBody(doublingFragments(24)), 401, "UNAUTHENTICATED", ""},
		{"anonymous 10,000 copies (110 KB)", "", queryBody(repeatField(10000)), 401, "UNAUTHENTICATED", ""},
		{"anonymous 600 copies (under 8 KiB)", "", queryBody(repeatField(600)), 401, "UNAUTHENTICATED", ""},
		{"anonymous 3,000 tokens of introspection", "", queryBody("{ " + strings.Repeat("__typename ", 2990) + "}"), 401, "UNAUTHENTICATED", ""},
		{"anonymous fragment cycle", "", queryBody(`query { ...A } fragment A on Query { ...A }`), 401, "UNAUTHENTICATED", ""},
		{"anonymous introspection", "", queryBody(`{ __schema { queryType { name } types { name kind } } }`), 200, "", ""},
		{"key doubling fragments (1 KB)", key, queryBody(doublingFragments(24)), 200, "BAD_USER_INPUT", "expanded"},
		{"key 10,000 copies (110 KB)", key, queryBody(repeatField(10000)), 200, "BAD_USER_INPUT", "fields"},
		{"key 20,000 copies (220 KB)", key, queryBody(repeatField(20000)), 200, "BAD_USER_INPUT", "tokens"},
		{"key 300 copies", key, queryBody(repeatField(300)), 200, "BAD_USER_INPUT", "pairs"},
		{"key fragments three deep", key, queryBody(`query { ...A } fragment A on Query { viewer { ...B } } fragment B on Viewer { isAdmin ...C } fragment C on Viewer { apiKey { id } }`), 200, "", ""},
		{"key 1 MiB of one field", key, queryBody(repeatField((1<<20)/11 - 10)), 200, "BAD_USER_INPUT", "tokens"},
		{"key 1 MiB string literal", key, queryBody(`{ node(id: "` + strings.Repeat("x", (1<<20)-64) + `") { id } }`), 200, "NOT_FOUND", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := post(e, tc.key, tc.body)
			if r.Status != tc.status || r.Code() != tc.code {
				t.Fatalf("HTTP %d %q, want %d %q: %.300s", r.Status, r.Code(), tc.status, tc.code, r.Raw)
			}
			if tc.budget != "" && r.Errors[0].Extensions["budget"] != tc.budget {
				t.Fatalf("budget %v, want %s: %.300s", r.Errors[0].Extensions["budget"], tc.budget, r.Raw)
			}
			if tc.status == 401 && r.Header.Get("WWW-Authenticate") == "" {
				t.Fatal("401 without WWW-Authenticate")
			}
			assertNoLeak(t, r.Raw)
		})
	}
	// A real cycle is refused by name; the server still answers normally afterwards.
	r := post(e, key, queryBody(`query { ...A } fragment A on Query { viewer { ...B } } fragment B on Viewer { apiKey { tenant { ...A } } }`))
	if r.Code() != "BAD_USER_INPUT" || r.Errors[0].Extensions["reason"] != "fragment_cycle" {
		t.Fatalf("cycle: %s", r.Raw)
	}
	e.MustDo(key, viewerQ, nil, &viewerResp{})
	// An anonymous GET with a long query string is refused before it is parsed.
	req, _ := http.NewRequest(http.MethodGet, e.Server.URL+"/query?query="+url.QueryEscape(repeatField(1000)), nil)
	if r := e.Send(req); r.Status != 401 || r.Header.Get("WWW-Authenticate") == "" {
		t.Fatalf("anonymous long GET: HTTP %d %s", r.Status, r.Raw)
	}
}

func repeatField(n int) string { return "{ " + strings.Repeat("__typename ", n) + "}" }

// Persisted queries are scoped to the key that stored them.
func TestPersistedQueriesPerKey(t *testing.T) {
	e := apptest.New(t, "sqlite", appOptions(), nil)
	tid := e.Tenant("apq")
	_, a := e.Key(e.AdminToken, tid, apptest.AllScopes...)
	_, b := e.Key(e.AdminToken, e.Tenant("apq-b"), apptest.AllScopes...)
	query := `{ apiKeys(where: {nameContains: "secret-project"}) { totalCount } }`
	sum := sha256.Sum256([]byte(query))
	ext := map[string]any{"persistedQuery": map[string]any{"version": 1, "sha256Hash": hex.EncodeToString(sum[:])}}
	send := func(key string, body map[string]any) *apptest.Response {
		raw, _ := json.Marshal(body)
		return post(e, key, string(raw))
	}
	if r := send(a, map[string]any{"query": query, "extensions": ext}); r.Code() != "" {
		t.Fatalf("register: %s", r.Raw)
	}
	if r := send(a, map[string]any{"extensions": ext}); r.Code() != "" || !strings.Contains(r.Raw, "totalCount") {
		t.Fatalf("A by hash: %s", r.Raw)
	}
	for name, key := range map[string]string{"another tenant's key": b, "the admin": e.AdminToken, "anonymous": ""} {
		if r := send(key, map[string]any{"extensions": ext}); !strings.Contains(r.Raw, "PersistedQueryNotFound") {
			t.Fatalf("%s ran A's stored query: %s", name, r.Raw)
		}
	}
	// Anonymous callers store nothing.
	intro := `{ __typename }`
	isum := sha256.Sum256([]byte(intro))
	iext := map[string]any{"persistedQuery": map[string]any{"version": 1, "sha256Hash": hex.EncodeToString(isum[:])}}
	if r := send("", map[string]any{"query": intro, "extensions": iext}); r.Code() != "" {
		t.Fatalf("anonymous with text: %s", r.Raw)
	}
	if r := send("", map[string]any{"extensions": iext}); !strings.Contains(r.Raw, "PersistedQueryNotFound") {
		t.Fatalf("anonymous stored a query: %s", r.Raw)
	}
}

// Control characters are refused in every free-text argument, on both databases,
// before anything is stored.
func TestControlCharactersRefused(t *testing.T) {
	forEachDialect(t, func(t *testing.T, e *apptest.Env) {
		tid := e.Tenant("ctl")
		_, key := e.Key(e.AdminToken, tid, apptest.AllScopes...)
		cases := []struct {
			name, query string
			vars        map[string]any
			field       string
		}{
			{"webhook description NUL", `mutation($d: String) { createWebhook(input: {url: "https://hooks.example.com/x", description: $d}) { secret } }`, map[string]any{"d": "a\x00b"}, "input"},
			{"webhook description literal escape", `mutation { createWebhook(input: {url: "https://hooks.example.com/x", description: "a\u0000b"}) { secret } }`, nil, "input"},
			{"key name bell", `mutation($n: String!) { createApiKey(input: {name: $n, scopes: []}) { secret } }`, map[string]any{"n": "k\x07"}, "input"},
			{"tenant rename escape", `mutation($id: ID!, $n: String) { updateTenant(id: $id, input: {name: $n}) { id } }`, map[string]any{"id": tid, "n": "x\x1b[31m"}, "input"},
			{"filter NUL", `query($s: String) { apiKeys(where: {nameContains: $s}) { totalCount } }`, map[string]any{"s": "\x00"}, "where"},
			{"C1 control", `mutation($n: String!) { createApiKey(input: {name: $n, scopes: []}) { secret } }`, map[string]any{"n": "k\u0085"}, "input"},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				r := e.Do(key, tc.query, tc.vars)
				if r.Code() != "BAD_USER_INPUT" || r.Errors[0].Extensions["field"] != tc.field {
					t.Fatalf("want BAD_USER_INPUT on %s: HTTP %d %s", tc.field, r.Status, r.Raw)
				}
				assertNoLeak(t, r.Raw)
			})
		}
		// Nothing of the refused calls was stored.
		var out struct{ Webhooks struct{ TotalCount int } }
		e.MustDo(key, `{ webhooks { totalCount } }`, nil, &out)
		var keys struct{ APIKeys struct{ TotalCount int } }
		e.MustDo(key, `{ apiKeys { totalCount } }`, nil, &keys)
		if out.Webhooks.TotalCount != 0 || keys.APIKeys.TotalCount != 1 {
			t.Fatalf("stored: %d webhooks, %d keys", out.Webhooks.TotalCount, keys.APIKeys.TotalCount)
		}
		// Tab and newlines stay allowed in descriptions.
		var w struct {
			CreateWebhook struct{ Webhook struct{ Description string } }
		}
		e.MustDo(key, `mutation($d: String) { createWebhook(input: {url: "https://93.184.216.34/hook", description: $d}) { webhook { description } } }`,
			map[string]any{"d": "line\tone\nline two"}, &w)
		if w.CreateWebhook.Webhook.Description != "line\tone\nline two" {
			t.Fatalf("description = %q", w.CreateWebhook.Webhook.Description)
		}
	})
}

// Protocol edges of GraphQL over HTTP.
func TestHTTPProtocolEdges(t *testing.T) {
	e := apptest.New(t, "sqlite", app.Options{}, func(c *config.Config) { c.MaxSubscriptionsPerKey = 1 })
	tid := e.Tenant("edges")
	_, key := e.Key(e.AdminToken, tid, apptest.AllScopes...)

	t.Run("401 names the scheme", func(t *testing.T) {
		r := post(e, "", queryBody(`{ viewer { isAdmin } }`))
		if r.Status != 401 || r.Header.Get("WWW-Authenticate") != `Bearer realm="latchkey"` {
			t.Fatalf("HTTP %d WWW-Authenticate %q", r.Status, r.Header.Get("WWW-Authenticate"))
		}
	})
	for _, m := range []string{http.MethodPut, http.MethodPatch, http.MethodDelete} {
		t.Run(m+" is 405", func(t *testing.T) {
			req, _ := http.NewRequest(m, e.Server.URL+"/query", strings.NewReader(queryBody(`{ viewer { isAdmin } }`)))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("X-API-Key", key)
			r := e.Send(req)
			if r.Status != 405 || r.Header.Get("Allow") != "GET, POST" {
				t.Fatalf("HTTP %d Allow %q: %s", r.Status, r.Header.Get("Allow"), r.Raw)
			}
		})
	}
	t.Run("subscription over POST is refused at once and holds no slot", func(t *testing.T) {
		start := time.Now()
		r := post(e, key, queryBody(`subscription { usageEvents { id } }`))
		if r.Status != 400 || r.Code() != "BAD_USER_INPUT" || r.Errors[0].Extensions["reason"] != "subscription_over_http" {
			t.Fatalf("HTTP %d: %s", r.Status, r.Raw)
		}
		if time.Since(start) > 5*time.Second {
			t.Fatal("the POST hung")
		}
		// The key's only subscription slot is free.
		c, err := e.DialWS(apptest.TransportWS, map[string]any{"apiKey": key}, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.Subscribe("1", `subscription { usageStats { requests } }`, nil); err != nil {
			t.Fatal(err)
		}
		m, err := c.Next(5 * time.Second)
		if err != nil || m.Type != "next" {
			t.Fatalf("WebSocket subscription: %v %+v", err, m)
		}
	})
}

// Costs: nodes(ids) costs one per id, and an operation dearer than the key's whole
// limit is BAD_USER_INPUT (no Retry-After could ever admit it) and charges nothing.
func TestOperationCosts(t *testing.T) {
	e := apptest.New(t, "sqlite", appOptions(), nil)
	tid := e.Tenant("costs")
	_, full := e.Key(e.AdminToken, tid, apptest.AllScopes...)
	limited := func(rate int) string {
		var out struct{ CreateApiKey struct{ Secret string } }
		e.MustDo(full, `mutation($r: Int) { createApiKey(input: {name: "c", scopes: ["keys:read"], rateLimit: $r, rateLimitWindowSeconds: 3600}) { secret } }`, map[string]any{"r": rate}, &out)
		return out.CreateApiKey.Secret
	}
	ids := make([]string, 100)
	for i := range ids {
		ids[i] = fmt.Sprintf("key_%026d", i)
	}
	nodesQ := `query($ids: [ID!]!) { nodes(ids: $ids) { id } }`

	key := limited(500)
	r := e.Do(key, nodesQ, map[string]any{"ids": ids})
	if r.Status != 200 || r.Header.Get("X-RateLimit-Remaining") != "400" {
		t.Fatalf("nodes of 100 ids: HTTP %d remaining %q: %.200s", r.Status, r.Header.Get("X-RateLimit-Remaining"), r.Raw)
	}

	small := limited(50)
	r = e.Do(small, nodesQ, map[string]any{"ids": ids})
	if r.Status != 400 || r.Code() != "BAD_USER_INPUT" || r.Errors[0].Extensions["reason"] != "cost_exceeds_limit" || r.Header.Get("Retry-After") != "" {
		t.Fatalf("cost above the limit: HTTP %d Retry-After %q: %s", r.Status, r.Header.Get("Retry-After"), r.Raw)
	}
	r = e.Do(small, viewerQ, nil)
	if r.Header.Get("X-RateLimit-Remaining") != "49" {
		t.Fatalf("the refused operation was charged: remaining %q", r.Header.Get("X-RateLimit-Remaining"))
	}
}

// The tenant behind a key is tenant:read data on every path: node(id), viewer.tenant
// and apiKey.tenant alike; its id is not.
func TestTenantNeedsTenantRead(t *testing.T) {
	e := apptest.New(t, "sqlite", appOptions(), nil)
	tid := e.Tenant("tread")
	_, full := e.Key(e.AdminToken, tid, apptest.AllScopes...)
	_, usageOnly := e.Key(full, "", "usage:read")
	for _, q := range []string{
		`{ node(id: "` + tid + `") { id } }`,
		`{ viewer { tenant { name } } }`,
		`{ viewer { apiKey { tenant { name } } } }`,
	} {
		if r := e.Do(usageOnly, q, nil); r.Code() != "FORBIDDEN" {
			t.Fatalf("%s: %s", q, r.Raw)
		}
	}
	var v struct{ Viewer struct{ TenantID string } }
	e.MustDo(usageOnly, `{ viewer { tenantID } }`, nil, &v)
	if v.Viewer.TenantID != tid {
		t.Fatalf("tenantID = %q", v.Viewer.TenantID)
	}
	var w struct {
		Viewer struct{ Tenant struct{ Name string } }
	}
	e.MustDo(full, `{ viewer { tenant { name } apiKey { tenant { id } } } }`, nil, &w)
}

// An anonymous Range header of thousands of ranges on a console asset gets the file
// once (200), not a multipart body of every range: console.css (13 KB) with 6,000
// one-byte ranges in a 24 KB header was a 206 of some 880 KB.
func TestConsoleAssetManyRanges(t *testing.T) {
	e := apptest.New(t, "sqlite", app.Options{}, nil)
	page := e.Send(mustRequest(t, e.Server.URL+"/console"))
	j := strings.Index(page.Raw, "/console.css")
	i := strings.LastIndex(page.Raw[:max(j, 0)], "/console/assets/")
	if page.Status != 200 || i < 0 || j < 0 {
		t.Fatalf("console page: HTTP %d", page.Status)
	}
	url := e.Server.URL + page.Raw[i:j] + "/console.css"
	whole := e.Send(mustRequest(t, url))
	req := mustRequest(t, url)
	req.Header.Set("Range", "bytes=0-0"+strings.Repeat(",1-1", 6000))
	r := e.Send(req)
	if whole.Status != 200 || r.Status != 200 || r.Raw != whole.Raw || len(r.Raw) > 20000 {
		t.Fatalf("6,000 ranges: HTTP %d, %d bytes (%s); whole file %d bytes", r.Status, len(r.Raw), r.Header.Get("Content-Type"), len(whole.Raw))
	}
	req = mustRequest(t, url)
	req.Header.Set("Range", "bytes=0-9")
	if r := e.Send(req); r.Status != 206 || r.Raw != whole.Raw[:10] {
		t.Fatalf("one range: HTTP %d %q", r.Status, r.Raw)
	}
}

func mustRequest(t *testing.T, url string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	return req
}
