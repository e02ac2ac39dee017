package plan

import (
	"context"
	"log/slog"
	"regexp"
	"time"

	"github.com/latchkey/latchkey/ent"
	entplan "github.com/latchkey/latchkey/ent/plan"
	"github.com/latchkey/latchkey/internal/data/txn"
	"github.com/latchkey/latchkey/internal/platform/fault"
	"github.com/latchkey/latchkey/internal/platform/limitspec"
)

// Bounds of plan settings.
const (
	MaxRate          = 1_000_000_000
	MaxWindowSeconds = 31 * 24 * 3600
	MaxQuota         = 1_000_000_000_000
	MaxNamedLimits   = 10
)

var (
	nameRE      = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,30}[a-z0-9]$`)
	limitNameRE = regexp.MustCompile(`^[a-z0-9_-]{1,32}$`)
)

// Settings are a plan's limits as CreatePlan and UpdatePlan set them; nil leaves a
// setting as it is (on create: its default).
type Settings struct {
	KeyRateLimit, KeyRateLimitWindowSeconds       *int
	KeyQuota                                      *int
	QuotaPeriod                                   *entplan.QuotaPeriod
	TenantRateLimit, TenantRateLimitWindowSeconds *int
	TenantQuota                                   *int
	MaxKeys                                       *int
	KeyLimits                                     []limitspec.Named
}

// ValidNamedLimits checks named limits: at most 10, each named with 1-32 lowercase
// letters, digits, dashes or underscores (no name twice), a limit from 1 and a window
// from 1 second to 31 days. It returns BAD_USER_INPUT naming field.
func ValidNamedLimits(field string, limits []limitspec.Named) error {
	if len(limits) > MaxNamedLimits {
		return fault.BadInput(field, "at most %d named limits", MaxNamedLimits)
	}
	seen := map[string]bool{}
	for _, l := range limits {
		switch {
		case !limitNameRE.MatchString(l.Name):
			return fault.BadInput(field, "a limit name is 1-32 lowercase letters, digits, dashes or underscores")
		case seen[l.Name]:
			return fault.BadInput(field, "limit %q is named twice", l.Name)
		case l.Limit < 1 || l.Limit > MaxRate:
			return fault.BadInput(field, "limit %q must be between 1 and %d", l.Name, MaxRate)
		case l.WindowSeconds < 1 || l.WindowSeconds > MaxWindowSeconds:
			return fault.BadInput(field, "the window of limit %q must be between 1 and %d seconds", l.Name, MaxWindowSeconds)
		}
		seen[l.Name] = true
	}
	return nil
}

func (s Settings) validate() error {
	pos := func(field string, v *int, lo, hi int) error {
		if v != nil && (*v < lo || *v > hi) {
			return fault.BadInput(field, "%s must be between %d and %d", field, lo, hi)
		}
		return nil
	}
	for _, c := range []struct {
		field  string
		v      *int
		lo, hi int
	}{
		{"keyRateLimit", s.KeyRateLimit, 1, MaxRate},
		{"keyRateLimitWindowSeconds", s.KeyRateLimitWindowSeconds, 1, MaxWindowSeconds},
		{"keyQuota", s.KeyQuota, 0, MaxQuota},
		{"tenantRateLimit", s.TenantRateLimit, 0, MaxRate},
		{"tenantRateLimitWindowSeconds", s.TenantRateLimitWindowSeconds, 1, MaxWindowSeconds},
		{"tenantQuota", s.TenantQuota, 0, MaxQuota},
		{"maxKeys", s.MaxKeys, 0, 1_000_000},
	} {
		if err := pos(c.field, c.v, c.lo, c.hi); err != nil {
			return err
		}
	}
	return ValidNamedLimits("keyLimits", s.KeyLimits)
}

// Create adds a plan (platform admins; the privacy rules refuse others). It returns
// BAD_USER_INPUT for an invalid name or setting and a taken name.
func (c *Catalog) Create(ctx context.Context, client *ent.Client, name string, s Settings) (*ent.Plan, error) {
	if !nameRE.MatchString(name) {
		return nil, fault.BadInput("name", "a plan name is 2-32 lowercase letters, digits or dashes")
	}
	if s.KeyRateLimit == nil || s.KeyRateLimitWindowSeconds == nil {
		return nil, fault.BadInput("keyRateLimit", "keyRateLimit and keyRateLimitWindowSeconds are required")
	}
	if err := s.validate(); err != nil {
		return nil, err
	}
	if taken, err := client.Plan.Query().Where(entplan.Name(name)).Exist(ctx); err != nil {
		return nil, err
	} else if taken {
		return nil, fault.BadInput("name", "plan %q exists", name)
	}
	q := client.Plan.Create().SetName(name).
		SetKeyRateLimit(*s.KeyRateLimit).SetKeyRateLimitWindowSeconds(*s.KeyRateLimitWindowSeconds).
		SetNillableKeyQuota(int64p(s.KeyQuota)).SetNillableQuotaPeriod(s.QuotaPeriod).
		SetNillableTenantRateLimit(s.TenantRateLimit).SetNillableTenantRateLimitWindowSeconds(s.TenantRateLimitWindowSeconds).
		SetNillableTenantQuota(int64p(s.TenantQuota)).SetNillableMaxKeys(s.MaxKeys)
	if s.KeyLimits != nil {
		q.SetKeyLimits(s.KeyLimits)
	}
	p, err := q.Save(ctx)
	if err != nil {
		return nil, err
	}
	txn.AfterCommit(ctx, c.changed)
	return p, nil
}

// Update changes the plan named name. Every key of every tenant on it has its new
// limits from the next request on, on every instance. It returns NOT_FOUND for an
// unknown plan and BAD_USER_INPUT for an invalid setting.
func (c *Catalog) Update(ctx context.Context, client *ent.Client, name string, s Settings) (*ent.Plan, error) {
	if err := s.validate(); err != nil {
		return nil, err
	}
	p, err := client.Plan.Query().Where(entplan.Name(name)).Only(ctx)
	if err != nil {
		return nil, err
	}
	u := p.Update().
		SetNillableKeyRateLimit(s.KeyRateLimit).SetNillableKeyRateLimitWindowSeconds(s.KeyRateLimitWindowSeconds).
		SetNillableKeyQuota(int64p(s.KeyQuota)).SetNillableQuotaPeriod(s.QuotaPeriod).
		SetNillableTenantRateLimit(s.TenantRateLimit).SetNillableTenantRateLimitWindowSeconds(s.TenantRateLimitWindowSeconds).
		SetNillableTenantQuota(int64p(s.TenantQuota)).SetNillableMaxKeys(s.MaxKeys)
	if s.KeyLimits != nil {
		u.SetKeyLimits(s.KeyLimits)
	}
	if p, err = u.Save(ctx); err != nil {
		return nil, err
	}
	txn.AfterCommit(ctx, c.changed)
	return p, nil
}

// changed reloads the plans on this instance and tells OnChange (the other instances,
// and the key cache whose entries hold resolved limits).
func (c *Catalog) changed() {
	c.Reload()
	if c.OnChange != nil {
		c.OnChange()
	}
}

// Reload reads the plans again (after a change here or on another instance), logging
// a failure; the plans it had stay in force.
func (c *Catalog) Reload() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Load(ctx); err != nil {
		slog.Error("plans: reload", "err", err)
	}
}

func int64p(p *int) *int64 {
	if p == nil {
		return nil
	}
	v := int64(*p)
	return &v
}
