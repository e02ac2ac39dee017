package webhook

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"sync"
	"time"

	"github.com/latchkey/latchkey/ent"
	entapikey "github.com/latchkey/latchkey/ent/apikey"
	"github.com/latchkey/latchkey/ent/schema/rule"
	"github.com/latchkey/latchkey/internal/data/ratelimit"
	"github.com/latchkey/latchkey/internal/platform/viewer"
)

// APIKeyData is the "data" of api_key.* events: the key's public fields.
func APIKeyData(k *ent.ApiKey) map[string]any {
	key := map[string]any{
		"id": k.ID, "tenantID": k.TenantID, "name": k.Name, "prefix": k.Prefix, "scopes": k.Scopes,
		"rateLimit": k.RateLimit, "rateLimitWindowSeconds": k.RateLimitWindowSeconds,
		"expiresAt": k.ExpiresAt, "revokedAt": k.RevokedAt, "rotatedFromID": k.RotatedFromID,
		"createdAt": k.CreatedAt, "updatedAt": k.UpdatedAt,
	}
	return map[string]any{"apiKey": key}
}

// TenantData is the "data" of tenant.* events.
func TenantData(t *ent.Tenant) map[string]any {
	return map[string]any{"tenant": map[string]any{
		"id": t.ID, "name": t.Name, "slug": t.Slug, "plan": t.Plan, "active": t.Active, "updatedAt": t.UpdatedAt,
	}}
}

// LimitEvents turns rate-limit and quota denials into rate_limit.exceeded and
// quota.exceeded events: at most one per key per rate-limit window (per quota period),
// written off the request path by a bounded worker.
type LimitEvents struct {
	Client *ent.Client
	// Outbox writes the events and wakes the dispatchers.
	Outbox *Outbox

	mu    sync.Mutex
	sent  map[string]time.Time // dedupe key → until when it is not sent again
	queue chan limitEvent
	once  sync.Once
}

type limitEvent struct {
	ev Event
	id string
}

func (l *LimitEvents) init() {
	l.once.Do(func() {
		l.sent = map[string]time.Time{}
		l.queue = make(chan limitEvent, 1024)
	})
}

// Denied reports a denied operation of key keyID in tenantID. kind is
// "rate_limit.exceeded" or "quota.exceeded"; window is the rate-limit window or the
// quota period's remaining time; details go into the event's data. It never blocks:
// when the queue is full the event is dropped and logged.
func (l *LimitEvents) Denied(kind, tenantID, keyID, keyPrefix string, windowStart time.Time, window time.Duration, details map[string]any) {
	l.init()
	dedupe := fmt.Sprintf("%s:%s:%d", kind, keyID, windowStart.Unix())
	now := time.Now()
	l.mu.Lock()
	if until, ok := l.sent[dedupe]; ok && now.Before(until) {
		l.mu.Unlock()
		return
	}
	l.sent[dedupe] = now.Add(window)
	if len(l.sent) > 10000 {
		for k, until := range l.sent {
			if now.After(until) {
				delete(l.sent, k)
			}
		}
	}
	l.mu.Unlock()
	data := map[string]any{"apiKey": map[string]any{"id": keyID, "prefix": keyPrefix, "tenantID": tenantID}}
	for k, v := range details {
		data[k] = v
	}
	tag := "rl"
	if kind == EventQuotaExceeded {
		tag = "quota"
	}
	select {
	case l.queue <- limitEvent{Event{Type: kind, TenantID: tenantID, Data: data, At: now}, fmt.Sprintf("msg_%s_%s_%d", tag, keyID, windowStart.Unix())}:
	default:
		slog.Warn("webhook: limit event queue full, event dropped", "type", kind, "key", keyPrefix)
	}
}

// RateLimited reports a refusal by v's rate limit: a rate_limit.exceeded event, at most
// once per key per window. It never blocks.
func (l *LimitEvents) RateLimited(v *viewer.Viewer, retryAfter time.Duration) {
	now := time.Now().UTC()
	l.Denied(EventRateLimitExceeded, v.TenantID, v.APIKeyID, v.KeyPrefix, now.Truncate(v.RateWindow), v.RateWindow,
		map[string]any{"limit": v.RateLimit, "windowSeconds": int(v.RateWindow / time.Second), "retryAfterSeconds": int(math.Ceil(retryAfter.Seconds()))})
}

// QuotaExceeded reports a refusal by v's quota: a quota.exceeded event, at most once per
// key per period. It never blocks.
func (l *LimitEvents) QuotaExceeded(v *viewer.Viewer, resetAt time.Time) {
	now := time.Now().UTC()
	start, end := ratelimit.PeriodBounds(ratelimit.Period(v.QuotaPeriod), now)
	l.Denied(EventQuotaExceeded, v.TenantID, v.APIKeyID, v.KeyPrefix, start, end.Sub(now),
		map[string]any{"quota": v.Quota, "period": strings.ToUpper(v.QuotaPeriod), "resetAt": end})
}

// Run writes queued limit events until ctx ends. The deterministic event ids make an
// event of the same key and window sent once even when several instances see it.
func (l *LimitEvents) Run(ctx context.Context) {
	l.init()
	for {
		select {
		case <-ctx.Done():
			return
		case le := <-l.queue:
			if _, err := l.Outbox.Enqueue(ctx, l.Client, le.ev, le.id); err != nil {
				slog.Warn("webhook: enqueue limit event", "type", le.ev.Type, "err", err)
			}
		}
	}
}

// ExpiryScanner emits api_key.expiring (7 days and 1 day ahead) and api_key.expired
// events. Event ids are derived from the key and its expiry, so each is sent once per
// webhook however often the scan runs and however many instances run it.
type ExpiryScanner struct {
	Client *ent.Client
	// Outbox writes the events and wakes the dispatchers.
	Outbox   *Outbox
	Interval time.Duration // default 1 minute
	Now      func() time.Time
}

// Run scans every Interval until ctx ends.
func (s *ExpiryScanner) Run(ctx context.Context) {
	iv := s.Interval
	if iv <= 0 {
		iv = time.Minute
	}
	t := time.NewTicker(iv)
	defer t.Stop()
	for {
		if err := s.Scan(ctx); err != nil && ctx.Err() == nil {
			slog.Warn("webhook: expiry scan", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Scan emits the due expiry events once. It returns the first database error.
func (s *ExpiryScanner) Scan(ctx context.Context) error {
	now := time.Now()
	if s.Now != nil {
		now = s.Now()
	}
	sctx := rule.SystemContext(ctx)
	keys, err := s.Client.ApiKey.Query().
		Where(entapikey.TenantIDNotNil(), entapikey.RevokedAtIsNil(),
			entapikey.ExpiresAtNotNil(), entapikey.ExpiresAtGT(now.Add(-24*time.Hour)), entapikey.ExpiresAtLTE(now.Add(7*24*time.Hour))).
		All(sctx)
	if err != nil {
		return err
	}
	for _, k := range keys {
		exp := *k.ExpiresAt
		var typ, tag string
		switch left := exp.Sub(now); {
		case left <= 0:
			typ, tag = EventAPIKeyExpired, "expired"
		case left <= 24*time.Hour:
			typ, tag = EventAPIKeyExpiring, "expiring1d"
		default:
			typ, tag = EventAPIKeyExpiring, "expiring7d"
		}
		data := APIKeyData(k)
		data["expiresAt"] = exp
		if _, err := s.Outbox.Enqueue(ctx, s.Client, Event{Type: typ, TenantID: *k.TenantID, Data: data, At: now},
			fmt.Sprintf("msg_%s_%s_%d", tag, k.ID, exp.Unix())); err != nil {
			return err
		}
	}
	return nil
}
