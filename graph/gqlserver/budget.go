package gqlserver

import (
	"context"

	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/handler/lru"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"
	"github.com/vektah/gqlparser/v2/parser"
	"github.com/vektah/gqlparser/v2/validator"
	"github.com/vektah/gqlparser/v2/validator/rules"

	"github.com/latchkey/latchkey/graph/gqlerr"
	"github.com/latchkey/latchkey/graph/querybudget"
	"github.com/latchkey/latchkey/internal/domain/keys"
	"github.com/latchkey/latchkey/internal/platform/fault"
	"github.com/latchkey/latchkey/internal/platform/reqctx"
	"github.com/latchkey/latchkey/internal/platform/viewer"
)

// Document budgets. Anonymous callers may only introspect, and get a far smaller budget
// than any key: an anonymous request costs no more than the cheapest authenticated one.
var (
	// AnonymousBudget bounds documents sent without a credential. GraphiQL's
	// introspection query uses about a fifth of it.
	AnonymousBudget = querybudget.Budget{Tokens: 2000, Fields: 400, Spreads: 50, Expanded: 2000, Pairs: 2000}
	// KeyBudget bounds documents of authenticated callers: far above what a dashboard
	// sends, far below what makes validation or execution expensive.
	KeyBudget = querybudget.Budget{Tokens: 15000, Fields: 5000, Spreads: 500, Expanded: 20000, Pairs: 20000}
)

// MaxAnonymousBodyBytes bounds the body (or GET query string) of a request without a
// credential: it is refused with 401 before it is read further or parsed.
const MaxAnonymousBodyBytes = 8 << 10

// docBudget is the gqlgen extension that bounds every document before gqlgen parses and
// validates it. It runs after automatic persisted queries have resolved the text. A
// document it has not seen is lexed (token budget), parsed and measured
// (querybudget.Analyze: fields, spreads, expanded size, same-name pairs, fragment
// cycles) and, within budget, validated here and put into the query cache, where
// gqlgen then finds it. Documents already in the cache were checked when they entered it.
// A document over budget is refused with BAD_USER_INPUT (reason "document_budget"), or
// 401 UNAUTHENTICATED for an anonymous caller.
type docBudget struct {
	cache *docCache
	es    graphql.ExecutableSchema
	// refused counts anonymous refusals (metrics).
	refused func(*keys.AuthError)
}

var _ interface {
	graphql.HandlerExtension
	graphql.OperationParameterMutator
} = &docBudget{}

func (*docBudget) ExtensionName() string { return "DocumentBudget" }

func (d *docBudget) Validate(es graphql.ExecutableSchema) error {
	d.es = es
	return nil
}

// validationRules are gqlgen's default rules without "did you mean" suggestions, which
// cost a string distance per unknown name and tell nothing the schema does not.
func validationRules() *rules.Rules {
	r := rules.NewDefaultRules()
	r.RemoveRule("FieldsOnCorrectType")
	r.AddRule(rules.FieldsOnCorrectTypeRuleWithoutSuggestions.Name, rules.FieldsOnCorrectTypeRuleWithoutSuggestions.RuleFunc)
	r.RemoveRule("ScalarLeafs")
	r.AddRule(rules.ScalarLeafsRuleWithoutSuggestions.Name, rules.ScalarLeafsRuleWithoutSuggestions.RuleFunc)
	return r
}

func (d *docBudget) MutateOperationParameters(ctx context.Context, p *graphql.RawParams) *gqlerror.Error {
	if p.Query == "" {
		return nil // gqlgen answers "no operation provided"
	}
	if _, ok := d.cache.Get(ctx, p.Query); ok {
		return nil
	}
	anonymous := viewer.FromContext(ctx) == nil
	b := KeyBudget
	if anonymous {
		b = AnonymousBudget
	}
	if n := querybudget.CountTokens(p.Query, b.Tokens); n > b.Tokens {
		return d.refuse(ctx, anonymous, &querybudget.Exceeded{What: "tokens", Limit: b.Tokens})
	}
	doc, err := parser.ParseQuery(&ast.Source{Input: p.Query})
	if err != nil {
		return nil // within the token budget: gqlgen parses it again and reports the error
	}
	if _, ex := querybudget.Analyze(doc, b); ex != nil {
		return d.refuse(ctx, anonymous, ex)
	}
	if errs := validator.ValidateWithRules(d.es.Schema(), doc, validationRules()); len(errs) > 0 {
		return nil // gqlgen validates it again (within budget) and reports every error
	}
	d.cache.Add(ctx, p.Query, doc)
	return nil
}

func (d *docBudget) refuse(ctx context.Context, anonymous bool, ex *querybudget.Exceeded) *gqlerror.Error {
	if anonymous {
		d.refused(keys.ErrMissing)
		e := Unauthenticated()
		reqctx.Refuse(ctx, e)
		return gqlerr.From(e)
	}
	e := fault.New(fault.BadUserInput, ex.Error()).With("reason", "document_budget").With("budget", ex.What)
	if ex.What == "cycle" {
		e = fault.New(fault.BadUserInput, ex.Error()).With("reason", "fragment_cycle")
	}
	return gqlerr.From(e)
}

// docCache is gqlgen's cache of parsed and validated documents, with anonymous
// documents in a small cache of their own so that anonymous traffic cannot evict what
// keys use.
type docCache struct {
	keys, anonymous *lru.LRU[*ast.QueryDocument]
}

func newDocCache(size int) *docCache {
	return &docCache{keys: lru.New[*ast.QueryDocument](size), anonymous: lru.New[*ast.QueryDocument](50)}
}

func (c *docCache) Get(ctx context.Context, query string) (*ast.QueryDocument, bool) {
	if d, ok := c.keys.Get(ctx, query); ok {
		return d, true
	}
	return c.anonymous.Get(ctx, query)
}

func (c *docCache) Add(ctx context.Context, query string, doc *ast.QueryDocument) {
	if viewer.FromContext(ctx) == nil {
		c.anonymous.Add(ctx, query, doc)
		return
	}
	c.keys.Add(ctx, query, doc)
}

// apqCache holds automatic persisted queries per calling key, so that one caller can
// neither run another's stored text by its hash nor learn whether a text was sent.
// Anonymous callers store nothing.
type apqCache struct{ lru *lru.LRU[string] }

func apqScope(ctx context.Context, hash string) (string, bool) {
	v := viewer.FromContext(ctx)
	switch {
	case v == nil:
		return "", false
	case v.APIKeyID != "":
		return v.APIKeyID + ":" + hash, true
	default:
		return "admin-token:" + hash, true
	}
}

func (c apqCache) Get(ctx context.Context, hash string) (string, bool) {
	k, ok := apqScope(ctx, hash)
	if !ok {
		return "", false
	}
	return c.lru.Get(ctx, k)
}

func (c apqCache) Add(ctx context.Context, hash, query string) {
	if k, ok := apqScope(ctx, hash); ok {
		c.lru.Add(ctx, k, query)
	}
}
