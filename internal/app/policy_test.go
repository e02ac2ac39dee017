package app_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/latchkey/latchkey/internal/app"
	"github.com/latchkey/latchkey/internal/app/apptest"
	"github.com/latchkey/latchkey/internal/data/testdb"
	"github.com/latchkey/latchkey/internal/platform/config"
)

// policyEnv is a tenant on a plan of its own, with a management key and a verifier.
type policyEnv struct {
	*consumerEnv
	plan string
}

// newPolicyEnv creates plan name with the given CreatePlanInput fields (besides a key
// rate limit of 1000 per hour) and a tenant on it.
func newPolicyEnv(t *testing.T, e *apptest.Env, name string, fields map[string]any) *policyEnv {
	t.Helper()
	in := map[string]any{"name": name, "keyRateLimit": 1000, "keyRateLimitWindowSeconds": 3600}
	for k, v := range fields {
		in[k] = v
	}
	e.MustDo(e.AdminToken, `mutation($in: CreatePlanInput!) { createPlan(input: $in) { name } }`, map[string]any{"in": in}, &struct{}{})
	var out struct{ CreateTenant struct{ ID string } }
	e.MustDo(e.AdminToken, `mutation($n: String!, $p: String!) { createTenant(input: {name: $n, slug: $n, plan: $p}) { id } }`,
		map[string]any{"n": name, "p": name}, &out)
	tid := out.CreateTenant.ID
	_, mgmt := e.Key(e.AdminToken, tid, apptest.AllScopes...)
	_, verifier := e.Key(mgmt, "", "keys:verify")
	return &policyEnv{consumerEnv: &consumerEnv{Env: e, tid: tid, mgmt: mgmt, verifier: verifier}, plan: name}
}

// update changes the plan (caps are set after the setup calls of the management key,
// which count against them too).
func (p *policyEnv) update(t *testing.T, fields map[string]any) {
	t.Helper()
	p.MustDo(p.AdminToken, `mutation($n: String!, $in: UpdatePlanInput!) { updatePlan(name: $n, input: $in) { name } }`,
		map[string]any{"n": p.plan, "in": fields}, &struct{}{})
}

// verify checks key with the extra input and fails the test on a GraphQL error.
func (c *consumerEnv) verify(t *testing.T, key string, extra map[string]any) verifyResult {
	t.Helper()
	in := map[string]any{"key": key}
	for k, v := range extra {
		in[k] = v
	}
	v, r := c.verifyGQL(t, c.verifier, in)
	if len(r.Errors) > 0 {
		t.Fatalf("verifyApiKey: %s", r.Raw)
	}
	return v
}

func scope(v verifyResult) string {
	if v.LimitScope == nil {
		return ""
	}
	return *v.LimitScope
}

// Plans are data: the seeded ones are listed, a new one is created, and changing it
// changes the limits of the keys on it from the next request on; only admins see them.
func TestPlansAreData(t *testing.T) {
	forEachDialect(t, func(t *testing.T, e *apptest.Env) {
		var plans struct {
			Plans []struct {
				Name                      string
				KeyRateLimit, TenantQuota int
				MaxKeys                   int
				KeyLimits                 []struct{ Name string }
			}
		}
		e.MustDo(e.AdminToken, `{ plans { name keyRateLimit tenantQuota maxKeys keyLimits { name } } }`, nil, &plans)
		names := map[string]bool{}
		for _, p := range plans.Plans {
			names[p.Name] = true
		}
		if !names["free"] || !names["pro"] {
			t.Fatalf("seeded plans missing: %+v", plans)
		}
		p := newPolicyEnv(t, e, "metered", map[string]any{"keyRateLimit": 50})
		if r := e.Do(p.mgmt, `{ plans { name } }`, nil); r.Code() != "FORBIDDEN" {
			t.Fatalf("a tenant listed the plans: %s", r.Raw)
		}
		if r := e.Do(p.mgmt, `mutation { updatePlan(name: "metered", input: {keyRateLimit: 1}) { name } }`, nil); r.Code() != "FORBIDDEN" {
			t.Fatalf("a tenant changed its plan: %s", r.Raw)
		}
		// A key without a limit of its own follows the plan.
		_, key := e.Key(p.mgmt, "", "keys:read")
		if got := e.Do(key, viewerQ, nil).Header.Get("X-RateLimit-Limit"); got != "50" {
			t.Fatalf("X-RateLimit-Limit %q, want the plan's 50", got)
		}
		consumer := p.consumer(t, nil)
		if v := p.verify(t, consumer.Secret, nil); v.RateLimit == nil || v.RateLimit.Limit != 50 {
			t.Fatalf("consumer key before the change: %+v", v)
		}
		e.MustDo(e.AdminToken, `mutation { updatePlan(name: "metered", input: {keyRateLimit: 7, keyQuota: 100, quotaPeriod: DAY}) { keyRateLimit } }`, nil, &struct{}{})
		r := e.Do(key, viewerQ, nil)
		if got := r.Header.Get("X-RateLimit-Limit"); got != "7" {
			t.Fatalf("X-RateLimit-Limit %q after the plan changed, want 7", got)
		}
		if v := p.verify(t, consumer.Secret, nil); v.RateLimit == nil || v.RateLimit.Limit != 7 || v.Quota == nil || v.Quota.Limit != 100 {
			t.Fatalf("consumer key after the change: %+v", v)
		}
		// Bad input is a clear error, and nothing changes.
		for _, bad := range []string{
			`mutation { createPlan(input: {name: "Bad Name", keyRateLimit: 1, keyRateLimitWindowSeconds: 1}) { name } }`,
			`mutation { createPlan(input: {name: "free", keyRateLimit: 1, keyRateLimitWindowSeconds: 1}) { name } }`,
			`mutation { updatePlan(name: "metered", input: {keyRateLimit: -1}) { name } }`,
			`mutation { updatePlan(name: "nope", input: {keyRateLimit: 1}) { name } }`,
		} {
			r := e.Do(e.AdminToken, bad, nil)
			if c := r.Code(); c != "BAD_USER_INPUT" && c != "NOT_FOUND" {
				t.Errorf("%s: %s", bad, r.Raw)
			}
			assertNoLeak(t, r.Raw)
		}
		if got := e.Do(key, viewerQ, nil).Header.Get("X-RateLimit-Limit"); got != "7" {
			t.Fatalf("a refused change changed the limit: %q", got)
		}
		// Every change is audited.
		var audit struct {
			AuditLogs struct {
				Edges []struct{ Node struct{ Action string } }
			}
		}
		e.MustDo(e.AdminToken, `{ auditLogs(first: 100, where: {objectType: "plan"}) { edges { node { action } } } }`, nil, &audit)
		actions := map[string]int{}
		for _, ed := range audit.AuditLogs.Edges {
			actions[ed.Node.Action]++
		}
		if actions["plan.created"] < 1 || actions["plan.updated"] < 1 {
			t.Fatalf("plan audit: %v", actions)
		}
	})
}

// A tenant's plan caps the tenant as a whole: its consumer keys together are refused
// with scope tenant once the cap is spent, whatever their own limits, while its
// management calls count against the cap but are never refused by it.
func TestTenantWideLimits(t *testing.T) {
	forEachDialect(t, func(t *testing.T, e *apptest.Env) {
		p := newPolicyEnv(t, e, "capped", nil)
		a, b := p.consumer(t, nil), p.consumer(t, nil)
		p.update(t, map[string]any{"tenantRateLimit": 5, "tenantRateLimitWindowSeconds": 3600})
		for i := range 5 {
			k := []consumerKey{a, b}[i%2]
			if v := p.verify(t, k.Secret, nil); v.Code != "VALID" {
				t.Fatalf("verification %d: %+v", i+1, v)
			}
		}
		v := p.verify(t, b.Secret, nil)
		if v.Code != "RATE_LIMITED" || scope(v) != "tenant" || v.RetryAfterSeconds < 1 {
			t.Fatalf("6th verification against a cap of 5: %+v", v)
		}
		if v.RateLimit == nil || v.RateLimit.Limit != 5 || v.RateLimit.Remaining != 0 {
			t.Fatalf("the limit reported is not the one that bound: %+v", v.RateLimit)
		}
		// The management key still works (advisory), and a third tenant is untouched.
		for range 3 {
			if r := e.Do(p.mgmt, `{ apiKeys(first: 1) { totalCount } }`, nil); r.Status != 200 || len(r.Errors) > 0 {
				t.Fatalf("management call refused by the tenant cap: %s", r.Raw)
			}
		}
		other := newPolicyEnv(t, e, "capped-other", nil)
		ok := other.consumer(t, nil)
		other.update(t, map[string]any{"tenantRateLimit": 5, "tenantRateLimitWindowSeconds": 3600})
		if v := other.verify(t, ok.Secret, nil); v.Code != "VALID" {
			t.Fatalf("another tenant on the same plan: %+v", v)
		}
		// The same through GraphQL headers: a management key's own refusal names its scope.
		_, small := limitedKey(t, e, p.tid, 1, 3600, "")
		e.Do(small, viewerQ, nil)
		r := e.Do(small, viewerQ, nil)
		if r.Code() != "RATE_LIMITED" || r.Errors[0].Extensions["limitScope"] != "key" {
			t.Fatalf("key refusal: %s", r.Raw)
		}
	})
}

// A tenant quota: the consumer keys' verifications together, QUOTA_EXCEEDED with scope
// tenant, and the 80 % and 100 % warnings once each by webhook.
func TestTenantQuotaAndWarnings(t *testing.T) {
	e := webhookEnv(t, "sqlite")
	p := newPolicyEnv(t, e, "tenantq", nil)
	rc := newReceiver(t)
	createWebhook(t, e, p.mgmt, rc.URL, []string{"quota.threshold", "quota.exceeded"})
	k := p.consumer(t, nil)
	p.update(t, map[string]any{"tenantQuota": 5, "quotaPeriod": "MONTH"})
	for i := range 5 {
		if v := p.verify(t, k.Secret, nil); v.Code != "VALID" {
			t.Fatalf("verification %d: %+v", i+1, v)
		}
	}
	if v := p.verify(t, k.Secret, nil); v.Code != "QUOTA_EXCEEDED" || scope(v) != "tenant" {
		t.Fatalf("6th verification against a tenant quota of 5: %+v", v)
	}
	seen := map[string]int{}
	for range 3 {
		select {
		case d := <-rc.ch:
			key := d.Type
			if d.Type == "quota.threshold" {
				key += ":" + fmt.Sprint(d.Data["threshold"])
				if d.Data["scope"] != "tenant" || d.Data["limit"] != float64(5) {
					t.Errorf("threshold event: %s", d.Body)
				}
			}
			seen[key]++
		case <-time.After(10 * time.Second):
			t.Fatalf("events so far %v", seen)
		}
	}
	if seen["quota.threshold:80"] != 1 || seen["quota.threshold:100"] != 1 || seen["quota.exceeded"] != 1 {
		t.Fatalf("events %v", seen)
	}
	for range 3 {
		p.verify(t, k.Secret, nil)
	}
	select {
	case d := <-rc.ch:
		t.Fatalf("a warning twice in one period: %s", d.Body)
	case <-time.After(500 * time.Millisecond):
	}
}

// Keys that share an owner share its limits; the owner's meta comes with verifications
// and keys; owner records are the tenant's own.
func TestOwnerSharedLimits(t *testing.T) {
	forEachDialect(t, func(t *testing.T, e *apptest.Env) {
		p := newPolicyEnv(t, e, "owned", nil)
		var up struct{ UpsertOwner struct{ ID, OwnerID string } }
		e.MustDo(p.mgmt, `mutation { upsertOwner(input: {ownerID: "cust_9", meta: {tier: "gold"}, rateLimit: 3, rateLimitWindowSeconds: 3600}) { id ownerID } }`, nil, &up)
		a := p.consumer(t, map[string]any{"ownerID": "cust_9"})
		b := p.consumer(t, map[string]any{"ownerID": "cust_9"})
		solo := p.consumer(t, map[string]any{"ownerID": "cust_10"}) // no record: no shared limit
		for i := range 3 {
			v := p.verify(t, []consumerKey{a, b}[i%2].Secret, nil)
			if v.Code != "VALID" || v.OwnerMeta["tier"] != "gold" {
				t.Fatalf("verification %d: %+v", i+1, v)
			}
		}
		if v := p.verify(t, b.Secret, nil); v.Code != "RATE_LIMITED" || scope(v) != "owner" {
			t.Fatalf("4th verification of the owner: %+v", v)
		}
		for range 5 {
			if v := p.verify(t, solo.Secret, nil); v.Code != "VALID" {
				t.Fatalf("a key of another owner: %+v", v)
			}
		}
		// Raising the owner's limit applies at once (upsert sets the whole record).
		e.MustDo(p.mgmt, `mutation { upsertOwner(input: {ownerID: "cust_9", meta: {tier: "gold"}, rateLimit: 100, rateLimitWindowSeconds: 3600}) { id } }`, nil, &struct{}{})
		if v := p.verify(t, a.Secret, nil); v.Code != "VALID" {
			t.Fatalf("after raising the owner's limit: %+v", v)
		}
		// The owner on the key; owners listed for the tenant only.
		var keys struct {
			APIKeys struct {
				Edges []struct {
					Node struct {
						Owner *struct {
							OwnerID   string
							RateLimit int
							Meta      map[string]any
						}
					}
				}
			}
		}
		e.MustDo(p.mgmt, `query($id: ID!) { apiKeys(where: {id: $id}) { edges { node { owner { ownerID rateLimit meta } } } } }`, map[string]any{"id": a.ID}, &keys)
		if o := keys.APIKeys.Edges[0].Node.Owner; o == nil || o.OwnerID != "cust_9" || o.RateLimit != 100 || o.Meta["tier"] != "gold" {
			t.Fatalf("apiKeys owner: %+v", o)
		}
		other := newPolicyEnv(t, e, "owned-other", nil)
		var list struct{ Owners struct{ TotalCount int } }
		e.MustDo(other.mgmt, `{ owners { totalCount } }`, nil, &list)
		if list.Owners.TotalCount != 0 {
			t.Fatalf("another tenant sees %d owners", list.Owners.TotalCount)
		}
		if r := e.Do(other.mgmt, `query($id: ID!) { node(id: $id) { id } }`, map[string]any{"id": up.UpsertOwner.ID}); len(r.Errors) == 0 && r.Raw != `{"data":{"node":null}}` {
			t.Fatalf("another tenant reads the owner: %s", r.Raw)
		}
		// Another tenant's upsert of the same ownerID is its own record.
		e.MustDo(other.mgmt, `mutation { upsertOwner(input: {ownerID: "cust_9", rateLimit: 1, rateLimitWindowSeconds: 60}) { id } }`, nil, &struct{}{})
		if v := p.verify(t, a.Secret, nil); v.Code != "VALID" {
			t.Fatalf("another tenant's record changed this tenant's owner: %+v", v)
		}
		if r := e.Do(p.mgmt, `mutation { upsertOwner(input: {ownerID: "", rateLimit: 1}) { id } }`, nil); r.Code() != "BAD_USER_INPUT" {
			t.Fatalf("empty ownerID: %s", r.Raw)
		}
		var audit struct {
			AuditLogs struct {
				Edges []struct{ Node struct{ Action string } }
			}
		}
		e.MustDo(p.mgmt, `{ auditLogs(first: 10, where: {objectType: "owner"}) { edges { node { action } } } }`, nil, &audit)
		if len(audit.AuditLogs.Edges) != 2 || audit.AuditLogs.Edges[0].Node.Action == audit.AuditLogs.Edges[1].Node.Action {
			t.Fatalf("owner audit of this tenant: %+v", audit)
		}
	})
}

// Named limits: a verification charges them by name with its own costs, all or
// nothing; an unknown name or a charge above the limit is refused before anything.
func TestNamedLimits(t *testing.T) {
	forEachDialect(t, func(t *testing.T, e *apptest.Env) {
		p := newPolicyEnv(t, e, "named", nil)
		k := p.consumer(t, map[string]any{"rateLimit": 100, "rateLimitWindowSeconds": 3600,
			"limits": []map[string]any{{"name": "tokens", "limit": 1000, "windowSeconds": 86400}, {"name": "exports", "limit": 2, "windowSeconds": 3600}}})
		tokens := func(n int) []map[string]any { return []map[string]any{{"name": "tokens", "cost": n}} }
		if v := p.verify(t, k.Secret, map[string]any{"charges": tokens(600)}); v.Code != "VALID" || v.RateLimit.Remaining != 99 {
			t.Fatalf("600 tokens: %+v", v)
		}
		v := p.verify(t, k.Secret, map[string]any{"charges": tokens(600)})
		if v.Code != "RATE_LIMITED" || scope(v) != "named:tokens" || v.RetryAfterSeconds < 60 {
			t.Fatalf("600 more tokens of 1000 a day: %+v", v)
		}
		// Nothing was charged by the refusal: the request limit is where it was.
		if v := p.verify(t, k.Secret, map[string]any{"cost": 0}); v.RateLimit.Remaining != 99 {
			t.Fatalf("a refused check charged the rate limit: %+v", v.RateLimit)
		}
		both := []map[string]any{{"name": "tokens", "cost": 100}, {"name": "exports", "cost": 1}}
		for i := range 2 {
			if v := p.verify(t, k.Secret, map[string]any{"charges": both}); v.Code != "VALID" {
				t.Fatalf("charge %d of tokens and exports: %+v", i+1, v)
			}
		}
		if v := p.verify(t, k.Secret, map[string]any{"charges": both}); v.Code != "RATE_LIMITED" || scope(v) != "named:exports" {
			t.Fatalf("third export: %+v", v)
		}
		// The tokens were not charged by the refused export: 200 of the remaining 200 pass.
		if v := p.verify(t, k.Secret, map[string]any{"charges": tokens(200)}); v.Code != "VALID" {
			t.Fatalf("the refused check charged tokens: %+v", v)
		}
		for _, bad := range []map[string]any{
			{"charges": []map[string]any{{"name": "nope", "cost": 1}}},
			{"charges": []map[string]any{{"name": "tokens", "cost": 1001}}},
			{"charges": []map[string]any{{"name": "tokens", "cost": -1}}},
			{"charges": []map[string]any{{"name": "tokens", "cost": 1}, {"name": "tokens", "cost": 1}}},
		} {
			in := map[string]any{"key": k.Secret}
			for key, val := range bad {
				in[key] = val
			}
			_, r := p.verifyGQL(t, p.verifier, in)
			if r.Code() != "BAD_USER_INPUT" {
				t.Errorf("%v: %s", bad, r.Raw)
			}
			assertNoLeak(t, r.Raw)
			body, _ := json.Marshal(in)
			if status, _, raw := verifyREST(t, e, p.verifier, "application/json", string(body)); status != 400 {
				t.Errorf("REST %v: %d %s", bad, status, raw)
			}
		}
		// A plan's named limits apply to the keys without their own.
		e.MustDo(e.AdminToken, `mutation { updatePlan(name: "named", input: {keyLimits: [{name: "tokens", limit: 10, windowSeconds: 60}]}) { name } }`, nil, &struct{}{})
		plain := p.consumer(t, nil)
		if _, r := p.verifyGQL(t, p.verifier, map[string]any{"key": plain.Secret, "charges": tokens(11)}); r.Code() != "BAD_USER_INPUT" {
			t.Fatalf("a plan's named limit was not applied: %s", r.Raw)
		}
		// REST charges the same way.
		status, out, raw := verifyREST(t, e, p.verifier, "application/json", `{"key":"`+plain.Secret+`","charges":[{"name":"tokens","cost":10}]}`)
		if status != 200 || out["code"] != "VALID" {
			t.Fatalf("REST charge: %d %s", status, raw)
		}
		status, out, raw = verifyREST(t, e, p.verifier, "application/json", `{"key":"`+plain.Secret+`","charges":[{"name":"tokens","cost":1}]}`)
		if status != 200 || out["code"] != "RATE_LIMITED" || out["limitScope"] != "named:tokens" {
			t.Fatalf("REST charge over the limit: %d %s", status, raw)
		}
	})
}

// Credits: spent by cost, USAGE_EXCEEDED when spent, topped up by addCredits, shown on
// the key, warned about at 80 % and 100 %, and kept across a restart.
func TestCredits(t *testing.T) {
	for _, d := range testdb.Dialects {
		t.Run(d, func(t *testing.T) {
			dbURL := testdb.URL(t, d)
			start := func() *apptest.Env {
				return apptest.New(t, d, app.Options{}, func(c *config.Config) {
					c.DatabaseURL = dbURL
					c.UsageFlushInterval = 20 * time.Millisecond
					c.WebhookAllowPrivate, c.WebhookAllowHTTP = true, true
				})
			}
			e := start()
			p := newPolicyEnv(t, e, "credited", nil)
			rc := newReceiver(t)
			createWebhook(t, e, p.mgmt, rc.URL, []string{"credits.threshold"})
			k := p.consumer(t, map[string]any{"credits": map[string]any{"remaining": 10}})
			if v := p.verify(t, k.Secret, map[string]any{"cost": 7}); v.Code != "VALID" || v.Credits == nil || *v.Credits != 3 {
				t.Fatalf("cost 7 of 10: %+v", v)
			}
			if v := p.verify(t, k.Secret, map[string]any{"cost": 0}); v.Code != "VALID" || *v.Credits != 3 {
				t.Fatalf("cost 0 spends nothing: %+v", v)
			}
			if v := p.verify(t, k.Secret, map[string]any{"cost": 2}); v.Code != "VALID" || *v.Credits != 1 {
				t.Fatalf("cost 2 of 3: %+v", v)
			}
			v := p.verify(t, k.Secret, map[string]any{"cost": 2})
			if v.Code != "USAGE_EXCEEDED" || scope(v) != "credits" || *v.Credits != 1 || v.Valid {
				t.Fatalf("cost 2 of 1: %+v", v)
			}
			d80 := rc.next(t, "credits.threshold")
			if d80.Data["threshold"] != float64(80) || d80.Data["scope"] != "credits" {
				t.Fatalf("first credits warning: %s", d80.Body)
			}
			// Top up through the API, and read the balance on the key.
			var add struct {
				AddCredits struct {
					Credits struct{ Remaining, Granted int }
				}
			}
			e.MustDo(p.mgmt, `mutation($id: ID!) { addCredits(id: $id, amount: 5) { credits { remaining granted } } }`, map[string]any{"id": k.ID}, &add)
			if add.AddCredits.Credits.Remaining != 6 {
				t.Fatalf("after adding 5 to 1: %+v", add)
			}
			if v := p.verify(t, k.Secret, map[string]any{"cost": 6}); v.Code != "VALID" || *v.Credits != 0 {
				t.Fatalf("spending the top-up: %+v", v)
			}
			if d := rc.next(t, "credits.threshold"); d.Data["threshold"] != float64(100) {
				t.Fatalf("second credits warning: %s", d.Body)
			}
			e.MustDo(p.mgmt, `mutation($id: ID!) { addCredits(id: $id, amount: 4) { id } }`, map[string]any{"id": k.ID}, &struct{}{})
			if v := p.verify(t, k.Secret, map[string]any{"cost": 1}); *v.Credits != 3 {
				t.Fatalf("after adding 4 to 0 and spending 1: %+v", v)
			}
			// Another tenant cannot top it up.
			other := newPolicyEnv(t, e, "credited-other", nil)
			if r := e.Do(other.mgmt, `mutation($id: ID!) { addCredits(id: $id, amount: 1000) { id } }`, map[string]any{"id": k.ID}); r.Code() != "NOT_FOUND" {
				t.Fatalf("another tenant topped the key up: %s", r.Raw)
			}
			if r := e.Do(p.mgmt, `mutation($id: ID!) { addCredits(id: $id, amount: 1000000000000000) { id } }`, map[string]any{"id": k.ID}); r.Code() != "BAD_USER_INPUT" {
				t.Fatalf("a huge top-up: %s", r.Raw)
			}
			// A restart keeps the balance: the spending was written with the usage.
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			e.Server.Close()
			if err := e.App.Shutdown(ctx); err != nil {
				t.Fatal(err)
			}
			e2 := apptest.New(t, d, app.Options{}, func(c *config.Config) {
				c.DatabaseURL = dbURL
				c.AdminToken = e.AdminToken
			})
			p.Env = e2
			if v := p.verify(t, k.Secret, map[string]any{"cost": 1}); v.Code != "VALID" || *v.Credits != 2 {
				t.Fatalf("after a restart: %+v", v)
			}
		})
	}
}

// The maximum number of keys of a plan holds per tenant.
func TestPlanMaxKeys(t *testing.T) {
	e := apptest.New(t, "sqlite", app.Options{}, nil)
	p := newPolicyEnv(t, e, "small", map[string]any{"maxKeys": 4}) // 2 are the management and verifier keys
	p.consumer(t, nil)
	id := p.consumer(t, nil).ID
	in := map[string]any{"name": "one too many", "scopes": []string{}, "kind": "CONSUMER"}
	r := e.Do(p.mgmt, `mutation($in: CreateApiKeyInput!) { createApiKey(input: $in) { secret } }`, map[string]any{"in": in})
	if r.Code() != "FORBIDDEN" {
		t.Fatalf("5th key of a plan of 4: %s", r.Raw)
	}
	// Revoking one makes room.
	e.MustDo(p.mgmt, `mutation($id: ID!) { revokeApiKey(id: $id) { id } }`, map[string]any{"id": id}, &struct{}{})
	if r := e.Do(p.mgmt, `mutation($in: CreateApiKeyInput!) { createApiKey(input: $in) { secret } }`, map[string]any{"in": in}); len(r.Errors) > 0 {
		t.Fatalf("after a revocation: %s", r.Raw)
	}
}

// Warnings reach live subscribers as events of outcome WARNING.
func TestLiveWarnings(t *testing.T) {
	e := apptest.New(t, "sqlite", app.Options{}, nil)
	p := newPolicyEnv(t, e, "warned", nil)
	k := p.consumer(t, map[string]any{"quota": 5, "quotaPeriod": "DAY"})
	c, err := e.DialWS("graphql-transport-ws", map[string]any{"X-API-Key": p.mgmt}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Subscribe("w", `subscription { usageEvents { outcome warning { type scope threshold limit used } } }`, nil); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // the subscription is registered
	for range 5 {
		p.verify(t, k.Secret, nil)
	}
	var got []string
	deadline := time.Now().Add(5 * time.Second)
	for len(got) < 2 && time.Now().Before(deadline) {
		m, err := c.Next(time.Until(deadline))
		if err != nil {
			break
		}
		var ev struct {
			Data struct {
				UsageEvents struct {
					Outcome string
					Warning *struct {
						Type, Scope            string
						Threshold, Limit, Used int
					}
				}
			}
		}
		_ = json.Unmarshal(m.Payload, &ev)
		if w := ev.Data.UsageEvents.Warning; w != nil {
			if ev.Data.UsageEvents.Outcome != "WARNING" || w.Type != "quota.threshold" || w.Scope != "key" || w.Limit != 5 {
				t.Fatalf("warning %s", m.Payload)
			}
			got = append(got, strconv.Itoa(w.Threshold)+"@"+strconv.Itoa(w.Used))
		}
	}
	if len(got) != 2 || got[0] != "80@4" || got[1] != "100@5" {
		t.Fatalf("warnings %v", got)
	}
}

// Two instances sharing PostgreSQL and Redis (one server, or a cluster) keep one
// tenant cap and one credit balance exactly.
func TestPolicyAcrossInstances(t *testing.T) {
	for _, mode := range redisModes {
		t.Run(mode, func(t *testing.T) { testPolicyAcrossInstances(t, useRedis(t, mode)) })
	}
}

func testPolicyAcrossInstances(t *testing.T, store func(*config.Config)) {
	dbURL := testdb.URL(t, "postgres")
	share := func(c *config.Config) { c.DatabaseURL = dbURL; store(c) }
	a := apptest.New(t, "postgres", app.Options{}, share)
	b := apptest.New(t, "postgres", app.Options{}, func(c *config.Config) { share(c); c.AdminToken = a.AdminToken })
	suffix := strconv.FormatInt(time.Now().UnixNano()%1e9, 36)
	p := newPolicyEnv(t, a, "two-"+suffix, nil)
	credited := p.consumer(t, map[string]any{"credits": map[string]any{"remaining": 20}})
	plain := p.consumer(t, nil)
	pb := &consumerEnv{Env: b, tid: p.tid, mgmt: p.mgmt, verifier: p.verifier}
	p.update(t, map[string]any{"tenantRateLimit": 30, "tenantRateLimitWindowSeconds": 3600})
	// The other instance learns of the plan over the bus.
	awaitLimit(t, pb, plain.Secret, func(v verifyResult) bool { return v.RateLimit != nil && v.RateLimit.Limit == 30 })
	// Seed the balance into the limit store first: otherwise every check of the
	// credited key in the burst waits for the seed while the plain key's checks take
	// the whole tenant cap, and no credit is spent at all.
	for _, c := range []*consumerEnv{p.consumerEnv, pb} {
		if v := c.verify(t, credited.Secret, map[string]any{"cost": 0}); v.Credits == nil || *v.Credits != 20 {
			t.Fatalf("the balance before the burst: %+v", v)
		}
	}
	var codes sync.Map
	var valid, validCredited atomic.Int64
	var wg sync.WaitGroup
	for i := range 60 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := []*consumerEnv{p.consumerEnv, pb}[i%2]
			k := []consumerKey{credited, plain}[i/2%2]
			v, r := c.verifyGQL(t, c.verifier, map[string]any{"key": k.Secret})
			if len(r.Errors) > 0 {
				t.Errorf("verify: %s", r.Raw)
				return
			}
			n, _ := codes.LoadOrStore(v.Code+" "+scope(v), new(atomic.Int64))
			n.(*atomic.Int64).Add(1)
			if v.Code == "VALID" {
				valid.Add(1)
				if k == credited {
					validCredited.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	summary := map[string]int64{}
	codes.Range(func(k, v any) bool { summary[k.(string)] = v.(*atomic.Int64).Load(); return true })
	if valid.Load() != 30 {
		t.Fatalf("%d of 60 verifications admitted across two instances under a tenant cap of 30: %v", valid.Load(), summary)
	}
	// The credits were spent exactly: what the balance says is 20 minus the credited
	// key's admitted verifications, on both instances.
	spent := 0
	for _, c := range []*consumerEnv{p.consumerEnv, pb} {
		v := c.verify(t, credited.Secret, map[string]any{"cost": 0})
		if v.Credits == nil {
			t.Fatalf("no credits: %+v", v)
		}
		if spent == 0 {
			spent = 20 - *v.Credits
		} else if 20-*v.Credits != spent {
			t.Fatalf("the instances disagree on the balance")
		}
	}
	if spent < 1 || spent > 20 || int64(spent) != validCredited.Load() {
		t.Fatalf("spent %d credits, %d verifications of the credited key admitted", spent, validCredited.Load())
	}
	// A plan change made on one instance holds on the other.
	p.update(t, map[string]any{"keyQuota": 77, "quotaPeriod": "DAY"})
	awaitLimit(t, pb, plain.Secret, func(v verifyResult) bool { return v.Quota != nil && v.Quota.Limit == 77 })
}

// awaitLimit checks key on c (charging nothing) until ok holds; it fails the test when
// a second passes first.
func awaitLimit(t *testing.T, c *consumerEnv, key string, ok func(verifyResult) bool) {
	t.Helper()
	changed := time.Now()
	for {
		v := c.verify(t, key, map[string]any{"cost": 0})
		if ok(v) {
			t.Logf("the other instance applied the plan change after %v", time.Since(changed).Round(time.Millisecond))
			return
		}
		if time.Since(changed) > time.Second {
			t.Fatalf("the other instance still answers %+v a second after the plan changed", v)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Concurrent creations cannot go beyond a plan's maximum number of keys.
func TestPlanMaxKeysConcurrent(t *testing.T) {
	forEachDialect(t, func(t *testing.T, e *apptest.Env) {
		p := newPolicyEnv(t, e, "racy", map[string]any{"maxKeys": 6}) // 2 taken
		in := map[string]any{"name": "k", "scopes": []string{}, "kind": "CONSUMER"}
		var created atomic.Int64
		var wg sync.WaitGroup
		for range 12 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := e.Do(p.mgmt, `mutation($in: CreateApiKeyInput!) { createApiKey(input: $in) { secret } }`, map[string]any{"in": in})
				switch {
				case len(r.Errors) == 0:
					created.Add(1)
				case r.Code() != "FORBIDDEN" && r.Code() != "CONFLICT":
					t.Errorf("concurrent create: %s", r.Raw)
				}
			}()
		}
		wg.Wait()
		if created.Load() != 4 {
			t.Fatalf("%d keys created concurrently under a maximum of 6 with 2 taken, want 4", created.Load())
		}
	})
}
