package webhook_test

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/latchkey/latchkey/ent"
	"github.com/latchkey/latchkey/ent/auditlog"
	"github.com/latchkey/latchkey/ent/webhookattempt"
	"github.com/latchkey/latchkey/ent/webhookdelivery"
	"github.com/latchkey/latchkey/internal/data/store"
	"github.com/latchkey/latchkey/internal/data/testdb"
	"github.com/latchkey/latchkey/internal/domain/webhook"
)

func deliveriesOf(t testing.TB, c *ent.Client, webhookID string) []*ent.WebhookDelivery {
	t.Helper()
	return c.WebhookDelivery.Query().Where(webhookdelivery.WebhookID(webhookID)).
		Order(webhookdelivery.ByID()).AllX(sysCtx())
}

func onlyDelivery(t testing.TB, c *ent.Client, webhookID string) *ent.WebhookDelivery {
	t.Helper()
	ds := deliveriesOf(t, c, webhookID)
	if len(ds) != 1 {
		t.Fatalf("webhook has %d deliveries, want 1", len(ds))
	}
	return ds[0]
}

func attemptsOf(t testing.TB, c *ent.Client, deliveryID string) []*ent.WebhookAttempt {
	t.Helper()
	return c.WebhookAttempt.Query().Where(webhookattempt.DeliveryID(deliveryID)).
		Order(webhookattempt.ByAttempt(), webhookattempt.ByAt()).AllX(sysCtx())
}

// outcomeEnv is what a delivery-outcome case sees: one webhook of a fresh tenant
// pointing at its own receiver, with one event enqueued.
type outcomeEnv struct {
	c      *ent.Client
	rc     *receiver
	hook   *ent.Webhook
	secret string
}

func (e outcomeEnv) delivery(t *testing.T) *ent.WebhookDelivery {
	return onlyDelivery(t, e.c, e.hook.ID)
}
func (e outcomeEnv) webhook(t *testing.T) *ent.Webhook { return e.c.Webhook.GetX(sysCtx(), e.hook.ID) }

// Retries, Retry-After, 410 Gone, an exhausted schedule and DisableAfter, on real
// receivers, on every dialect.
func TestDeliveryOutcomes(t *testing.T) {
	cases := []struct {
		name  string
		reply func(n int, r *http.Request) (int, http.Header)
		cfg   func(*webhook.Config)
		done  func(t *testing.T, e outcomeEnv) bool
		check func(t *testing.T, e outcomeEnv)
	}{
		{
			name: "fails twice then delivered, same id, every attempt recorded",
			reply: func(n int, _ *http.Request) (int, http.Header) {
				if n <= 2 {
					return http.StatusInternalServerError, nil
				}
				return http.StatusOK, nil
			},
			done: func(t *testing.T, e outcomeEnv) bool {
				return e.delivery(t).Status == webhookdelivery.StatusDelivered
			},
			check: func(t *testing.T, e outcomeEnv) {
				d := e.delivery(t)
				reqs := e.rc.requests()
				if len(reqs) != 3 {
					t.Fatalf("receiver got %d requests, want 3", len(reqs))
				}
				for i, r := range reqs {
					if got := r.Header.Get("webhook-id"); got != d.EventID || !strings.HasPrefix(got, "msg_") {
						t.Errorf("request %d webhook-id %q, want %q", i+1, got, d.EventID)
					}
					if string(r.Body) != d.Payload {
						t.Errorf("request %d body %s differs from the stored payload %s", i+1, r.Body, d.Payload)
					}
					if err := verify(t, e.secret, r.Body, r.Header); err != nil {
						t.Errorf("request %d: Standard Webhooks verification: %v", i+1, err)
					}
					if ct, ua := r.Header.Get("content-type"), r.Header.Get("user-agent"); ct != "application/json" || ua != webhook.UserAgent {
						t.Errorf("request %d content-type %q user-agent %q", i+1, ct, ua)
					}
				}
				as := attemptsOf(t, e.c, d.ID)
				if len(as) != 3 {
					t.Fatalf("%d attempt rows, want 3", len(as))
				}
				// The schedule runs from each attempt's start (the dispatcher's clock,
				// as recorded); the receiver sees each request a transit later, so its
				// own gaps may be a transit shorter.
				if gap := as[1].At.Sub(as[0].At); gap < 50*time.Millisecond {
					t.Errorf("second attempt %v after the first, want >= 50ms", gap)
				}
				if gap := as[2].At.Sub(as[1].At); gap < 100*time.Millisecond {
					t.Errorf("third attempt %v after the second, want >= 100ms", gap)
				}
				for i, a := range as {
					wantCode := []int{500, 500, 200}[i]
					if a.Attempt != i+1 || a.StatusCode == nil || *a.StatusCode != wantCode || a.TenantID != d.TenantID {
						t.Errorf("attempt row %d: number %d status %v tenant %s", i+1, a.Attempt, a.StatusCode, a.TenantID)
					}
					if (a.NextAttemptAt != nil) != (i < 2) {
						t.Errorf("attempt row %d next_attempt_at %v", i+1, a.NextAttemptAt)
					}
					if (a.Error != nil) != (i < 2) {
						t.Errorf("attempt row %d error %v", i+1, a.Error)
					}
				}
				if d.Attempts != 3 || d.ResponseStatus == nil || *d.ResponseStatus != 200 || d.Error != nil ||
					d.NextAttemptAt != nil || d.LastAttemptAt == nil || d.LatencyMs == nil {
					t.Errorf("delivery summary: attempts %d status %v error %v next %v last %v",
						d.Attempts, d.ResponseStatus, d.Error, d.NextAttemptAt, d.LastAttemptAt)
				}
				if w := e.webhook(t); w.FailingSince != nil || !w.Active {
					t.Errorf("webhook after success: failing_since %v active %v", w.FailingSince, w.Active)
				}
			},
		},
		{
			name: "429 with Retry-After delays the next attempt",
			reply: func(n int, _ *http.Request) (int, http.Header) {
				if n == 1 {
					return http.StatusTooManyRequests, http.Header{"Retry-After": {"1"}}
				}
				return http.StatusOK, nil
			},
			done: func(t *testing.T, e outcomeEnv) bool {
				return e.delivery(t).Status == webhookdelivery.StatusDelivered
			},
			check: func(t *testing.T, e outcomeEnv) {
				reqs := e.rc.requests()
				if len(reqs) != 2 {
					t.Fatalf("receiver got %d requests, want 2", len(reqs))
				}
				as := attemptsOf(t, e.c, e.delivery(t).ID)
				if len(as) != 2 || as[0].NextAttemptAt == nil || as[0].NextAttemptAt.Sub(as[0].At) < time.Second {
					t.Fatalf("first attempt row does not schedule the retry >= 1s later: %+v", as)
				}
				// The retry arrives no earlier than scheduled (the dispatcher's clock is
				// the receiver's). Its gap to the first request may be a transit shorter
				// than 1s: the schedule runs from the first attempt's start.
				if early := as[0].NextAttemptAt.Sub(reqs[1].At); early > 20*time.Millisecond {
					t.Errorf("retry arrived %v before its schedule (%v after the first request)", early, reqs[1].At.Sub(reqs[0].At))
				}
			},
		},
		{
			name: "410 Gone disables the webhook",
			reply: func(int, *http.Request) (int, http.Header) {
				return http.StatusGone, nil
			},
			done: func(t *testing.T, e outcomeEnv) bool {
				return e.delivery(t).Status == webhookdelivery.StatusFailed
			},
			check: func(t *testing.T, e outcomeEnv) {
				w := e.webhook(t)
				if w.Active || w.DisabledReason == nil || *w.DisabledReason != "endpoint returned 410 Gone" {
					t.Errorf("webhook active %v reason %v, want disabled by 410", w.Active, w.DisabledReason)
				}
				if n := e.c.AuditLog.Query().Where(auditlog.ObjectID(w.ID), auditlog.Action("webhook.disabled")).CountX(sysCtx()); n != 1 {
					t.Errorf("%d webhook.disabled audit rows, want 1", n)
				}
				if n := e.rc.count(); n != 1 {
					t.Errorf("receiver got %d requests, want 1", n)
				}
				if n := enqueue(t, e.c, w.TenantID, webhook.EventAPIKeyCreated, nil); n != 0 {
					t.Errorf("Enqueue to a disabled webhook wrote %d deliveries", n)
				}
			},
		},
		{
			name: "schedule exhausted marks FAILED",
			reply: func(int, *http.Request) (int, http.Header) {
				return http.StatusInternalServerError, nil
			},
			cfg: func(c *webhook.Config) { c.Schedule = []time.Duration{20 * time.Millisecond, 20 * time.Millisecond} },
			done: func(t *testing.T, e outcomeEnv) bool {
				return e.delivery(t).Status == webhookdelivery.StatusFailed
			},
			check: func(t *testing.T, e outcomeEnv) {
				d := e.delivery(t)
				as := attemptsOf(t, e.c, d.ID)
				if len(as) != 3 || d.Attempts != 3 || e.rc.count() != 3 {
					t.Fatalf("%d attempt rows, attempts %d, %d requests; want 3", len(as), d.Attempts, e.rc.count())
				}
				if as[2].NextAttemptAt != nil || d.NextAttemptAt != nil {
					t.Error("the last attempt schedules another")
				}
				if d.Error == nil || *d.Error != "HTTP 500 Internal Server Error" {
					t.Errorf("delivery error %v", d.Error)
				}
				w := e.webhook(t)
				if !w.Active || w.FailingSince == nil {
					t.Errorf("webhook active %v failing_since %v, want active and failing", w.Active, w.FailingSince)
				}
			},
		},
		{
			name: "continuous failure for DisableAfter disables the endpoint",
			reply: func(int, *http.Request) (int, http.Header) {
				return http.StatusBadGateway, nil
			},
			cfg: func(c *webhook.Config) {
				c.Schedule = slices.Repeat([]time.Duration{40 * time.Millisecond}, 50)
				c.DisableAfter = 300 * time.Millisecond
			},
			done: func(t *testing.T, e outcomeEnv) bool { return !e.webhook(t).Active },
			check: func(t *testing.T, e outcomeEnv) {
				w := e.webhook(t)
				if w.DisabledReason == nil || !strings.Contains(*w.DisabledReason, "failed continuously") ||
					!strings.Contains(*w.DisabledReason, "HTTP 502") {
					t.Errorf("disabled_reason %v", w.DisabledReason)
				}
				if w.FailingSince == nil {
					t.Error("failing_since not set")
				}
				n := e.rc.count()
				time.Sleep(200 * time.Millisecond)
				if e.rc.count() != n {
					t.Error("a disabled webhook still receives deliveries")
				}
				if d := e.delivery(t); d.Status != webhookdelivery.StatusPending {
					t.Errorf("delivery %s, want PENDING (waiting for re-activation)", d.Status)
				}
				// Re-activating clears the reason and the failure clock.
				m := &webhook.Manager{Policy: localPolicy}
				on := true
				w, err := m.Update(tenantCtx(w.TenantID), e.c, w.ID, webhook.UpdateParams{Active: &on})
				if err != nil {
					t.Fatal(err)
				}
				if !w.Active || w.DisabledReason != nil || w.FailingSince != nil {
					t.Errorf("re-activated webhook: active %v reason %v failing_since %v", w.Active, w.DisabledReason, w.FailingSince)
				}
			},
		},
	}
	forEachDialect(t, func(t *testing.T, s *store.Store) {
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				rc := newReceiver(t, tc.reply)
				tid := newTenant(t, s.Client)
				w, secret := newWebhook(t, s.Client, tid, rc.URL+"/hook")
				if n := enqueue(t, s.Client, tid, webhook.EventAPIKeyCreated, map[string]any{"id": "key_1"}); n != 1 {
					t.Fatalf("Enqueue wrote %d deliveries, want 1", n)
				}
				cfg := testConfig()
				if tc.cfg != nil {
					tc.cfg(&cfg)
				}
				_, stop := runDispatcher(t, s, cfg)
				e := outcomeEnv{c: s.Client, rc: rc, hook: w, secret: secret}
				waitFor(t, 10*time.Second, "the outcome", func() bool { return tc.done(t, e) })
				stop()
				tc.check(t, e)
			})
		}
	})
}

// During a rotation's grace period both signatures are sent and each verifies with its
// own secret; afterwards only the new one.
func TestSecretRotationSignatures(t *testing.T) {
	forEachDialect(t, func(t *testing.T, s *store.Store) {
		rc := newReceiver(t, nil)
		tid := newTenant(t, s.Client)
		ctx := tenantCtx(tid)
		w, oldSecret := newWebhook(t, s.Client, tid, rc.URL)
		d, _ := runDispatcher(t, s, testConfig())
		m := &webhook.Manager{Policy: localPolicy, Dispatcher: d}

		w, newSecret, err := m.RotateSecret(ctx, s.Client, w.ID, 2)
		if err != nil {
			t.Fatal(err)
		}
		if newSecret == oldSecret || !strings.HasPrefix(newSecret, "whsec_") {
			t.Fatalf("rotation returned %q", newSecret)
		}
		if _, err := m.SendTest(ctx, s.Client, w.ID); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 5*time.Second, "the test delivery", func() bool { return rc.count() == 1 })
		r := rc.requests()[0]
		sigs := strings.Fields(r.Header.Get("webhook-signature"))
		if len(sigs) != 2 {
			t.Fatalf("%d signatures during the grace period, want 2", len(sigs))
		}
		for _, secret := range []string{newSecret, oldSecret} {
			if err := verify(t, secret, r.Body, r.Header); err != nil {
				t.Errorf("during grace: %v", err)
			}
		}
		// Each signature alone verifies with its own secret, the new one first.
		for i, secret := range []string{newSecret, oldSecret} {
			h := r.Header.Clone()
			h.Set("webhook-signature", sigs[i])
			if err := verify(t, secret, r.Body, h); err != nil {
				t.Errorf("signature %d with its secret: %v", i, err)
			}
		}
		if !strings.Contains(r.Header.Get("webhook-id"), "msg_") || !strings.Contains(string(r.Body), `"type":"webhook.test"`) {
			t.Errorf("test delivery id %q body %s", r.Header.Get("webhook-id"), r.Body)
		}

		time.Sleep(time.Until(*w.PreviousSecretExpiresAt) + 50*time.Millisecond)
		if _, err := m.SendTest(ctx, s.Client, w.ID); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 5*time.Second, "the second test delivery", func() bool { return rc.count() == 2 })
		r = rc.requests()[1]
		if n := len(strings.Fields(r.Header.Get("webhook-signature"))); n != 1 {
			t.Fatalf("%d signatures after the grace period, want 1", n)
		}
		if err := verify(t, newSecret, r.Body, r.Header); err != nil {
			t.Errorf("after grace, new secret: %v", err)
		}
		if err := verify(t, oldSecret, r.Body, r.Header); err == nil {
			t.Error("after grace, the old secret still verifies")
		}
	})
}

// A dispatcher that dies after claiming (or after sending but before recording) loses
// nothing: once the lease expires another dispatcher delivers the event, with the same
// webhook-id.
func TestCrashSafety(t *testing.T) {
	forEachDialect(t, func(t *testing.T, s *store.Store) {
		const lease = 600 * time.Millisecond
		setup := func(t *testing.T, reply func(int, *http.Request) (int, http.Header)) (*receiver, *ent.WebhookDelivery) {
			rc := newReceiver(t, reply)
			tid := newTenant(t, s.Client)
			w, _ := newWebhook(t, s.Client, tid, rc.URL)
			enqueue(t, s.Client, tid, webhook.EventAPIKeyRevoked, nil)
			return rc, onlyDelivery(t, s.Client, w.ID)
		}

		t.Run("killed after its claim committed", func(t *testing.T) {
			rc, d := setup(t, nil)
			cfg := testConfig()
			cfg.Lease, cfg.Timeout = lease, 200*time.Millisecond
			crashed := webhook.NewDispatcher(s.Client, s.Dialect, cfg)
			claimedAt := time.Now()
			if n, err := webhook.ClaimAndAbandon(context.Background(), crashed); err != nil || n != 1 {
				t.Fatalf("claim: %d, %v", n, err)
			}
			_, stop := runDispatcher(t, s, testConfig())
			defer stop()
			waitFor(t, 5*time.Second, "redelivery after the lease", func() bool { return rc.count() == 1 })
			r := rc.requests()[0]
			if waited := r.At.Sub(claimedAt); waited < lease-50*time.Millisecond {
				t.Errorf("delivered %v after the claim, before the %v lease expired", waited, lease)
			}
			if got := r.Header.Get("webhook-id"); got != d.EventID {
				t.Errorf("webhook-id %q, want %q", got, d.EventID)
			}
			waitFor(t, 5*time.Second, "DELIVERED", func() bool {
				return onlyDelivery(t, s.Client, d.WebhookID).Status == webhookdelivery.StatusDelivered
			})
		})

		t.Run("killed after sending, before recording", func(t *testing.T) {
			rc, d := setup(t, nil)
			cfg := testConfig()
			cfg.Lease, cfg.Timeout = lease, 200*time.Millisecond
			dead := webhook.NewDispatcher(s.Client, s.Dialect, cfg)
			webhook.SetBeforeRecord(dead, func(string) bool { return false })
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- dead.Run(ctx) }()
			waitFor(t, 5*time.Second, "the first send", func() bool { return rc.count() == 1 })
			cancel()
			<-done
			// The claim set next_attempt_at to the end of its lease, and the lost send
			// recorded nothing: the row still holds it. (The first request's arrival is
			// no reference: it comes some time after the claim.)
			leaseEnd := onlyDelivery(t, s.Client, d.WebhookID).NextAttemptAt
			if leaseEnd == nil {
				t.Fatal("the claimed delivery has no next_attempt_at")
			}

			_, stop := runDispatcher(t, s, testConfig())
			defer stop()
			waitFor(t, 5*time.Second, "the second send", func() bool { return rc.count() == 2 })
			reqs := rc.requests()
			if reqs[0].Header.Get("webhook-id") != d.EventID || reqs[1].Header.Get("webhook-id") != d.EventID {
				t.Errorf("webhook-ids %q, %q, want %q twice", reqs[0].Header.Get("webhook-id"), reqs[1].Header.Get("webhook-id"), d.EventID)
			}
			if early := leaseEnd.Sub(reqs[1].At); early > 20*time.Millisecond {
				t.Errorf("resent %v before the lease of the lost attempt expired (%v after that attempt)", early, reqs[1].At.Sub(reqs[0].At))
			}
			if held := leaseEnd.Sub(reqs[0].At); held < lease/2 {
				t.Errorf("the lost attempt's lease ends %v after its send, want about %v", held, lease)
			}
			waitFor(t, 5*time.Second, "DELIVERED", func() bool {
				return onlyDelivery(t, s.Client, d.WebhookID).Status == webhookdelivery.StatusDelivered
			})
		})

		t.Run("shutdown waits for the send in flight and records it", func(t *testing.T) {
			release := make(chan struct{})
			defer close(release)
			rc, d := setup(t, func(int, *http.Request) (int, http.Header) {
				<-release
				return http.StatusOK, nil
			})
			cfg := testConfig()
			cfg.Timeout = 300 * time.Millisecond
			_, stop := runDispatcher(t, s, cfg)
			waitFor(t, 5*time.Second, "the send", func() bool { return rc.count() == 1 })
			start := time.Now()
			stop()
			if took := time.Since(start); took > 3*time.Second {
				t.Errorf("Run took %v to return, want about Timeout", took)
			}
			got := onlyDelivery(t, s.Client, d.WebhookID)
			as := attemptsOf(t, s.Client, d.ID)
			if len(as) != 1 || as[0].Error == nil || !strings.Contains(*as[0].Error, "timeout") ||
				got.Status != webhookdelivery.StatusPending || got.Attempts != 1 {
				t.Errorf("after shutdown: status %s attempts %d rows %d", got.Status, got.Attempts, len(as))
			}
		})
	})
}

// Enqueue in a transaction: nothing is sent when it rolls back; delivered when it commits.
func TestEnqueueInTransaction(t *testing.T) {
	forEachDialect(t, func(t *testing.T, s *store.Store) {
		for _, commit := range []bool{false, true} {
			name := map[bool]string{false: "rolled back", true: "committed"}[commit]
			t.Run(name, func(t *testing.T) {
				rc := newReceiver(t, nil)
				tid := newTenant(t, s.Client)
				w, _ := newWebhook(t, s.Client, tid, rc.URL)
				d, stop := runDispatcher(t, s, testConfig())
				defer stop()
				tx, err := s.Client.Tx(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				n, err := webhook.Enqueue(context.Background(), tx.Client(), webhook.Event{Type: webhook.EventTenantUpdated, TenantID: tid}, "")
				if err != nil || n != 1 {
					t.Fatalf("Enqueue = %d, %v", n, err)
				}
				if commit {
					err = tx.Commit()
				} else {
					err = tx.Rollback()
				}
				if err != nil {
					t.Fatal(err)
				}
				d.Wake()
				if commit {
					waitFor(t, 5*time.Second, "the delivery", func() bool { return rc.count() == 1 })
					return
				}
				time.Sleep(400 * time.Millisecond)
				if got := len(deliveriesOf(t, s.Client, w.ID)); got != 0 || rc.count() != 0 {
					t.Fatalf("after rollback: %d deliveries, %d requests", got, rc.count())
				}
			})
		}
	})
}

// Enqueue addresses the tenant's active webhooks subscribed to the type, once per
// event id.
func TestEnqueueSelection(t *testing.T) {
	forEachDialect(t, func(t *testing.T, s *store.Store) {
		c := s.Client
		tid, other := newTenant(t, c), newTenant(t, c)
		all, _ := newWebhook(t, c, tid, "http://127.0.0.1:9/all")
		created, _ := newWebhook(t, c, tid, "http://127.0.0.1:9/created", webhook.EventAPIKeyCreated)
		revoked, _ := newWebhook(t, c, tid, "http://127.0.0.1:9/revoked", webhook.EventAPIKeyRevoked, webhook.EventAPIKeyRotated)
		off, _ := newWebhook(t, c, tid, "http://127.0.0.1:9/off")
		c.Webhook.UpdateOneID(off.ID).SetActive(false).ExecX(sysCtx())
		foreign, _ := newWebhook(t, c, other, "http://127.0.0.1:9/foreign")

		cases := []struct {
			typ, eventID string
			want         []string
		}{
			{webhook.EventAPIKeyCreated, "", []string{all.ID, created.ID}},
			{webhook.EventAPIKeyRotated, "", []string{all.ID, revoked.ID}},
			{webhook.EventQuotaExceeded, "evt-quota-1", []string{all.ID}},
			{webhook.EventQuotaExceeded, "evt-quota-1", nil}, // duplicate event id
			{webhook.EventAPIKeyRevoked, "evt-quota-1", []string{revoked.ID}},
		}
		for _, tc := range cases {
			before := c.WebhookDelivery.Query().IDsX(sysCtx())
			n, err := webhook.Enqueue(tenantCtx(other), c, webhook.Event{Type: tc.typ, TenantID: tid, Data: map[string]int{"n": 1}}, tc.eventID)
			if err != nil {
				t.Fatalf("Enqueue(%s): %v", tc.typ, err)
			}
			got := c.WebhookDelivery.Query().Where(webhookdelivery.IDNotIn(before...)).AllX(sysCtx())
			var hooks []string
			for _, d := range got {
				hooks = append(hooks, d.WebhookID)
				if d.EventID != got[0].EventID || d.Payload != got[0].Payload || d.Status != webhookdelivery.StatusPending ||
					d.NextAttemptAt == nil || d.TenantID != tid || d.EventType != tc.typ {
					t.Errorf("Enqueue(%s): delivery %+v", tc.typ, d)
				}
				if tc.eventID != "" && d.EventID != tc.eventID {
					t.Errorf("event id %q, want %q", d.EventID, tc.eventID)
				}
				if !strings.HasPrefix(d.Payload, `{"type":"`+tc.typ+`","timestamp":"`) {
					t.Errorf("payload %s", d.Payload)
				}
			}
			slices.Sort(hooks)
			want := slices.Clone(tc.want)
			slices.Sort(want)
			if n != len(want) || !slices.Equal(hooks, want) {
				t.Errorf("Enqueue(%s, %q) = %d to %v, want %v", tc.typ, tc.eventID, n, hooks, want)
			}
		}
		if n := len(deliveriesOf(t, c, foreign.ID)) + len(deliveriesOf(t, c, off.ID)); n != 0 {
			t.Errorf("%d deliveries to another tenant's or an inactive webhook", n)
		}
		if _, err := webhook.Enqueue(context.Background(), c, webhook.Event{Type: "x"}, ""); err == nil {
			t.Error("Enqueue without tenant succeeded")
		}
	})
}

// Two dispatchers on one PostgreSQL database deliver 200 events exactly once each,
// never attempting one delivery twice at the same time.
func TestTwoDispatchersPostgres(t *testing.T) {
	t.Parallel()
	url := testdb.URL(t, "postgres")
	var stores []*store.Store
	for range 2 {
		s, err := store.Open(context.Background(), url)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		stores = append(stores, s)
	}
	rc := newReceiver(t, func(n int, _ *http.Request) (int, http.Header) {
		time.Sleep(time.Duration(n%4) * time.Millisecond)
		return http.StatusOK, nil
	})
	c := stores[0].Client
	tid := newTenant(t, c)
	for i := range 5 {
		newWebhook(t, c, tid, rc.URL+"/h"+string(rune('a'+i)))
	}
	var perDispatcher [2]atomic.Int64
	var ds []*webhook.Dispatcher
	for i, s := range stores {
		cfg := testConfig()
		cfg.Workers, cfg.PerEndpoint = 8, 3
		cfg.OnAttempt = func(webhook.AttemptResult) { perDispatcher[i].Add(1) }
		d, _ := runDispatcher(t, s, cfg)
		ds = append(ds, d)
	}
	tx, err := c.Tx(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for range 40 {
		if _, err := webhook.Enqueue(context.Background(), tx.Client(), webhook.Event{Type: webhook.EventAPIKeyUpdated, TenantID: tid}, ""); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	for _, d := range ds {
		d.Wake()
	}
	const total = 200
	waitFor(t, 30*time.Second, "200 deliveries", func() bool {
		return c.WebhookDelivery.Query().Where(webhookdelivery.StatusEQ(webhookdelivery.StatusDelivered)).CountX(sysCtx()) == total
	})
	time.Sleep(200 * time.Millisecond) // nothing more may arrive
	seen := map[string]int{}
	for _, r := range rc.requests() {
		seen[r.Path+" "+r.Header.Get("webhook-id")]++
	}
	if len(seen) != total {
		t.Errorf("%d distinct deliveries received, want %d", len(seen), total)
	}
	for k, n := range seen {
		if n != 1 {
			t.Errorf("%s received %d times", k, n)
		}
	}
	rc.mu.Lock()
	overlaps := rc.overlaps
	rc.mu.Unlock()
	if overlaps != 0 {
		t.Errorf("%d concurrent attempts of the same delivery", overlaps)
	}
	if n := c.WebhookAttempt.Query().CountX(sysCtx()); n != total {
		t.Errorf("%d attempt rows, want %d", n, total)
	}
	a, b := perDispatcher[0].Load(), perDispatcher[1].Load()
	t.Logf("dispatcher A sent %d, B sent %d", a, b)
	if a+b != total || a == 0 || b == 0 {
		t.Errorf("dispatchers sent %d and %d, want both to share %d", a, b, total)
	}
}

// A slow endpoint holds at most PerEndpoint workers; deliveries to a fast one go on.
func TestPerEndpointConcurrency(t *testing.T) {
	forEachDialect(t, func(t *testing.T, s *store.Store) {
		release := make(chan struct{})
		var releaseOnce sync.Once
		unblock := func() { releaseOnce.Do(func() { close(release) }) }
		defer unblock()
		var cur, peak atomic.Int64
		slow := newReceiver(t, func(int, *http.Request) (int, http.Header) {
			n := cur.Add(1)
			for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
			}
			<-release
			cur.Add(-1)
			return http.StatusOK, nil
		})
		fast := newReceiver(t, nil)
		tid := newTenant(t, s.Client)
		slowHook, _ := newWebhook(t, s.Client, tid, slow.URL, webhook.EventAPIKeyExpiring)
		newWebhook(t, s.Client, tid, fast.URL, webhook.EventAPIKeyExpired)
		for range 12 {
			enqueue(t, s.Client, tid, webhook.EventAPIKeyExpiring, nil)
		}
		cfg := testConfig()
		cfg.Workers, cfg.PerEndpoint = 4, 2
		d, _ := runDispatcher(t, s, cfg)
		waitFor(t, 5*time.Second, "the slow endpoint to be busy", func() bool { return cur.Load() == 2 })
		for range 10 {
			enqueue(t, s.Client, tid, webhook.EventAPIKeyExpired, nil)
			d.Wake()
		}
		waitFor(t, 10*time.Second, "fast deliveries while the slow endpoint blocks", func() bool { return fast.count() == 10 })
		if p := peak.Load(); p > 2 {
			t.Errorf("%d concurrent sends to the slow endpoint, limit 2", p)
		}
		unblock()
		waitFor(t, 10*time.Second, "the slow deliveries", func() bool {
			return s.Client.WebhookDelivery.Query().Where(
				webhookdelivery.WebhookID(slowHook.ID), webhookdelivery.StatusEQ(webhookdelivery.StatusDelivered),
			).CountX(sysCtx()) == 12
		})
		if p := peak.Load(); p > 2 {
			t.Errorf("%d concurrent sends to the slow endpoint, limit 2", p)
		}
	})
}

// gate returns a channel and a function that closes it, once. Defer the function in
// the test: deferred calls run before the cleanups that stop the dispatcher and close
// the receivers, which wait for the requests held on the channel.
func gate() (<-chan struct{}, func()) {
	ch := make(chan struct{})
	var once sync.Once
	return ch, func() { once.Do(func() { close(ch) }) }
}

// holder is an endpoint that holds every request until release is closed (or one
// token is sent on next), counting the requests it holds.
type holder struct {
	*receiver
	held, peak atomic.Int64
}

func newHolder(t *testing.T, release <-chan struct{}, next <-chan struct{}) *holder {
	h := &holder{}
	h.receiver = newReceiver(t, func(_ int, r *http.Request) (int, http.Header) {
		n := h.held.Add(1)
		for p := h.peak.Load(); n > p && !h.peak.CompareAndSwap(p, n); p = h.peak.Load() {
		}
		defer h.held.Add(-1)
		select {
		case <-release:
		case <-next:
		case <-r.Context().Done():
		}
		return http.StatusOK, nil
	})
	return h
}

// slowTenant creates a tenant with hooks webhooks on h and queues events events to
// all of them; it returns the tenant.
func slowTenant(t *testing.T, c *ent.Client, h *holder, hooks, events int) string {
	t.Helper()
	tid := newTenant(t, c)
	for i := range hooks {
		newWebhook(t, c, tid, h.URL+"/"+tid+"/"+string(rune('a'+i)))
	}
	for range events {
		enqueue(t, c, tid, webhook.EventAPIKeyUpdated, nil)
	}
	return tid
}

// waitAllDelivered waits until every delivery of tenants is DELIVERED, then checks
// that each was received once by rcs, never twice at the same time, and attempted once.
func waitAllDelivered(t *testing.T, c *ent.Client, tenants []string, rcs ...*receiver) {
	t.Helper()
	ofTenants := webhookdelivery.TenantIDIn(tenants...)
	total := c.WebhookDelivery.Query().Where(ofTenants).CountX(sysCtx())
	waitFor(t, 20*time.Second, "every delivery", func() bool {
		return c.WebhookDelivery.Query().Where(ofTenants, webhookdelivery.StatusEQ(webhookdelivery.StatusDelivered)).CountX(sysCtx()) == total
	})
	seen := map[string]int{}
	for _, rc := range rcs {
		for _, r := range rc.requests() {
			seen[r.Path+" "+r.Header.Get("webhook-id")]++
		}
		rc.mu.Lock()
		if rc.overlaps != 0 {
			t.Errorf("%d concurrent attempts of the same delivery", rc.overlaps)
		}
		rc.mu.Unlock()
	}
	if len(seen) != total {
		t.Errorf("%d distinct deliveries received, want %d", len(seen), total)
	}
	for k, n := range seen {
		if n != 1 {
			t.Errorf("%s received %d times", k, n)
		}
	}
	if n := c.WebhookAttempt.Query().Where(webhookattempt.TenantIDIn(tenants...)).CountX(sysCtx()); n != total {
		t.Errorf("%d attempt rows, want %d", n, total)
	}
}

// One tenant's endpoints that hang cannot hold up another tenant's deliveries: the
// attacker's finding (4 slow endpoints with a backlog) on a small dispatcher.
func TestTenantFairness(t *testing.T) {
	forEachDialect(t, func(t *testing.T, s *store.Store) {
		c := s.Client
		// Timeout beyond the test: the slow requests end only when released.
		cfg := testConfig()
		cfg.Timeout = time.Minute

		t.Run("a slow tenant holds at most PerTenant workers", func(t *testing.T) {
			release, open := gate()
			defer open()
			slow := newHolder(t, release, nil)
			a := slowTenant(t, c, slow, 4, 4) // could keep 4×2 = every worker busy
			fast := newReceiver(t, nil)
			b := newTenant(t, c)
			newWebhook(t, c, b, fast.URL)
			cfg := cfg
			cfg.Workers, cfg.PerEndpoint = 8, 2 // PerTenant: max(8/4, 2+1) = 3
			d, stop := runDispatcher(t, s, cfg)
			defer stop()
			waitFor(t, 10*time.Second, "the slow tenant's sends", func() bool { return slow.held.Load() >= 3 })

			enqueue(t, c, b, webhook.EventWebhookTest, nil)
			d.Wake()
			waitFor(t, 10*time.Second, "tenant B's delivery while the slow tenant's requests hang", func() bool { return fast.count() == 1 })
			if held, done := slow.held.Load(), slow.count()-int(slow.held.Load()); held != 3 || done != 0 {
				t.Fatalf("when B was delivered the slow tenant had %d requests held and %d answered, want 3 and 0", held, done)
			}
			if p := slow.peak.Load(); p > 3 {
				t.Errorf("%d concurrent sends for one tenant, PerTenant 3", p)
			}
			open()
			waitAllDelivered(t, c, []string{a, b}, slow.receiver, fast)
			if p := slow.peak.Load(); p > 3 {
				t.Errorf("%d concurrent sends for one tenant, PerTenant 3", p)
			}
		})

		t.Run("several slow tenants leave the reserve to a tenant with nothing in flight", func(t *testing.T) {
			release, open := gate()
			defer open()
			var slow []*holder
			var tenants []string
			for range 3 {
				h := newHolder(t, release, nil)
				tenants = append(tenants, slowTenant(t, c, h, 4, 2))
				slow = append(slow, h)
			}
			fast := newReceiver(t, nil)
			b := newTenant(t, c)
			newWebhook(t, c, b, fast.URL)
			cfg := cfg
			cfg.Workers, cfg.PerEndpoint = 8, 2 // PerTenant 3, Reserve 1
			heldAll := func() (n int64) {
				for _, h := range slow {
					n += h.held.Load()
				}
				return n
			}
			d, stop := runDispatcher(t, s, cfg)
			defer stop()
			// 3 + 3, then the third tenant takes one worker and leaves the last one.
			waitFor(t, 10*time.Second, "the slow tenants' sends", func() bool { return heldAll() >= 7 })

			enqueue(t, c, b, webhook.EventWebhookTest, nil)
			d.Wake()
			waitFor(t, 10*time.Second, "tenant B's delivery while three tenants' requests hang", func() bool { return fast.count() == 1 })
			if n := heldAll(); n != 7 {
				t.Fatalf("when B was delivered %d slow requests were held, want 7", n)
			}
			for i, h := range slow {
				if p := h.peak.Load(); p > 3 {
					t.Errorf("slow tenant %d had %d concurrent sends, PerTenant 3", i, p)
				}
			}
			open()
			rcs := []*receiver{fast}
			for _, h := range slow {
				rcs = append(rcs, h.receiver)
			}
			waitAllDelivered(t, c, append(tenants, b), rcs...)
		})

		t.Run("a freed worker goes to a waiting tenant before a backlog", func(t *testing.T) {
			release, open := gate()
			defer open()
			next := make(chan struct{})
			slow := newHolder(t, release, next)
			a := slowTenant(t, c, slow, 1, 10)
			var slowAtB atomic.Int64
			fast := newReceiver(t, func(int, *http.Request) (int, http.Header) {
				slowAtB.Store(int64(slow.count()))
				return http.StatusOK, nil
			})
			b := newTenant(t, c)
			newWebhook(t, c, b, fast.URL)
			// Only the claim order decides: no tenant limit, no reserve.
			cfg := cfg
			cfg.Workers, cfg.PerEndpoint, cfg.PerTenant, cfg.Reserve = 4, 4, 4, -1
			d, stop := runDispatcher(t, s, cfg)
			defer stop()
			waitFor(t, 10*time.Second, "every worker busy", func() bool { return slow.held.Load() == 4 })
			enqueue(t, c, b, webhook.EventWebhookTest, nil) // older slow deliveries are due too
			d.Wake()
			next <- struct{}{} // one slow request answers: one worker frees
			waitFor(t, 10*time.Second, "tenant B's delivery", func() bool { return fast.count() == 1 })
			if n := slowAtB.Load(); n != 4 {
				t.Errorf("the slow tenant had received %d requests when B was delivered, want 4 (B first)", n)
			}
			open()
			waitAllDelivered(t, c, []string{a, b}, slow.receiver, fast)
		})
	})
}
