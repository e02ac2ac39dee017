// Package apptest runs a real Latchkey server (the app package behind an
// httptest.Server) on a fresh database for end-to-end tests, and speaks GraphQL to it
// over HTTP.
package apptest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/latchkey/latchkey/internal/app"
	"github.com/latchkey/latchkey/internal/data/testdb"
	"github.com/latchkey/latchkey/internal/platform/config"
)

func init() {
	// Keep test output readable: warnings and errors only.
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
}

// Env is one running server.
type Env struct {
	T          testing.TB
	App        *app.App
	Server     *httptest.Server
	AdminToken string
	Dialect    string
}

// New starts a server on a fresh database of dialect with a random ADMIN_TOKEN.
// mutate, if not nil, may change the configuration before start.
func New(t testing.TB, dialect string, opts app.Options, mutate func(*config.Config)) *Env {
	t.Helper()
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	cfg := config.Config{
		DatabaseURL:        testdb.URL(t, dialect),
		AdminToken:         "admin-" + hex.EncodeToString(b),
		MaxBodyBytes:       1 << 20,
		MaxQueryDepth:      12,
		MaxQueryComplexity: 5000,
		PublicURL:          "http://localhost",
	}
	if mutate != nil {
		mutate(&cfg)
	}
	a, err := app.New(context.Background(), cfg, opts)
	if err != nil {
		t.Fatalf("app.New: %v", err)
	}
	a.Start(context.Background())
	srv := httptest.NewServer(a.Handler)
	t.Cleanup(func() {
		srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := a.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return &Env{T: t, App: a, Server: srv, AdminToken: cfg.AdminToken, Dialect: dialect}
}

// Error is one GraphQL error of a response.
type Error struct {
	Message    string         `json:"message"`
	Path       []any          `json:"path"`
	Extensions map[string]any `json:"extensions"`
}

// Code returns extensions.code.
func (e Error) Code() string { s, _ := e.Extensions["code"].(string); return s }

// Response is a decoded GraphQL response with its HTTP status and headers.
type Response struct {
	Status int
	Header http.Header
	Data   json.RawMessage `json:"data"`
	Errors []Error         `json:"errors"`
	Raw    string
}

// Code returns the code of the first error, or "".
func (r *Response) Code() string {
	if len(r.Errors) == 0 {
		return ""
	}
	return r.Errors[0].Code()
}

// Decode unmarshals data into v, failing the test on errors in the response.
func (r *Response) Decode(t testing.TB, v any) {
	t.Helper()
	if len(r.Errors) > 0 {
		t.Fatalf("unexpected errors (HTTP %d): %s", r.Status, r.Raw)
	}
	if err := json.Unmarshal(r.Data, v); err != nil {
		t.Fatalf("decode data: %v: %s", err, r.Raw)
	}
}

// Do posts query with variables using key (X-API-Key; "" sends none).
func (e *Env) Do(key, query string, vars map[string]any) *Response {
	e.T.Helper()
	body, _ := json.Marshal(map[string]any{"query": query, "variables": vars})
	req, _ := http.NewRequest(http.MethodPost, e.Server.URL+"/query", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("X-API-Key", key)
	}
	return e.Send(req)
}

// Send sends req and decodes the GraphQL response.
func (e *Env) Send(req *http.Request) *Response {
	e.T.Helper()
	resp, err := e.Server.Client().Do(req)
	if err != nil {
		e.T.Fatalf("request: %v", err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	out := &Response{Status: resp.StatusCode, Header: resp.Header, Raw: string(raw)}
	if strings.Contains(resp.Header.Get("Content-Type"), "json") {
		if err := json.Unmarshal(raw, out); err != nil {
			e.T.Fatalf("response is not JSON (HTTP %d): %s", resp.StatusCode, raw)
		}
	}
	return out
}

// MustDo is Do that fails the test on any GraphQL error and decodes data into v.
func (e *Env) MustDo(key, query string, vars map[string]any, v any) {
	e.T.Helper()
	r := e.Do(key, query, vars)
	if r.Status != http.StatusOK {
		e.T.Fatalf("HTTP %d: %s", r.Status, r.Raw)
	}
	r.Decode(e.T, v)
}

// Tenant creates a tenant as admin and returns its ID.
func (e *Env) Tenant(slug string) string {
	e.T.Helper()
	var out struct{ CreateTenant struct{ ID string } }
	e.MustDo(e.AdminToken, `mutation($n: String!, $s: String!) { createTenant(input: {name: $n, slug: $s}) { id } }`,
		map[string]any{"n": "Tenant " + slug, "s": slug}, &out)
	return out.CreateTenant.ID
}

// Key creates a key in tenantID with scopes using creator (the admin token when
// tenantID is set) and returns its ID and secret.
func (e *Env) Key(creator, tenantID string, scopes ...string) (id, secret string) {
	e.T.Helper()
	var out struct {
		CreateApiKey struct {
			APIKey struct{ ID string } `json:"apiKey"`
			Secret string
		}
	}
	in := map[string]any{"name": fmt.Sprintf("key %d", time.Now().UnixNano()), "scopes": scopes}
	if tenantID != "" {
		in["tenantID"] = tenantID
	}
	if scopes == nil {
		in["scopes"] = []string{}
	}
	e.MustDo(creator, `mutation($in: CreateApiKeyInput!) { createApiKey(input: $in) { apiKey { id } secret } }`,
		map[string]any{"in": in}, &out)
	return out.CreateApiKey.APIKey.ID, out.CreateApiKey.Secret
}

// AllScopes lists every scope but keys:verify, which the tests grant on its own
// (viewer.AllScopes has them all).
var AllScopes = []string{"tenant:read", "tenant:write", "keys:read", "keys:write", "usage:read", "webhooks:read", "webhooks:write"}
