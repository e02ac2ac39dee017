package app_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/latchkey/latchkey/internal/app"
	"github.com/latchkey/latchkey/internal/app/apptest"
	"github.com/latchkey/latchkey/internal/data/testdb"
)

func forEachDialect(t *testing.T, f func(t *testing.T, e *apptest.Env)) {
	for _, d := range testdb.Dialects {
		t.Run(d, func(t *testing.T) {
			t.Parallel()
			f(t, apptest.New(t, d, app.Options{}, nil))
		})
	}
}

const viewerQ = `{ viewer { isAdmin scopes apiKey { id prefix status } tenantID } }`

type viewerResp struct {
	Viewer struct {
		IsAdmin  bool
		Scopes   []string
		APIKey   *struct{ ID, Prefix, Status string } `json:"apiKey"`
		TenantID string                               `json:"tenantID"`
	}
}

func expectUnauthenticated(t *testing.T, r *apptest.Response, reason string) {
	t.Helper()
	if r.Status != http.StatusUnauthorized || r.Code() != "UNAUTHENTICATED" {
		t.Fatalf("want 401 UNAUTHENTICATED, got HTTP %d: %s", r.Status, r.Raw)
	}
	if reason != "" && r.Errors[0].Extensions["reason"] != reason {
		t.Fatalf("reason = %v, want %q", r.Errors[0].Extensions["reason"], reason)
	}
}

func expectCode(t *testing.T, r *apptest.Response, code string) {
	t.Helper()
	if r.Code() != code {
		t.Fatalf("want %s, got HTTP %d: %s", code, r.Status, r.Raw)
	}
}

func TestKeyLifecycle(t *testing.T) {
	forEachDialect(t, func(t *testing.T, e *apptest.Env) {
		tid := e.Tenant("acme")
		id, secret := e.Key(e.AdminToken, tid, apptest.AllScopes...)

		var v viewerResp
		e.MustDo(secret, viewerQ, nil, &v)
		if v.Viewer.IsAdmin || v.Viewer.APIKey.ID != id || v.Viewer.TenantID != tid || v.Viewer.APIKey.Status != "ACTIVE" {
			t.Fatalf("viewer = %+v", v.Viewer)
		}

		// Bearer works too.
		req, _ := http.NewRequest(http.MethodPost, e.Server.URL+"/query", stringsReader(`{"query":"{ viewer { isAdmin } }"}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+secret)
		if r := e.Send(req); r.Status != 200 || r.Code() != "" {
			t.Fatalf("bearer: HTTP %d %s", r.Status, r.Raw)
		}

		// The key creates a narrower key in its own tenant, and cannot grant what it lacks.
		childID, child := e.Key(secret, "", "keys:read")
		_ = childID
		r := e.Do(child, `mutation { createApiKey(input: {name: "x", scopes: ["keys:write"]}) { secret } }`, nil)
		expectCode(t, r, "FORBIDDEN") // lacks keys:write altogether
		_, grandchildCreator := e.Key(secret, "", "keys:write")
		r = e.Do(grandchildCreator, `mutation { createApiKey(input: {name: "x", scopes: ["keys:read"]}) { secret } }`, nil)
		expectCode(t, r, "FORBIDDEN")
		if r.Errors[0].Extensions["scope"] != "keys:read" {
			t.Fatalf("scope extension: %s", r.Raw)
		}

		// Update changes name, scopes, limits and expiry.
		exp := time.Now().Add(48 * time.Hour).UTC().Truncate(time.Second)
		var up struct {
			UpdateApiKey struct {
				Name                   string
				Scopes                 []string
				RateLimit              *int
				RateLimitWindowSeconds *int
				ExpiresAt              *time.Time
			}
		}
		e.MustDo(secret, `mutation($id: ID!, $exp: Time) { updateApiKey(id: $id, input: {name: "renamed", scopes: ["keys:read", "usage:read"], rateLimit: 10, rateLimitWindowSeconds: 60, expiresAt: $exp}) { name scopes rateLimit rateLimitWindowSeconds expiresAt } }`,
			map[string]any{"id": childID, "exp": exp}, &up)
		u := up.UpdateApiKey
		if u.Name != "renamed" || len(u.Scopes) != 2 || *u.RateLimit != 10 || *u.RateLimitWindowSeconds != 60 || !u.ExpiresAt.Equal(exp) {
			t.Fatalf("update = %+v", u)
		}
		// The new scopes hold on the very next request.
		var cv viewerResp
		e.MustDo(child, viewerQ, nil, &cv)
		if len(cv.Viewer.Scopes) != 2 {
			t.Fatalf("scopes after update: %v", cv.Viewer.Scopes)
		}
		// A tenant key stays within its plan (free: 1,000 per hour): the plan's limit
		// with the key's 60 s window would be more.
		expectCode(t, e.Do(secret, `mutation($id: ID!) { updateApiKey(id: $id, input: {rateLimit: null}) { id } }`, map[string]any{"id": childID}), "BAD_USER_INPUT")
		expectCode(t, e.Do(secret, `mutation($id: ID!) { updateApiKey(id: $id, input: {rateLimit: 2000, rateLimitWindowSeconds: 3600}) { id } }`, map[string]any{"id": childID}), "BAD_USER_INPUT")
		expectCode(t, e.Do(secret, `mutation($id: ID!) { updateApiKey(id: $id, input: {quota: 0}) { id } }`, map[string]any{"id": childID}), "BAD_USER_INPUT")
		// Clearing optional settings with null.
		e.MustDo(secret, `mutation($id: ID!) { updateApiKey(id: $id, input: {rateLimit: null, rateLimitWindowSeconds: null, expiresAt: null}) { name scopes rateLimit rateLimitWindowSeconds expiresAt } }`,
			map[string]any{"id": childID}, &up)
		if up.UpdateApiKey.RateLimit != nil || up.UpdateApiKey.ExpiresAt != nil || up.UpdateApiKey.RateLimitWindowSeconds != nil {
			t.Fatalf("clear = %+v", up.UpdateApiKey)
		}

		// Revocation takes effect on the very next request.
		e.MustDo(child, viewerQ, nil, &cv) // cached now
		var rv struct{ RevokeApiKey struct{ Status string } }
		e.MustDo(secret, `mutation($id: ID!) { revokeApiKey(id: $id) { status } }`, map[string]any{"id": childID}, &rv)
		if rv.RevokeApiKey.Status != "REVOKED" {
			t.Fatalf("status after revoke: %s", rv.RevokeApiKey.Status)
		}
		expectUnauthenticated(t, e.Do(child, viewerQ, nil), "key revoked")
		// A revoked key cannot be updated or rotated.
		expectCode(t, e.Do(secret, `mutation($id: ID!) { updateApiKey(id: $id, input: {name: "y"}) { id } }`, map[string]any{"id": childID}), "BAD_USER_INPUT")
		expectCode(t, e.Do(secret, `mutation($id: ID!) { rotateApiKey(id: $id) { secret } }`, map[string]any{"id": childID}), "BAD_USER_INPUT")
	})
}

func TestRotation(t *testing.T) {
	forEachDialect(t, func(t *testing.T, e *apptest.Env) {
		tid := e.Tenant("rot")
		id, old := e.Key(e.AdminToken, tid, "keys:read", "keys:write")
		e.MustDo(old, viewerQ, nil, &viewerResp{})

		type rotated struct {
			RotateApiKey struct {
				APIKey struct {
					ID          string
					Scopes      []string
					RotatedFrom struct{ ID, Status string }
				} `json:"apiKey"`
				Secret string
			}
		}
		q := `mutation($id: ID!, $g: Int) { rotateApiKey(id: $id, gracePeriodSeconds: $g) { apiKey { id scopes rotatedFrom { id status } } secret } }`

		// With a grace period the old key keeps working, then fails.
		var rot rotated
		e.MustDo(old, q, map[string]any{"id": id, "g": 2}, &rot)
		nk := rot.RotateApiKey
		if nk.Secret == "" || nk.APIKey.ID == id || nk.APIKey.RotatedFrom.ID != id || nk.APIKey.RotatedFrom.Status != "ROTATING" || len(nk.APIKey.Scopes) != 2 {
			t.Fatalf("rotate = %+v", nk)
		}
		e.MustDo(old, viewerQ, nil, &viewerResp{})
		e.MustDo(nk.Secret, viewerQ, nil, &viewerResp{})
		time.Sleep(2100 * time.Millisecond)
		expectUnauthenticated(t, e.Do(old, viewerQ, nil), "key expired")
		e.MustDo(nk.Secret, viewerQ, nil, &viewerResp{})

		// Without a grace period the old key fails at once.
		var rot2 rotated
		e.MustDo(nk.Secret, q, map[string]any{"id": nk.APIKey.ID}, &rot2)
		expectUnauthenticated(t, e.Do(nk.Secret, viewerQ, nil), "key expired")
		e.MustDo(rot2.RotateApiKey.Secret, viewerQ, nil, &viewerResp{})

		expectCode(t, e.Do(rot2.RotateApiKey.Secret, q, map[string]any{"id": rot2.RotateApiKey.APIKey.ID, "g": -1}), "BAD_USER_INPUT")
	})
}

func TestExpiredKeyAndInactiveTenant(t *testing.T) {
	forEachDialect(t, func(t *testing.T, e *apptest.Env) {
		tid := e.Tenant("exp")
		var out struct {
			CreateApiKey struct{ Secret string }
		}
		e.MustDo(e.AdminToken, `mutation($t: ID!, $x: Time) { createApiKey(input: {tenantID: $t, name: "short", scopes: [], expiresAt: $x}) { secret } }`,
			map[string]any{"t": tid, "x": time.Now().Add(1500 * time.Millisecond)}, &out)
		e.MustDo(out.CreateApiKey.Secret, viewerQ, nil, &viewerResp{})
		time.Sleep(1600 * time.Millisecond)
		expectUnauthenticated(t, e.Do(out.CreateApiKey.Secret, viewerQ, nil), "key expired")

		_, key := e.Key(e.AdminToken, tid, "tenant:read", "tenant:write")
		e.MustDo(key, viewerQ, nil, &viewerResp{})
		// A tenant key cannot deactivate its own tenant; an admin can, and its keys fail at once.
		expectCode(t, e.Do(key, `mutation($id: ID!) { updateTenant(id: $id, input: {active: false}) { id } }`, map[string]any{"id": tid}), "FORBIDDEN")
		e.MustDo(e.AdminToken, `mutation($id: ID!) { updateTenant(id: $id, input: {active: false}) { id } }`, map[string]any{"id": tid}, &struct{}{})
		expectUnauthenticated(t, e.Do(key, viewerQ, nil), "tenant inactive")
		e.MustDo(e.AdminToken, `mutation($id: ID!) { updateTenant(id: $id, input: {active: true}) { id } }`, map[string]any{"id": tid}, &struct{}{})
		e.MustDo(key, viewerQ, nil, &viewerResp{})
		// The tenant key may rename its tenant.
		var ut struct{ UpdateTenant struct{ Name string } }
		e.MustDo(key, `mutation($id: ID!) { updateTenant(id: $id, input: {name: "  New name "}) { name } }`, map[string]any{"id": tid}, &ut)
		if ut.UpdateTenant.Name != "New name" {
			t.Fatalf("name = %q", ut.UpdateTenant.Name)
		}
	})
}

func TestAuthFailures(t *testing.T) {
	e := apptest.New(t, "sqlite", app.Options{}, nil)
	tid := e.Tenant("auth")
	_, good := e.Key(e.AdminToken, tid)
	typo := good[:20] + string(good[20]^1) + good[21:]
	wellFormedUnknown := func() string {
		_, k := e.Key(e.AdminToken, tid)
		e.App.Store.Client.ApiKey.Delete().ExecX(sysCtx())
		return k
	}()
	cases := []struct {
		name, key, reason string
	}{
		{"missing", "", "missing credential"},
		{"malformed", "hello", "malformed key"},
		{"typo rejected by checksum", typo, "malformed key"},
		{"unknown", wellFormedUnknown, "unknown key"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			expectUnauthenticated(t, e.Do(tc.key, viewerQ, nil), tc.reason)
		})
	}
	// Anonymous introspection is allowed so the playground can load the schema.
	r := e.Do("", `{ __schema { queryType { name } } }`, nil)
	if r.Status != 200 || r.Code() != "" {
		t.Fatalf("introspection: HTTP %d %s", r.Status, r.Raw)
	}
}

func sysCtx() context.Context { return systemContext(context.Background()) }

// A key cannot obtain more than it holds by managing a stronger key, and a key being
// rotated out cannot outlive its grace period.
func TestNoEscalationThroughKeyManagement(t *testing.T) {
	forEachDialect(t, func(t *testing.T, e *apptest.Env) {
		tid := e.Tenant("escalate")
		strongID, strong := e.Key(e.AdminToken, tid, apptest.AllScopes...)
		weakID, weak := e.Key(e.AdminToken, tid, "keys:write")
		for _, tc := range []struct{ name, q string }{
			{"rotate stronger", `mutation($id: ID!) { rotateApiKey(id: $id, gracePeriodSeconds: 60) { secret } }`},
			{"extend stronger", `mutation($id: ID!) { updateApiKey(id: $id, input: {expiresAt: null}) { id } }`},
		} {
			t.Run(tc.name, func(t *testing.T) {
				expectCode(t, e.Do(weak, tc.q, map[string]any{"id": strongID}), "FORBIDDEN")
			})
		}
		// Revoking a stronger key is allowed: it only takes power away.
		_ = weakID
		var rot struct{ RotateApiKey struct{ Secret string } }
		e.MustDo(strong, `mutation($id: ID!) { rotateApiKey(id: $id, gracePeriodSeconds: 600) { secret } }`, map[string]any{"id": strongID}, &rot)
		for _, in := range []string{`{expiresAt: null}`, `{expiresAt: "2999-01-01T00:00:00Z"}`} {
			expectCode(t, e.Do(strong, `mutation($id: ID!) { updateApiKey(id: $id, input: `+in+`) { id } }`, map[string]any{"id": strongID}), "BAD_USER_INPUT")
		}
		soon := time.Now().Add(5 * time.Minute).UTC().Format(time.RFC3339)
		e.MustDo(strong, `mutation($id: ID!) { updateApiKey(id: $id, input: {expiresAt: "`+soon+`"}) { id } }`, map[string]any{"id": strongID}, &struct{}{})
	})
}
