// Package querybudget bounds the work a GraphQL document can cause before anything
// expensive looks at it.
//
// gqlparser's validation is not linear in the size of a document: the rule
// OverlappingFieldsCanBeMerged compares every pair of fields that share a response name
// (10,000 copies of `__typename` are 50 million comparisons); gqlgen's executor merges
// the fields of a selection set by scanning the names collected so far (quadratic in
// the width of a set); and walks that expand fragment spreads without memoizing them
// (depth, complexity, the executor's field collection) are exponential in the nesting
// of fragments that spread one another twice.
// A Budget caps each of these quantities; Analyze measures them in time linear in the
// size of the document (fragments are memoized and the expansion stops at the budget),
// so a document over budget is refused before validation has done any of that work.
//
// The same package computes the depth and the complexity of an operation with every
// fragment's figure memoized, so that those walks are linear as well.
package querybudget

import (
	"fmt"

	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/lexer"
)

// Budget caps what one document may contain. A zero field means no limit.
type Budget struct {
	// Tokens is the most lexical tokens (names, punctuators, values) in the document.
	Tokens int
	// Fields is the most field selections written in the document.
	Fields int
	// Spreads is the most fragment spreads (`...Name`) written in the document.
	Spreads int
	// Expanded is the most selections (fields, inline fragments, spreads) of all
	// operations and fragment definitions together once every fragment spread is
	// replaced by its fragment: the size of what validation and execution walk.
	Expanded int
	// Pairs is the most pairs of fields within one merged selection set, summed over
	// all of them: validation compares the fields that share a response name pairwise,
	// and gqlgen's executor merges each field of a set against the names before it.
	Pairs int
}

// Stats are the measured quantities of a document. Visits counts the selections the
// analysis itself visited, a deterministic measure of its own work.
type Stats struct {
	Tokens, Fields, Spreads, Fragments, Expanded, Pairs int
	Visits                                              int
}

// Exceeded reports the first quantity over its budget.
type Exceeded struct {
	// What is "tokens", "fields", "spreads", "expanded" or "pairs", or "cycle" for a
	// fragment that spreads itself (Limit is then 0 and Fragment names it).
	What     string
	Limit    int
	Fragment string
}

func (e *Exceeded) Error() string {
	if e.What == "cycle" {
		return fmt.Sprintf("fragment %s spreads itself", e.Fragment)
	}
	return fmt.Sprintf("document exceeds the limit of %d %s", e.Limit, e.describe())
}

func (e *Exceeded) describe() string {
	switch e.What {
	case "expanded":
		return "selections once fragments are expanded"
	case "pairs":
		return "same-name field pairs"
	case "spreads":
		return "fragment spreads"
	}
	return e.What
}

// CountTokens lexes src and returns its number of tokens, stopping at limit+1 (a limit
// of 0 or less counts them all). A lexical error ends the count: the parser reports it.
func CountTokens(src string, limit int) int {
	l := lexer.New(&ast.Source{Input: src})
	n := 0
	for limit <= 0 || n <= limit {
		tok, err := l.ReadToken()
		if err != nil || tok.Kind == lexer.EOF {
			break
		}
		n++
	}
	return n
}

// Analyze measures doc against b. It returns the measured stats, and an *Exceeded for the
// first quantity over budget (measuring stops there). Its own work (Stats.Visits) is
// at most twice the selections written in doc plus b.Expanded (when b.Expanded is
// set), whatever the shape of the document. A fragment that
// spreads itself is refused (What "cycle"); unknown fragments, which validation reports,
// count as empty.
func Analyze(doc *ast.QueryDocument, b Budget) (Stats, *Exceeded) {
	a := &analysis{b: b, frags: make(map[string]*ast.FragmentDefinition, len(doc.Fragments)),
		size: map[string]int{}}
	for _, f := range doc.Fragments {
		if _, dup := a.frags[f.Name]; !dup {
			a.frags[f.Name] = f
		}
	}
	a.st.Fragments = len(doc.Fragments)
	// 1. What is written: fields and spreads, one visit each.
	for _, op := range doc.Operations {
		a.count(op.SelectionSet)
	}
	for _, f := range doc.Fragments {
		a.count(f.SelectionSet)
	}
	if ex := a.over("fields", a.st.Fields, b.Fields); ex != nil {
		return a.st, ex
	}
	if ex := a.over("spreads", a.st.Spreads, b.Spreads); ex != nil {
		return a.st, ex
	}
	// 2. The expanded size, each fragment's memoized: validation walks every
	// operation and every fragment definition with the fragments they reach.
	for _, op := range doc.Operations {
		a.st.Expanded = satAdd(a.st.Expanded, a.expanded(op.SelectionSet))
	}
	for _, f := range doc.Fragments {
		a.st.Expanded = satAdd(a.st.Expanded, a.fragSize(f.Name))
	}
	if a.cycle != "" {
		return a.st, &Exceeded{What: "cycle", Fragment: a.cycle}
	}
	if ex := a.over("expanded", a.st.Expanded, b.Expanded); ex != nil {
		return a.st, ex
	}
	// 3. Same-name pairs of every merged selection set. The expansion is bounded by
	// step 2, so this walk is too.
	for _, op := range doc.Operations {
		a.pairs([]ast.SelectionSet{op.SelectionSet})
	}
	for _, f := range doc.Fragments {
		a.pairs([]ast.SelectionSet{f.SelectionSet})
	}
	return a.st, a.over("pairs", a.st.Pairs, b.Pairs)
}

type analysis struct {
	b     Budget
	st    Stats
	frags map[string]*ast.FragmentDefinition
	size  map[string]int // expanded size of each fragment; -1 while being computed
	cycle string         // a fragment found to spread itself
}

func (a *analysis) over(what string, n, limit int) *Exceeded {
	if limit > 0 && n > limit {
		return &Exceeded{What: what, Limit: limit}
	}
	return nil
}

func (a *analysis) count(set ast.SelectionSet) {
	for _, sel := range set {
		a.st.Visits++
		switch s := sel.(type) {
		case *ast.Field:
			a.st.Fields++
			a.count(s.SelectionSet)
		case *ast.InlineFragment:
			a.count(s.SelectionSet)
		case *ast.FragmentSpread:
			a.st.Spreads++
		}
	}
}

// expanded returns the number of selections of set with spreads replaced by their
// fragments (a spread counts itself and its fragment's selections).
func (a *analysis) expanded(set ast.SelectionSet) int {
	n := 0
	for _, sel := range set {
		a.st.Visits++
		n = satAdd(n, 1)
		switch s := sel.(type) {
		case *ast.Field:
			n = satAdd(n, a.expanded(s.SelectionSet))
		case *ast.InlineFragment:
			n = satAdd(n, a.expanded(s.SelectionSet))
		case *ast.FragmentSpread:
			n = satAdd(n, a.fragSize(s.Name))
		}
	}
	return n
}

// fragSize is the memoized expanded size of the fragment name (0 when it is unknown
// or part of a cycle).
func (a *analysis) fragSize(name string) int {
	if n, ok := a.size[name]; ok {
		if n < 0 && a.cycle == "" {
			a.cycle = name
		}
		return max(n, 0)
	}
	f := a.frags[name]
	if f == nil {
		return 0
	}
	a.size[name] = -1 // reached again while being computed: a cycle
	n := a.expanded(f.SelectionSet)
	a.size[name] = n
	return n
}

// pairs merges the selection sets (fields grouped by response name across inline
// fragments and spreads, as validation and execution merge them), adds the pairs of
// fields of the merged set to the stats, and recurses into each group's merged
// sub-selections. It
// stops once the pair budget is exceeded. Analyze calls it only on documents without
// fragment cycles, so the expansion ends.
func (a *analysis) pairs(sets []ast.SelectionSet) {
	if a.over("pairs", a.st.Pairs, a.b.Pairs) != nil {
		return
	}
	groups := map[string][]*ast.Field{}
	var order []string
	var collect func(set ast.SelectionSet)
	collect = func(set ast.SelectionSet) {
		for _, sel := range set {
			a.st.Visits++
			switch s := sel.(type) {
			case *ast.Field:
				name := s.Alias
				if name == "" {
					name = s.Name
				}
				if _, seen := groups[name]; !seen {
					order = append(order, name)
				}
				groups[name] = append(groups[name], s)
			case *ast.InlineFragment:
				collect(s.SelectionSet)
			case *ast.FragmentSpread:
				if f := a.frags[s.Name]; f != nil {
					collect(f.SelectionSet)
				}
			}
		}
	}
	n := 0
	for _, set := range sets {
		collect(set)
	}
	for _, g := range groups {
		n += len(g)
	}
	a.st.Pairs = satAdd(a.st.Pairs, n*(n-1)/2)
	for _, name := range order {
		g := groups[name]
		var subs []ast.SelectionSet
		for _, f := range g {
			if len(f.SelectionSet) > 0 {
				subs = append(subs, f.SelectionSet)
			}
		}
		if len(subs) > 0 {
			a.pairs(subs)
		}
	}
}

// satAdd adds non-negative counts without overflowing.
func satAdd(x, y int) int {
	if s := x + y; s >= x {
		return s
	}
	return int(^uint(0) >> 1)
}
