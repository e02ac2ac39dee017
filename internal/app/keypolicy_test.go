package app_test

import (
	"fmt"
	"testing"

	"github.com/latchkey/latchkey/internal/apptest"
)

// keyPolicyFields are the stored settings a policy refusal must leave unchanged.
const keyPolicyFields = `id name scopes rateLimit rateLimitWindowSeconds quota quotaPeriod expiresAt rotatedAt revokedAt`

// storedKey returns key id's policy fields as a platform admin reads them, as raw JSON.
func storedKey(t *testing.T, e *apptest.Env, id string) string {
	t.Helper()
	r := e.Do(e.AdminToken, `query($id: ID!) { node(id: $id) { ... on ApiKey { `+keyPolicyFields+` } } }`, map[string]any{"id": id})
	if len(r.Errors) > 0 || r.Data == nil {
		t.Fatalf("read key %s: %s", id, r.Raw)
	}
	return string(r.Data)
}

// tenantKeyCount returns how many keys key's tenant has, as key sees them.
func tenantKeyCount(t *testing.T, e *apptest.Env, key string) int {
	t.Helper()
	var out struct {
		APIKeys struct{ TotalCount int } `json:"apiKeys"`
	}
	e.MustDo(key, `{ apiKeys { totalCount } }`, nil, &out)
	return out.APIKeys.TotalCount
}

// expectRefused fails unless r was refused with code and, when field is set,
// extensions.field = field.
func expectRefused(t *testing.T, r *apptest.Response, code, field string) {
	t.Helper()
	expectCode(t, r, code)
	if field != "" && r.Errors[0].Extensions["field"] != field {
		t.Fatalf("want %s on field %q, got: %s", code, field, r.Raw)
	}
}

// createdKey creates a key with input (GraphQL object fields after name and scopes)
// using creator, failing the test on errors, and returns its id.
func createdKey(t *testing.T, e *apptest.Env, creator, tenantID, scopes, input string) string {
	t.Helper()
	tenant := ""
	if tenantID != "" {
		tenant = fmt.Sprintf(`tenantID: %q, `, tenantID)
	}
	var out struct {
		CreateApiKey struct {
			APIKey struct{ ID string } `json:"apiKey"`
		}
	}
	e.MustDo(creator, `mutation { createApiKey(input: {`+tenant+`name: "policy", scopes: [`+scopes+`]`+input+`}) { apiKey { id } } }`, nil, &out)
	return out.CreateApiKey.APIKey.ID
}

// Finding: a free-plan tenant key created a key with quota 100000 per DAY, 31 times
// the plan's 100,000 per month: the plan check ignored the period. Quotas are now
// compared with the plan per month (a daily quota counts 31 days).
func TestPlanQuotaComparedPerMonth(t *testing.T) {
	forEachDialect(t, func(t *testing.T, e *apptest.Env) {
		tid := e.Tenant("quota-month")
		_, key := e.Key(e.AdminToken, tid, "keys:read", "keys:write")

		// The attack, exactly as reported: refused, and no key is created.
		before := tenantKeyCount(t, e, key)
		r := e.Do(key, `mutation { createApiKey(input: {name: "big", scopes: [], quota: 100000, quotaPeriod: DAY}) { apiKey { id } secret } }`, nil)
		expectRefused(t, r, "BAD_USER_INPUT", "quota")
		if n := tenantKeyCount(t, e, key); n != before {
			t.Fatalf("refused create left %d keys, want %d", n, before)
		}

		t.Run("create", func(t *testing.T) {
			for _, tc := range []struct {
				name, input, field string
			}{
				{"a day's quota over the month", `, quota: 3226, quotaPeriod: DAY`, "quota"},
				{"the plan's quota per day", `, quotaPeriod: DAY`, "quota"},
				{"over the plan per month", `, quota: 100001, quotaPeriod: MONTH`, "quota"},
				{"over the plan in the plan's period", `, quota: 100001`, "quota"},
				{"unlimited", `, quota: 0`, "quota"},
				{"31 days within the month", `, quota: 3225, quotaPeriod: DAY`, ""},
				{"the plan's quota per month", `, quota: 100000, quotaPeriod: MONTH`, ""},
				{"less per day", `, quota: 10, quotaPeriod: DAY`, ""},
			} {
				t.Run(tc.name, func(t *testing.T) {
					before := tenantKeyCount(t, e, key)
					r := e.Do(key, `mutation { createApiKey(input: {name: "q", scopes: []`+tc.input+`}) { apiKey { id } } }`, nil)
					want := before + 1
					if tc.field != "" {
						expectRefused(t, r, "BAD_USER_INPUT", tc.field)
						want = before
					} else if len(r.Errors) > 0 {
						t.Fatalf("create: %s", r.Raw)
					}
					if n := tenantKeyCount(t, e, key); n != want {
						t.Fatalf("%d keys, want %d", n, want)
					}
				})
			}
		})

		t.Run("update", func(t *testing.T) {
			for _, tc := range []struct {
				name, initial, update, field string
			}{
				{"the plan's quota moved to a day", ``, `{quotaPeriod: DAY}`, "quota"},
				{"a monthly quota moved to a day", `, quota: 50000, quotaPeriod: MONTH`, `{quotaPeriod: DAY}`, "quota"},
				{"a daily quota back to the plan's amount", `, quota: 3000, quotaPeriod: DAY`, `{quota: null}`, "quota"},
				{"a day's quota over the month", ``, `{quota: 3226, quotaPeriod: DAY}`, "quota"},
				{"unlimited", ``, `{quota: 0}`, "quota"},
				{"31 days within the month", ``, `{quota: 3225, quotaPeriod: DAY}`, ""},
				{"a daily quota back to monthly", `, quota: 3000, quotaPeriod: DAY`, `{quotaPeriod: MONTH}`, ""},
				{"a daily quota back to the plan's", `, quota: 3000, quotaPeriod: DAY`, `{quota: null, quotaPeriod: null}`, ""},
			} {
				t.Run(tc.name, func(t *testing.T) {
					id := createdKey(t, e, key, "", "", tc.initial)
					stored := storedKey(t, e, id)
					r := e.Do(key, `mutation($id: ID!) { updateApiKey(id: $id, input: `+tc.update+`) { id } }`, map[string]any{"id": id})
					if tc.field == "" {
						if len(r.Errors) > 0 {
							t.Fatalf("update: %s", r.Raw)
						}
						return
					}
					expectRefused(t, r, "BAD_USER_INPUT", tc.field)
					if got := storedKey(t, e, id); got != stored {
						t.Fatalf("refused update changed the key:\n%s\nwas\n%s", got, stored)
					}
				})
			}
		})
	})
}
