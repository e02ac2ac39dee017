package keys

import (
	"context"
	"fmt"
	"time"

	"github.com/latchkey/latchkey/ent"
	"github.com/latchkey/latchkey/internal/domain/plan"
	"github.com/latchkey/latchkey/internal/platform/fault"
	"github.com/latchkey/latchkey/internal/platform/viewer"
)

// Key policy, beyond scopes and plans.
//
// Locks. A key's rate limit and quota (limits_locked) and its expiry (expiry_locked)
// are locked when a platform admin sets them, and, for keys a bound key creates or
// rotates (below), by that bound. While a setting is locked, tenant keys may only
// tighten it; platform admins change anything and may unlock.
//
// Bounds. As a key cannot grant scopes it lacks, a key cannot give what it does not
// have: a key whose expiry binds it (locked, or the key is in its rotation grace
// period, admin keys included) gives no key a later expiry than its own, and a tenant
// key whose limits are locked gives no key looser limits. "Give" covers the keys it
// creates, the successors of keys it rotates (whose secret it obtains) and the
// settings it changes (tightening a key is always allowed). What a bound key creates
// or rotates is locked the same way, so it cannot lift the bound itself.

// bound is what the calling key's own restrictions impose on what it gives.
type bound struct {
	// self is the calling key as stored now; nil for the ADMIN_TOKEN credential.
	self *ent.ApiKey
	// expiresAt, when set, is the latest expiry the caller may give a key; why says
	// what binds it ("is in its rotation grace period").
	expiresAt *time.Time
	why       string
	// limits, when set, are the loosest limits the caller may give a key.
	limits *plan.Limits
}

// boundOf reads the calling key afresh (an earlier mutation of the same request may
// have rotated it) and returns the bound its restrictions put on what it gives.
// It returns the read's error.
func (m *Manager) boundOf(ctx context.Context, client *ent.Client) (bound, error) {
	v := viewer.FromContext(ctx)
	var b bound
	if v == nil || v.APIKeyID == "" {
		return b, nil
	}
	self, err := client.ApiKey.Get(ctx, v.APIKeyID)
	if err != nil {
		return b, err
	}
	b.self = self
	if self.ExpiresAt != nil {
		switch {
		case self.RotatedAt != nil:
			b.expiresAt, b.why = self.ExpiresAt, "is in its rotation grace period"
		case self.ExpiryLocked && !v.Admin:
			b.expiresAt, b.why = self.ExpiresAt, "has a locked expiry"
		}
	}
	if self.LimitsLocked && !v.Admin && self.TenantID != nil {
		t, err := client.Tenant.Get(ctx, *self.TenantID)
		if err != nil {
			return b, err
		}
		l := LimitsOf(self, m.Plans.Resolve(t.Plan))
		b.limits = &l
	}
	return b, nil
}

// expiryWithin reports whether expiry (nil: never) is no later than limit.
func expiryWithin(expiry, limit *time.Time) bool {
	return limit == nil || (expiry != nil && !expiry.After(*limit))
}

// checkExpiryBound returns BAD_USER_INPUT naming expiresAt when giving a key the
// expiry next (nil: never) instead of current exceeds the caller's bound. Tightening
// (next no later than current) is always allowed; a new key has no current expiry
// (pass isNew).
func (b bound) checkExpiryBound(next, current *time.Time, isNew bool) error {
	if b.expiresAt == nil || expiryWithin(next, b.expiresAt) || (!isNew && expiryWithin(next, current)) {
		return nil
	}
	return fault.BadInput("expiresAt", "the calling key expires at %s and %s: it cannot give a key a later expiry or none",
		b.expiresAt.UTC().Format(time.RFC3339), b.why).With("maxExpiresAt", b.expiresAt.UTC().Format(time.RFC3339))
}

// checkLimitsBound returns BAD_USER_INPUT naming rateLimit or quota when giving a key
// the limits next instead of current (nil for a new key) exceeds the caller's locked
// limits. Only the rate limit (rate) or quota (quota) being set is checked, and
// tightening is always allowed.
func (b bound) checkLimitsBound(next plan.Limits, current *plan.Limits, rate, quota bool) error {
	if b.limits == nil {
		return nil
	}
	if rate && !next.RateWithin(*b.limits) && (current == nil || !next.RateWithin(*current)) {
		return fault.BadInput("rateLimit", "the calling key's limits are locked at %s: it cannot give a key a faster rate or a larger burst", describeRate(*b.limits))
	}
	if quota && !next.QuotaWithin(*b.limits) && (current == nil || !next.QuotaWithin(*current)) {
		return fault.BadInput("quota", "the calling key's quota is locked at %s: it cannot give a key more (a per-day quota counts %d days)", describeQuota(*b.limits), plan.DaysPerMonth)
	}
	return nil
}

// checkLocked returns BAD_USER_INPUT naming the setting when a tenant key would
// loosen a locked setting of key k: next are k's limits after the change (rate and
// quota say which of them change), nextExpiry its expiry when setExpiry.
func checkLocked(ctx context.Context, k *ent.ApiKey, tenantPlan plan.Plan, next plan.Limits, rate, quota bool, setExpiry bool, nextExpiry *time.Time) error {
	if isAdmin(ctx) {
		return nil
	}
	if setExpiry && k.ExpiryLocked && !expiryWithin(nextExpiry, k.ExpiresAt) {
		return fault.BadInput("expiresAt", "the key's expiry is locked (set by a platform admin or bounded by the key that created or rotated it): it can only be brought forward")
	}
	if !k.LimitsLocked || (!rate && !quota) {
		return nil
	}
	current := LimitsOf(k, tenantPlan)
	if rate && !next.RateWithin(current) {
		return fault.BadInput("rateLimit", "the key's limits are locked at %s (set by a platform admin or bounded by the key that created or rotated it): tenant keys may only lower the rate and burst", describeRate(current))
	}
	if quota && !next.QuotaWithin(current) {
		return fault.BadInput("quota", "the key's quota is locked at %s (set by a platform admin or bounded by the key that created or rotated it): tenant keys may only lower it (a per-day quota counts %d days)", describeQuota(current), plan.DaysPerMonth)
	}
	return nil
}

// resolveLocks returns the locks a key gets from a create or update: a platform
// admin's explicit choice (limitsSet, expirySet: nil), else locked when the admin sets
// the settings; a bound caller's keys are locked by its bound. Tenant keys may not
// choose (FORBIDDEN), and a bound caller may not unlock what binds it (FORBIDDEN).
func resolveLocks(ctx context.Context, b bound, limits, expiry bool, limitsSet, expirySet *bool, limitsTouched, expiryTouched bool) (bool, bool, error) {
	if !isAdmin(ctx) {
		if limitsSet != nil || expirySet != nil {
			return false, false, fault.New(fault.Forbidden, "only platform admins lock or unlock a key's settings")
		}
		return limits, expiry, nil
	}
	if limitsTouched {
		limits = true
	}
	if expiryTouched {
		expiry = true
	}
	if limitsSet != nil {
		limits = *limitsSet
	}
	if expirySet != nil {
		if !*expirySet && b.expiresAt != nil {
			return false, false, fault.New(fault.Forbidden, "the calling key "+b.why+": it cannot unlock a key's expiry")
		}
		expiry = *expirySet
	}
	return limits, expiry, nil
}

func describeRate(l plan.Limits) string {
	return fmt.Sprintf("%d requests per %d seconds", l.RateLimit, int(l.RateWindow/time.Second))
}

func describeQuota(l plan.Limits) string {
	if l.Quota == 0 {
		return "unlimited"
	}
	return fmt.Sprintf("%d requests per %s", l.Quota, l.QuotaPeriod)
}
