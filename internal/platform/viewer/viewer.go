// Package viewer carries the authenticated caller of a request through the context.
//
// A Viewer is created once per request by the authentication middleware (HTTP) or the
// WebSocket init hook and is read by directives, privacy rules and resolvers.
package viewer

import (
	"context"
	"slices"
	"time"

	"github.com/latchkey/latchkey/internal/platform/limitspec"
)

// Viewer is the authenticated caller: an API key of one tenant, or a platform admin.
type Viewer struct {
	// APIKeyID is the ID of the calling key; empty for the ADMIN_TOKEN credential.
	APIKeyID string
	// KeyPrefix is the display prefix of the calling key, safe to log.
	KeyPrefix string
	// KeyHash is the hex SHA-256 of the calling key, so long-lived streams can
	// re-check it (empty for ADMIN_TOKEN).
	KeyHash string
	// TenantID is the tenant the key belongs to; empty for platform admins.
	TenantID string
	// TenantPlan is that tenant's plan, as the verifier read it.
	TenantPlan string
	// Scopes are the scopes the key holds. Admins implicitly hold every scope.
	Scopes []string
	// Admin is true for platform admins (admin keys and ADMIN_TOKEN).
	Admin bool
	// Key is the calling key's record as the verifier cached it (an *ent.ApiKey, nil
	// for ADMIN_TOKEN), so `viewer { apiKey }` needs no database read. Read-only: it is
	// shared by concurrent requests. Its last_used_at may lag like the database's.
	Key any
	// RateLimit requests per RateWindow, from the key or its tenant's plan; 0 for
	// platform admins, who are not limited.
	RateLimit  int
	RateWindow time.Duration
	// Quota requests per QuotaPeriod ("day" or "month", a ratelimit.Period); 0: unlimited.
	Quota       int64
	QuotaPeriod string
	// QuotaKey is the id the quota is counted under (the first key of a rotation chain;
	// the key itself when it was not rotated).
	QuotaKey string
	// Consumer is true for a consumer key (only ever verified).
	Consumer bool
	// TenantRateLimit requests per TenantRateWindow and TenantQuota per QuotaPeriod
	// (the tenant plan's caps) bind all the tenant's keys together; 0: no cap.
	TenantRateLimit  int
	TenantRateWindow time.Duration
	TenantQuota      int64
	// OwnerID is a consumer key's owner; OwnerRateLimit per OwnerRateWindow and
	// OwnerQuota per OwnerQuotaPeriod are its owner record's limits (0: none), shared
	// by the owner's keys; OwnerMeta its meta.
	OwnerID          string
	OwnerRateLimit   int
	OwnerRateWindow  time.Duration
	OwnerQuota       int64
	OwnerQuotaPeriod string
	OwnerMeta        map[string]any
	// Named are the key's named limits (its own, or its plan's).
	Named []limitspec.Named
	// CreditsKey is the key whose credit balance this key spends (the first of its
	// rotation chain; "" when it has no credits); the balance refills to CreditsRefill
	// each CreditsPeriod ("day", "month" or "" for never); warnings count against
	// CreditsGranted.
	CreditsKey     string
	CreditsRefill  int64
	CreditsPeriod  string
	CreditsGranted int64
}

// Has reports whether the viewer holds scope; admins hold every scope.
func (v *Viewer) Has(scope string) bool {
	if v == nil {
		return false
	}
	return v.Admin || slices.Contains(v.Scopes, scope)
}

// TenantIDOrNil returns the viewer's tenant id, or nil for platform admins.
func (v *Viewer) TenantIDOrNil() *string {
	if v == nil || v.TenantID == "" {
		return nil
	}
	return &v.TenantID
}

// Actor is a short, non-secret description of the viewer for audit logs.
func (v *Viewer) Actor() string {
	switch {
	case v == nil:
		return "system"
	case v.KeyPrefix != "":
		return v.KeyPrefix
	case v.Admin:
		return "admin-token"
	default:
		return "unknown"
	}
}

type ctxKey struct{}

// NewContext returns ctx carrying v.
func NewContext(ctx context.Context, v *Viewer) context.Context {
	return context.WithValue(ctx, ctxKey{}, v)
}

// FromContext returns the viewer in ctx, or nil when the request is anonymous.
func FromContext(ctx context.Context) *Viewer {
	v, _ := ctx.Value(ctxKey{}).(*Viewer)
	return v
}

// Scope names. A key can only grant scopes it holds itself.
const (
	ScopeTenantRead    = "tenant:read"
	ScopeTenantWrite   = "tenant:write"
	ScopeKeysRead      = "keys:read"
	ScopeKeysWrite     = "keys:write"
	ScopeUsageRead     = "usage:read"
	ScopeWebhooksRead  = "webhooks:read"
	ScopeWebhooksWrite = "webhooks:write"
	// ScopeKeysVerify lets a management key verify its tenant's consumer keys.
	ScopeKeysVerify = "keys:verify"
)

// AllScopes lists every scope, in a stable order.
var AllScopes = []string{
	ScopeTenantRead, ScopeTenantWrite, ScopeKeysRead, ScopeKeysWrite,
	ScopeUsageRead, ScopeWebhooksRead, ScopeWebhooksWrite, ScopeKeysVerify,
}

// ValidScope reports whether s is a known scope name.
func ValidScope(s string) bool { return slices.Contains(AllScopes, s) }
