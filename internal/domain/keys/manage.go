package keys

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"entgo.io/ent/dialect"

	enttenant "github.com/latchkey/latchkey/ent/tenant"

	"github.com/latchkey/latchkey/ent"
	entapikey "github.com/latchkey/latchkey/ent/apikey"
	"github.com/latchkey/latchkey/internal/data/txn"
	"github.com/latchkey/latchkey/internal/domain/audit"
	"github.com/latchkey/latchkey/internal/domain/plan"
	"github.com/latchkey/latchkey/internal/domain/tenants"
	"github.com/latchkey/latchkey/internal/platform/fault"
	"github.com/latchkey/latchkey/internal/platform/limitspec"
	"github.com/latchkey/latchkey/internal/platform/viewer"
)

// Limits on key settings.
const (
	MaxRateLimit     = 1_000_000_000
	MaxWindowSeconds = 31 * 24 * 3600
	MaxGracePeriod   = 30 * 24 * 3600
	MaxQuota         = 1_000_000_000_000
)

// CreateParams are the settings of a new key.
type CreateParams struct {
	// TenantID is required for platform admins and must be empty or the viewer's
	// own tenant for tenant keys.
	TenantID               *string
	Name                   string
	Scopes                 []string
	RateLimit              *int
	RateLimitWindowSeconds *int
	Quota                  *int
	QuotaPeriod            *entapikey.QuotaPeriod
	ExpiresAt              *time.Time
	// LimitsLocked and ExpiryLocked are a platform admin's choice to lock (true) or
	// leave unlocked (false) the rate limit and quota, or the expiry, against tenant
	// keys; nil locks what the admin sets. Tenant keys may not set them.
	LimitsLocked *bool
	ExpiryLocked *bool
	// Kind is MANAGEMENT (the default: calls Latchkey's API with Scopes) or CONSUMER
	// (issued to one of the tenant's customers, only verified; no scopes).
	Kind *entapikey.Kind
	// Environment is LIVE (default) or TEST, written in the key.
	Environment *entapikey.Environment
	// OwnerID, Meta and Permissions are returned by every verification of a
	// consumer key; Permissions are for consumer keys only.
	OwnerID     *string
	Meta        map[string]any
	Permissions []string
	// Enabled is true by default; a disabled consumer key fails verification.
	Enabled *bool
	// Limits are named limits (nil: the plan's); Credits a credit balance (nil: none).
	Limits  []limitspec.Named
	Credits *Credits
}

// Credits are a key's credit settings: Remaining now, refilled to RefillAmount at each
// RefillInterval (UTC calendar; NEVER: not refilled).
type Credits struct {
	Remaining      int64
	RefillAmount   *int64
	RefillInterval entapikey.CreditsRefillInterval
}

// MaxCredits bounds a credit balance.
const MaxCredits = 1_000_000_000_000

// check validates c. It returns BAD_USER_INPUT naming credits.
func (c *Credits) check() error {
	switch {
	case c == nil:
		return nil
	case c.Remaining < 0 || c.Remaining > MaxCredits:
		return fault.BadInput("credits", "credits.remaining must be between 0 and %d", MaxCredits)
	case c.RefillAmount != nil && (*c.RefillAmount < 1 || *c.RefillAmount > MaxCredits):
		return fault.BadInput("credits", "credits.refillAmount must be between 1 and %d", MaxCredits)
	case c.RefillInterval != entapikey.CreditsRefillIntervalNever && c.RefillAmount == nil:
		return fault.BadInput("credits", "a refilled balance needs credits.refillAmount")
	}
	return nil
}

// set writes c to a key being created or updated (and clears it when c is nil).
func (c *Credits) set(m *ent.ApiKeyMutation, now time.Time) {
	if c == nil {
		m.ClearCreditsRemaining()
		m.ClearCreditsRefillAmount()
		m.ClearCreditsRefillInterval()
		m.ClearCreditsGranted()
		m.ClearCreditsPeriodStart()
		return
	}
	granted := c.Remaining
	if c.RefillAmount != nil {
		granted = *c.RefillAmount
		m.SetCreditsRefillAmount(*c.RefillAmount)
	} else {
		m.ClearCreditsRefillAmount()
	}
	m.SetCreditsRemaining(c.Remaining)
	m.SetCreditsRefillInterval(c.RefillInterval)
	m.SetCreditsGranted(granted)
	m.SetCreditsPeriodStart(CreditsPeriodStart(c.RefillInterval, now))
}

// CreditsPeriodStart is the start of the refill period of interval that contains now
// (UTC); the zero time for NEVER.
func CreditsPeriodStart(interval entapikey.CreditsRefillInterval, now time.Time) time.Time {
	now = now.UTC()
	switch interval {
	case entapikey.CreditsRefillIntervalDaily:
		return time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, time.UTC)
	case entapikey.CreditsRefillIntervalMonthly:
		return time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC)
	}
	return time.Unix(0, 0).UTC()
}

// CreditLedger holds the live credit balances (the limit store). A balance set or
// replaced through the API is set there after the commit; AddCredits changes it
// atomically with concurrent spending.
type CreditLedger interface {
	// Set makes the live balance of k balance; it returns the store's error.
	Set(ctx context.Context, k *ent.ApiKey, balance int64) error
	// Add adds delta to the live balance of k (seeding it first) and returns the new
	// balance; it returns the store's error.
	Add(ctx context.Context, k *ent.ApiKey, delta int64) (int64, error)
}

// CreditsOf describes k's credit balance for the limit store: the key it is counted
// under (the first key of k's rotation chain), the balance at the start of each refill
// period (or, for a balance that never refills, the balance granted), the refill
// period ("day", "month" or "" for never) and the balance warnings count against. ok
// is false when k has no credits.
func CreditsOf(k *ent.ApiKey) (key string, refill int64, period string, granted int64, ok bool) {
	if k.CreditsRemaining == nil {
		return "", 0, "", 0, false
	}
	period, refill, granted = creditsPeriod(k.CreditsRefillInterval), deref64(k.CreditsRefillAmount), deref64(k.CreditsGranted)
	if refill == 0 {
		refill = granted // where an unknown balance starts
	}
	return QuotaKey(k), refill, period, granted, true
}

// UpdateParams are the settings to change. Nil pointers leave a setting as it is;
// the Set* flags with nil values clear the optional settings.
type UpdateParams struct {
	Name                   *string
	Scopes                 []string
	RateLimit              Change[int]
	RateLimitWindowSeconds Change[int]
	Quota                  Change[int]
	QuotaPeriod            Change[entapikey.QuotaPeriod]
	ExpiresAt              Change[time.Time]
	// LimitsLocked and ExpiryLocked (platform admins only) lock or unlock; nil
	// locks what a platform admin changes and otherwise leaves the locks as they are.
	LimitsLocked *bool
	ExpiryLocked *bool
	// OwnerID and Meta are changed when set (nil clears them); Permissions replace
	// the key's when not nil (consumer keys only); Enabled switches the key.
	OwnerID     Change[string]
	Meta        Change[map[string]any]
	Permissions []string
	Enabled     *bool
	// Limits replace the named limits (a nil Value: back to the plan's); Credits
	// replace the credit settings (a nil Value removes them).
	Limits  Change[[]limitspec.Named]
	Credits Change[Credits]
}

// MaxOwnerIDLen bounds a key's owner id.
const MaxOwnerIDLen = 128

// checkConsumerFields validates the settings that verifications return: the owner id
// (1-128 characters without control characters), meta (a JSON object of at most 4 KiB
// without NUL) and permissions (at most 100 of 1-64 printable characters), the
// latter only on consumer keys. It returns BAD_USER_INPUT naming the field.
func checkConsumerFields(consumer bool, ownerID *string, meta map[string]any, permissions []string) ([]string, error) {
	if ownerID != nil {
		if *ownerID == "" || utf8.RuneCountInString(*ownerID) > MaxOwnerIDLen {
			return nil, fault.BadInput("ownerID", "ownerID must be 1 to %d characters", MaxOwnerIDLen)
		}
	}
	if err := ValidMeta(meta); err != nil {
		return nil, err
	}
	if permissions == nil {
		return nil, nil
	}
	if !consumer {
		return nil, fault.BadInput("permissions", "permissions are for consumer keys (scopes are for management keys)")
	}
	if len(permissions) > MaxPermissions {
		return nil, fault.BadInput("permissions", "at most %d permissions", MaxPermissions)
	}
	out := make([]string, 0, len(permissions))
	for _, p := range permissions {
		if err := ValidPermission(p); err != nil {
			return nil, err
		}
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out, nil
}

// Change is a nullable setting of an update: Set says whether it changes, and a nil
// Value clears it (back to the plan's default, or no expiry).
type Change[T any] struct {
	Set   bool
	Value *T
}

// apply changes *v when c is set.
func (c Change[T]) apply(v **T) {
	if c.Set {
		*v = c.Value
	}
}

// setOrClear applies c to an ent update through its SetX and ClearX methods.
func setOrClear[T, R any](c Change[T], set func(T) R, clear func() R) {
	switch {
	case !c.Set:
	case c.Value == nil:
		clear()
	default:
		set(*c.Value)
	}
}

// applyTo returns s with the limit settings of p applied.
func (p UpdateParams) applyTo(s limitSettings) limitSettings {
	p.RateLimit.apply(&s.rate)
	p.RateLimitWindowSeconds.apply(&s.window)
	if p.Quota.Set {
		s.quota = int64p(p.Quota.Value)
	}
	p.QuotaPeriod.apply(&s.period)
	return s
}

func isAdmin(ctx context.Context) bool {
	v := viewer.FromContext(ctx)
	return v != nil && v.Admin
}

// Manager creates and changes keys. It invalidates the verifier's cache after each
// committed change so that the change holds from the very next request.
type Manager struct {
	Verifier *Verifier
	// Credits holds the live credit balances (nil: the stored ones only).
	Credits CreditLedger
	// Plans resolves tenants' plans.
	Plans *plan.Catalog
	Now   func() time.Time
}

func (m *Manager) now() time.Time {
	if m.Now != nil {
		return m.Now()
	}
	return time.Now()
}

// checkScopes validates scopes and that the viewer holds each of them.
// It returns BAD_USER_INPUT for unknown scopes and FORBIDDEN for scopes the viewer lacks.
func checkScopes(ctx context.Context, scopes []string) ([]string, error) {
	v := viewer.FromContext(ctx)
	out := make([]string, 0, len(scopes))
	for _, s := range scopes {
		if !viewer.ValidScope(s) {
			return nil, fault.BadInput("scopes", "unknown scope %q (known: %s)", s, strings.Join(viewer.AllScopes, ", "))
		}
		if !canGrant(v, s) {
			return nil, fault.New(fault.Forbidden, "cannot grant scope "+s+": the calling key does not hold it").With("scope", s)
		}
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out, nil
}

// canGrant reports whether v may give (or manage a key holding) scope s: a scope it
// holds, or keys:verify when it holds keys:write (verifying reveals no more than
// managing keys does).
func canGrant(v *viewer.Viewer, s string) bool {
	return v.Has(s) || s == viewer.ScopeKeysVerify && v.Has(viewer.ScopeKeysWrite)
}

// checkManage returns FORBIDDEN unless the viewer holds every scope of key k: a key
// can only manage (change, rotate) keys no more powerful than itself, so it can never
// obtain a secret or a lifetime with more scopes than it holds.
func checkManage(ctx context.Context, k *ent.ApiKey) error {
	v := viewer.FromContext(ctx)
	for _, s := range k.Scopes {
		if !canGrant(v, s) {
			return fault.New(fault.Forbidden, "cannot manage a key holding scope "+s+": the calling key does not hold it").With("scope", s)
		}
	}
	if k.Admin && (v == nil || !v.Admin) {
		return fault.New(fault.Forbidden, "only platform admins manage admin keys")
	}
	return nil
}

// limitSettings are a key's own limit settings as stored; nil means the plan's.
type limitSettings struct {
	rate, window *int
	quota        *int64
	period       *entapikey.QuotaPeriod
}

func settingsOf(k *ent.ApiKey) limitSettings {
	return limitSettings{rate: k.RateLimit, window: k.RateLimitWindowSeconds, quota: k.Quota, period: k.QuotaPeriod}
}

// in returns the limits in force with these settings on plan p.
func (s limitSettings) in(p plan.Plan) plan.Limits {
	var period *string
	if s.period != nil {
		ps := s.period.String()
		period = &ps
	}
	return p.Effective(s.rate, s.window, s.quota, period)
}

// checkPlanLimits keeps a tenant key's settings s within the plan tenantPlan: only
// platform admins may give a key more than the plan allows (or an unlimited quota).
// The rate limit is checked when rate is set, the quota when quota is set, each as it
// would be in force (settings left nil fall back to the plan's). Quotas compare per
// month whatever their period: a per-day quota counts 31 days.
// It returns BAD_USER_INPUT naming rateLimit or quota.
func checkPlanLimits(ctx context.Context, p plan.Plan, s limitSettings, rate, quota bool) error {
	if v := viewer.FromContext(ctx); v != nil && v.Admin {
		return nil
	}
	l, pl := s.in(p), p.Limits()
	if rate && !l.RateWithin(pl) {
		return fault.BadInput("rateLimit", "the %s plan allows at most %d requests per %d seconds", p.Name, p.RateLimit, p.WindowSeconds)
	}
	if quota && !l.QuotaWithin(pl) {
		return fault.BadInput("quota", "the %s plan allows a quota of at most %d requests per %s (a per-day quota counts %d days)", p.Name, p.Quota, p.QuotaPeriod, plan.DaysPerMonth)
	}
	return nil
}

func checkLimits(rate, window *int) error {
	if rate != nil && (*rate < 1 || *rate > MaxRateLimit) {
		return fault.BadInput("rateLimit", "rateLimit must be between 1 and %d", MaxRateLimit)
	}
	if window != nil && (*window < 1 || *window > MaxWindowSeconds) {
		return fault.BadInput("rateLimitWindowSeconds", "rateLimitWindowSeconds must be between 1 and %d", MaxWindowSeconds)
	}
	return nil
}

func checkQuota(quota *int, period *entapikey.QuotaPeriod) error {
	if quota != nil && (*quota < 0 || *quota > MaxQuota) {
		return fault.BadInput("quota", "quota must be between 0 (unlimited) and %d", MaxQuota)
	}
	if period != nil {
		if err := entapikey.QuotaPeriodValidator(*period); err != nil {
			return fault.BadInput("quotaPeriod", "quotaPeriod must be DAY or MONTH")
		}
	}
	return nil
}

func int64p(p *int) *int64 {
	if p == nil {
		return nil
	}
	v := int64(*p)
	return &v
}

func (m *Manager) checkExpiry(t *time.Time) error {
	if t != nil && !t.After(m.now()) {
		return fault.BadInput("expiresAt", "expiresAt must be in the future")
	}
	return nil
}

// Create validates p and creates a key in the transaction of client. It returns the
// key and its secret, which is never stored. A platform admin's rate limit, quota and
// expiry are locked (unless p says otherwise); a calling key bound by a locked or
// grace-period expiry, or by locked limits, creates only keys within that bound,
// locked the same way (see "Key policy" in policy.go).
// It returns BAD_USER_INPUT (invalid values, limits over the plan or the calling
// key's bound, naming the field), FORBIDDEN (scopes the viewer lacks, lock choices
// by tenant keys) or NOT_FOUND (a tenant the viewer cannot see) errors.
func (m *Manager) Create(ctx context.Context, client *ent.Client, p CreateParams) (*ent.ApiKey, string, error) {
	v := viewer.FromContext(ctx)
	if v == nil {
		return nil, "", fault.New(fault.Unauthenticated, "authentication required")
	}
	tenantID := v.TenantID
	switch {
	case v.Admin && p.TenantID == nil:
		return nil, "", fault.BadInput("tenantID", "tenantID is required for platform admins")
	case v.Admin:
		tenantID = *p.TenantID
	case p.TenantID != nil && *p.TenantID != v.TenantID:
		return nil, "", fault.ErrNotFound
	}
	name, err := tenants.ValidName("name", p.Name)
	if err != nil {
		return nil, "", err
	}
	consumer := p.Kind != nil && *p.Kind == entapikey.KindConsumer
	if consumer && len(p.Scopes) > 0 {
		return nil, "", fault.BadInput("scopes", "consumer keys hold no scopes: they are only verified (use permissions)")
	}
	scopes, err := checkScopes(ctx, p.Scopes)
	if err != nil {
		return nil, "", err
	}
	permissions, err := checkConsumerFields(consumer, p.OwnerID, p.Meta, p.Permissions)
	if err != nil {
		return nil, "", err
	}
	if err := plan.ValidNamedLimits("limits", p.Limits); err != nil {
		return nil, "", err
	}
	if err := p.Credits.check(); err != nil {
		return nil, "", err
	}
	if err := checkLimits(p.RateLimit, p.RateLimitWindowSeconds); err != nil {
		return nil, "", err
	}
	if err := checkQuota(p.Quota, p.QuotaPeriod); err != nil {
		return nil, "", err
	}
	if err := m.checkExpiry(p.ExpiresAt); err != nil {
		return nil, "", err
	}
	// Reading the tenant through the viewer's privacy rules: NOT_FOUND when it does
	// not exist or is not the viewer's.
	t, err := client.Tenant.Get(ctx, tenantID)
	if err != nil {
		return nil, "", err
	}
	settings := limitSettings{rate: p.RateLimit, window: p.RateLimitWindowSeconds, quota: int64p(p.Quota), period: p.QuotaPeriod}
	if err := checkPlanLimits(ctx, m.Plans.Resolve(t.Plan), settings, true, true); err != nil {
		return nil, "", err
	}
	b, err := m.boundOf(ctx, client)
	if err != nil {
		return nil, "", err
	}
	if err := b.checkExpiryBound(p.ExpiresAt, nil, true); err != nil {
		return nil, "", err
	}
	if err := b.checkLimitsBound(settings.in(m.Plans.Resolve(t.Plan)), nil, true, true); err != nil {
		return nil, "", err
	}
	limitsLocked, expiryLocked, err := resolveLocks(ctx, b, b.limits != nil, b.expiresAt != nil, p.LimitsLocked, p.ExpiryLocked,
		p.RateLimit != nil || p.RateLimitWindowSeconds != nil || p.Quota != nil || p.QuotaPeriod != nil, p.ExpiresAt != nil)
	if err != nil {
		return nil, "", err
	}
	env := entapikey.EnvironmentLive
	if p.Environment != nil {
		env = *p.Environment
	}
	secret, err := GenerateWith(t.KeyPrefix, kindOf(env))
	if err != nil {
		return nil, "", err
	}
	hash := HashHex(secret)
	create := client.ApiKey.Create().
		SetNillableKind(p.Kind).
		SetEnvironment(env).
		SetNillableOwnerID(p.OwnerID).
		SetNillableEnabled(p.Enabled)
	if p.Meta != nil {
		create.SetMeta(p.Meta)
	}
	if permissions != nil {
		create.SetPermissions(permissions)
	}
	if p.Limits != nil {
		create.SetLimits(p.Limits)
	}
	if p.Credits != nil {
		p.Credits.set(create.Mutation(), m.now())
	}
	if err := m.checkMaxKeys(ctx, client, tenantID, t.Plan); err != nil {
		return nil, "", err
	}
	k, err := create.
		SetTenantID(tenantID).
		SetName(name).
		SetPrefix(DisplayPrefix(secret)).
		SetHash(hash).
		SetScopes(scopes).
		SetNillableRateLimit(p.RateLimit).
		SetNillableRateLimitWindowSeconds(p.RateLimitWindowSeconds).
		SetNillableQuota(int64p(p.Quota)).
		SetNillableQuotaPeriod(p.QuotaPeriod).
		SetNillableExpiresAt(p.ExpiresAt).
		SetLimitsLocked(limitsLocked).
		SetExpiryLocked(expiryLocked).
		Save(ctx)
	if err != nil {
		return nil, "", err
	}
	m.invalidate(ctx, hash) // forget a cached "unknown key" for this hash
	return k, secret, nil
}

// Update applies p to the key id. Tenant keys may only tighten a key's locked
// settings, and a key being rotated out only brings its expiry forward; a calling key
// bound by a locked or grace-period expiry, or by locked limits, gives no key more
// than that bound (see "Key policy" in policy.go). A platform admin's change to the
// rate limit, quota or expiry locks it unless p says otherwise.
// It returns NOT_FOUND for a key the viewer cannot see, BAD_USER_INPUT for invalid
// values, a revoked key or a setting that may not be loosened (naming the field),
// FORBIDDEN for scopes the viewer lacks and lock changes by tenant keys.
func (m *Manager) Update(ctx context.Context, client *ent.Client, id string, p UpdateParams) (*ent.ApiKey, error) {
	k, err := client.ApiKey.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	if k.RevokedAt != nil {
		return nil, fault.BadInput("id", "key is revoked")
	}
	if err := checkManage(ctx, k); err != nil {
		return nil, err
	}
	if err := checkLimits(p.RateLimit.Value, p.RateLimitWindowSeconds.Value); err != nil {
		return nil, err
	}
	if p.OwnerID.Set && p.OwnerID.Value != nil || p.Meta.Set || p.Permissions != nil {
		var meta map[string]any
		if p.Meta.Value != nil {
			meta = *p.Meta.Value
		}
		owner := p.OwnerID.Value
		if !p.OwnerID.Set {
			owner = nil
		}
		if p.Permissions, err = checkConsumerFields(k.Kind == entapikey.KindConsumer, owner, meta, p.Permissions); err != nil {
			return nil, err
		}
	}
	permissions := p.Permissions
	if p.Limits.Set && p.Limits.Value != nil {
		if err := plan.ValidNamedLimits("limits", *p.Limits.Value); err != nil {
			return nil, err
		}
	}
	if p.Credits.Set {
		if err := p.Credits.Value.check(); err != nil {
			return nil, err
		}
	}
	if (p.Limits.Set || p.Credits.Set) && k.LimitsLocked && !isAdmin(ctx) {
		return nil, fault.New(fault.Forbidden, "a platform admin locked this key's limits: only platform admins change its named limits and credits")
	}
	if err := checkQuota(p.Quota.Value, p.QuotaPeriod.Value); err != nil {
		return nil, err
	}
	if p.ExpiresAt.Set {
		if err := m.checkExpiry(p.ExpiresAt.Value); err != nil {
			return nil, err
		}
	}
	if p.ExpiresAt.Set && k.RotatedAt != nil && k.ExpiresAt != nil && !expiryWithin(p.ExpiresAt.Value, k.ExpiresAt) {
		// A key being rotated out must not outlive its grace period.
		return nil, fault.BadInput("expiresAt", "the key was rotated: its expiry can only be brought forward")
	}
	rateChanged := p.RateLimit.Set || p.RateLimitWindowSeconds.Set
	quotaChanged := p.Quota.Set || p.QuotaPeriod.Set
	b, err := m.boundOf(ctx, client)
	if err != nil {
		return nil, err
	}
	if k.TenantID != nil && (rateChanged || quotaChanged || p.ExpiresAt.Set) {
		t, err := client.Tenant.Get(ctx, *k.TenantID)
		if err != nil {
			return nil, err
		}
		settings := p.applyTo(settingsOf(k))
		next := settings.in(m.Plans.Resolve(t.Plan))
		if err := checkLocked(ctx, k, m.Plans.Resolve(t.Plan), next, rateChanged, quotaChanged, p.ExpiresAt.Set, p.ExpiresAt.Value); err != nil {
			return nil, err
		}
		current := LimitsOf(k, m.Plans.Resolve(t.Plan))
		if err := b.checkLimitsBound(next, &current, rateChanged, quotaChanged); err != nil {
			return nil, err
		}
		if err := checkPlanLimits(ctx, m.Plans.Resolve(t.Plan), settings, rateChanged, quotaChanged); err != nil {
			return nil, err
		}
	}
	if p.ExpiresAt.Set {
		if err := b.checkExpiryBound(p.ExpiresAt.Value, k.ExpiresAt, false); err != nil {
			return nil, err
		}
	}
	limitsLocked, expiryLocked, err := resolveLocks(ctx, b, k.LimitsLocked, k.ExpiryLocked, p.LimitsLocked, p.ExpiryLocked, rateChanged || quotaChanged, p.ExpiresAt.Set)
	if err != nil {
		return nil, err
	}
	u := k.Update()
	if limitsLocked != k.LimitsLocked {
		u.SetLimitsLocked(limitsLocked)
	}
	if expiryLocked != k.ExpiryLocked {
		u.SetExpiryLocked(expiryLocked)
	}
	if p.Name != nil {
		name, err := tenants.ValidName("name", *p.Name)
		if err != nil {
			return nil, err
		}
		u.SetName(name)
	}
	if p.Scopes != nil {
		if k.Kind == entapikey.KindConsumer && len(p.Scopes) > 0 {
			return nil, fault.BadInput("scopes", "consumer keys hold no scopes: they are only verified (use permissions)")
		}
		scopes, err := checkScopes(ctx, p.Scopes)
		if err != nil {
			return nil, err
		}
		u.SetScopes(scopes)
	}
	setOrClear(p.RateLimit, u.SetRateLimit, u.ClearRateLimit)
	setOrClear(p.RateLimitWindowSeconds, u.SetRateLimitWindowSeconds, u.ClearRateLimitWindowSeconds)
	setOrClear(p.Quota, func(q int) *ent.ApiKeyUpdateOne { return u.SetQuota(int64(q)) }, u.ClearQuota)
	setOrClear(p.QuotaPeriod, u.SetQuotaPeriod, u.ClearQuotaPeriod)
	setOrClear(p.ExpiresAt, u.SetExpiresAt, u.ClearExpiresAt)
	setOrClear(p.OwnerID, u.SetOwnerID, u.ClearOwnerID)
	setOrClear(p.Limits, u.SetLimits, u.ClearLimits)
	if p.Credits.Set {
		p.Credits.Value.set(u.Mutation(), m.now())
		if m.Credits != nil && p.Credits.Value != nil {
			balance := p.Credits.Value.Remaining
			txn.AfterCommit(ctx, func() {
				if err := m.Credits.Set(context.WithoutCancel(ctx), k, balance); err != nil {
					slog.Error("credits: set the live balance", "key", k.ID, "err", err)
				}
			})
		}
	}
	setOrClear(p.Meta, u.SetMeta, u.ClearMeta)
	if p.Permissions != nil {
		u.SetPermissions(permissions)
	}
	if p.Enabled != nil {
		u.SetEnabled(*p.Enabled)
	}
	k, err = u.Save(ctx)
	if err != nil {
		return nil, err
	}
	m.invalidate(ctx, k.Hash)
	return k, nil
}

// Revoke revokes the key id; revoking a revoked key changes nothing.
// It returns NOT_FOUND for a key the viewer cannot see.
func (m *Manager) Revoke(ctx context.Context, client *ent.Client, id string) (*ent.ApiKey, error) {
	k, err := client.ApiKey.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	if k.RevokedAt != nil {
		return k, nil
	}
	k, err = k.Update().SetRevokedAt(m.now()).Save(ctx)
	if err != nil {
		return nil, err
	}
	m.invalidate(ctx, k.Hash)
	return k, nil
}

// Rotate issues a new key with the settings and locks of key id and lets the old one
// work for gracePeriod more (0: it stops at once). It returns the new key and its
// secret. A key in its grace period cannot rotate itself, and a calling key bound by
// a locked or grace-period expiry, or by locked limits, cannot obtain a successor that
// outlives it or is limited less than it; a successor it obtains is locked by its
// bound (see "Key policy" in policy.go).
// It returns NOT_FOUND for a key the viewer cannot see, BAD_USER_INPUT for a revoked
// or expired key or an out-of-range grace period, and FORBIDDEN for scopes the viewer
// lacks, a self-rotation in the grace period or a successor beyond the caller's bound.
func (m *Manager) Rotate(ctx context.Context, client *ent.Client, id string, gracePeriodSeconds int) (*ent.ApiKey, string, error) {
	if gracePeriodSeconds < 0 || gracePeriodSeconds > MaxGracePeriod {
		return nil, "", fault.BadInput("gracePeriodSeconds", "gracePeriodSeconds must be between 0 and %d", MaxGracePeriod)
	}
	old, err := client.ApiKey.Get(ctx, id)
	if err != nil {
		return nil, "", err
	}
	now := m.now()
	if old.RevokedAt != nil {
		return nil, "", fault.BadInput("id", "key is revoked")
	}
	if err := checkManage(ctx, old); err != nil {
		return nil, "", err
	}
	if old.ExpiresAt != nil && !now.Before(*old.ExpiresAt) {
		return nil, "", fault.BadInput("id", "key is expired")
	}
	b, err := m.boundOf(ctx, client)
	if err != nil {
		return nil, "", err
	}
	if b.self != nil && b.self.ID == old.ID && old.RotatedAt != nil {
		return nil, "", fault.New(fault.Forbidden, "a key in its rotation grace period cannot rotate itself (its successor may)")
	}
	if !expiryWithin(old.ExpiresAt, b.expiresAt) {
		return nil, "", fault.New(fault.Forbidden, "the calling key expires at "+b.expiresAt.UTC().Format(time.RFC3339)+" and "+b.why+
			": it cannot rotate a key whose successor would outlive it").With("maxExpiresAt", b.expiresAt.UTC().Format(time.RFC3339))
	}
	if b.limits != nil && old.TenantID != nil {
		t, err := client.Tenant.Get(ctx, *old.TenantID)
		if err != nil {
			return nil, "", err
		}
		if l := LimitsOf(old, m.Plans.Resolve(t.Plan)); !l.RateWithin(*b.limits) || !l.QuotaWithin(*b.limits) {
			return nil, "", fault.New(fault.Forbidden, "the calling key's limits are locked at "+describeRate(*b.limits)+", quota "+describeQuota(*b.limits)+
				": it cannot rotate a key limited less than itself")
		}
	}
	// The successor keeps the old key's prefix and environment: a rotation replaces
	// a key like for like, even after the tenant changed its prefix.
	prefix, kind := DefaultPrefix, kindOf(old.Environment)
	if old.Admin {
		kind = KindAdmin
	} else if p, _, ok := strings.Cut(old.Prefix, "_"); ok && ValidPrefix(p) {
		prefix = p
	}
	secret, err := GenerateWith(prefix, kind)
	if err != nil {
		return nil, "", err
	}
	hash := HashHex(secret)
	create := client.ApiKey.Create().
		SetKind(old.Kind).
		SetEnvironment(old.Environment).
		SetNillableOwnerID(old.OwnerID).
		SetEnabled(old.Enabled)
	if old.Meta != nil {
		create.SetMeta(old.Meta)
	}
	if old.Permissions != nil {
		create.SetPermissions(old.Permissions)
	}
	if old.Limits != nil {
		create.SetLimits(old.Limits)
	}
	// The successor spends the chain's credit balance (counted, like the quota, under
	// the first key of the chain): it copies the settings, not a new balance.
	create.SetNillableCreditsRemaining(old.CreditsRemaining).SetNillableCreditsRefillAmount(old.CreditsRefillAmount).
		SetNillableCreditsRefillInterval(old.CreditsRefillInterval).SetNillableCreditsGranted(old.CreditsGranted).
		SetNillableCreditsPeriodStart(old.CreditsPeriodStart)
	nk, err := create.
		SetNillableTenantID(old.TenantID).
		SetName(old.Name).
		SetPrefix(DisplayPrefix(secret)).
		SetHash(hash).
		SetAdmin(old.Admin).
		SetScopes(old.Scopes).
		SetNillableRateLimit(old.RateLimit).
		SetNillableRateLimitWindowSeconds(old.RateLimitWindowSeconds).
		SetNillableQuota(old.Quota).
		SetNillableQuotaPeriod(old.QuotaPeriod).
		SetNillableExpiresAt(old.ExpiresAt).
		SetLimitsLocked(old.LimitsLocked || b.limits != nil).
		SetExpiryLocked(old.ExpiryLocked || b.expiresAt != nil).
		SetRotatedFromID(old.ID).
		SetQuotaKey(QuotaKey(old)). // the quota carries over: rotating does not refill it
		Save(audit.WithAction(ctx, "api_key.rotated"))
	if err != nil {
		return nil, "", err
	}
	until := now.Add(time.Duration(gracePeriodSeconds) * time.Second)
	u := old.Update().SetRotatedAt(now)
	if old.ExpiresAt == nil || until.Before(*old.ExpiresAt) {
		u.SetExpiresAt(until)
	}
	// The rotation's audit row (on the new key) covers this change.
	if err := u.Exec(audit.WithAction(ctx, "")); err != nil {
		return nil, "", err
	}
	m.invalidate(ctx, old.Hash)
	m.invalidate(ctx, hash)
	return nk, secret, nil
}

// LimitsOf returns the limits in force for key k of a tenant on plan p: the key's own
// settings over the plan's.
func LimitsOf(k *ent.ApiKey, p plan.Plan) plan.Limits {
	return settingsOf(k).in(p)
}

// QuotaKey returns the id under which k's quota is counted: the first key of its
// rotation chain, so that rotating a key does not refill its quota.
func QuotaKey(k *ent.ApiKey) string {
	if k.QuotaKey != nil {
		return *k.QuotaKey
	}
	return k.ID
}

func (m *Manager) invalidate(ctx context.Context, hash string) {
	if m.Verifier == nil {
		return
	}
	txn.AfterCommit(ctx, func() { m.Verifier.Invalidate(hash) })
}

// checkMaxKeys refuses a tenant key's new key once the tenant holds as many unrevoked
// keys as its plan allows (platform admins may go beyond). It returns FORBIDDEN with
// reason max_keys.
func (m *Manager) checkMaxKeys(ctx context.Context, client *ent.Client, tenantID, planName string) error {
	if isAdmin(ctx) {
		return nil
	}
	p := m.Plans.Resolve(planName)
	if p.MaxKeys <= 0 {
		return nil
	}
	// On PostgreSQL concurrent creations of one tenant wait for each other (the
	// tenant's row is locked until the transaction ends), so that the count holds; on
	// SQLite writers are serialized already.
	if m.Verifier != nil && m.Verifier.dialect == dialect.Postgres {
		if _, err := client.Tenant.Query().Where(enttenant.ID(tenantID)).ForUpdate().IDs(ctx); err != nil {
			return err
		}
	}
	n, err := client.ApiKey.Query().Where(entapikey.TenantID(tenantID), entapikey.RevokedAtIsNil()).Count(ctx)
	if err != nil {
		return err
	}
	if n >= p.MaxKeys {
		return fault.New(fault.Forbidden, fmt.Sprintf("the %s plan allows %d keys per tenant: revoke one first", p.Name, p.MaxKeys)).
			With("reason", "max_keys").With("maxKeys", p.MaxKeys)
	}
	return nil
}

// AddCredits adds amount credits to the balance of the key id (negative takes them
// away, never below 0). Tenant keys may not add to a key whose limits a platform admin
// locked. It returns NOT_FOUND for a key the viewer cannot see, BAD_USER_INPUT for a
// key without credits or an amount out of range, FORBIDDEN for a locked key, or the
// credit store's error.
func (m *Manager) AddCredits(ctx context.Context, client *ent.Client, id string, amount int64) (*ent.ApiKey, error) {
	k, err := client.ApiKey.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	switch {
	case k.CreditsRemaining == nil:
		return nil, fault.BadInput("id", "the key has no credits: set credits first")
	case amount == 0 || amount > MaxCredits || amount < -MaxCredits:
		return nil, fault.BadInput("amount", "amount must be between %d and %d and not 0", -MaxCredits, MaxCredits)
	case k.RevokedAt != nil:
		return nil, fault.BadInput("id", "key is revoked")
	}
	if err := checkManage(ctx, k); err != nil {
		return nil, err
	}
	if k.LimitsLocked && !isAdmin(ctx) {
		return nil, fault.New(fault.Forbidden, "a platform admin locked this key's limits: only platform admins change its credits")
	}
	remaining := *k.CreditsRemaining + amount
	if m.Credits != nil {
		if remaining, err = m.Credits.Add(ctx, k, amount); err != nil {
			return nil, err
		}
	}
	remaining = max(remaining, 0)
	u := k.Update().SetCreditsRemaining(remaining)
	if k.CreditsRefillAmount == nil && amount > 0 {
		u.SetCreditsGranted(remaining) // a balance that never refills: warnings count against what is there now
	}
	return u.Save(audit.WithAction(ctx, "api_key.credits_added"))
}
