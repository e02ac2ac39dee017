package admission

import (
	"context"

	"github.com/latchkey/latchkey/ent"
	"github.com/latchkey/latchkey/internal/data/ratelimit"
	"github.com/latchkey/latchkey/internal/domain/keys"
)

// keyCredits is the credits counter of k (ok false when k has no credits).
func keyCredits(k *ent.ApiKey) (group string, c ratelimit.Counter, ok bool) {
	key, refill, period, _, has := keys.CreditsOf(k)
	if !has || k.TenantID == nil {
		return "", ratelimit.Counter{}, false
	}
	return *k.TenantID, ratelimit.Counter{Kind: ratelimit.CreditsKind, Key: "credits:" + key, Refill: refill, Period: ratelimit.Period(period)}, true
}

// Balance returns k's live credit balance (seeded from the stored one when the store
// holds none); it returns the store's error. A key without credits has 0.
func (s *Service) Balance(ctx context.Context, k *ent.ApiKey) (int64, error) {
	group, c, ok := keyCredits(k)
	if !ok || s.Checker == nil {
		return deref(k.CreditsRemaining), nil
	}
	var buf [1]ratelimit.CounterResult
	dec, err := s.Checker.Check(ctx, group, []ratelimit.Counter{c}, buf[:0])
	if err != nil {
		return 0, err
	}
	return max(dec.Results[0].Remaining, 0), nil
}

// Add adds delta credits to k's live balance (at least 0 after) and returns it; it
// returns the store's error. It implements keys.CreditLedger.
func (s *Service) Add(ctx context.Context, k *ent.ApiKey, delta int64) (int64, error) {
	group, c, ok := keyCredits(k)
	if !ok || s.Checker == nil {
		return max(deref(k.CreditsRemaining)+delta, 0), nil
	}
	r, err := s.Checker.Adjust(ctx, group, c, delta)
	if err != nil {
		return 0, err
	}
	return max(r.Remaining, 0), nil
}

// Set makes k's live balance balance (an adjustment by the difference: spending in
// between is kept); it returns the store's error. It implements keys.CreditLedger.
func (s *Service) Set(ctx context.Context, k *ent.ApiKey, balance int64) error {
	cur, err := s.Balance(ctx, k)
	if err != nil || cur == balance {
		return err
	}
	_, err = s.Add(ctx, k, balance-cur)
	return err
}

// KeyQuota reports the quota of quota per period counted under quotaKey in tenantID
// without charging it (Allowed: one more unit would pass); it returns the store's
// error.
func (s *Service) KeyQuota(ctx context.Context, tenantID, quotaKey string, quota int64, period ratelimit.Period) (ratelimit.QuotaResult, error) {
	if s.Checker == nil {
		return ratelimit.QuotaResult{Allowed: true, Remaining: quota}, nil
	}
	var buf [1]ratelimit.CounterResult
	dec, err := s.Checker.Check(ctx, tenantID, []ratelimit.Counter{{Kind: ratelimit.QuotaKind, Key: "quota:" + quotaKey, Quota: quota, Period: period}}, buf[:0])
	if err != nil {
		return ratelimit.QuotaResult{}, err
	}
	r := dec.Results[0]
	return ratelimit.QuotaResult{Allowed: r.Allowed, Used: r.Used, Remaining: max(r.Remaining, 0), ResetAt: r.ResetAt}, nil
}

func deref(p *int64) int64 {
	if p == nil {
		return 0
	}
	return *p
}
