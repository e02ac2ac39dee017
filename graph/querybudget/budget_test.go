package querybudget

import (
	"fmt"
	"strings"
	"testing"

	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/parser"
)

// budget is the budget of the tests: the authenticated budget of the server.
var budget = Budget{Tokens: 15000, Fields: 5000, Spreads: 500, Expanded: 20000, Pairs: 20000}

// doubling is the attack of the hardening report: each fragment spreads the previous
// one twice, so fragment n expands to 2^n fields in about 40 bytes more.
func doubling(n int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "query { ...F%d }\nfragment F0 on Query { __typename }\n", n)
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&b, "fragment F%d on Query { ...F%d ...F%d }\n", i, i-1, i-1)
	}
	return b.String()
}

func repeat(field string, n int) string { return "{ " + strings.Repeat(field+" ", n) + "}" }

// fragmentsOfSame spreads k fragments that each select the same field m times:
// validation compares the fragments' fields pairwise.
func fragmentsOfSame(k, m int) string {
	var b strings.Builder
	b.WriteString("query {")
	for i := 0; i < k; i++ {
		fmt.Fprintf(&b, " ...G%d", i)
	}
	b.WriteString(" }\n")
	for i := 0; i < k; i++ {
		fmt.Fprintf(&b, "fragment G%d on Query { %s}\n", i, strings.Repeat("__typename ", m))
	}
	return b.String()
}

func parse(t testing.TB, q string) *ast.QueryDocument {
	t.Helper()
	doc, err := parser.ParseQuery(&ast.Source{Input: q})
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	return doc
}

// selections counts the selections written in doc (what the work bound is stated in).
func selections(doc *ast.QueryDocument) int {
	var n func(ast.SelectionSet) int
	n = func(set ast.SelectionSet) int {
		c := 0
		for _, sel := range set {
			c++
			switch s := sel.(type) {
			case *ast.Field:
				c += n(s.SelectionSet)
			case *ast.InlineFragment:
				c += n(s.SelectionSet)
			}
		}
		return c
	}
	total := 0
	for _, op := range doc.Operations {
		total += n(op.SelectionSet)
	}
	for _, f := range doc.Fragments {
		total += n(f.SelectionSet)
	}
	return total
}

func TestAnalyze(t *testing.T) {
	cases := []struct {
		name  string
		query string
		want  string // the budget exceeded, "" when within
	}{
		{"plain query", `{ viewer { apiKey { id name } tenant { slug } } }`, ""},
		{"fragments used twice", `query { viewer { ...K } a: viewer { ...K } } fragment K on Viewer { apiKey { id } scopes }`, ""},
		{"doubling fragments 5", doubling(5), ""},
		{"doubling fragments 10 (1k copies of one field)", doubling(10), "pairs"},
		{"doubling fragments 24 (16M expanded)", doubling(24), "expanded"},
		{"doubling fragments 60 (saturates)", doubling(60), "expanded"},
		{"10,000 copies of a field", repeat("__typename", 10000), "fields"},
		{"250 copies of a field", repeat("__typename", 250), "pairs"},
		{"100 copies of a field", repeat("__typename", 100), ""},
		{"150 aliased fields", "{ " + aliased(150) + "}", ""},
		{"4,000 aliased fields in one set", "{ " + aliased(4000) + "}", "pairs"},
		{"1,000 fields in 50 sets of 20", "{ " + aliasedSets(50, 19) + "}", ""},
		{"fragments of the same field", fragmentsOfSame(40, 40), "pairs"},
		{"too many spreads", "query { " + strings.Repeat("...A ", 600) + "} fragment A on Query { __typename }", "spreads"},
		{"fragment cycle", `query { ...A } fragment A on Query { ...B } fragment B on Query { viewer { ...A } }`, "cycle"},
		{"self spread", `query { ...A } fragment A on Query { ...A }`, "cycle"},
		{"unknown fragments expand to nothing", `query { ...Nope ...Nope }`, ""},
		{"spreads of unknown fragments, doubled", doublingUnknown(40), "expanded"},
		{"nested same-name sub-selections merge", `{ viewer { apiKey { id } } viewer { apiKey { id } } }`, ""},
		{"merged sub-selections of 400 copies", "{ " + strings.Repeat("viewer { id } ", 190) + strings.Repeat("v: viewer { id } ", 10) + "}", "pairs"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			doc := parse(t, tc.query)
			st, ex := Analyze(doc, budget)
			got := ""
			if ex != nil {
				got = ex.What
				if ex.Error() == "" {
					t.Fatal("empty error text")
				}
			}
			if got != tc.want {
				t.Fatalf("exceeded %q, want %q (stats %+v)", got, tc.want, st)
			}
			// The analysis's own work is linear whatever the shape.
			if bound := 2*selections(doc) + budget.Expanded; st.Visits > bound {
				t.Fatalf("visits %d > bound %d", st.Visits, bound)
			}
		})
	}
}

func aliased(n int) string {
	var b strings.Builder
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "a%d: __typename ", i)
	}
	return b.String()
}

func aliasedSets(sets, fields int) string {
	var b strings.Builder
	for i := 0; i < sets; i++ {
		fmt.Fprintf(&b, "s%d: viewer { %s} ", i, aliased(fields))
	}
	return b.String()
}

// doublingUnknown is doubling whose leaves spread a fragment that does not exist: no
// field anywhere, yet 2^n spreads once expanded.
func doublingUnknown(n int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "query { ...F%d }\nfragment F0 on Query { ...Missing }\n", n)
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&b, "fragment F%d on Query { ...F%d ...F%d }\n", i, i-1, i-1)
	}
	return b.String()
}

func TestAnalyzeStats(t *testing.T) {
	st, ex := Analyze(parse(t, doubling(3)), budget)
	if ex != nil {
		t.Fatal(ex)
	}
	// Expanded: F0 = 1 selection, Fn = 2·(1 + Fn-1): F1 4, F2 10, F3 22; the operation
	// 1 + 22, the fragment definitions 1 + 4 + 10 + 22. Pairs: the operation and F3
	// merge 8 __typename (28 pairs each), F2 4 (6), F1 2 (1).
	want := Stats{Fields: 1, Spreads: 7, Fragments: 4, Expanded: 23 + 37, Pairs: 28 + 28 + 6 + 1}
	st.Visits, st.Tokens = 0, 0
	if st != want {
		t.Fatalf("stats %+v, want %+v", st, want)
	}
}

func TestCountTokens(t *testing.T) {
	for _, tc := range []struct {
		src   string
		limit int
		want  int
	}{
		{`{ viewer { id } }`, 0, 6},
		{`{ viewer { id } }`, 3, 4}, // stops at limit+1
		{`query Q($a: Int = 1) { x(a: $a) }`, 0, 19},
		{`# a comment is a token`, 0, 1},
		{`{ "unterminated`, 0, 1},
	} {
		if got := CountTokens(tc.src, tc.limit); got != tc.want {
			t.Errorf("CountTokens(%q, %d) = %d, want %d", tc.src, tc.limit, got, tc.want)
		}
	}
}

// FuzzAnalyze checks, for any parseable document, that the analysis never panics and
// that its work stays within its linear bound.
func FuzzAnalyze(f *testing.F) {
	for _, s := range []string{doubling(8), repeat("a", 50), fragmentsOfSame(5, 5), `{ a { b { ...F } } } fragment F on T { c ...on U { d } }`,
		`query { ...A } fragment A on Query { ...A }`, doublingUnknown(6)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, src string) {
		if CountTokens(src, budget.Tokens) > budget.Tokens {
			return
		}
		doc, err := parser.ParseQuery(&ast.Source{Input: src})
		if err != nil {
			return
		}
		st, _ := Analyze(doc, budget)
		if bound := 2*selections(doc) + budget.Expanded; st.Visits > bound {
			t.Fatalf("visits %d > bound %d for %q", st.Visits, bound, src)
		}
	})
}
