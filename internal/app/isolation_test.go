package app_test

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"testing"

	entplan "github.com/latchkey/latchkey/ent/plan"
	"github.com/latchkey/latchkey/internal/app/apptest"
)

// tenantFixture is one tenant with a full-scope key and one object of every type.
type tenantFixture struct {
	tenantID, keyID, key, webhookID, deliveryID, auditID, logID string
	// ownerRecID is the owner record of ownerID "cust_1" (the same ownerID in every
	// tenant); consumerID/consumer a consumer key of that owner with credits and a named
	// limit; verifier a keys:verify key.
	ownerRecID, consumerID, consumer, verifier string
}

func newFixture(t *testing.T, e *apptest.Env, slug string) tenantFixture {
	t.Helper()
	f := tenantFixture{tenantID: e.Tenant(slug)}
	f.keyID, f.key = e.Key(e.AdminToken, f.tenantID, apptest.AllScopes...)
	ctx := sysCtx()
	c := e.App.Store.Client
	wh := c.Webhook.Create().SetTenantID(f.tenantID).SetURL("https://example.com/" + slug).SetSecret("whsec_x").SetActive(false).SaveX(ctx)
	f.webhookID = wh.ID
	f.deliveryID = c.WebhookDelivery.Create().SetTenantID(f.tenantID).SetWebhookID(wh.ID).
		SetEventID("msg_" + slug).SetEventType("webhook.test").SetPayload("{}").SaveX(ctx).ID
	var logs struct {
		AuditLogs struct {
			Edges []struct{ Node struct{ ID string } }
		}
	}
	e.MustDo(f.key, `{ auditLogs(first: 1) { edges { node { id } } } }`, nil, &logs)
	if len(logs.AuditLogs.Edges) == 0 {
		t.Fatal("tenant has no audit log entry")
	}
	f.auditID = logs.AuditLogs.Edges[0].Node.ID
	if err := e.App.Recorder.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	var reqs struct {
		UsageLogs struct {
			Edges []struct{ Node struct{ ID string } }
		}
	}
	e.MustDo(f.key, `{ usageLogs(first: 1) { edges { node { id } } } }`, nil, &reqs)
	if len(reqs.UsageLogs.Edges) == 0 {
		t.Fatal("tenant has no request log entry")
	}
	f.logID = reqs.UsageLogs.Edges[0].Node.ID
	var own struct{ UpsertOwner struct{ ID string } }
	e.MustDo(f.key, `mutation { upsertOwner(input: {ownerID: "cust_1", meta: {tenant: "`+slug+`"}, rateLimit: 1000, rateLimitWindowSeconds: 3600}) { id } }`, nil, &own)
	f.ownerRecID = own.UpsertOwner.ID
	var ck struct {
		CreateApiKey struct {
			APIKey struct{ ID string } `json:"apiKey"`
			Secret string
		}
	}
	e.MustDo(f.key, `mutation { createApiKey(input: {name: "customer", scopes: [], kind: CONSUMER, ownerID: "cust_1",
		credits: {remaining: 100}, limits: [{name: "tokens", limit: 1000, windowSeconds: 3600}]}) { apiKey { id } secret } }`, nil, &ck)
	f.consumerID, f.consumer = ck.CreateApiKey.APIKey.ID, ck.CreateApiKey.Secret
	_, f.verifier = e.Key(f.key, "", "keys:verify")
	return f
}

// snapshot reads every row of a tenant through the system context, and the live
// credits and limits of its consumer key through its own key, to prove that a foreign
// tenant's attempts changed nothing.
func snapshot(t *testing.T, e *apptest.Env, f tenantFixture) string {
	t.Helper()
	ctx := sysCtx()
	c := e.App.Store.Client
	tn := c.Tenant.GetX(ctx, f.tenantID)
	k := c.ApiKey.GetX(ctx, f.keyID)
	w := c.Webhook.GetX(ctx, f.webhookID)
	d := c.WebhookDelivery.GetX(ctx, f.deliveryID)
	o := c.Owner.GetX(ctx, f.ownerRecID)
	ck := c.ApiKey.GetX(ctx, f.consumerID)
	live := e.Do(f.key, `query($id: ID!) { apiKeys(where: {id: $id}) { edges { node { credits { remaining granted } owner { id meta rateLimit } } } } }`,
		map[string]any{"id": f.consumerID})
	if live.Code() != "" {
		t.Fatalf("reading the consumer key: %s", live.Raw)
	}
	return fmt.Sprintf("%s|%s|%v|%v|%s|%v|%v|%s|%s|%v|%v|%v|%s|%v|%v|%s", tn.Name, tn.Plan, tn.Active, tn.UpdatedAt.UnixNano(),
		k.Name, k.Scopes, k.RevokedAt, k.UpdatedAt, w.URL, d.Status,
		o.Meta, o.UpdatedAt.UnixNano(), ck.Name, ck.UpdatedAt.UnixNano(), ck.RevokedAt, live.Raw)
}

// Tenant B's key, holding every scope, against each of tenant A's objects and each
// operation: it sees nothing, changes nothing, and gets the same NOT_FOUND an unknown
// ID gets.
func TestIsolationMatrix(t *testing.T) {
	forEachDialect(t, func(t *testing.T, e *apptest.Env) {
		a := newFixture(t, e, "tenant-a")
		b := newFixture(t, e, "tenant-b")
		before := snapshot(t, e, a)

		// Plans are Nodes too, readable by platform admins only (even the tenant's own).
		planID := e.App.Store.Client.Plan.Query().Where(entplan.Name(e.App.Store.Client.Tenant.GetX(sysCtx(), a.tenantID).Plan)).OnlyIDX(sysCtx())
		for _, id := range []string{a.tenantID, a.keyID, a.webhookID, a.deliveryID, a.auditID, a.logID, a.ownerRecID, a.consumerID, planID} {
			t.Run("node "+strings.SplitN(id, "_", 2)[0], func(t *testing.T) {
				r := e.Do(b.key, `query($id: ID!) { node(id: $id) { id } }`, map[string]any{"id": id})
				expectCode(t, r, "NOT_FOUND")
				unknownID := strings.SplitN(id, "_", 2)[0] + "_01zzzzzzzzzzzzzzzzzzzzzzzz"
				if strings.HasPrefix(id, "log_") { // request log rows are numbered
					unknownID = "log_999999999"
				}
				unknown := e.Do(b.key, `query($id: ID!) { node(id: $id) { id } }`, map[string]any{"id": unknownID})
				expectCode(t, unknown, "NOT_FOUND")
				if strings.ReplaceAll(r.Errors[0].Message, id, "ID") != strings.ReplaceAll(unknown.Errors[0].Message, unknownID, "ID") {
					t.Fatalf("foreign and unknown ids answer differently: %q vs %q", r.Errors[0].Message, unknown.Errors[0].Message)
				}
				r = e.Do(b.key, `query($ids: [ID!]!) { nodes(ids: $ids) { id } }`, map[string]any{"ids": []string{id}})
				if !strings.Contains(r.Raw, "NOT_FOUND") || !strings.Contains(r.Raw, `"data":{"nodes":[null]}`) {
					t.Fatalf("nodes leaked or answered oddly: %s", r.Raw)
				}
			})
		}

		lists := []struct{ name, query string }{
			{"apiKeys", `{ apiKeys { edges { node { id tenantID } } } }`},
			{"webhooks", `{ webhooks { edges { node { id tenantID } } } }`},
			{"webhookDeliveries", `{ webhookDeliveries { edges { node { id tenantID } } } }`},
			{"webhookDeliveries by A's webhook", `{ webhookDeliveries(webhookID: "` + a.webhookID + `") { edges { node { id tenantID } } } }`},
			{"auditLogs", `{ auditLogs { edges { node { id tenantID objectID } } } }`},
			{"apiKeys where tenantID", `{ apiKeys(where: {tenantID: "` + a.tenantID + `"}) { edges { node { id } } } }`},
			{"viewer tenant edges", `{ viewer { tenant { id apiKeys { edges { node { id } } } webhooks { edges { node { id } } } } } }`},
			{"usageLogs", `{ usageLogs { edges { node { id apiKeyID } } } }`},
			{"usageLogs where A's key", `{ usageLogs(where: {apiKeyID: "` + a.keyID + `"}) { totalCount edges { node { id } } } }`},
			{"usageLogs where A's tenant", `{ usageLogs(where: {tenantID: "` + a.tenantID + `"}) { totalCount edges { node { id } } } }`},
			{"usage by key", `{ usage(from: "2020-01-01T00:00:00Z", to: "2040-01-01T00:00:00Z", interval: DAY, groupBy: KEY) { apiKeyID requests } }`},
			{"usage of A's key by operation", `{ usage(apiKeyID: "` + a.keyID + `", from: "2020-01-01T00:00:00Z", to: "2040-01-01T00:00:00Z", interval: DAY, groupBy: OPERATION) { operationName requests } }`},
			{"owners", `{ owners { edges { node { id tenantID ownerID meta } } } }`},
			{"owners where the shared ownerID", `{ owners(where: {ownerID: "cust_1"}) { totalCount edges { node { id tenantID meta } } } }`},
			{"owners where A's record", `{ owners(where: {id: "` + a.ownerRecID + `"}) { totalCount edges { node { id } } } }`},
			{"apiKeys owner and credits edges", `{ apiKeys { edges { node { id ownerID owner { id tenantID meta } credits { remaining } } } } }`},
			{"usageLogs where A's consumer key", `{ usageLogs(where: {apiKeyID: "` + a.consumerID + `"}) { totalCount edges { node { id } } } }`},
			{"usageLogs where the shared ownerID", `{ usageLogs(where: {ownerID: "cust_1"}) { edges { node { id apiKeyID tenantID } } } }`},
		}
		for _, l := range lists {
			t.Run("list "+l.name, func(t *testing.T) {
				r := e.Do(b.key, l.query, nil)
				if r.Code() != "" {
					t.Fatalf("error: %s", r.Raw)
				}
				for _, id := range []string{a.tenantID, a.keyID, a.webhookID, a.deliveryID, a.auditID, `"` + a.logID + `"`, a.ownerRecID, a.consumerID, `"tenant-a"`} {
					if strings.Contains(r.Raw, id) {
						t.Fatalf("B sees A's %s: %s", id, r.Raw)
					}
				}
			})
		}
		var tl = e.Do(b.key, `{ tenants { edges { node { id } } } }`, nil)
		expectCode(t, tl, "FORBIDDEN") // platform admin only
		plan := e.App.Store.Client.Tenant.GetX(sysCtx(), a.tenantID).Plan
		for name, q := range map[string]string{ // plans are platform admin only
			"plans":      `{ plans { name } }`,
			"createPlan": `mutation { createPlan(input: {name: "pwned", keyRateLimit: 1, keyRateLimitWindowSeconds: 1}) { name } }`,
			"updatePlan": `mutation { updatePlan(name: "` + plan + `", input: {keyRateLimit: 1}) { name } }`,
		} {
			t.Run("admin only "+name, func(t *testing.T) { expectCode(t, e.Do(b.key, q, nil), "FORBIDDEN") })
		}

		mutations := []struct {
			name, query string
			vars        map[string]any
		}{
			{"updateTenant", `mutation($id: ID!) { updateTenant(id: $id, input: {name: "pwned"}) { id } }`, map[string]any{"id": a.tenantID}},
			{"updateApiKey", `mutation($id: ID!) { updateApiKey(id: $id, input: {name: "pwned"}) { id } }`, map[string]any{"id": a.keyID}},
			{"revokeApiKey", `mutation($id: ID!) { revokeApiKey(id: $id) { id } }`, map[string]any{"id": a.keyID}},
			{"rotateApiKey", `mutation($id: ID!) { rotateApiKey(id: $id) { secret } }`, map[string]any{"id": a.keyID}},
			{"createApiKey in A", `mutation($t: ID!) { createApiKey(input: {tenantID: $t, name: "pwned", scopes: []}) { secret } }`, map[string]any{"t": a.tenantID}},
			{"updateWebhook", `mutation($id: ID!) { updateWebhook(id: $id, input: {description: "pwned"}) { id } }`, map[string]any{"id": a.webhookID}},
			{"deleteWebhook", `mutation($id: ID!) { deleteWebhook(id: $id) }`, map[string]any{"id": a.webhookID}},
			{"rotateWebhookSecret", `mutation($id: ID!) { rotateWebhookSecret(id: $id) { secret } }`, map[string]any{"id": a.webhookID}},
			{"sendTestWebhook", `mutation($id: ID!) { sendTestWebhook(id: $id) { id } }`, map[string]any{"id": a.webhookID}},
			{"redeliverWebhookDelivery", `mutation($id: ID!) { redeliverWebhookDelivery(id: $id) { id } }`, map[string]any{"id": a.deliveryID}},
			{"createWebhook in A", `mutation($t: ID!) { createWebhook(input: {tenantID: $t, url: "https://93.184.215.14/x"}) { secret } }`, map[string]any{"t": a.tenantID}},
			{"addCredits", `mutation($id: ID!) { addCredits(id: $id, amount: 1000) { id } }`, map[string]any{"id": a.consumerID}},
			{"addCredits negative", `mutation($id: ID!) { addCredits(id: $id, amount: -100) { id } }`, map[string]any{"id": a.consumerID}},
			{"upsertOwner in A", `mutation($t: ID!) { upsertOwner(input: {tenantID: $t, ownerID: "cust_1", meta: {tenant: "pwned"}}) { id } }`, map[string]any{"t": a.tenantID}},
			{"updateApiKey credits", `mutation($id: ID!) { updateApiKey(id: $id, input: {credits: {remaining: 1000000}}) { id } }`, map[string]any{"id": a.consumerID}},
			{"updateApiKey limits", `mutation($id: ID!) { updateApiKey(id: $id, input: {limits: [{name: "tokens", limit: 1, windowSeconds: 60}]}) { id } }`, map[string]any{"id": a.consumerID}},
			{"updateApiKey owner", `mutation($id: ID!) { updateApiKey(id: $id, input: {ownerID: "cust_2", enabled: false}) { id } }`, map[string]any{"id": a.consumerID}},
			{"revoke A's consumer key", `mutation($id: ID!) { revokeApiKey(id: $id) { id } }`, map[string]any{"id": a.consumerID}},
		}
		for _, m := range mutations {
			t.Run("mutation "+m.name, func(t *testing.T) {
				expectCode(t, e.Do(b.key, m.query, m.vars), "NOT_FOUND")
			})
		}
		// B's verifier gets NOT_FOUND for A's consumer key, told nothing, and spends none
		// of its credits or named limits (GraphQL and REST).
		in := map[string]any{"key": a.consumer, "cost": 50, "charges": []map[string]any{{"name": "tokens", "cost": 600}}}
		t.Run("verifyApiKey of A's consumer key", func(t *testing.T) {
			var out struct{ VerifyApiKey verifyResult }
			r := e.Do(b.verifier, verifyMutation, map[string]any{"in": in})
			r.Decode(t, &out)
			if v := out.VerifyApiKey; v.Code != "NOT_FOUND" || v.KeyID != nil || v.OwnerID != nil || v.Credits != nil || v.OwnerMeta != nil || v.LimitScope != nil {
				t.Fatalf("GraphQL: %s", r.Raw)
			}
			status, out2, raw := verifyREST(t, e, b.verifier, "application/json", restBody(in))
			if status != 200 || out2["code"] != "NOT_FOUND" || out2["keyID"] != nil || out2["credits"] != nil || out2["ownerMeta"] != nil {
				t.Fatalf("REST: %d %s", status, raw)
			}
		})
		if after := snapshot(t, e, a); after != before {
			t.Fatalf("tenant A changed:\nbefore %s\nafter  %s", before, after)
		}
		// A's key still works and B made no key in A.
		var v viewerResp
		e.MustDo(a.key, viewerQ, nil, &v)
		n := e.App.Store.Client.ApiKey.Query().CountX(sysCtx())
		if n != 6 { // per tenant: the full-scope key, the consumer key, the verifier
			t.Fatalf("keys in the database: %d, want 6", n)
		}
		// A's own verification can still spend the whole of its credits and named limit:
		// B's attempts charged nothing.
		var mine struct{ VerifyApiKey verifyResult }
		e.MustDo(a.verifier, verifyMutation, map[string]any{"in": map[string]any{"key": a.consumer, "cost": 100,
			"charges": []map[string]any{{"name": "tokens", "cost": 1000}}}}, &mine)
		if v := mine.VerifyApiKey; v.Code != "VALID" || v.Credits == nil || *v.Credits != 0 || v.OwnerMeta["tenant"] != "tenant-a" {
			t.Fatalf("A's own verification after B's attempts: %+v (scope %s)", v, scope(v))
		}
	})
}

// A key lacking a scope is refused the fields that need it, including through node()
// and nested edges, and nothing runs.
func TestScopes(t *testing.T) {
	e := apptest.New(t, "sqlite", appOptions(), nil)
	tid := e.Tenant("scopes")
	keyID, full := e.Key(e.AdminToken, tid, apptest.AllScopes...)
	_, usageOnly := e.Key(full, "", "usage:read")
	cases := []struct {
		name, query string
	}{
		{"apiKeys", `{ apiKeys { totalCount } }`},
		{"webhooks", `{ webhooks { totalCount } }`},
		{"auditLogs", `{ auditLogs { totalCount } }`},
		{"node key", `{ node(id: "` + keyID + `") { id } }`},
		{"node tenant", `{ node(id: "` + tid + `") { id } }`},
		{"tenant edge", `{ viewer { tenant { apiKeys { totalCount } } } }`},
		{"rotatedTo edge", `{ viewer { apiKey { rotatedTo { id } } } }`},
		{"createTenant", `mutation { createTenant(input: {name: "x", slug: "xyz"}) { id } }`},
		{"createApiKey", `mutation { createApiKey(input: {name: "x", scopes: []}) { secret } }`},
		{"revokeApiKey", `mutation { revokeApiKey(id: "` + keyID + `") { id } }`},
		{"updateTenant", `mutation { updateTenant(id: "` + tid + `", input: {name: "x"}) { id } }`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			expectCode(t, e.Do(usageOnly, tc.query, nil), "FORBIDDEN")
		})
	}
	var v viewerResp
	e.MustDo(full, viewerQ, nil, &v)
	if v.Viewer.APIKey.Status != "ACTIVE" {
		t.Fatalf("key changed: %+v", v.Viewer)
	}
	if !reflect.DeepEqual(v.Viewer.Scopes, apptest.AllScopes) {
		t.Fatalf("scopes = %v", v.Viewer.Scopes)
	}
}
