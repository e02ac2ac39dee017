package api_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"

	"github.com/latchkey/latchkey/client"
	"github.com/latchkey/latchkey/examples/protected-api/api"
	"github.com/latchkey/latchkey/internal/app"
	"github.com/latchkey/latchkey/internal/app/apptest"
)

// consumerKey creates a consumer key of the caller's tenant and returns its ID and
// secret; in holds the input's fields besides name, scopes and kind.
func consumerKey(env *apptest.Env, caller string, in map[string]any) (id, secret string) {
	env.T.Helper()
	in["name"], in["scopes"], in["kind"] = "customer", []string{}, "CONSUMER"
	var out struct {
		CreateApiKey struct {
			APIKey struct{ ID string } `json:"apiKey"`
			Secret string
		}
	}
	env.MustDo(caller, `mutation($in: CreateApiKeyInput!) { createApiKey(input: $in) { apiKey { id } secret } }`,
		map[string]any{"in": in}, &out)
	return out.CreateApiKey.APIKey.ID, out.CreateApiKey.Secret
}

// get calls path on srv with header set, and returns the status, the answer's headers
// and its decoded JSON body.
func get(t *testing.T, srv *httptest.Server, path string, header map[string]string) (int, http.Header, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, srv.URL+path, nil)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var body map[string]any
	_ = json.Unmarshal(raw, &body)
	return resp.StatusCode, resp.Header, body
}

func errorCode(body map[string]any) string {
	e, _ := body["error"].(map[string]any)
	c, _ := e["code"].(string)
	return c
}

// TestExampleAgainstLatchkey runs the example API with the Go middleware against a
// real Latchkey server: a tenant, its management key, a verifying key holding only
// keys:verify, and consumer keys in every state.
func TestExampleAgainstLatchkey(t *testing.T) {
	env := apptest.New(t, "sqlite", app.Options{}, nil)
	tenant := env.Tenant("acme")
	_, manager := env.Key(env.AdminToken, tenant, "keys:read", "keys:write")
	_, backend := env.Key(manager, "", "keys:verify")

	_, reader := consumerKey(env, manager, map[string]any{"ownerID": "cust_1", "permissions": []string{"documents:read"},
		"meta": map[string]any{"plan": "gold"}, "rateLimit": 10, "rateLimitWindowSeconds": 60})
	_, writer := consumerKey(env, manager, map[string]any{"ownerID": "cust_2", "permissions": []string{"documents:write"}})
	revokedID, revoked := consumerKey(env, manager, map[string]any{"permissions": []string{"documents:read"}})
	disabledID, disabled := consumerKey(env, manager, map[string]any{"permissions": []string{"documents:read"}})
	_, limited := consumerKey(env, manager, map[string]any{"permissions": []string{"documents:read"}, "rateLimit": 3, "rateLimitWindowSeconds": 60})
	var ignored map[string]any
	env.MustDo(manager, `mutation($id: ID!) { revokeApiKey(id: $id) { status } }`, map[string]any{"id": revokedID}, &ignored)
	env.MustDo(manager, `mutation($id: ID!) { updateApiKey(id: $id, input: {enabled: false}) { enabled } }`, map[string]any{"id": disabledID}, &ignored)

	lk := client.New(env.Server.URL, backend, client.WithHTTPClient(env.Server.Client()))
	srv := httptest.NewServer(api.New(lk))
	defer srv.Close()

	t.Run("a valid key reads the documents", func(t *testing.T) {
		status, h, body := get(t, srv, "/documents", map[string]string{"X-API-Key": reader})
		if status != 200 || body["owner"] != "cust_1" || body["plan"] != "gold" || len(body["documents"].([]any)) != 2 {
			t.Fatalf("got %d %v", status, body)
		}
		if h.Get("X-RateLimit-Limit") != "10" || h.Get("X-RateLimit-Remaining") != "9" || h.Get("RateLimit") == "" || h.Get("X-RateLimit-Reset") == "" {
			t.Errorf("rate-limit headers %v", h)
		}
		if status, _, body := get(t, srv, "/documents", map[string]string{"Authorization": "Bearer " + reader}); status != 200 {
			t.Errorf("as a bearer token: %d %v", status, body)
		}
	})

	for _, tt := range []struct {
		name   string
		header map[string]string
		status int
		code   string
	}{
		{"no key", nil, 401, "MISSING_KEY"},
		{"an unknown key", map[string]string{"X-API-Key": "lk_live_0000000000000000000000000000000000000000"}, 401, "NOT_FOUND"},
		{"a management key is no consumer key", map[string]string{"X-API-Key": backend}, 401, "NOT_FOUND"},
		{"a revoked key", map[string]string{"X-API-Key": revoked}, 401, "REVOKED"},
		{"a disabled key", map[string]string{"X-API-Key": disabled}, 401, "DISABLED"},
		{"a key without documents:read", map[string]string{"X-API-Key": writer}, 403, "INSUFFICIENT_PERMISSIONS"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			status, h, body := get(t, srv, "/documents", tt.header)
			if status != tt.status || errorCode(body) != tt.code {
				t.Errorf("got %d %v, want %d %s", status, body, tt.status, tt.code)
			}
			if status == 401 && h.Get("WWW-Authenticate") == "" {
				t.Error("401 without WWW-Authenticate")
			}
		})
	}

	t.Run("429 with Retry-After once the rate limit is spent", func(t *testing.T) {
		for i := range 3 {
			if status, _, body := get(t, srv, "/documents", map[string]string{"X-API-Key": limited}); status != 200 {
				t.Fatalf("request %d: %d %v", i+1, status, body)
			}
		}
		status, h, body := get(t, srv, "/documents", map[string]string{"X-API-Key": limited})
		if status != 429 || errorCode(body) != "RATE_LIMITED" {
			t.Fatalf("got %d %v", status, body)
		}
		if secs, err := strconv.Atoi(h.Get("Retry-After")); err != nil || secs < 1 || secs > 60 {
			t.Errorf("Retry-After = %q, want 1-60", h.Get("Retry-After"))
		}
		if h.Get("X-RateLimit-Remaining") != "0" {
			t.Errorf("X-RateLimit-Remaining = %q", h.Get("X-RateLimit-Remaining"))
		}
	})

	t.Run("the health check needs no key", func(t *testing.T) {
		if status, _, _ := get(t, srv, "/healthz", nil); status != 200 {
			t.Errorf("got %d", status)
		}
	})

	t.Run("503 when Latchkey cannot be reached", func(t *testing.T) {
		dead := httptest.NewServer(http.NotFoundHandler())
		dead.Close()
		down := httptest.NewServer(api.New(client.New(dead.URL, backend)))
		defer down.Close()
		if status, _, body := get(t, down, "/documents", map[string]string{"X-API-Key": reader}); status != 503 || errorCode(body) != "UNAVAILABLE" {
			t.Errorf("got %d %v", status, body)
		}
	})
}
