package app_test

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/latchkey/latchkey/ent"
	"github.com/latchkey/latchkey/internal/app/apptest"
)

// tenantFixture is one tenant with a full-scope key and one object of every type.
type tenantFixture struct {
	tenantID, keyID, key, webhookID, deliveryID, auditID, logID string
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
	return f
}

// snapshot reads every row of a tenant through the system context, to prove that a
// foreign tenant's attempts changed nothing.
func snapshot(t *testing.T, c *ent.Client, f tenantFixture) string {
	t.Helper()
	ctx := sysCtx()
	tn := c.Tenant.GetX(ctx, f.tenantID)
	k := c.ApiKey.GetX(ctx, f.keyID)
	w := c.Webhook.GetX(ctx, f.webhookID)
	d := c.WebhookDelivery.GetX(ctx, f.deliveryID)
	return fmt.Sprintf("%s|%s|%v|%v|%s|%v|%v|%s|%s|%v", tn.Name, tn.Plan, tn.Active, tn.UpdatedAt.UnixNano(),
		k.Name, k.Scopes, k.RevokedAt, k.UpdatedAt, w.URL, d.Status)
}

// Tenant B's key, holding every scope, against each of tenant A's objects and each
// operation: it sees nothing, changes nothing, and gets the same NOT_FOUND an unknown
// ID gets.
func TestIsolationMatrix(t *testing.T) {
	forEachDialect(t, func(t *testing.T, e *apptest.Env) {
		a := newFixture(t, e, "tenant-a")
		b := newFixture(t, e, "tenant-b")
		before := snapshot(t, e.App.Store.Client, a)

		for _, id := range []string{a.tenantID, a.keyID, a.webhookID, a.deliveryID, a.auditID, a.logID} {
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
		}
		for _, l := range lists {
			t.Run("list "+l.name, func(t *testing.T) {
				r := e.Do(b.key, l.query, nil)
				if r.Code() != "" {
					t.Fatalf("error: %s", r.Raw)
				}
				for _, id := range []string{a.tenantID, a.keyID, a.webhookID, a.deliveryID, a.auditID, `"` + a.logID + `"`} {
					if strings.Contains(r.Raw, id) {
						t.Fatalf("B sees A's %s: %s", id, r.Raw)
					}
				}
			})
		}
		var tl = e.Do(b.key, `{ tenants { edges { node { id } } } }`, nil)
		expectCode(t, tl, "FORBIDDEN") // platform admin only

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
		}
		for _, m := range mutations {
			t.Run("mutation "+m.name, func(t *testing.T) {
				expectCode(t, e.Do(b.key, m.query, m.vars), "NOT_FOUND")
			})
		}
		if after := snapshot(t, e.App.Store.Client, a); after != before {
			t.Fatalf("tenant A changed:\nbefore %s\nafter  %s", before, after)
		}
		// A's key still works and B made no key in A.
		var v viewerResp
		e.MustDo(a.key, viewerQ, nil, &v)
		n := e.App.Store.Client.ApiKey.Query().CountX(sysCtx())
		if n != 2 {
			t.Fatalf("keys in the database: %d, want 2", n)
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
