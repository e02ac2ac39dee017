package webhook_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"entgo.io/ent/privacy"

	"github.com/latchkey/latchkey/ent"
	"github.com/latchkey/latchkey/ent/auditlog"
	"github.com/latchkey/latchkey/ent/webhookattempt"
	"github.com/latchkey/latchkey/ent/webhookdelivery"
	"github.com/latchkey/latchkey/internal/data/store"
	"github.com/latchkey/latchkey/internal/domain/webhook"
	"github.com/latchkey/latchkey/internal/platform/fault"
	"github.com/latchkey/latchkey/internal/platform/viewer"
)

// wantBadInput fails unless err is a BAD_USER_INPUT *fault.Error naming field.
func wantBadInput(t *testing.T, err error, field string) {
	t.Helper()
	var ae *fault.Error
	if !errors.As(err, &ae) || ae.Code != fault.BadUserInput || ae.Extensions["field"] != field {
		t.Fatalf("error %v, want BAD_USER_INPUT on %q", err, field)
	}
}

func TestManagerCreate(t *testing.T) {
	forEachDialect(t, func(t *testing.T, s *store.Store) {
		c := s.Client
		tid := newTenant(t, c)
		ctx := tenantCtx(tid)
		m := &webhook.Manager{Policy: webhook.Policy{Resolver: fakeResolver("93.184.216.34")}}

		invalid := []struct {
			name  string
			p     webhook.CreateParams
			field string
		}{
			{"private URL", webhook.CreateParams{URL: "https://10.0.0.1/hook"}, "url"},
			{"http URL", webhook.CreateParams{URL: "http://hooks.example.com/"}, "url"},
			{"relative URL", webhook.CreateParams{URL: "/hook"}, "url"},
			{"unknown event", webhook.CreateParams{URL: "https://hooks.example.com/", Events: []string{"api_key.exploded"}}, "events"},
			{"star with others", webhook.CreateParams{URL: "https://hooks.example.com/", Events: []string{"*", "api_key.created"}}, "events"},
			{"long description", webhook.CreateParams{URL: "https://hooks.example.com/", Description: strings.Repeat("x", 501)}, "description"},
		}
		for _, tc := range invalid {
			t.Run(tc.name, func(t *testing.T) {
				_, _, err := m.Create(ctx, c, tc.p)
				wantBadInput(t, err, tc.field)
			})
		}
		if n := c.Webhook.Query().CountX(sysCtx()); n != 0 {
			t.Fatalf("invalid creates left %d webhooks", n)
		}
		// Admins have no tenant of their own: they must name one.
		admin := viewer.NewContext(context.Background(), &viewer.Viewer{Admin: true})
		_, _, err := m.Create(admin, c, webhook.CreateParams{URL: "https://hooks.example.com/"})
		wantBadInput(t, err, "tenantID")
		if _, _, err := m.Create(admin, c, webhook.CreateParams{TenantID: tid, URL: "https://hooks.example.com/admin"}); err != nil {
			t.Fatalf("admin create: %v", err)
		}
		// A tenant key cannot create for another tenant.
		other := newTenant(t, c)
		if _, _, err := m.Create(ctx, c, webhook.CreateParams{TenantID: other, URL: "https://hooks.example.com/x"}); !errors.Is(err, privacy.Deny) {
			t.Fatalf("create for another tenant: %v, want a privacy denial", err)
		}

		valid := []struct {
			events, want []string
		}{
			{nil, []string{"*"}},
			{[]string{"*"}, []string{"*"}},
			{[]string{"api_key.created", " api_key.revoked", "api_key.created"}, []string{"api_key.created", "api_key.revoked"}},
			{webhook.EventTypes, webhook.EventTypes},
		}
		for _, tc := range valid {
			w, secret, err := m.Create(ctx, c, webhook.CreateParams{URL: " https://hooks.example.com/in ", Events: tc.events, Description: "prod"})
			if err != nil {
				t.Fatalf("Create(%v): %v", tc.events, err)
			}
			if !slices.Equal(w.Events, tc.want) || w.URL != "https://hooks.example.com/in" || !w.Active || w.TenantID != tid {
				t.Errorf("Create(%v) = events %v url %q active %v", tc.events, w.Events, w.URL, w.Active)
			}
			key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
			if !strings.HasPrefix(secret, "whsec_") || err != nil || len(key) < 24 {
				t.Fatalf("secret %q: want whsec_ + base64 of 24+ bytes", secret)
			}
			// The secret lives in the secret column only: not in the printed or JSON
			// form of the webhook, not in the audit log.
			stored := c.Webhook.GetX(sysCtx(), w.ID)
			if stored.Secret != secret {
				t.Fatal("stored secret differs from the returned one")
			}
			js, _ := json.Marshal(w)
			if strings.Contains(fmt.Sprint(w), secret) || strings.Contains(string(js), secret) {
				t.Error("secret appears in the webhook's printed or JSON form")
			}
			for _, a := range c.AuditLog.Query().Where(auditlog.ObjectID(w.ID)).AllX(sysCtx()) {
				if strings.Contains(fmt.Sprintf("%v %v", a, a.ChangedFields), secret) || slices.Contains(a.ChangedFields, "secret") {
					t.Errorf("audit row %v mentions the secret", a)
				}
			}
		}
	})
}

// Tenant B's viewer gets ent's NOT_FOUND for every operation on tenant A's webhook and
// deliveries, and changes nothing.
func TestManagerTenantIsolation(t *testing.T) {
	forEachDialect(t, func(t *testing.T, s *store.Store) {
		c := s.Client
		a, b := newTenant(t, c), newTenant(t, c)
		m := &webhook.Manager{Policy: localPolicy}
		w, _ := newWebhook(t, c, a, "http://127.0.0.1:9/a")
		d, err := m.SendTest(tenantCtx(a), c, w.ID)
		if err != nil {
			t.Fatal(err)
		}
		c.WebhookDelivery.UpdateOneID(d.ID).SetStatus(webhookdelivery.StatusFailed).ExecX(sysCtx())
		snapshot := func() string {
			w := c.Webhook.GetX(sysCtx(), w.ID)
			ds := c.WebhookDelivery.Query().AllX(sysCtx())
			return fmt.Sprintf("%s %v %v %s %v %d %v", w.URL, w.Events, w.Active, w.Secret, w.UpdatedAt.UnixNano(), len(ds), ds[0].Status)
		}
		before := snapshot()
		url, on := "http://127.0.0.1:9/b", false
		ops := []struct {
			name string
			op   func(ctx context.Context, id, deliveryID string) error
		}{
			{"update", func(ctx context.Context, id, _ string) error {
				_, err := m.Update(ctx, c, id, webhook.UpdateParams{URL: &url, Active: &on})
				return err
			}},
			{"delete", func(ctx context.Context, id, _ string) error { return m.Delete(ctx, c, id) }},
			{"rotate", func(ctx context.Context, id, _ string) error {
				_, _, err := m.RotateSecret(ctx, c, id, 60)
				return err
			}},
			{"send test", func(ctx context.Context, id, _ string) error {
				_, err := m.SendTest(ctx, c, id)
				return err
			}},
			{"redeliver", func(ctx context.Context, _, deliveryID string) error {
				_, err := m.Redeliver(ctx, c, deliveryID)
				return err
			}},
		}
		for _, op := range ops {
			t.Run(op.name, func(t *testing.T) {
				if err := op.op(tenantCtx(b), w.ID, d.ID); !ent.IsNotFound(err) {
					t.Errorf("tenant B: %v, want NOT_FOUND", err)
				}
				if err := op.op(tenantCtx(b), "whk_unknown", "whd_unknown"); !ent.IsNotFound(err) {
					t.Errorf("unknown id: %v, want NOT_FOUND", err)
				}
				if after := snapshot(); after != before {
					t.Errorf("tenant A's data changed:\n%s\n%s", before, after)
				}
			})
		}
		// The owner can.
		if _, err := m.Redeliver(tenantCtx(a), c, d.ID); err != nil {
			t.Errorf("owner redeliver: %v", err)
		}
		if err := m.Delete(tenantCtx(a), c, w.ID); err != nil {
			t.Errorf("owner delete: %v", err)
		}
	})
}

func TestManagerUpdateRotateDelete(t *testing.T) {
	forEachDialect(t, func(t *testing.T, s *store.Store) {
		c := s.Client
		tid := newTenant(t, c)
		ctx := tenantCtx(tid)
		m := &webhook.Manager{Policy: localPolicy}
		w, secret := newWebhook(t, c, tid, "http://127.0.0.1:9/a", webhook.EventAPIKeyCreated)

		bad := []struct {
			name  string
			p     webhook.UpdateParams
			field string
		}{
			{"url", webhook.UpdateParams{URL: ptr("ftp://127.0.0.1/")}, "url"},
			{"events", webhook.UpdateParams{Events: []string{"nope"}}, "events"},
			{"description", webhook.UpdateParams{Description: ptr(strings.Repeat("é", 300))}, "description"},
		}
		for _, tc := range bad {
			_, err := m.Update(ctx, c, w.ID, tc.p)
			wantBadInput(t, err, tc.field)
		}
		w, err := m.Update(ctx, c, w.ID, webhook.UpdateParams{
			URL: ptr("http://127.0.0.1:9/b"), Events: []string{}, Description: ptr("staging"), Active: ptr(false),
		})
		if err != nil {
			t.Fatal(err)
		}
		if w.URL != "http://127.0.0.1:9/b" || !slices.Equal(w.Events, []string{"*"}) || w.Description != "staging" || w.Active {
			t.Errorf("updated webhook %v", w)
		}
		_, err = m.SendTest(ctx, c, w.ID)
		wantBadInput(t, err, "id")
		w, _ = m.Update(ctx, c, w.ID, webhook.UpdateParams{Active: ptr(true)})

		for _, grace := range []int{-1, 7*24*3600 + 1} {
			_, _, err := m.RotateSecret(ctx, c, w.ID, grace)
			wantBadInput(t, err, "gracePeriodSeconds")
		}
		w, s2, err := m.RotateSecret(ctx, c, w.ID, 7*24*3600)
		if err != nil {
			t.Fatal(err)
		}
		stored := c.Webhook.GetX(sysCtx(), w.ID)
		if stored.Secret != s2 || stored.PreviousSecret == nil || *stored.PreviousSecret != secret ||
			stored.PreviousSecretExpiresAt == nil || time.Until(*stored.PreviousSecretExpiresAt) < 6*24*time.Hour {
			t.Errorf("after rotation with grace: previous secret kept? %v until %v", stored.PreviousSecret != nil, stored.PreviousSecretExpiresAt)
		}
		if n := c.AuditLog.Query().Where(auditlog.ObjectID(w.ID), auditlog.Action("webhook.secret_rotated")).CountX(sysCtx()); n != 1 {
			t.Errorf("%d webhook.secret_rotated audit rows, want 1", n)
		}
		_, s3, err := m.RotateSecret(ctx, c, w.ID, 0)
		if err != nil {
			t.Fatal(err)
		}
		stored = c.Webhook.GetX(sysCtx(), w.ID)
		if stored.Secret != s3 || stored.PreviousSecret != nil || stored.PreviousSecretExpiresAt != nil {
			t.Error("rotation without grace kept the previous secret")
		}

		// Delete takes the deliveries and their attempts along.
		d, err := m.SendTest(ctx, c, w.ID)
		if err != nil {
			t.Fatal(err)
		}
		c.WebhookAttempt.Create().SetTenantID(tid).SetDeliveryID(d.ID).SetAttempt(1).SetAt(time.Now()).SetLatencyMs(1).ExecX(sysCtx())
		if err := m.Delete(ctx, c, w.ID); err != nil {
			t.Fatal(err)
		}
		if n := c.Webhook.Query().CountX(sysCtx()) + c.WebhookDelivery.Query().CountX(sysCtx()) +
			c.WebhookAttempt.Query().Where(webhookattempt.DeliveryID(d.ID)).CountX(sysCtx()); n != 0 {
			t.Errorf("%d rows left after delete", n)
		}
		if err := m.Delete(ctx, c, w.ID); !ent.IsNotFound(err) {
			t.Errorf("second delete: %v, want NOT_FOUND", err)
		}
		// Delete inside the caller's transaction.
		w2, _ := newWebhook(t, c, tid, "http://127.0.0.1:9/c")
		tx, _ := c.Tx(context.Background())
		if err := m.Delete(ctx, tx.Client(), w2.ID); err != nil {
			t.Fatal(err)
		}
		_ = tx.Rollback()
		if _, err := c.Webhook.Get(sysCtx(), w2.ID); err != nil {
			t.Errorf("delete in a rolled-back transaction: %v", err)
		}
	})
}

// Redeliver resends with the same webhook-id: a scheduled retry is brought forward, a
// DELIVERED or FAILED delivery starts again.
func TestManagerRedeliver(t *testing.T) {
	forEachDialect(t, func(t *testing.T, s *store.Store) {
		c := s.Client
		rc := newReceiver(t, func(n int, _ *http.Request) (int, http.Header) {
			if n == 1 {
				return http.StatusInternalServerError, nil
			}
			return http.StatusOK, nil
		})
		tid := newTenant(t, c)
		ctx := tenantCtx(tid)
		w, _ := newWebhook(t, c, tid, rc.URL)
		cfg := testConfig()
		cfg.Schedule = []time.Duration{time.Hour}
		disp, _ := runDispatcher(t, s, cfg)
		m := &webhook.Manager{Policy: localPolicy, Dispatcher: disp}
		enqueue(t, c, tid, webhook.EventAPIKeyCreated, nil)
		disp.Wake()
		waitFor(t, 5*time.Second, "the failed first attempt", func() bool { return onlyDelivery(t, c, w.ID).Attempts == 1 })
		d := onlyDelivery(t, c, w.ID)
		if d.Status != webhookdelivery.StatusPending || d.NextAttemptAt == nil || time.Until(*d.NextAttemptAt) < 50*time.Minute {
			t.Fatalf("after a failure: %s next %v, want a retry in an hour", d.Status, d.NextAttemptAt)
		}

		if _, err := m.Redeliver(ctx, c, d.ID); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 5*time.Second, "the redelivered retry", func() bool {
			return onlyDelivery(t, c, w.ID).Status == webhookdelivery.StatusDelivered
		})
		if d := onlyDelivery(t, c, w.ID); d.Attempts != 2 {
			t.Errorf("attempts %d, want 2", d.Attempts)
		}

		got, err := m.Redeliver(ctx, c, d.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.Status != webhookdelivery.StatusPending && got.Status != webhookdelivery.StatusDelivered {
			t.Errorf("Redeliver returned status %s", got.Status)
		}
		waitFor(t, 5*time.Second, "the second redelivery", func() bool { return rc.count() == 3 })
		waitFor(t, 5*time.Second, "DELIVERED", func() bool {
			d := onlyDelivery(t, c, w.ID)
			return d.Status == webhookdelivery.StatusDelivered && d.Attempts == 1
		})
		for i, r := range rc.requests() {
			if r.Header.Get("webhook-id") != d.EventID {
				t.Errorf("request %d webhook-id %q, want %q", i+1, r.Header.Get("webhook-id"), d.EventID)
			}
		}
		if n := len(attemptsOf(t, c, d.ID)); n != 3 {
			t.Errorf("%d attempt rows, want every attempt (3) kept", n)
		}
	})
}

func ptr[T any](v T) *T { return &v }
