package webhook_test

import (
	"encoding/json"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/latchkey/latchkey/ent/webhookdelivery"
	"github.com/latchkey/latchkey/internal/data/store"
	"github.com/latchkey/latchkey/internal/domain/webhook"
)

// A delivery that fails for good is announced as webhook.delivery_failed, and an
// endpoint that disabling takes out as webhook.disabled, to the tenant's other
// endpoints only (the failing one, subscribed to everything, gets nothing more).
func TestFailureAnnouncements(t *testing.T) {
	cases := []struct {
		name     string
		status   int
		cfg      func(*webhook.Config)
		wantType []string
	}{
		{"retries exhausted", http.StatusInternalServerError, nil, []string{webhook.EventWebhookDeliveryFailed}},
		{"410 Gone disables", http.StatusGone, nil, []string{webhook.EventWebhookDeliveryFailed, webhook.EventWebhookDisabled}},
		// Disabled for failing continuously while the delivery still had retries
		// left: the endpoint is announced as disabled, the delivery is not failed.
		{"DisableAfter disables mid-schedule", http.StatusBadGateway, func(c *webhook.Config) {
			c.Schedule = slices.Repeat([]time.Duration{40 * time.Millisecond}, 50)
			c.DisableAfter = 300 * time.Millisecond
		}, []string{webhook.EventWebhookDisabled}},
	}
	forEachDialect(t, func(t *testing.T, s *store.Store) {
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				c := s.Client
				tid := newTenant(t, c)
				bad := newReceiver(t, func(int, *http.Request) (int, http.Header) { return tc.status, nil })
				good := newReceiver(t, nil)
				failing, _ := newWebhook(t, c, tid, bad.URL+"/bad") // every event, announcements too
				newWebhook(t, c, tid, good.URL+"/watch", webhook.EventWebhookDeliveryFailed, webhook.EventWebhookDisabled)
				cfg := testConfig()
				if tc.cfg != nil {
					tc.cfg(&cfg)
				}
				runDispatcher(t, s, cfg)
				if n := enqueue(t, c, tid, webhook.EventAPIKeyCreated, map[string]any{"apiKey": map[string]any{"id": "key_1"}}); n != 1 {
					t.Fatalf("enqueued %d deliveries, want 1", n)
				}
				waitFor(t, 10*time.Second, "the announcements", func() bool { return good.count() >= len(tc.wantType) })
				time.Sleep(500 * time.Millisecond) // whatever else would come, has come
				reqs := good.requests()
				if len(reqs) != len(tc.wantType) {
					t.Fatalf("watcher got %d events, want %d", len(reqs), len(tc.wantType))
				}
				seen := map[string]map[string]any{}
				for _, r := range reqs {
					var body struct {
						Type string
						Data map[string]any
					}
					if err := json.Unmarshal(r.Body, &body); err != nil {
						t.Fatal(err)
					}
					seen[body.Type] = body.Data
				}
				for _, typ := range tc.wantType {
					data, ok := seen[typ]
					if !ok {
						t.Fatalf("no %s event; got %v", typ, seen)
					}
					if hook, _ := data["webhook"].(map[string]any); hook["id"] != failing.ID {
						t.Errorf("%s names webhook %v, want %s", typ, data["webhook"], failing.ID)
					}
				}
				if data, ok := seen[webhook.EventWebhookDeliveryFailed]; ok {
					d, _ := data["delivery"].(map[string]any)
					if d["eventType"] != webhook.EventAPIKeyCreated || d["attempts"] == nil {
						t.Errorf("delivery_failed data: %v", d)
					}
				}
				// The failing endpoint was sent nothing about itself.
				if n := c.WebhookDelivery.Query().Where(webhookdelivery.WebhookID(failing.ID)).CountX(sysCtx()); n != 1 {
					t.Errorf("the failing endpoint has %d deliveries, want its one event", n)
				}
				if n := good.count(); n != len(tc.wantType) {
					t.Errorf("watcher got %d events in the end, want %d", n, len(tc.wantType))
				}
			})
		}
	})
}
