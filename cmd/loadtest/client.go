package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// ledger counts the operations the harness was answered for with a tenant key: those
// are the ones the server records as usage (platform-admin calls are not recorded).
type ledger struct {
	served    atomic.Int64 // HTTP 200 or 429 answers, and admitted subscriptions
	transport atomic.Int64 // requests without an answer (the server may still record them)
	mu        sync.Mutex
	other     map[int]int // answers with any other status
}

// count records one tenant-key answer.
func (l *ledger) count(status int) {
	if status == http.StatusOK || status == http.StatusTooManyRequests {
		l.served.Add(1)
		return
	}
	l.mu.Lock()
	if l.other == nil {
		l.other = map[int]int{}
	}
	l.other[status]++
	l.mu.Unlock()
}

// otherStatuses describes the tenant-key answers that were neither 200 nor 429.
func (l *ledger) otherStatuses() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return formatStatuses(l.other)
}

// client calls the server's GraphQL endpoint, counting tenant-key answers in its ledger.
type client struct {
	base   string
	http   *http.Client
	ledger *ledger
}

// newClient returns a client for baseURL with keep-alive connections for conns
// concurrent callers.
func newClient(baseURL string, conns int, l *ledger) *client {
	return &client{base: baseURL, http: newHTTPClient(conns), ledger: l}
}

// newHTTPClient returns a keep-alive client that can hold conns idle connections to
// one host. Its timeout is long: a request abandoned by the client may still be
// served and recorded by the server, which would make the usage count disagree.
func newHTTPClient(conns int) *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = conns * 2
	t.MaxIdleConnsPerHost = conns * 2
	t.DisableCompression = true
	return &http.Client{Transport: t, Timeout: 60 * time.Second}
}

// response is one HTTP answer.
type response struct {
	Status int
	Header http.Header
	Body   []byte
}

// gqlError is one GraphQL error.
type gqlError struct {
	Message    string         `json:"message"`
	Extensions map[string]any `json:"extensions"`
}

// code returns extensions.code.
func (e gqlError) code() string {
	s, _ := e.Extensions["code"].(string)
	return s
}

// gqlResponse is a GraphQL response body.
type gqlResponse struct {
	Data   json.RawMessage `json:"data"`
	Errors []gqlError      `json:"errors"`
}

// requestBody encodes a GraphQL request.
func requestBody(query string, vars map[string]any) []byte {
	b, err := json.Marshal(map[string]any{"query": query, "variables": vars})
	if err != nil {
		panic(err) // only maps of JSON values are passed
	}
	return b
}

// post sends body with credential key. tenant says whether the key is a tenant key
// (its operations are recorded as usage) rather than the admin token.
func (c *client) post(ctx context.Context, key string, tenant bool, body []byte) (*response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+"/query", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-API-Key", key)
	resp, err := c.http.Do(req)
	if err != nil {
		if tenant {
			c.ledger.transport.Add(1)
		}
		return nil, err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if tenant {
		c.ledger.count(resp.StatusCode)
	}
	if err != nil {
		return nil, fmt.Errorf("read response: %w", err)
	}
	return &response{Status: resp.StatusCode, Header: resp.Header, Body: b}, nil
}

// call runs query with a tenant key (tenant=true) or the admin token and decodes
// data into out. A GraphQL error or a status other than 200 is an error.
func (c *client) call(ctx context.Context, key string, tenant bool, query string, vars map[string]any, out any) error {
	resp, err := c.post(ctx, key, tenant, requestBody(query, vars))
	if err != nil {
		return err
	}
	var r gqlResponse
	if err := json.Unmarshal(resp.Body, &r); err != nil {
		return fmt.Errorf("HTTP %d: %.200s", resp.Status, resp.Body)
	}
	if len(r.Errors) > 0 {
		msgs := make([]string, len(r.Errors))
		for i, e := range r.Errors {
			msgs[i] = fmt.Sprintf("%s (%s)", e.Message, e.code())
		}
		return fmt.Errorf("HTTP %d: %s", resp.Status, strings.Join(msgs, "; "))
	}
	if resp.Status != http.StatusOK {
		return fmt.Errorf("HTTP %d: %.200s", resp.Status, resp.Body)
	}
	if out != nil {
		if err := json.Unmarshal(r.Data, out); err != nil {
			return fmt.Errorf("decode data: %w", err)
		}
	}
	return nil
}

// fixture is the tenant and keys the phases use.
type fixture struct {
	TenantID string
	// Fast is unlimited (10^9 per hour, no quota) with usage:read and webhooks:*.
	Fast, FastID string
	// Limited allows opts.Limit requests per hour.
	Limited string
	// Subscriber holds usage:read with a high limit (a subscription costs 5 tokens).
	Subscriber string
}

// setup creates the tenant and keys as the platform admin.
func setup(ctx context.Context, c *client, adminToken string, limit int) (*fixture, error) {
	tenantID, err := createTenant(ctx, c, adminToken)
	if err != nil {
		return nil, err
	}
	f := &fixture{TenantID: tenantID}
	create := func(name string, scopes []string, rate int) (id, secret string, err error) {
		return createKey(ctx, c, adminToken, map[string]any{
			"tenantID": f.TenantID, "name": name, "scopes": scopes,
			"rateLimit": rate, "rateLimitWindowSeconds": 3600, "quota": 0,
		})
	}
	if f.FastID, f.Fast, err = create("unlimited", []string{"usage:read", "webhooks:read", "webhooks:write"}, 1_000_000_000); err != nil {
		return nil, err
	}
	if _, f.Limited, err = create("limited", []string{"keys:read"}, limit); err != nil {
		return nil, err
	}
	if _, f.Subscriber, err = create("subscriber", []string{"usage:read"}, 1_000_000_000); err != nil {
		return nil, err
	}
	return f, nil
}

// createTenant creates a tenant with a random slug as the platform admin, on a plan of
// its own without tenant-wide caps (the seeded plans cap a tenant's consumer traffic,
// which would measure the cap, not the server), and returns its id.
func createTenant(ctx context.Context, c *client, adminToken string) (string, error) {
	slug := "load-" + randomHex(4)
	if err := c.call(ctx, adminToken, false, `mutation($name: String!) { createPlan(input: {name: $name, keyRateLimit: 1000000000, keyRateLimitWindowSeconds: 3600}) { name } }`,
		map[string]any{"name": slug}, nil); err != nil {
		return "", fmt.Errorf("createPlan: %w", err)
	}
	var t struct {
		CreateTenant struct{ ID string } `json:"createTenant"`
	}
	if err := c.call(ctx, adminToken, false, `mutation($name: String!, $slug: String!) { createTenant(input: {name: $name, slug: $slug, plan: $slug}) { id } }`,
		map[string]any{"name": "Load " + slug, "slug": slug}, &t); err != nil {
		return "", fmt.Errorf("createTenant: %w", err)
	}
	return t.CreateTenant.ID, nil
}

// createKey creates an API key from in (a CreateApiKeyInput) as the platform admin
// and returns its id and secret.
func createKey(ctx context.Context, c *client, adminToken string, in map[string]any) (id, secret string, err error) {
	var k struct {
		CreateAPIKey struct {
			APIKey struct{ ID string } `json:"apiKey"`
			Secret string              `json:"secret"`
		} `json:"createApiKey"`
	}
	err = c.call(ctx, adminToken, false, `mutation($in: CreateApiKeyInput!) { createApiKey(input: $in) { apiKey { id } secret } }`,
		map[string]any{"in": in}, &k)
	if err == nil && k.CreateAPIKey.Secret == "" {
		err = errors.New("no secret in the response")
	}
	if err != nil {
		return "", "", fmt.Errorf("createApiKey %v: %w", in["name"], err)
	}
	return k.CreateAPIKey.APIKey.ID, k.CreateAPIKey.Secret, nil
}
