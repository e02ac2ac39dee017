package webhook

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"strconv"
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

	mu      sync.Mutex
	sent    map[limitKey]time.Time // → until when it is not sent again
	sweepAt int                    // the size of sent that sweeps out expired entries
	queue   chan limitEvent
	once    sync.Once
}

// minSweep is the smallest size of LimitEvents.sent that is swept.
const minSweep = 10000

// limitKey names one limit event: its kind (rl, quota, qt, ct), the scope and holder
// of the limit, the start of its window or period (Unix seconds) and, for a threshold,
// its percentage. Comparable, so that a repeated denial is deduplicated without
// building its event.
type limitKey struct {
	kind, scope, who string
	start            int64
	percent          int
}

// id is the deterministic event id of k, the same on every instance, so a webhook
// gets the event once however many instances saw it.
func (k limitKey) id() string {
	id := fmt.Sprintf("msg_%s_%s_%s_%d", k.kind, idSafe(k.scope), idSafe(k.who), k.start)
	if k.percent != 0 {
		id += "_" + strconv.Itoa(k.percent)
	}
	return id
}

type limitEvent struct {
	ev Event
	id string
}

func (l *LimitEvents) init() {
	l.once.Do(func() {
		l.sent = map[limitKey]time.Time{}
		l.sweepAt = minSweep
		l.queue = make(chan limitEvent, 1024)
	})
}

// first reports whether k is due (not sent, or its dedupe ended) and, if so, marks it
// sent until the time until. Expired entries are swept when the map has doubled since
// the last sweep, so each call costs O(1) amortized however many limits are hit.
func (l *LimitEvents) first(k limitKey, now, until time.Time) bool {
	l.init()
	l.mu.Lock()
	defer l.mu.Unlock()
	if u, ok := l.sent[k]; ok && now.Before(u) {
		return false
	}
	l.sent[k] = until
	if len(l.sent) > l.sweepAt {
		for k, u := range l.sent {
			if now.After(u) {
				delete(l.sent, k)
			}
		}
		l.sweepAt = max(minSweep, 2*len(l.sent))
	}
	return true
}

// notify queues event typ of tenantID for the worker under the id of k (first has
// claimed k). It never blocks: when the queue is full the event is dropped and logged.
func (l *LimitEvents) notify(typ, tenantID string, k limitKey, at time.Time, data map[string]any) {
	select {
	case l.queue <- limitEvent{Event{Type: typ, TenantID: tenantID, Data: data, At: at}, k.id()}:
	default:
		slog.Warn("webhook: limit event queue full, event dropped", "type", typ, "tenant", tenantID)
	}
}

// subject is the "data" part naming the key (and the limit's scope) of a limit event.
func subject(v *viewer.Viewer, scope string) map[string]any {
	data := map[string]any{"apiKey": map[string]any{"id": v.APIKeyID, "prefix": v.KeyPrefix, "tenantID": v.TenantID}, "scope": scope}
	if v.OwnerID != "" {
		data["ownerID"] = v.OwnerID
	}
	return data
}

// whose names the holder of a scope's counter for dedupe keys and event ids.
func whose(v *viewer.Viewer, scope string) string {
	switch scope {
	case "tenant":
		return v.TenantID
	case "owner":
		return v.TenantID + "_" + v.OwnerID
	}
	return v.APIKeyID
}

// RateLimited reports a refusal by a rate limit of scope (key, owner, tenant or
// named:<name>) of limit per window: a rate_limit.exceeded event, at most once per
// limit per window. It never blocks.
func (l *LimitEvents) RateLimited(v *viewer.Viewer, scope string, limit int, window, retryAfter time.Duration) {
	now := time.Now().UTC()
	start := now.Truncate(window)
	k := limitKey{kind: "rl", scope: scope, who: whose(v, scope), start: start.Unix()}
	if !l.first(k, now, start.Add(window)) {
		return
	}
	data := subject(v, scope)
	data["limit"], data["windowSeconds"], data["retryAfterSeconds"] = limit, int(window/time.Second), int(math.Ceil(retryAfter.Seconds()))
	l.notify(EventRateLimitExceeded, v.TenantID, k, now, data)
}

// QuotaExceeded reports a refusal by a quota of scope (key, owner or tenant) of quota
// per period, or by a credit balance (scope credits): a quota.exceeded event, at most
// once per limit per period. It never blocks.
func (l *LimitEvents) QuotaExceeded(v *viewer.Viewer, scope string, quota int64, period ratelimit.Period, resetAt time.Time) {
	now := time.Now().UTC()
	start, end := now, resetAt
	if period.Valid() {
		start, end = ratelimit.PeriodBounds(period, now)
	}
	if end.IsZero() {
		end = now.Add(24 * time.Hour)
	}
	k := limitKey{kind: "quota", scope: scope, who: whose(v, scope), start: start.Unix()}
	if !l.first(k, now, end) {
		return
	}
	data := subject(v, scope)
	data["quota"], data["period"], data["resetAt"] = quota, strings.ToUpper(string(period)), end
	l.notify(EventQuotaExceeded, v.TenantID, k, now, data)
}

// Threshold reports that a quota (typ quota.threshold) or a credit balance
// (credits.threshold) of scope crossed percent (80 or 100) of limit in the period
// starting at periodStart: once per limit, threshold and period. It never blocks.
func (l *LimitEvents) Threshold(v *viewer.Viewer, typ, scope string, percent int, limit, used int64, periodStart, resetAt time.Time) {
	now := time.Now()
	until := resetAt
	if until.IsZero() {
		until = now.Add(24 * time.Hour)
	}
	kind := "qt"
	if typ == EventCreditsThreshold {
		kind = "ct"
	}
	k := limitKey{kind: kind, scope: scope, who: whose(v, scope), start: periodStart.Unix(), percent: percent}
	if !l.first(k, now, until) {
		return
	}
	data := subject(v, scope)
	data["threshold"], data["limit"], data["used"] = percent, limit, used
	if !resetAt.IsZero() {
		data["resetAt"] = resetAt
	}
	l.notify(typ, v.TenantID, k, now, data)
}

// idSafe keeps letters, digits and underscores of s for an event id.
func idSafe(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' {
			return r
		}
		return '_'
	}, s)
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
