package client_test

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/latchkey/latchkey/client"
	"github.com/latchkey/latchkey/internal/app"
	"github.com/latchkey/latchkey/internal/app/apptest"
)

// TestAgainstLatchkey checks the client against a real Latchkey server: every field
// of the answer decodes, cost 0 charges nothing, and the caller's errors come back
// typed. (The test may import the server; the client package may not.)
func TestAgainstLatchkey(t *testing.T) {
	env := apptest.New(t, "sqlite", app.Options{}, nil)
	tenant := env.Tenant("acme")
	_, manager := env.Key(env.AdminToken, tenant, "keys:read", "keys:write")
	_, backend := env.Key(manager, "", "keys:verify")
	expires := time.Now().Add(48 * time.Hour).UTC().Truncate(time.Second)
	var created struct {
		CreateApiKey struct {
			APIKey struct{ ID string } `json:"apiKey"`
			Secret string
		}
	}
	env.MustDo(manager, `mutation($in: CreateApiKeyInput!) { createApiKey(input: $in) { apiKey { id } secret } }`, map[string]any{"in": map[string]any{
		"name": "c", "scopes": []string{}, "kind": "CONSUMER", "environment": "TEST", "ownerID": "cust_1",
		"permissions": []string{"documents:read", "documents:write"}, "meta": map[string]any{"plan": "gold", "seats": 3},
		"rateLimit": 10, "rateLimitWindowSeconds": 60, "expiresAt": expires,
	}}, &created)
	consumer := created.CreateApiKey.Secret
	ctx := context.Background()
	lk := client.New(env.Server.URL, backend, client.WithHTTPClient(env.Server.Client()))

	t.Run("a valid key, every field", func(t *testing.T) {
		res, err := lk.Verify(ctx, consumer, client.VerifyOptions{Permissions: []string{"documents:read"}, Tag: "GET /documents"})
		if err != nil {
			t.Fatal(err)
		}
		if !res.Valid || res.Code != client.CodeValid || res.KeyID != created.CreateApiKey.APIKey.ID || res.OwnerID != "cust_1" ||
			res.Name != "c" || res.Environment != client.EnvironmentTest || res.ExpiresAt == nil || !res.ExpiresAt.Equal(expires) {
			t.Errorf("got %+v", res)
		}
		if !reflect.DeepEqual(res.Meta, map[string]any{"plan": "gold", "seats": 3.0}) || !reflect.DeepEqual(res.Permissions, []string{"documents:read", "documents:write"}) {
			t.Errorf("meta %v, permissions %v", res.Meta, res.Permissions)
		}
		if rl := res.RateLimit; rl == nil || rl.Limit != 10 || rl.Remaining != 9 || time.Until(rl.ResetAt) <= 0 || time.Until(rl.ResetAt) > time.Minute {
			t.Errorf("rate limit %+v", res.RateLimit)
		}
		if q := res.Quota; q == nil || q.Limit <= 0 || q.Used != 1 || q.Remaining != q.Limit-1 || !q.ResetAt.After(time.Now()) {
			t.Errorf("quota %+v", res.Quota)
		}
	})

	t.Run("cost 0 checks without charging", func(t *testing.T) {
		res, err := lk.Verify(ctx, consumer, client.VerifyOptions{Cost: client.Cost(0)})
		if err != nil || !res.Valid || res.RateLimit == nil || res.RateLimit.Remaining != 9 {
			t.Fatalf("got %+v, %v", res, err)
		}
		res, err = lk.Verify(ctx, consumer, client.VerifyOptions{Cost: client.Cost(4)})
		if err != nil || !res.Valid || res.RateLimit.Remaining != 5 {
			t.Fatalf("cost 4: got %+v, %v", res.RateLimit, err)
		}
	})

	t.Run("outcomes are results, not errors", func(t *testing.T) {
		for key, want := range map[string]client.Code{
			"lk_live_unknown":       client.CodeNotFound,
			backend:                 client.CodeNotFound, // a management key is no consumer key
			consumer + "x":          client.CodeNotFound,
			strings.Repeat("k", 10): client.CodeNotFound,
		} {
			res, err := lk.Verify(ctx, key, client.VerifyOptions{})
			if err != nil || res.Valid || res.Code != want || res.KeyID != "" {
				t.Errorf("got %+v, %v; want %s", res, err, want)
			}
		}
		res, err := lk.Verify(ctx, consumer, client.VerifyOptions{Permissions: []string{"billing:read"}})
		if err != nil || res.Code != client.CodeInsufficientPermissions || res.OwnerID != "cust_1" || res.RateLimit != nil {
			t.Errorf("got %+v, %v", res, err)
		}
	})

	_, noVerify := env.Key(manager, "", "keys:read")
	for _, tt := range []struct {
		name     string
		c        *client.Client
		key      string
		opts     client.VerifyOptions
		category error
		code     string
		detail   string // a key of Details
	}{
		{"unknown management key", client.New(env.Server.URL, "lk_live_nosuchkey"), consumer, client.VerifyOptions{}, client.ErrUnauthorized, "UNAUTHENTICATED", "reason"},
		{"no management key", client.New(env.Server.URL, ""), consumer, client.VerifyOptions{}, client.ErrUnauthorized, "UNAUTHENTICATED", ""},
		{"management key without keys:verify", client.New(env.Server.URL, noVerify), consumer, client.VerifyOptions{}, client.ErrForbidden, "FORBIDDEN", "requiredScopes"},
		{"a key over 256 bytes", lk, strings.Repeat("k", client.MaxKeyBytes+1), client.VerifyOptions{}, client.ErrBadRequest, "BAD_USER_INPUT", "field"},
		{"a tag with a control character", lk, consumer, client.VerifyOptions{Tag: "GET\n/"}, client.ErrBadRequest, "BAD_USER_INPUT", "field"},
		{"a cost out of range", lk, consumer, client.VerifyOptions{Cost: client.Cost(-1)}, client.ErrBadRequest, "BAD_USER_INPUT", "field"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			res, err := tt.c.Verify(ctx, tt.key, tt.opts)
			var e *client.Error
			if !errors.Is(err, tt.category) || !errors.As(err, &e) {
				t.Fatalf("got %+v, %v; want %v", res, err, tt.category)
			}
			if e.Code != tt.code || e.Message == "" {
				t.Errorf("code %q message %q, want %s", e.Code, e.Message, tt.code)
			}
			if _, ok := e.Details[tt.detail]; tt.detail != "" && !ok {
				t.Errorf("details %v lack %s", e.Details, tt.detail)
			}
		})
	}
}
