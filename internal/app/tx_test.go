package app_test

import (
	"testing"

	"github.com/latchkey/latchkey/internal/app/apptest"
)

// Each mutation field runs in its own transaction, committed when its resolver
// succeeds: a refused sub-field does not undo the change, and a failing field does not
// undo the fields before it.
func TestMutationTransactions(t *testing.T) {
	forEachDialect(t, func(t *testing.T, e *apptest.Env) {
		tid := e.Tenant("txn")
		_, full := e.Key(e.AdminToken, tid, apptest.AllScopes...)
		_, writer := e.Key(full, "", "keys:read", "keys:write")
		count := func() int {
			var out struct{ APIKeys struct{ TotalCount int } }
			e.MustDo(full, `{ apiKeys { totalCount } }`, nil, &out)
			return out.APIKeys.TotalCount
		}
		before := count()
		// The writer lacks tenant:read: the tenant sub-field is refused, the key is made.
		r := e.Do(writer, `mutation { createApiKey(input: {name: "child", scopes: []}) { secret apiKey { id tenant { name } } } }`, nil)
		if r.Code() != "FORBIDDEN" || len(r.Errors) != 1 {
			t.Fatalf("want one FORBIDDEN on the sub-field: %s", r.Raw)
		}
		var got struct {
			CreateApiKey struct{ Secret string }
		}
		_ = jsonUnmarshal(r.Data, &got)
		if got.CreateApiKey.Secret == "" || count() != before+1 {
			t.Fatalf("the key was not kept: %s (keys %d, before %d)", r.Raw, count(), before)
		}
		// The first field commits; the second fails on its own.
		r = e.Do(full, `mutation { a: createApiKey(input: {name: "a", scopes: []}) { secret } b: revokeApiKey(id: "key_nope") { id } }`, nil)
		if r.Code() != "NOT_FOUND" || count() != before+2 {
			t.Fatalf("fields are not independent: %s (keys %d)", r.Raw, count())
		}
		// A field that fails leaves nothing behind: rotating a revoked key.
		var k struct {
			CreateApiKey struct {
				APIKey struct{ ID string } `json:"apiKey"`
			}
		}
		e.MustDo(full, `mutation { createApiKey(input: {name: "r", scopes: []}) { apiKey { id } } }`, nil, &k)
		e.MustDo(full, `mutation($id: ID!) { revokeApiKey(id: $id) { id } }`, map[string]any{"id": k.CreateApiKey.APIKey.ID}, &struct{}{})
		n := count()
		if r := e.Do(full, `mutation($id: ID!) { rotateApiKey(id: $id) { secret } }`, map[string]any{"id": k.CreateApiKey.APIKey.ID}); r.Code() != "BAD_USER_INPUT" || count() != n {
			t.Fatalf("failed rotation: %s (keys %d, want %d)", r.Raw, count(), n)
		}
	})
}
