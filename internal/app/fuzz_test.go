package app_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/latchkey/latchkey/internal/app/apptest"
)

// FuzzGraphQLEndpoint sends random bodies, documents, methods and headers to /query
// through the real handler, anonymously and with a key. Whatever arrives, the server
// answers with a client error or a GraphQL response: never a 5xx, never a panic, never
// an internal detail. (The work a document may cause is bounded by the document budget,
// whose own fuzz test, querybudget.FuzzAnalyze, checks the work counter.)
func FuzzGraphQLEndpoint(f *testing.F) {
	e := apptest.New(f, "sqlite", appOptions(), nil)
	tid := e.Tenant("fuzz")
	_, key := e.Key(e.AdminToken, tid, apptest.AllScopes...)
	for _, s := range []string{
		`{ viewer { isAdmin } }`, `{ __schema { types { name } } }`, doublingFragments(12), repeatField(300),
		`query($n: Int) { apiKeys(first: $n) { edges { node { id name } } } }`,
		`mutation { createApiKey(input: {name: "x", scopes: ["keys:read"]}) { secret } }`,
		`subscription { usageEvents { id } }`, `{ node(id: "ten_x") { id } }`, `query { ...A } fragment A on Query { ...A }`,
		`{ nodes(ids: ["a","b"]) { id } }`, "{ viewer { tenant { name \u0000 } } }",
	} {
		f.Add(uint8(0), queryBody(s))
		f.Add(uint8(1), queryBody(s))
	}
	f.Add(uint8(2), `{"query":`)
	f.Add(uint8(3), `[{"query":"{ viewer { isAdmin } }"}]`)
	f.Add(uint8(4), `{"query":"query($w: ApiKeyWhereInput) { apiKeys(where: $w) { totalCount } }","variables":{"w":{"not":{"not":{"name":"x"}}}}}`)
	f.Fuzz(func(t *testing.T, mode uint8, body string) {
		method := http.MethodPost
		switch mode % 8 {
		case 5:
			method = http.MethodGet
		case 6:
			method = http.MethodPut
		}
		target := "/query"
		var reader *strings.Reader
		if method == http.MethodGet {
			var p struct {
				Query string `json:"query"`
			}
			_ = json.Unmarshal([]byte(body), &p)
			target += "?query=" + url.QueryEscape(p.Query) // control characters too: the request must stay valid
			reader = strings.NewReader("")
		} else {
			reader = strings.NewReader(body)
		}
		req := httptest.NewRequest(method, target, reader)
		switch mode % 4 {
		case 0:
		case 1, 2:
			req.Header.Set("X-API-Key", key)
		case 3:
			req.Header.Set("Authorization", "Bearer "+body[:min(len(body), 80)])
		}
		ct := "application/json"
		if mode&0x10 != 0 {
			ct = "application/graphql"
		}
		req.Header.Set("Content-Type", ct)
		if mode&0x20 != 0 {
			req.Header.Set("Accept", "application/graphql-response+json")
		}
		w := httptest.NewRecorder()
		done := make(chan struct{})
		go func() { defer close(done); e.App.Handler.ServeHTTP(w, req) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("no answer within 10 s for mode %d body %q", mode, body)
		}
		if w.Code >= 500 {
			t.Fatalf("HTTP %d for %q: %s", w.Code, body, w.Body.String())
		}
		if strings.Contains(w.Header().Get("Content-Type"), "json") && !json.Valid(w.Body.Bytes()) {
			t.Fatalf("invalid JSON answer for %q: %s", body, w.Body.String())
		}
		assertNoLeak(t, w.Body.String())
	})
}
