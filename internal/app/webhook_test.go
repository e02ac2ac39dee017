package app_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/latchkey/latchkey/internal/app"
	"github.com/latchkey/latchkey/internal/app/apptest"
	"github.com/latchkey/latchkey/internal/platform/config"
)

// receiver is a real webhook endpoint on loopback that records what it receives.
type receiver struct {
	*httptest.Server
	mu     sync.Mutex
	got    []delivery
	status func(n int) int // status for the n-th request (1-based); nil: 200
	ch     chan delivery
}

type delivery struct {
	Header http.Header
	Body   []byte
	Type   string
	Data   map[string]any
}

func newReceiver(t *testing.T) *receiver {
	r := &receiver{ch: make(chan delivery, 100)}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		var ev struct {
			Type string
			Data map[string]any
		}
		_ = json.Unmarshal(body, &ev)
		d := delivery{Header: req.Header.Clone(), Body: body, Type: ev.Type, Data: ev.Data}
		r.mu.Lock()
		r.got = append(r.got, d)
		n := len(r.got)
		r.mu.Unlock()
		status := 200
		if r.status != nil {
			status = r.status(n)
		}
		w.WriteHeader(status)
		if status/100 == 2 {
			r.ch <- d
		}
	}))
	t.Cleanup(r.Close)
	return r
}

// next waits for the next successful delivery of type typ, skipping others.
func (r *receiver) next(t *testing.T, typ string) delivery {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case d := <-r.ch:
			if d.Type == typ {
				return d
			}
		case <-timeout:
			t.Fatalf("no %s delivery within 10s", typ)
		}
	}
}

func webhookEnv(t *testing.T, dialect string) *apptest.Env {
	return apptest.New(t, dialect, app.Options{}, func(c *config.Config) {
		c.WebhookAllowPrivate = true // the receivers run on loopback
		c.WebhookAllowHTTP = true
		c.WebhookRetrySchedule = "100ms,200ms"
	})
}

func createWebhook(t *testing.T, e *apptest.Env, key, url string, events []string) (id, secret string) {
	t.Helper()
	var out struct {
		CreateWebhook struct {
			Webhook struct{ ID string }
			Secret  string
		}
	}
	e.MustDo(key, `mutation($u: String!, $ev: [String!]) { createWebhook(input: {url: $u, events: $ev, description: "test"}) { webhook { id } secret } }`,
		map[string]any{"u": url, "ev": events}, &out)
	return out.CreateWebhook.Webhook.ID, out.CreateWebhook.Secret
}

func verifies(t *testing.T, secret string, d delivery) {
	t.Helper()
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		t.Fatal(err)
	}
	if err := wh.Verify(d.Body, d.Header); err != nil {
		t.Fatalf("signature does not verify: %v (headers %v)", err, d.Header)
	}
}

// Key and tenant changes reach the tenant's endpoint, signed per Standard Webhooks.
func TestWebhookEventsFromChanges(t *testing.T) {
	for _, d := range []string{"sqlite", "postgres"} {
		t.Run(d, func(t *testing.T) {
			e := webhookEnv(t, d)
			tid := e.Tenant("hooked")
			_, key := e.Key(e.AdminToken, tid, apptest.AllScopes...)
			r := newReceiver(t)
			_, secret := createWebhook(t, e, key, r.URL+"/hook", nil)
			if !strings.HasPrefix(secret, "whsec_") {
				t.Fatalf("secret %q", secret)
			}
			childID, _ := e.Key(key, "", "keys:read")
			created := r.next(t, "api_key.created")
			verifies(t, secret, created)
			if created.Data["apiKey"].(map[string]any)["id"] != childID || created.Header.Get("webhook-id") == "" {
				t.Fatalf("created = %s", created.Body)
			}
			if strings.Contains(string(created.Body), "lk_live_") && strings.Contains(string(created.Body), "hash") {
				t.Fatal("payload carries key material")
			}
			e.MustDo(key, `mutation($id: ID!) { revokeApiKey(id: $id) { id } }`, map[string]any{"id": childID}, &struct{}{})
			verifies(t, secret, r.next(t, "api_key.revoked"))
			e.MustDo(key, `mutation($id: ID!) { updateTenant(id: $id, input: {name: "Hooked Inc"}) { id } }`, map[string]any{"id": tid}, &struct{}{})
			if d := r.next(t, "tenant.updated"); d.Data["tenant"].(map[string]any)["name"] != "Hooked Inc" {
				t.Fatalf("tenant.updated = %s", d.Body)
			}
			var v viewerResp
			e.MustDo(key, viewerQ, nil, &v)
			e.MustDo(key, `mutation($id: ID!) { rotateApiKey(id: $id, gracePeriodSeconds: 60) { secret } }`, map[string]any{"id": v.Viewer.APIKey.ID}, &struct{}{})
			verifies(t, secret, r.next(t, "api_key.rotated"))
		})
	}
}

// A failing endpoint is retried on the schedule with the same webhook-id; every
// attempt is listed; redelivery sends it again with the same id; 410 disables.
func TestWebhookRetriesAndDeliveries(t *testing.T) {
	e := webhookEnv(t, "postgres")
	tid := e.Tenant("retry")
	_, key := e.Key(e.AdminToken, tid, "webhooks:read", "webhooks:write")
	r := newReceiver(t)
	r.status = func(n int) int {
		if n <= 2 {
			return 500
		}
		return 200
	}
	hookID, secret := createWebhook(t, e, key, r.URL, []string{"webhook.test"})
	var sent struct{ SendTestWebhook struct{ ID, EventID string } }
	e.MustDo(key, `mutation($id: ID!) { sendTestWebhook(id: $id) { id eventID } }`, map[string]any{"id": hookID}, &sent)
	d := r.next(t, "webhook.test")
	verifies(t, secret, d)
	r.mu.Lock()
	if len(r.got) != 3 || r.got[0].Header.Get("webhook-id") != d.Header.Get("webhook-id") || d.Header.Get("webhook-id") != sent.SendTestWebhook.EventID {
		t.Fatalf("%d attempts; ids %q %q, event %q", len(r.got), r.got[0].Header.Get("webhook-id"), d.Header.Get("webhook-id"), sent.SendTestWebhook.EventID)
	}
	r.mu.Unlock()

	var list struct {
		WebhookDeliveries struct {
			Edges []struct {
				Node struct {
					ID, Status string
					Attempts   int
					AttemptLog []struct {
						Attempt    int
						StatusCode *int
						LatencyMs  int
					}
				}
			}
		}
	}
	q := `query($w: ID) { webhookDeliveries(webhookID: $w) { edges { node { id status attempts attemptLog { attempt statusCode latencyMs } } } } }`
	waitFor(t, 5*time.Second, func() bool {
		e.MustDo(key, q, map[string]any{"w": hookID}, &list)
		return len(list.WebhookDeliveries.Edges) == 1 && list.WebhookDeliveries.Edges[0].Node.Status == "DELIVERED"
	})
	n := list.WebhookDeliveries.Edges[0].Node
	if n.Attempts != 3 || len(n.AttemptLog) != 3 || *n.AttemptLog[0].StatusCode != 500 || *n.AttemptLog[2].StatusCode != 200 {
		t.Fatalf("delivery = %+v", n)
	}

	e.MustDo(key, `mutation($id: ID!) { redeliverWebhookDelivery(id: $id) { id } }`, map[string]any{"id": n.ID}, &struct{}{})
	if again := r.next(t, "webhook.test"); again.Header.Get("webhook-id") != d.Header.Get("webhook-id") {
		t.Fatal("redelivery changed the webhook-id")
	}

	// 410 Gone disables the endpoint, visibly.
	r.status = func(int) int { return 410 }
	e.MustDo(key, `mutation($id: ID!) { sendTestWebhook(id: $id) { id } }`, map[string]any{"id": hookID}, &struct{}{})
	var wh struct {
		Node struct {
			Active         bool
			DisabledReason *string
		}
	}
	waitFor(t, 5*time.Second, func() bool {
		e.MustDo(key, `query($id: ID!) { node(id: $id) { ... on Webhook { active disabledReason } } }`, map[string]any{"id": hookID}, &wh)
		return !wh.Node.Active
	})
	if wh.Node.DisabledReason == nil || !strings.Contains(*wh.Node.DisabledReason, "410") {
		t.Fatalf("disabled reason = %v", wh.Node.DisabledReason)
	}
}

// Rate-limit denials become one rate_limit.exceeded event per key and window.
func TestRateLimitExceededWebhook(t *testing.T) {
	e := webhookEnv(t, "sqlite")
	tid := e.Tenant("limited-hook")
	_, admin := e.Key(e.AdminToken, tid, "webhooks:write")
	r := newReceiver(t)
	createWebhook(t, e, admin, r.URL, []string{"rate_limit.exceeded"})
	keyID, key := limitedKey(t, e, tid, 2, 60, "")
	for range 6 {
		e.Do(key, viewerQ, nil)
	}
	d := r.next(t, "rate_limit.exceeded")
	if d.Data["apiKey"].(map[string]any)["id"] != keyID || d.Data["limit"] != float64(2) {
		t.Fatalf("event = %s", d.Body)
	}
	select {
	case d := <-r.ch:
		t.Fatalf("second event in the same window: %s", d.Body)
	case <-time.After(500 * time.Millisecond):
	}
}

// Keys about to expire produce api_key.expiring; expired ones api_key.expired; once each.
func TestExpiryWebhooks(t *testing.T) {
	e := webhookEnv(t, "sqlite")
	tid := e.Tenant("expiring")
	_, admin := e.Key(e.AdminToken, tid, "webhooks:write")
	r := newReceiver(t)
	createWebhook(t, e, admin, r.URL, []string{"api_key.expiring", "api_key.expired"})
	var out struct {
		CreateApiKey struct {
			APIKey struct{ ID string } `json:"apiKey"`
		}
	}
	e.MustDo(e.AdminToken, `mutation($t: ID!, $x: Time) { createApiKey(input: {tenantID: $t, name: "soon", scopes: [], expiresAt: $x}) { apiKey { id } } }`,
		map[string]any{"t": tid, "x": time.Now().Add(48 * time.Hour)}, &out)
	ctx := context.Background()
	for range 2 {
		if err := e.App.Expiry.Scan(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if d := r.next(t, "api_key.expiring"); d.Data["apiKey"].(map[string]any)["id"] != out.CreateApiKey.APIKey.ID {
		t.Fatalf("expiring = %s", d.Body)
	}
	select {
	case d := <-r.ch:
		t.Fatalf("expiring sent twice: %s", d.Body)
	case <-time.After(500 * time.Millisecond):
	}
	e.App.Expiry.Now = func() time.Time { return time.Now().Add(49 * time.Hour) }
	if err := e.App.Expiry.Scan(ctx); err != nil {
		t.Fatal(err)
	}
	r.next(t, "api_key.expired")
}

// Webhook URLs on private networks are refused unless configured, and http needs opting in.
func TestWebhookSSRF(t *testing.T) {
	e := apptest.New(t, "sqlite", app.Options{}, nil)
	_, key := e.Key(e.AdminToken, e.Tenant("ssrf"), "webhooks:write")
	for _, u := range []string{"https://127.0.0.1/x", "https://10.0.0.1/x", "https://169.254.169.254/latest", "https://[::1]/x", "https://localhost/x", "http://example.com/x", "ftp://example.com"} {
		r := e.Do(key, `mutation($u: String!) { createWebhook(input: {url: $u}) { secret } }`, map[string]any{"u": u})
		if r.Code() != "BAD_USER_INPUT" || r.Errors[0].Extensions["field"] != "url" {
			t.Fatalf("%s: %s", u, r.Raw)
		}
	}
}

// Rotating the secret: during the grace period each delivery carries both signatures.
func TestWebhookSecretRotation(t *testing.T) {
	e := webhookEnv(t, "sqlite")
	_, key := e.Key(e.AdminToken, e.Tenant("rotate-hook"), "webhooks:write", "webhooks:read")
	r := newReceiver(t)
	hookID, oldSecret := createWebhook(t, e, key, r.URL, []string{"webhook.test"})
	var rot struct{ RotateWebhookSecret struct{ Secret string } }
	e.MustDo(key, `mutation($id: ID!) { rotateWebhookSecret(id: $id, gracePeriodSeconds: 3600) { secret } }`, map[string]any{"id": hookID}, &rot)
	e.MustDo(key, `mutation($id: ID!) { sendTestWebhook(id: $id) { id } }`, map[string]any{"id": hookID}, &struct{}{})
	d := r.next(t, "webhook.test")
	if n := len(strings.Fields(d.Header.Get("webhook-signature"))); n != 2 {
		t.Fatalf("%d signatures during rotation", n)
	}
	verifies(t, oldSecret, d)
	verifies(t, rot.RotateWebhookSecret.Secret, d)
	if rot.RotateWebhookSecret.Secret == oldSecret {
		t.Fatal("secret unchanged")
	}
	// Deleting removes the endpoint.
	var del struct{ DeleteWebhook string }
	e.MustDo(key, `mutation($id: ID!) { deleteWebhook(id: $id) }`, map[string]any{"id": hookID}, &del)
	expectCode(t, e.Do(key, `query($id: ID!) { node(id: $id) { id } }`, map[string]any{"id": hookID}), "NOT_FOUND")
}

// One tenant's hanging endpoints with a backlog do not hold up another tenant's test
// delivery (WEBHOOK_WORKERS=8: without a per-tenant limit the 4 endpoints, 4 sends
// each, would take every worker until their 15 s timeout).
func TestWebhookTenantFairness(t *testing.T) {
	for _, d := range []string{"sqlite", "postgres"} {
		t.Run(d, func(t *testing.T) {
			e := apptest.New(t, d, app.Options{}, func(c *config.Config) {
				c.WebhookAllowPrivate, c.WebhookAllowHTTP = true, true
				c.WebhookWorkers = 8 // per tenant: max(8/4, 4+1) = 5
			})
			release := make(chan struct{})
			var once sync.Once
			open := func() { once.Do(func() { close(release) }) }
			var mu sync.Mutex
			held, answered := 0, 0
			slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
				_, _ = io.Copy(io.Discard, req.Body)
				mu.Lock()
				held++
				mu.Unlock()
				select {
				case <-release:
				case <-req.Context().Done():
				}
				mu.Lock()
				held--
				answered++
				mu.Unlock()
			}))
			defer slow.Close()
			defer open() // before the server closes: Close waits for its handlers
			counts := func() (int, int) {
				mu.Lock()
				defer mu.Unlock()
				return held, answered
			}

			_, keyA := e.Key(e.AdminToken, e.Tenant("slow-a"), "webhooks:write")
			for i := range 4 {
				id, _ := createWebhook(t, e, keyA, slow.URL+"/"+string(rune('a'+i)), []string{"webhook.test"})
				for range 3 {
					e.MustDo(keyA, `mutation($id: ID!) { sendTestWebhook(id: $id) { id } }`, map[string]any{"id": id}, &struct{}{})
				}
			}
			waitFor(t, 10*time.Second, func() bool { h, _ := counts(); return h >= 5 })

			_, keyB := e.Key(e.AdminToken, e.Tenant("fast-b"), "webhooks:write")
			r := newReceiver(t)
			idB, secretB := createWebhook(t, e, keyB, r.URL, []string{"webhook.test"})
			e.MustDo(keyB, `mutation($id: ID!) { sendTestWebhook(id: $id) { id } }`, map[string]any{"id": idB}, &struct{}{})
			verifies(t, secretB, r.next(t, "webhook.test"))
			if h, a := counts(); h != 5 || a != 0 {
				t.Fatalf("when B was delivered tenant A had %d requests held and %d answered, want 5 and 0", h, a)
			}
			open()
			waitFor(t, 20*time.Second, func() bool { _, a := counts(); return a >= 12 })
		})
	}
}
