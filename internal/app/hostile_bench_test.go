package app_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/latchkey/latchkey/internal/app/apptest"
	"github.com/latchkey/latchkey/internal/platform/config"
)

// hostileBodies are request bodies of the shapes an attacker sends, each about 1 MiB
// unless named otherwise, and documents at the edges of the document budget. %d is
// replaced by the iteration number (as a comment), so that every request is a new
// document that misses the query cache, as an attacker's would.
func hostileBodies() []struct{ name, query string } {
	mib := 1 << 20
	return []struct{ name, query string }{
		{"baseline typename", `{ __typename } # %d`},
		{"1MiB same field", "{ " + strings.Repeat("__typename ", mib/11) + "} # %d"},
		{"1MiB aliased fields", "{ " + aliasedFields(mib/16) + "} # %d"},
		{"1MiB string literal", `{ node(id: "` + strings.Repeat("x", mib-40) + `") { id } } # %d`},
		{"1MiB comment", "{ __typename } #" + strings.Repeat("x", mib-40) + " %d"},
		{"1MiB nested braces", strings.Repeat("{ viewer ", mib/20) + "# %d"},
		{"doubling fragments x24", doublingFragments(24) + "# %d"},
		{"edge 199 same fields", "{ " + strings.Repeat("__typename ", 199) + "} # %d"},
		{"edge 199 aliased fields", "{ " + aliasedFields(199) + "} # %d"},
		{"edge 4900 fields in sets", aliasedSets(35, 139) + "# %d"},
		{"edge expanded 19k", expandedEdge() + "# %d"},
	}
}

func aliasedFields(n int) string {
	var b strings.Builder
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "a%d: __typename ", i)
	}
	return b.String()
}

func doublingFragments(n int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "query { ...F%d }\nfragment F0 on Query { __typename }\n", n)
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&b, "fragment F%d on Query { ...F%d ...F%d }\n", i, i-1, i-1)
	}
	return b.String()
}

// aliasedSets selects `viewer` sets times under aliases, each with fields aliased
// __typename fields.
func aliasedSets(sets, fields int) string {
	var b strings.Builder
	b.WriteString("{ ")
	for i := 0; i < sets; i++ {
		fmt.Fprintf(&b, "s%d: viewer { %s} ", i, aliasedFields(fields))
	}
	b.WriteString("}")
	return b.String()
}

// expandedEdge is a document whose fragments expand to just under the budget of
// expanded selections: a fragment of 4 × 10 aliased fields spread under 450 aliases.
func expandedEdge() string {
	var b strings.Builder
	b.WriteString("query { ")
	for i := 0; i < 450; i++ {
		fmt.Fprintf(&b, "v%d: viewer { ...E } ", i)
	}
	b.WriteString("}\nfragment E on Viewer { ")
	for i := 0; i < 4; i++ {
		fmt.Fprintf(&b, "k%d: apiKey { %s } ", i, strings.Replace(aliasedFields(9), "__typename", "id", -1))
	}
	b.WriteString("}\n")
	return b.String()
}

// BenchmarkHostileDocuments sends each hostile body once per iteration, anonymously and
// with the admin credential, through the real handler (no network: the recorder of the
// handler measures the server's work alone). Compare each ns/op with "baseline
// typename": a ratio, not an absolute figure. `go test -run '^$' -bench Hostile ./internal/app`
func BenchmarkHostileDocuments(b *testing.B) {
	e := apptest.New(b, "sqlite", appOptions(), func(c *config.Config) { c.MaxBodyBytes = 2 << 20 })
	for _, who := range []string{"anonymous", "admin"} {
		key := ""
		if who == "admin" {
			key = e.AdminToken
		}
		for _, h := range hostileBodies() {
			b.Run(who+"/"+h.name, func(b *testing.B) {
				b.ReportAllocs()
				for i := 0; i < b.N; i++ {
					b.StopTimer() // building the body is the client's work
					body, _ := json.Marshal(map[string]string{"query": fmt.Sprintf(h.query, i)})
					b.StartTimer()
					req := httptest.NewRequest("POST", "/query", bytes.NewReader(body))
					req.Header.Set("Content-Type", "application/json")
					if key != "" {
						req.Header.Set("X-API-Key", key)
					}
					w := httptest.NewRecorder()
					e.App.Handler.ServeHTTP(w, req)
					if w.Code >= 500 {
						b.Fatalf("HTTP %d: %.300s", w.Code, w.Body.String())
					}
				}
			})
		}
	}
}
