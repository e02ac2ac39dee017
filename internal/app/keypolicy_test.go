package app_test

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/latchkey/latchkey/internal/app/apptest"
	"github.com/latchkey/latchkey/internal/domain/keys"
)

// keyPolicyFields are the stored settings a policy refusal must leave unchanged.
const keyPolicyFields = `id name scopes rateLimit rateLimitWindowSeconds quota quotaPeriod expiresAt rotatedAt revokedAt limitsLocked expiryLocked`

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
	id, _ := createdKeySecret(t, e, creator, tenantID, scopes, input)
	return id
}

// createdKeySecret is createdKey that also returns the secret.
func createdKeySecret(t *testing.T, e *apptest.Env, creator, tenantID, scopes, input string) (id, secret string) {
	t.Helper()
	tenant := ""
	if tenantID != "" {
		tenant = fmt.Sprintf(`tenantID: %q, `, tenantID)
	}
	var out struct {
		CreateApiKey struct {
			APIKey struct{ ID string } `json:"apiKey"`
			Secret string
		}
	}
	e.MustDo(creator, `mutation { createApiKey(input: {`+tenant+`name: "policy", scopes: [`+scopes+`]`+input+`}) { apiKey { id } secret } }`, nil, &out)
	return out.CreateApiKey.APIKey.ID, out.CreateApiKey.Secret
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

// keyState is the decoded form of storedKey.
type keyState struct {
	RateLimit              *int
	RateLimitWindowSeconds *int
	Quota                  *int
	QuotaPeriod            *string
	ExpiresAt              *time.Time
	RotatedAt              *time.Time
	LimitsLocked           bool
	ExpiryLocked           bool
}

func keyStateOf(t *testing.T, e *apptest.Env, id string) keyState {
	t.Helper()
	var out struct{ Node keyState }
	if err := json.Unmarshal([]byte(storedKey(t, e, id)), &out); err != nil {
		t.Fatal(err)
	}
	return out.Node
}

// at formats now+d as a GraphQL Time literal, whole seconds.
func at(d time.Duration) string {
	return `"` + time.Now().Add(d).UTC().Truncate(time.Second).Format(time.RFC3339) + `"`
}

// Finding: a platform admin limited a key to 5 requests per 60 s, a quota of 50 a
// month and an expiry tomorrow; the key lifted all three with one updateApiKey on
// itself. What a platform admin sets is now locked: tenant keys may only tighten it.
func TestAdminSetLimitsOnlyTightenedByTenantKeys(t *testing.T) {
	const adminLimits = `, rateLimit: 5, rateLimitWindowSeconds: 60, quota: 50, quotaPeriod: MONTH`
	forEachDialect(t, func(t *testing.T, e *apptest.Env) {
		tid := e.Tenant("locked")
		id, key := createdKeySecret(t, e, e.AdminToken, tid, `"keys:read", "keys:write"`, adminLimits+`, expiresAt: `+at(24*time.Hour))
		if s := keyStateOf(t, e, id); !s.LimitsLocked || !s.ExpiryLocked {
			t.Fatalf("admin-set limits and expiry not locked: %+v", s)
		}
		stored := storedKey(t, e, id)

		// The attack, exactly as reported, then each loosening on its own (4 requests:
		// the key may send 5 per minute).
		for _, tc := range []struct{ input, field string }{
			{`{rateLimit: null, quota: 100000, quotaPeriod: DAY, expiresAt: null}`, ""},
			{`{rateLimit: null}`, "rateLimit"},
			{`{quota: 100000, quotaPeriod: DAY}`, "quota"},
			{`{expiresAt: null}`, "expiresAt"},
		} {
			r := e.Do(key, `mutation($id: ID!) { updateApiKey(id: $id, input: `+tc.input+`) { id } }`, map[string]any{"id": id})
			expectRefused(t, r, "BAD_USER_INPUT", tc.field)
			if got := storedKey(t, e, id); got != stored {
				t.Fatalf("%s changed the key:\n%s\nwas\n%s", tc.input, got, stored)
			}
		}

		// Another tenant key, unlocked and unlimited by its own settings, tightens.
		_, manager := e.Key(e.AdminToken, tid, apptest.AllScopes...)
		for _, tc := range []struct {
			name, initial, update, field string
		}{
			{"lower rate", adminLimits, `{rateLimit: 4}`, ""},
			{"same burst over a longer window", adminLimits, `{rateLimitWindowSeconds: 120}`, ""},
			{"smaller burst at the same sustained rate", adminLimits, `{rateLimit: 1, rateLimitWindowSeconds: 12}`, ""},
			{"the plan's longer window", adminLimits, `{rateLimitWindowSeconds: null}`, ""},
			{"lower quota", adminLimits, `{quota: 40}`, ""},
			{"a daily quota within the month", adminLimits, `{quota: 1, quotaPeriod: DAY}`, ""},
			{"earlier expiry", adminLimits + `, expiresAt: ` + at(24*time.Hour), `{expiresAt: ` + at(time.Hour) + `}`, ""},
			{"an expiry where there was none", adminLimits, `{expiresAt: ` + at(time.Hour) + `}`, ""},
			{"a name", adminLimits, `{name: "renamed"}`, ""},
			{"a lower daily quota", `, quota: 10, quotaPeriod: DAY`, `{quota: 9}`, ""},
			{"a daily quota as monthly", `, quota: 10, quotaPeriod: DAY`, `{quotaPeriod: MONTH}`, ""},
			{"only the expiry was set: limits stay the tenant's", `, expiresAt: ` + at(24*time.Hour), `{rateLimit: 500, rateLimitWindowSeconds: 3600, quota: 100000}`, ""},

			{"higher burst", adminLimits, `{rateLimit: 6}`, "rateLimit"},
			{"same burst over a shorter window", adminLimits, `{rateLimitWindowSeconds: 30}`, "rateLimit"},
			{"smaller burst, faster sustained rate", adminLimits, `{rateLimit: 2, rateLimitWindowSeconds: 10}`, "rateLimit"},
			{"back to the plan's rate", adminLimits, `{rateLimit: null, rateLimitWindowSeconds: null}`, "rateLimit"},
			{"higher quota", adminLimits, `{quota: 51}`, "quota"},
			{"a daily quota over the month", adminLimits, `{quota: 2, quotaPeriod: DAY}`, "quota"},
			{"the same number per day", adminLimits, `{quotaPeriod: DAY}`, "quota"},
			{"back to the plan's quota", adminLimits, `{quota: null}`, "quota"},
			{"unlimited", adminLimits, `{quota: 0}`, "quota"},
			{"a monthly quota over one day's", `, quota: 10, quotaPeriod: DAY`, `{quota: 300, quotaPeriod: MONTH}`, "quota"},
			{"later expiry", adminLimits + `, expiresAt: ` + at(24*time.Hour), `{expiresAt: ` + at(48*time.Hour) + `}`, "expiresAt"},
			{"no expiry", adminLimits + `, expiresAt: ` + at(24*time.Hour), `{expiresAt: null}`, "expiresAt"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				id := createdKey(t, e, e.AdminToken, tid, `"keys:read"`, tc.initial)
				before := keyStateOf(t, e, id)
				stored := storedKey(t, e, id)
				r := e.Do(manager, `mutation($id: ID!) { updateApiKey(id: $id, input: `+tc.update+`) { id } }`, map[string]any{"id": id})
				if tc.field != "" {
					expectRefused(t, r, "BAD_USER_INPUT", tc.field)
					if got := storedKey(t, e, id); got != stored {
						t.Fatalf("refused update changed the key:\n%s\nwas\n%s", got, stored)
					}
					return
				}
				if len(r.Errors) > 0 {
					t.Fatalf("update: %s", r.Raw)
				}
				// Tightening leaves the locks as they were.
				if after := keyStateOf(t, e, id); after.LimitsLocked != before.LimitsLocked || after.ExpiryLocked != before.ExpiryLocked {
					t.Fatalf("locks changed: %+v -> %+v", before, after)
				}
			})
		}

		t.Run("admins loosen and unlock; tenant keys cannot unlock", func(t *testing.T) {
			id := createdKey(t, e, e.AdminToken, tid, `"keys:read"`, adminLimits+`, expiresAt: `+at(24*time.Hour))
			stored := storedKey(t, e, id)
			for _, in := range []string{`{limitsLocked: false}`, `{expiryLocked: false}`, `{limitsLocked: true}`} {
				expectRefused(t, e.Do(manager, `mutation($id: ID!) { updateApiKey(id: $id, input: `+in+`) { id } }`, map[string]any{"id": id}), "FORBIDDEN", "")
			}
			expectRefused(t, e.Do(manager, `mutation { createApiKey(input: {name: "x", scopes: [], limitsLocked: false}) { secret } }`, nil), "FORBIDDEN", "")
			if got := storedKey(t, e, id); got != stored {
				t.Fatalf("refused unlock changed the key:\n%s\nwas\n%s", got, stored)
			}
			// An admin's loosening keeps the lock.
			e.MustDo(e.AdminToken, `mutation($id: ID!) { updateApiKey(id: $id, input: {rateLimit: 10}) { id } }`, map[string]any{"id": id}, &struct{}{})
			if s := keyStateOf(t, e, id); *s.RateLimit != 10 || !s.LimitsLocked {
				t.Fatalf("after the admin's change: %+v", s)
			}
			// Unlocked, the tenant may loosen within its plan again.
			e.MustDo(e.AdminToken, `mutation($id: ID!) { updateApiKey(id: $id, input: {limitsLocked: false, expiryLocked: false}) { id } }`, map[string]any{"id": id}, &struct{}{})
			e.MustDo(manager, `mutation($id: ID!) { updateApiKey(id: $id, input: {rateLimit: null, rateLimitWindowSeconds: null, quota: null, quotaPeriod: null, expiresAt: null}) { id } }`, map[string]any{"id": id}, &struct{}{})
			if s := keyStateOf(t, e, id); s.LimitsLocked || s.ExpiryLocked || s.RateLimit != nil || s.ExpiresAt != nil {
				t.Fatalf("after unlocking: %+v", s)
			}
			// An admin may also leave what it sets unlocked.
			open := createdKey(t, e, e.AdminToken, tid, `"keys:read"`, adminLimits+`, limitsLocked: false`)
			if s := keyStateOf(t, e, open); s.LimitsLocked || s.ExpiryLocked {
				t.Fatalf("limitsLocked: false: %+v", s)
			}
		})

		t.Run("a rotation successor keeps the locks", func(t *testing.T) {
			id := createdKey(t, e, e.AdminToken, tid, `"keys:read"`, adminLimits+`, expiresAt: `+at(24*time.Hour))
			var rot struct {
				RotateApiKey struct {
					APIKey struct{ ID string } `json:"apiKey"`
				}
			}
			e.MustDo(manager, `mutation($id: ID!) { rotateApiKey(id: $id) { apiKey { id } } }`, map[string]any{"id": id}, &rot)
			next := rot.RotateApiKey.APIKey.ID
			if s := keyStateOf(t, e, next); !s.LimitsLocked || !s.ExpiryLocked || *s.RateLimit != 5 || *s.Quota != 50 || s.ExpiresAt == nil {
				t.Fatalf("successor: %+v", s)
			}
			stored := storedKey(t, e, next)
			expectRefused(t, e.Do(manager, `mutation($id: ID!) { updateApiKey(id: $id, input: {rateLimit: null, quota: null, expiresAt: null}) { id } }`, map[string]any{"id": next}), "BAD_USER_INPUT", "")
			if got := storedKey(t, e, next); got != stored {
				t.Fatalf("refused update changed the successor:\n%s\nwas\n%s", got, stored)
			}
		})

		// Other routes to the same escalation: a locked key minting a looser key.
		t.Run("a locked key gives no key looser limits", func(t *testing.T) {
			lockedID, locked := createdKeySecret(t, e, e.AdminToken, tid, `"keys:read", "keys:write"`, adminLimits)
			_ = lockedID
			looseID := createdKey(t, e, manager, "", `"keys:read"`, "")
			before := tenantKeyCount(t, e, manager)
			// 4 requests: the key may send 5 per minute.
			expectRefused(t, e.Do(locked, `mutation { createApiKey(input: {name: "x", scopes: [], quota: 50}) { secret } }`, nil), "BAD_USER_INPUT", "rateLimit")
			expectRefused(t, e.Do(locked, `mutation { createApiKey(input: {name: "x", scopes: [], rateLimit: 5, rateLimitWindowSeconds: 60}) { secret } }`, nil), "BAD_USER_INPUT", "quota")
			looseStored := storedKey(t, e, looseID)
			expectRefused(t, e.Do(locked, `mutation($id: ID!) { rotateApiKey(id: $id) { secret } }`, map[string]any{"id": looseID}), "FORBIDDEN", "")
			if got := storedKey(t, e, looseID); got != looseStored {
				t.Fatalf("refused rotation changed the key:\n%s\nwas\n%s", got, looseStored)
			}
			if n := tenantKeyCount(t, e, manager); n != before {
				t.Fatalf("refused creates left %d keys, want %d", n, before)
			}
			var out struct {
				CreateApiKey struct {
					APIKey struct{ ID string } `json:"apiKey"`
				}
			}
			e.MustDo(locked, `mutation { createApiKey(input: {name: "x", scopes: [], rateLimit: 1, rateLimitWindowSeconds: 12, quota: 1, quotaPeriod: DAY}) { apiKey { id } } }`, nil, &out)
			if s := keyStateOf(t, e, out.CreateApiKey.APIKey.ID); !s.LimitsLocked || s.ExpiryLocked {
				t.Fatalf("child of a locked key: %+v", s)
			}
		})
	})
}

type rotateResp struct {
	RotateApiKey struct {
		APIKey struct{ ID string } `json:"apiKey"`
		Secret string
	}
}

const rotateQ = `mutation($id: ID!, $g: Int) { rotateApiKey(id: $id, gracePeriodSeconds: $g) { apiKey { id } secret } }`

// Finding: a key in its rotation grace period rotated itself, or created a key, and
// the new key cleared its own expiry: a key meant to die in 60 s left a permanent
// successor. A key in its grace period now cannot rotate itself, gives no key a
// later expiry than its own, and what it creates has its expiry locked.
func TestGracePeriodKeyLeavesNothingBehind(t *testing.T) {
	forEachDialect(t, func(t *testing.T, e *apptest.Env) {
		tid := e.Tenant("grace")
		id, key := e.Key(e.AdminToken, tid, "keys:read", "keys:write")
		var rot rotateResp
		e.MustDo(key, rotateQ, map[string]any{"id": id, "g": 60}, &rot)
		successorID := rot.RotateApiKey.APIKey.ID
		graceEnd := *keyStateOf(t, e, id).ExpiresAt
		stored := storedKey(t, e, id)
		successorStored := storedKey(t, e, successorID)
		count := tenantKeyCount(t, e, key)

		// The attack, exactly as reported: the rotating key rotates itself, or creates
		// a key without an expiry. Both refused; nothing changes.
		expectRefused(t, e.Do(key, rotateQ, map[string]any{"id": id, "g": 0}), "FORBIDDEN", "")
		expectRefused(t, e.Do(key, `mutation { createApiKey(input: {name: "heir", scopes: ["keys:read", "keys:write"]}) { secret } }`, nil), "BAD_USER_INPUT", "expiresAt")
		// Nor a later expiry, nor its own successor's (permanent) secret.
		expectRefused(t, e.Do(key, `mutation { createApiKey(input: {name: "heir", scopes: [], expiresAt: `+at(time.Hour)+`}) { secret } }`, nil), "BAD_USER_INPUT", "expiresAt")
		expectRefused(t, e.Do(key, rotateQ, map[string]any{"id": successorID, "g": 0}), "FORBIDDEN", "")
		// Nor extend another key's life past its own.
		otherID := createdKey(t, e, e.AdminToken, tid, `"keys:read"`, `, expiresAt: `+at(10*time.Second)+`, expiryLocked: false`)
		otherStored := storedKey(t, e, otherID)
		expectRefused(t, e.Do(key, `mutation($id: ID!) { updateApiKey(id: $id, input: {expiresAt: null}) { id } }`, map[string]any{"id": otherID}), "BAD_USER_INPUT", "expiresAt")
		for k, want := range map[string]string{id: stored, successorID: successorStored, otherID: otherStored} {
			if got := storedKey(t, e, k); got != want {
				t.Fatalf("refused call changed key %s:\n%s\nwas\n%s", k, got, want)
			}
		}
		if n := tenantKeyCount(t, e, key); n != count+1 { // + otherID
			t.Fatalf("%d keys, want %d", n, count+1)
		}

		// A key expiring no later than the rotating key is allowed, with its expiry
		// locked: it cannot clear it, nor can its creator.
		childID, child := createdKeySecret(t, e, key, "", `"keys:read", "keys:write"`, `, expiresAt: `+at(30*time.Second))
		if s := keyStateOf(t, e, childID); !s.ExpiryLocked || s.ExpiresAt == nil || s.ExpiresAt.After(graceEnd) {
			t.Fatalf("child of a rotating key: %+v (grace ends %s)", s, graceEnd)
		}
		childStored := storedKey(t, e, childID)
		for _, caller := range []string{child, key} {
			for _, in := range []string{`{expiresAt: null}`, `{expiresAt: ` + at(time.Hour) + `}`} {
				expectRefused(t, e.Do(caller, `mutation($id: ID!) { updateApiKey(id: $id, input: `+in+`) { id } }`, map[string]any{"id": childID}), "BAD_USER_INPUT", "expiresAt")
			}
		}
		if got := storedKey(t, e, childID); got != childStored {
			t.Fatalf("refused update changed the child:\n%s\nwas\n%s", got, childStored)
		}
		// Rotating that child is allowed; the successor's expiry stays locked.
		var crot rotateResp
		e.MustDo(key, rotateQ, map[string]any{"id": childID, "g": 0}, &crot)
		if s := keyStateOf(t, e, crot.RotateApiKey.APIKey.ID); !s.ExpiryLocked || s.ExpiresAt == nil || s.ExpiresAt.After(graceEnd) {
			t.Fatalf("successor of the child: %+v", s)
		}
		expectRefused(t, e.Do(crot.RotateApiKey.Secret, `mutation($id: ID!) { updateApiKey(id: $id, input: {expiresAt: null}) { id } }`, map[string]any{"id": crot.RotateApiKey.APIKey.ID}), "BAD_USER_INPUT", "expiresAt")
		// Bringing its own expiry forward is still allowed.
		e.MustDo(key, `mutation($id: ID!) { updateApiKey(id: $id, input: {expiresAt: `+at(20*time.Second)+`}) { id } }`, map[string]any{"id": id}, &struct{}{})
	})
}

// The same escalation through a key whose expiry a platform admin set (not rotating):
// it creates no permanent key and rotates no key that would outlive it. A key whose
// expiry was set by a tenant key is not bound: it could clear that expiry itself.
func TestLockedExpiryBindsWhatAKeyGives(t *testing.T) {
	forEachDialect(t, func(t *testing.T, e *apptest.Env) {
		tid := e.Tenant("bound")
		_, manager := e.Key(e.AdminToken, tid, apptest.AllScopes...)
		keyID, key := createdKeySecret(t, e, e.AdminToken, tid, `"keys:read", "keys:write"`, `, expiresAt: `+at(time.Hour))
		permanentID := createdKey(t, e, manager, "", `"keys:read"`, "")
		permanentStored := storedKey(t, e, permanentID)
		count := tenantKeyCount(t, e, manager)

		expectRefused(t, e.Do(key, `mutation { createApiKey(input: {name: "heir", scopes: []}) { secret } }`, nil), "BAD_USER_INPUT", "expiresAt")
		expectRefused(t, e.Do(key, `mutation { createApiKey(input: {name: "heir", scopes: [], expiresAt: `+at(2*time.Hour)+`}) { secret } }`, nil), "BAD_USER_INPUT", "expiresAt")
		expectRefused(t, e.Do(key, rotateQ, map[string]any{"id": permanentID, "g": 0}), "FORBIDDEN", "")
		if got := storedKey(t, e, permanentID); got != permanentStored {
			t.Fatalf("refused rotation changed the key:\n%s\nwas\n%s", got, permanentStored)
		}
		if n := tenantKeyCount(t, e, manager); n != count {
			t.Fatalf("%d keys, want %d", n, count)
		}

		// A key whose expiry is locked no later than the caller's may be rotated; the
		// successor keeps that expiry, locked.
		shortID := createdKey(t, e, e.AdminToken, tid, `"keys:read"`, `, expiresAt: `+at(30*time.Minute))
		var rot rotateResp
		e.MustDo(key, rotateQ, map[string]any{"id": shortID, "g": 0}, &rot)
		if s := keyStateOf(t, e, rot.RotateApiKey.APIKey.ID); !s.ExpiryLocked || s.ExpiresAt == nil {
			t.Fatalf("successor: %+v", s)
		}
		// Rotating itself: the successor has its expiry, locked.
		var self rotateResp
		e.MustDo(key, rotateQ, map[string]any{"id": keyID, "g": 0}, &self)
		if s := keyStateOf(t, e, self.RotateApiKey.APIKey.ID); !s.ExpiryLocked || s.ExpiresAt == nil {
			t.Fatalf("own successor: %+v", s)
		}

		// A tenant-set expiry binds nothing: the key could lift it itself.
		_, tenantSet := createdKeySecret(t, e, manager, "", `"keys:read", "keys:write"`, `, expiresAt: `+at(time.Hour))
		childID := createdKey(t, e, tenantSet, "", `"keys:read"`, "")
		if s := keyStateOf(t, e, childID); s.ExpiresAt != nil || s.ExpiryLocked {
			t.Fatalf("child of a tenant-set expiry: %+v", s)
		}
	})
}

// Platform admin keys in their grace period are bound too: an admin key being rotated
// out cannot rotate itself, obtain a permanent key, or lift the expiry of one it made.
func TestGracePeriodBindsAdminKeys(t *testing.T) {
	forEachDialect(t, func(t *testing.T, e *apptest.Env) {
		tid := e.Tenant("admin-grace")
		secret, err := keys.Generate(keys.KindAdmin)
		if err != nil {
			t.Fatal(err)
		}
		ak := e.App.Store.Client.ApiKey.Create().SetName("admin").SetAdmin(true).SetPrefix(keys.DisplayPrefix(secret)).
			SetHash(keys.HashHex(secret)).SetScopes([]string{}).SaveX(sysCtx())
		var rot rotateResp
		e.MustDo(secret, rotateQ, map[string]any{"id": ak.ID, "g": 60}, &rot)
		stored := storedKey(t, e, ak.ID)

		expectRefused(t, e.Do(secret, rotateQ, map[string]any{"id": ak.ID, "g": 0}), "FORBIDDEN", "")
		expectRefused(t, e.Do(secret, rotateQ, map[string]any{"id": rot.RotateApiKey.APIKey.ID, "g": 0}), "FORBIDDEN", "")
		expectRefused(t, e.Do(secret, `mutation($t: ID!) { createApiKey(input: {tenantID: $t, name: "heir", scopes: []}) { secret } }`, map[string]any{"t": tid}), "BAD_USER_INPUT", "expiresAt")
		if got := storedKey(t, e, ak.ID); got != stored {
			t.Fatalf("refused calls changed the admin key:\n%s\nwas\n%s", got, stored)
		}
		childID := createdKey(t, e, secret, tid, "", `, expiresAt: `+at(30*time.Second))
		childStored := storedKey(t, e, childID)
		expectRefused(t, e.Do(secret, `mutation($id: ID!) { updateApiKey(id: $id, input: {expiresAt: null}) { id } }`, map[string]any{"id": childID}), "BAD_USER_INPUT", "expiresAt")
		expectRefused(t, e.Do(secret, `mutation($id: ID!) { updateApiKey(id: $id, input: {expiryLocked: false}) { id } }`, map[string]any{"id": childID}), "FORBIDDEN", "")
		if got := storedKey(t, e, childID); got != childStored {
			t.Fatalf("refused update changed the child:\n%s\nwas\n%s", got, childStored)
		}
		// The new admin key is not bound.
		e.MustDo(rot.RotateApiKey.Secret, `mutation($id: ID!) { updateApiKey(id: $id, input: {expiresAt: null, expiryLocked: false}) { id } }`, map[string]any{"id": childID}, &struct{}{})
	})
}
