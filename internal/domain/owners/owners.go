// Package owners keeps the owner records of a tenant's customers: the limits shared by
// all the consumer keys that name the same ownerID (on top of each key's own), and the
// meta returned by their verifications.
package owners

import (
	"context"
	"unicode/utf8"

	"github.com/latchkey/latchkey/ent"
	entowner "github.com/latchkey/latchkey/ent/owner"
	"github.com/latchkey/latchkey/internal/data/txn"
	"github.com/latchkey/latchkey/internal/domain/keys"
	"github.com/latchkey/latchkey/internal/platform/fault"
	"github.com/latchkey/latchkey/internal/platform/viewer"
)

// Params are the settings of an owner record; nil clears a limit.
type Params struct {
	// TenantID is required for platform admins and must be empty or the viewer's
	// own tenant for tenant keys.
	TenantID               *string
	OwnerID                string
	Meta                   map[string]any
	RateLimit              *int
	RateLimitWindowSeconds *int
	Quota                  *int
	QuotaPeriod            *entowner.QuotaPeriod
}

// Service creates and changes owner records; a change drops the cached keys (their
// owner's limits are resolved when a key is loaded) after the commit, on every
// instance.
type Service struct {
	Verifier *keys.Verifier
}

// Upsert creates the owner record of p.OwnerID in the tenant, or replaces its settings.
// It returns BAD_USER_INPUT for invalid settings and NOT_FOUND for a tenant the viewer
// cannot see.
func (s *Service) Upsert(ctx context.Context, client *ent.Client, p Params) (*ent.Owner, error) {
	v := viewer.FromContext(ctx)
	if v == nil {
		return nil, fault.New(fault.Unauthenticated, "authentication required")
	}
	tenantID := v.TenantID
	switch {
	case v.Admin && p.TenantID == nil:
		return nil, fault.BadInput("tenantID", "tenantID is required for platform admins")
	case v.Admin:
		tenantID = *p.TenantID
	case p.TenantID != nil && *p.TenantID != v.TenantID:
		return nil, fault.ErrNotFound
	}
	if p.OwnerID == "" || utf8.RuneCountInString(p.OwnerID) > keys.MaxOwnerIDLen {
		return nil, fault.BadInput("ownerID", "ownerID must be 1 to %d characters", keys.MaxOwnerIDLen)
	}
	if err := keys.ValidMeta(p.Meta); err != nil {
		return nil, err
	}
	if (p.RateLimit == nil) != (p.RateLimitWindowSeconds == nil) {
		return nil, fault.BadInput("rateLimit", "rateLimit and rateLimitWindowSeconds go together")
	}
	if p.RateLimit != nil && (*p.RateLimit < 1 || *p.RateLimit > keys.MaxRateLimit || *p.RateLimitWindowSeconds < 1 || *p.RateLimitWindowSeconds > keys.MaxWindowSeconds) {
		return nil, fault.BadInput("rateLimit", "rateLimit must be 1 to %d per 1 to %d seconds", keys.MaxRateLimit, keys.MaxWindowSeconds)
	}
	if p.Quota != nil && (*p.Quota < 1 || int64(*p.Quota) > keys.MaxQuota) {
		return nil, fault.BadInput("quota", "quota must be between 1 and %d (null: none)", keys.MaxQuota)
	}
	if _, err := client.Tenant.Get(ctx, tenantID); err != nil {
		return nil, err
	}
	var quota *int64
	if p.Quota != nil {
		q := int64(*p.Quota)
		quota = &q
	}
	period := p.QuotaPeriod
	if quota != nil && period == nil {
		m := entowner.QuotaPeriodMonth
		period = &m
	}
	o, err := client.Owner.Query().Where(entowner.TenantID(tenantID), entowner.OwnerID(p.OwnerID)).Only(ctx)
	switch {
	case ent.IsNotFound(err):
		c := client.Owner.Create().SetTenantID(tenantID).SetOwnerID(p.OwnerID).
			SetNillableRateLimit(p.RateLimit).SetNillableRateLimitWindowSeconds(p.RateLimitWindowSeconds).
			SetNillableQuota(quota).SetNillableQuotaPeriod(period)
		if p.Meta != nil {
			c.SetMeta(p.Meta)
		}
		o, err = c.Save(ctx)
	case err == nil:
		// Every setting is either set or cleared (never both: PostgreSQL refuses two
		// assignments to one column).
		u := o.Update()
		if p.RateLimit != nil {
			u.SetRateLimit(*p.RateLimit).SetRateLimitWindowSeconds(*p.RateLimitWindowSeconds)
		} else {
			u.ClearRateLimit().ClearRateLimitWindowSeconds()
		}
		if quota != nil {
			u.SetQuota(*quota).SetQuotaPeriod(*period)
		} else {
			u.ClearQuota().ClearQuotaPeriod()
		}
		if p.Meta != nil {
			u.SetMeta(p.Meta)
		} else {
			u.ClearMeta()
		}
		o, err = u.Save(ctx)
	}
	if err != nil {
		return nil, err
	}
	if s.Verifier != nil {
		txn.AfterCommit(ctx, s.Verifier.InvalidateAll)
	}
	return o, nil
}
