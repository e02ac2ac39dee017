// Package verify checks a tenant's consumer key for the tenant's own backend: is it
// valid, whose is it, may it do this, and is it within its limits. A verification of a
// found key charges its cost to the key's rate limit (and 1 to its quota), records one
// usage event of type "verify" (so the tenant's dashboards, live streams and webhooks
// see its customers' traffic), and answers with the key's details and limit state. The
// caller (a management key holding keys:verify, or a platform admin) is not charged.
//
// Checks run in a fixed order and only the limit checks charge anything:
// NOT_FOUND → REVOKED → EXPIRED → DISABLED → TENANT_INACTIVE → INSUFFICIENT_PERMISSIONS
// → RATE_LIMITED / QUOTA_EXCEEDED → VALID.
package verify

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/latchkey/latchkey/ent"
	"github.com/latchkey/latchkey/internal/data/ratelimit"
	"github.com/latchkey/latchkey/internal/domain/admission"
	"github.com/latchkey/latchkey/internal/domain/keys"
	"github.com/latchkey/latchkey/internal/domain/plan"
	"github.com/latchkey/latchkey/internal/domain/usage"
	"github.com/latchkey/latchkey/internal/platform/fault"
	"github.com/latchkey/latchkey/internal/platform/limitspec"
	"github.com/latchkey/latchkey/internal/platform/metrics"
	"github.com/latchkey/latchkey/internal/platform/viewer"
)

// Code is the answer of a verification.
type Code string

// Verification codes.
const (
	Valid                   Code = "VALID"
	NotFound                Code = "NOT_FOUND"
	Disabled                Code = "DISABLED"
	Expired                 Code = "EXPIRED"
	Revoked                 Code = "REVOKED"
	TenantInactive          Code = "TENANT_INACTIVE"
	RateLimited             Code = "RATE_LIMITED"
	QuotaExceeded           Code = "QUOTA_EXCEEDED"
	InsufficientPermissions Code = "INSUFFICIENT_PERMISSIONS"
	UsageExceeded           Code = "USAGE_EXCEEDED"
)

// Bounds of a verification request.
const (
	// MaxKeyBytes bounds the key of a request: longer is a bad request (400); any
	// other malformed key is NOT_FOUND.
	MaxKeyBytes        = 256
	MaxCost            = 10_000
	MaxTagLen          = 128
	DefaultCost        = 1
	defaultOperationNm = "verify"
)

// Request is one verification.
type Request struct {
	// Key is the consumer key to check (at most keys.MaxKeyLen bytes).
	Key string
	// Cost is charged to the key's rate limit, 0 to MaxCost; 0 checks without
	// charging anything.
	Cost int
	// Permissions must all be held by the key.
	Permissions []string
	// Tag names the verification in the usage log (the operation name), e.g. the
	// endpoint the backend protects; "" records "verify".
	Tag string
	// Charges are the key's named limits to charge besides its rate limit.
	Charges []limitspec.Charge
}

// Validate checks the request. It returns a BAD_USER_INPUT error naming the field.
func (r Request) Validate() *fault.Error {
	switch {
	case r.Key == "":
		return fault.BadInput("key", "key is required")
	case len(r.Key) > MaxKeyBytes:
		return fault.BadInput("key", "key must be at most %d bytes", MaxKeyBytes)
	case r.Cost < 0 || r.Cost > MaxCost:
		return fault.BadInput("cost", "cost must be between 0 and %d", MaxCost)
	case len(r.Permissions) > keys.MaxPermissions:
		return fault.BadInput("permissions", "at most %d permissions", keys.MaxPermissions)
	case len(r.Tag) > MaxTagLen:
		return fault.BadInput("tag", "tag must be at most %d characters", MaxTagLen)
	case len(r.Charges) > plan.MaxNamedLimits:
		return fault.BadInput("charges", "at most %d charges", plan.MaxNamedLimits)
	}
	for i, c := range r.Charges {
		for _, prev := range r.Charges[:i] {
			if prev.Name == c.Name {
				return fault.BadInput("charges", "the limit %q is charged twice", c.Name)
			}
		}
	}
	for _, p := range r.Permissions {
		if err := keys.ValidPermission(p); err != nil {
			return err
		}
	}
	for i := 0; i < len(r.Tag); i++ {
		if c := r.Tag[i]; c < 0x20 || c > 0x7e {
			return fault.BadInput("tag", "tag must be printable ASCII")
		}
	}
	return nil
}

// Limit is a rate limit's state after a verification.
type Limit struct {
	Limit, Remaining int
	ResetAt          time.Time
}

// Quota is a quota's state after a verification.
type Quota struct {
	Limit, Used, Remaining int64
	Period                 ratelimit.Period
	ResetAt                time.Time
}

// Result is the answer to a verification.
type Result struct {
	Code Code
	// Key is the verified key's record for a found key (nil for NOT_FOUND); shared
	// with the verifier's cache: read-only.
	Key *ent.ApiKey
	// RateLimit and Quota are the key's limit states after this check (nil when no
	// limit was checked or none applies).
	RateLimit *Limit
	Quota     *Quota
	// RetryAfter is how long until a refused check (RATE_LIMITED, QUOTA_EXCEEDED) may
	// pass; 0 when unknown or never.
	RetryAfter time.Duration
	// Scope names the limit that refused: key, owner, tenant, credits, named:<name>.
	Scope string
	// Credits is the key's credit balance after the check (nil: no credits).
	Credits *int64
	// OwnerMeta is the meta of the key's owner record (nil: none). Read-only.
	OwnerMeta map[string]any

	// limit and quota hold what RateLimit and Quota point to, in the Result's own
	// allocation.
	limit Limit
	quota Quota
}

// RetryAfterSeconds is RetryAfter rounded up to whole seconds for a refusal by a
// limit, or nil.
func (r *Result) RetryAfterSeconds() *int {
	if r.RetryAfter <= 0 {
		return nil
	}
	secs := int((r.RetryAfter + time.Second - 1) / time.Second)
	return &secs
}

// Valid reports whether the key passed every check.
func (r *Result) Valid() bool { return r.Code == Valid }

// Service verifies consumer keys.
type Service struct {
	Keys      *keys.Verifier
	Admission *admission.Service
	// Metrics, when set, counts verifications of keys that were not found (they are
	// not stored).
	Metrics *metrics.Metrics
	Now     func() time.Time
}

func (s *Service) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// Verify checks req.Key for caller (a tenant's management key, or a platform admin who
// may verify any tenant's key). Another tenant's key, a management key, a malformed key
// and an unknown one are all NOT_FOUND, the same answer, uncharged.
// It returns BAD_USER_INPUT for an invalid request, FORBIDDEN when caller lacks
// keys:verify, a *keys.ThrottledError when caller verified too many unknown keys
// lately, INTERNAL when the limit stores are down and admission fails closed, or a
// database error.
func (s *Service) Verify(ctx context.Context, caller *viewer.Viewer, req Request) (*Result, error) {
	if caller == nil || !caller.Has(viewer.ScopeKeysVerify) {
		return nil, fault.New(fault.Forbidden, "missing scope "+viewer.ScopeKeysVerify).With("requiredScopes", []string{viewer.ScopeKeysVerify})
	}
	if err := req.Validate(); err != nil {
		return nil, err
	}
	c, err := s.Keys.Consumer(ctx, req.Key, caller.APIKeyID)
	if errors.Is(err, keys.ErrUnknown) || err == nil && !caller.Admin && (c.Key.TenantID == nil || *c.Key.TenantID != caller.TenantID) {
		if s.Metrics != nil {
			s.Metrics.Verification(string(NotFound))
		}
		return &Result{Code: NotFound}, nil
	}
	if err != nil {
		return nil, err
	}
	adm := s.Admission
	if adm == nil {
		adm = &admission.Service{} // no limits, nothing recorded (benchmarks of the path alone)
	}
	k := c.Key
	res := &Result{Key: k, OwnerMeta: c.Viewer.OwnerMeta}
	ev := usage.Event{OperationType: "verify", OperationName: req.Tag, OwnerID: deref(k.OwnerID)}
	if ev.OperationName == "" {
		ev.OperationName = defaultOperationNm
	}
	now := s.now()
	switch {
	case k.RevokedAt != nil:
		res.Code = Revoked
	case k.ExpiresAt != nil && !now.Before(*k.ExpiresAt):
		res.Code = Expired
	case !k.Enabled:
		res.Code = Disabled
	case !c.TenantActive:
		res.Code = TenantInactive
	case !holdsAll(k.Permissions, req.Permissions):
		res.Code = InsufficientPermissions
	}
	if res.Code != "" {
		s.count(res.Code)
		adm.Record(ctx, c.Viewer, ev, outcomeOf(res.Code))
		return res, nil
	}
	d := adm.Admit(ctx, admission.Request{Viewer: c.Viewer, Cost: req.Cost, CheckOnly: req.Cost == 0, Charges: req.Charges, Event: ev, At: now})
	if d.Limit != nil {
		res.limit = Limit{Limit: d.Limit.Quota, Remaining: d.Limit.Remaining, ResetAt: now.Add(d.Limit.Reset)}
		res.RateLimit = &res.limit
	}
	if d.Quota != nil {
		res.quota = Quota{Limit: d.QuotaLimit, Used: d.Quota.Used, Remaining: d.Quota.Remaining,
			Period: d.QuotaPeriod, ResetAt: d.Quota.ResetAt}
		res.Quota = &res.quota
	}
	res.Credits, res.Scope = d.Credits, d.Scope
	switch {
	case d.Err == nil:
		res.Code = Valid
		d.Done(usage.OutcomeValid)
		s.Keys.Touch(k.ID)
	case d.Outcome == usage.OutcomeUsageExceeded:
		res.Code = UsageExceeded
		res.RetryAfter = d.RetryAfter
	case d.Outcome == usage.OutcomeRateLimited: // also a cost above a whole limit
		res.Code = RateLimited
		res.RetryAfter = d.RetryAfter
	case d.Outcome == usage.OutcomeQuotaExceeded:
		res.Code = QuotaExceeded
		res.RetryAfter = d.RetryAfter
	default: // a bad charge (BAD_USER_INPUT), or the limit store down and failing closed
		return nil, d.Err
	}
	s.count(res.Code)
	return res, nil
}

func (s *Service) count(c Code) {
	if s.Metrics != nil {
		s.Metrics.Verification(string(c))
	}
}

// outcomeOf is the usage outcome of a verification code.
func outcomeOf(c Code) usage.Outcome {
	switch c {
	case Revoked:
		return usage.OutcomeRevoked
	case Expired:
		return usage.OutcomeExpired
	case Disabled:
		return usage.OutcomeDisabled
	case TenantInactive:
		return usage.OutcomeTenantInactive
	case InsufficientPermissions:
		return usage.OutcomeInsufficientPermissions
	case UsageExceeded:
		return usage.OutcomeUsageExceeded
	}
	return usage.OutcomeError
}

func retryAfter(e *fault.Error) time.Duration {
	if secs, ok := e.Extensions["retryAfterSeconds"].(int); ok && secs > 0 {
		return time.Duration(secs) * time.Second
	}
	return 0
}

// holdsAll reports whether every wanted permission is among held.
func holdsAll(held, wanted []string) bool {
	for _, w := range wanted {
		if !slices.Contains(held, w) {
			return false
		}
	}
	return true
}

func deref(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}
