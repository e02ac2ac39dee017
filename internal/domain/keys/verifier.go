package keys

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"log/slog"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	entsql "entgo.io/ent/dialect/sql"
	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/latchkey/latchkey/ent"
	entapikey "github.com/latchkey/latchkey/ent/apikey"
	entowner "github.com/latchkey/latchkey/ent/owner"
	"github.com/latchkey/latchkey/ent/schema/rule"
	"github.com/latchkey/latchkey/internal/data/pubsub"
	"github.com/latchkey/latchkey/internal/data/ratelimit"
	"github.com/latchkey/latchkey/internal/domain/plan"
	"github.com/latchkey/latchkey/internal/platform/fault"
	"github.com/latchkey/latchkey/internal/platform/reqctx"
	"github.com/latchkey/latchkey/internal/platform/viewer"
)

// AuthError is why a credential was refused. Its Reason is safe to show clients.
type AuthError struct{ Reason string }

func (e *AuthError) Error() string { return "unauthenticated: " + e.Reason }

// APIError is what clients see: UNAUTHENTICATED with the reason in extensions.reason.
func (e *AuthError) APIError() *fault.Error {
	return fault.New(fault.Unauthenticated, e.Reason).With("reason", e.Reason)
}

// Reasons a credential is refused, returned by Verify.
var (
	ErrMissing        = &AuthError{"missing credential"}
	ErrMalformed      = &AuthError{"malformed key"}
	ErrUnknown        = &AuthError{"unknown key"}
	ErrRevoked        = &AuthError{"key revoked"}
	ErrExpired        = &AuthError{"key expired"}
	ErrTenantInactive = &AuthError{"tenant inactive"}
	// ErrConsumerKey refuses a consumer key on Latchkey's own API: consumer keys are
	// only verified.
	ErrConsumerKey = &AuthError{"consumer key"}
)

// ThrottledError refuses a credential that would need a database read while the
// client (or the verifying key) has had too many unknown credentials lately.
type ThrottledError struct{ RetryAfter time.Duration }

func (e *ThrottledError) Error() string { return "too many unknown credentials: try again later" }

// APIError is what clients see: RATE_LIMITED (reason too_many_failed_credentials)
// with retryAfterSeconds.
func (e *ThrottledError) APIError() *fault.Error {
	return fault.New(fault.RateLimited, e.Error()).With("reason", "too_many_failed_credentials").
		With("retryAfterSeconds", int(math.Ceil(e.RetryAfter.Seconds())))
}

// entry is the cached state of one key hash. An entry with v == nil records that no
// key has this hash (negative cache).
type entry struct {
	// v is the key as a caller: of Latchkey's API (management and admin keys) or of
	// the admission of its verifications (consumer keys).
	v        *viewer.Viewer
	rec      *ent.ApiKey // the key's record (read-only, shared)
	consumer bool
	keyID    string
	expires  time.Time // zero: never
	revoked  bool
	active   bool // tenant active (always true for admin keys)
	loadedAt time.Time
}

// Config tunes a Verifier. Zero values pick the defaults.
type Config struct {
	// AdminToken, when set, is accepted as a platform-admin credential.
	AdminToken string
	// CacheSize bounds the number of cached key hashes (default 100,000).
	CacheSize int
	// TTL bounds how long a cached key is trusted without re-reading the database,
	// as a safety net behind explicit invalidation (default 5m).
	TTL time.Duration
	// NegativeTTL is how long an unknown hash is remembered (default 10s), so that
	// guessed keys with a valid checksum do not hit the database on every request.
	NegativeTTL time.Duration
	// TouchInterval is how often last_used_at is written in one batch (default 10s).
	TouchInterval time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Plans resolves the plans of tenants (the limits of keys without their own).
	Plans *plan.Catalog
	// Failures, when set, counts unknown credentials per client (Verify: per IP;
	// Consumer: per verifying key). A client whose FailureLimit is spent gets a
	// ThrottledError for any credential that would need a database read, until its
	// budget refills; cached keys still work. When Failures fails, nothing is refused.
	Failures ratelimit.Limiter
	// FailureLimit is the budget of unknown credentials per client IP (default 30
	// per minute); verifying keys get VerifyFailureLimit (default 6,000 per minute:
	// a backend forwards its customers' keys, so a generous budget that still keeps
	// a flood of guesses from reaching the database).
	FailureLimit, VerifyFailureLimit ratelimit.Limit
}

// Verifier authenticates credentials: offline format check, SHA-256, in-process cache,
// and the database only on a cache miss. It also batches last_used_at updates.
type Verifier struct {
	client     *ent.Client
	dialect    string
	cfg        Config
	adminHash  [sha256.Size]byte
	cache      *lru.Cache[[sha256.Size]byte, *entry]
	generation atomic.Uint64

	mu      sync.Mutex
	touched map[string]struct{}

	hits, misses atomic.Uint64

	// OnInvalidate, when set, is called with every local invalidation so that it can
	// be broadcast to other instances ("" means every key).
	OnInvalidate func(hashHex string)
}

// NewVerifier returns a Verifier reading keys through client.
// entDialect is the ent dialect name of the database (dialect.SQLite or dialect.Postgres).
func NewVerifier(client *ent.Client, entDialect string, cfg Config) *Verifier {
	if cfg.CacheSize <= 0 {
		cfg.CacheSize = 100_000
	}
	if cfg.TTL <= 0 {
		cfg.TTL = 5 * time.Minute
	}
	if cfg.NegativeTTL <= 0 {
		cfg.NegativeTTL = 10 * time.Second
	}
	if cfg.TouchInterval <= 0 {
		cfg.TouchInterval = 10 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.FailureLimit.Rate <= 0 {
		cfg.FailureLimit = ratelimit.Limit{Rate: 30, Period: time.Minute}
	}
	if cfg.VerifyFailureLimit.Rate <= 0 {
		cfg.VerifyFailureLimit = ratelimit.Limit{Rate: 6000, Period: time.Minute}
	}
	c, _ := lru.New[[sha256.Size]byte, *entry](cfg.CacheSize)
	v := &Verifier{client: client, dialect: entDialect, cfg: cfg, cache: c, touched: map[string]struct{}{}}
	if cfg.AdminToken != "" {
		v.adminHash = sha256.Sum256([]byte(cfg.AdminToken))
	}
	return v
}

// adminViewer is the viewer of the ADMIN_TOKEN credential.
var adminViewer = &viewer.Viewer{Admin: true, Scopes: viewer.AllScopes}

// ExtractCredential returns the credential of a request from the X-API-Key header or
// an "Authorization: Bearer" header, or "" when there is none.
func ExtractCredential(apiKeyHeader, authorization string) string {
	if k := strings.TrimSpace(apiKeyHeader); k != "" {
		return k
	}
	if scheme, token, ok := strings.Cut(strings.TrimSpace(authorization), " "); ok && strings.EqualFold(scheme, "Bearer") {
		return strings.TrimSpace(token)
	}
	return ""
}

// Verify authenticates credential and returns its viewer. The returned viewer is
// shared and must not be modified.
// It returns an *AuthError (ErrMissing, ErrMalformed, ErrUnknown, ErrRevoked,
// ErrExpired, ErrTenantInactive) or a database error on a cache miss.
func (v *Verifier) Verify(ctx context.Context, credential string) (*viewer.Viewer, error) {
	if credential == "" {
		return nil, ErrMissing
	}
	h := hashKey(credential)
	if v.cfg.AdminToken != "" && subtle.ConstantTimeCompare(h[:], v.adminHash[:]) == 1 {
		return adminViewer, nil
	}
	if _, err := Parse(credential); err != nil {
		return nil, ErrMalformed
	}
	return v.verifyHash(ctx, h, client{"ip:", reqctx.ClientIP(ctx)}, v.cfg.FailureLimit)
}

// Recheck re-validates the key of a viewer obtained from Verify (for long-lived
// WebSocket streams): it returns the same *AuthError Verify would return now, e.g.
// ErrRevoked after a revocation on any instance. The ADMIN_TOKEN viewer stays valid.
func (v *Verifier) Recheck(ctx context.Context, vw *viewer.Viewer) error {
	if vw == nil || vw.KeyHash == "" {
		return nil
	}
	var h [sha256.Size]byte
	if n, err := hex.Decode(h[:], []byte(vw.KeyHash)); err != nil || n != len(h) {
		return ErrMalformed
	}
	_, err := v.verifyHash(ctx, h, client{}, ratelimit.Limit{})
	return err
}

// client names who presented a credential, for the failure budget: kind + id, joined
// only on a cache miss (a zero client has no budget).
type client struct{ kind, id string }

func (c client) String() string { return c.kind + c.id }

// lookup returns the state at now of the key with hash h, cached, reading the database
// on a miss. A client (not zero) whose failure budget is spent gets a ThrottledError
// instead of a read.
func (v *Verifier) lookup(ctx context.Context, h [sha256.Size]byte, now time.Time, cl client, budget ratelimit.Limit) (*entry, error) {
	e, ok := v.cache.Get(h)
	if ok {
		ttl := v.cfg.TTL
		if e.v == nil {
			ttl = v.cfg.NegativeTTL
		}
		if now.Sub(e.loadedAt) > ttl {
			ok = false
		}
	}
	if ok {
		v.hits.Add(1)
		return e, nil
	}
	throttle := v.cfg.Failures != nil && cl != client{}
	who := ""
	if throttle {
		who = cl.String()
		if res, err := v.cfg.Failures.Allow(ctx, who, budget, 0); err == nil && res.Remaining < 1 {
			return nil, &ThrottledError{RetryAfter: max(res.RetryAfter, time.Duration(int64(budget.Period)/int64(budget.Rate)))}
		}
	}
	v.misses.Add(1)
	e, err := v.load(ctx, h, now)
	if err != nil {
		return nil, err
	}
	if e.v == nil && throttle {
		_, _ = v.cfg.Failures.Allow(ctx, who, budget, 1) // an unknown credential spends the budget
	}
	return e, nil
}

func (v *Verifier) verifyHash(ctx context.Context, h [sha256.Size]byte, cl client, budget ratelimit.Limit) (*viewer.Viewer, error) {
	now := v.cfg.Now()
	e, err := v.lookup(ctx, h, now, cl, budget)
	if err != nil {
		return nil, err
	}
	switch {
	case e.v == nil:
		return nil, ErrUnknown
	case e.consumer:
		return nil, ErrConsumerKey
	case e.revoked:
		return nil, ErrRevoked
	case !e.expires.IsZero() && !now.Before(e.expires):
		return nil, ErrExpired
	case !e.active:
		return nil, ErrTenantInactive
	}
	v.touch(e.keyID)
	return e.v, nil
}

// load reads the key with hash h from the database and caches the result, unless an
// invalidation happened meanwhile (then the result is used once but not cached).
func (v *Verifier) load(ctx context.Context, h [sha256.Size]byte, now time.Time) (*entry, error) {
	gen := v.generation.Load()
	k, err := v.client.ApiKey.Query().
		Where(entapikey.Hash(hex.EncodeToString(h[:]))).
		WithTenant().
		Only(rule.SystemContext(ctx))
	e := &entry{loadedAt: now}
	switch {
	case ent.IsNotFound(err):
	case err != nil:
		return nil, err
	default:
		e.keyID = k.ID
		e.consumer = k.Kind == entapikey.KindConsumer
		e.revoked = k.RevokedAt != nil
		if k.ExpiresAt != nil {
			e.expires = *k.ExpiresAt
		}
		rec := *k
		rec.Edges = ent.ApiKeyEdges{} // loaded without privacy; resolvers reload edges as the viewer
		vw := &viewer.Viewer{APIKeyID: k.ID, KeyPrefix: k.Prefix, KeyHash: k.Hash, Scopes: k.Scopes, Admin: k.Admin, Key: &rec}
		e.active = k.Admin
		if k.TenantID != nil && k.Edges.Tenant != nil {
			vw.TenantID, vw.TenantPlan = *k.TenantID, k.Edges.Tenant.Plan
			e.active = k.Edges.Tenant.Active
			p := v.cfg.Plans.Resolve(k.Edges.Tenant.Plan)
			l := LimitsOf(k, p)
			vw.RateLimit, vw.RateWindow, vw.Quota, vw.QuotaPeriod = l.RateLimit, l.RateWindow, l.Quota, string(l.QuotaPeriod)
			vw.QuotaKey = QuotaKey(k)
			vw.TenantRateLimit, vw.TenantRateWindow, vw.TenantQuota = p.TenantRateLimit, time.Duration(p.TenantWindowSeconds)*time.Second, p.TenantQuota
			vw.Named = k.Limits
			if vw.Named == nil {
				vw.Named = p.KeyLimits
			}
			vw.CreditsKey, vw.CreditsRefill, vw.CreditsPeriod, vw.CreditsGranted, _ = CreditsOf(k)
			if k.OwnerID != nil {
				vw.OwnerID = *k.OwnerID
				if err := v.loadOwner(ctx, vw); err != nil {
					return nil, err
				}
			}
		}
		if vw.Admin {
			vw.Scopes = viewer.AllScopes
		}
		if e.consumer {
			vw.Consumer = true
			vw.Scopes = nil // a consumer key holds no Latchkey scope
		}
		e.v, e.rec = vw, &rec
	}
	if v.generation.Load() == gen {
		v.cache.Add(h, e)
	}
	return e, nil
}

// Invalidate drops the cached state of the key with the given hex hash on this
// instance and tells OnInvalidate. Call it after the change is committed.
func (v *Verifier) Invalidate(hashHex string) {
	v.InvalidateLocal(hashHex)
	if v.OnInvalidate != nil {
		v.OnInvalidate(hashHex)
	}
}

// InvalidateAll drops every cached key on this instance (e.g. after a tenant is
// deactivated) and tells OnInvalidate.
func (v *Verifier) InvalidateAll() { v.Invalidate("") }

// InvalidateLocal drops cached state on this instance only ("" drops everything).
// It is what a message from another instance calls.
func (v *Verifier) InvalidateLocal(hashHex string) {
	v.generation.Add(1)
	if hashHex == "" {
		v.cache.Purge()
		return
	}
	var h [sha256.Size]byte
	if n, err := hex.Decode(h[:], []byte(hashHex)); err != nil || n != len(h) {
		v.cache.Purge()
		return
	}
	v.cache.Remove(h)
}

// CacheStats returns how many verifications were answered from the cache and how many
// read the database.
func (v *Verifier) CacheStats() (hits, misses uint64) { return v.hits.Load(), v.misses.Load() }

// hashKey is sha256.Sum256 without a heap copy of the usual short credential.
func hashKey(s string) [sha256.Size]byte {
	var buf [128]byte
	if len(s) <= len(buf) {
		return sha256.Sum256(append(buf[:0], s...))
	}
	return sha256.Sum256([]byte(s))
}

func (v *Verifier) touch(keyID string) {
	v.mu.Lock()
	v.touched[keyID] = struct{}{}
	v.mu.Unlock()
}

// FlushLastUsed writes last_used_at for every key used since the last flush, in one
// statement, without touching updated_at. It returns the database error, if any; the
// keys are then retried on the next flush.
func (v *Verifier) FlushLastUsed(ctx context.Context) error {
	v.mu.Lock()
	if len(v.touched) == 0 {
		v.mu.Unlock()
		return nil
	}
	batch := v.touched
	v.touched = make(map[string]struct{}, len(batch))
	v.mu.Unlock()

	ids := make([]any, 0, len(batch))
	for id := range batch {
		ids = append(ids, id)
	}
	now := v.cfg.Now().UTC()
	var err error
	for start := 0; start < len(ids); start += 500 {
		end := min(start+500, len(ids))
		// A plain UPDATE: the ent builder would also bump updated_at, which is kept
		// for real changes of the key.
		query, args := entsql.Dialect(v.dialect).Update(entapikey.Table).
			Set(entapikey.FieldLastUsedAt, now).
			Where(entsql.In(entapikey.FieldID, ids[start:end]...)).
			Query()
		_, err = v.client.ExecContext(rule.SystemContext(ctx), query, args...)
		if err != nil {
			break
		}
	}
	if err != nil {
		v.mu.Lock()
		for id := range batch {
			v.touched[id] = struct{}{}
		}
		v.mu.Unlock()
	}
	return err
}

// Run flushes last_used_at every TouchInterval until ctx ends, then flushes once more.
func (v *Verifier) Run(ctx context.Context) {
	t := time.NewTicker(v.cfg.TouchInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			if err := v.FlushLastUsed(fctx); err != nil {
				slog.Error("flush last_used_at", "err", err)
			}
			cancel()
			return
		case <-t.C:
			if err := v.FlushLastUsed(ctx); err != nil && !errors.Is(err, context.Canceled) {
				slog.Warn("flush last_used_at", "err", err)
			}
		}
	}
}

// Follow applies the invalidations that other instances publish on invalidations (the
// instance bus) until ctx ends or the subscription closes. Messages lost on the way
// (a slow reader, a reconnecting bus) drop the whole cache.
func (v *Verifier) Follow(ctx context.Context, invalidations *pubsub.Subscription) {
	for {
		select {
		case <-ctx.Done():
			return
		case msg, ok := <-invalidations.C():
			if !ok {
				return
			}
			if invalidations.TakeDropped() > 0 {
				v.InvalidateLocal("")
			}
			v.InvalidateLocal(string(msg))
		}
	}
}

// Consumer is a consumer key as a verification sees it. Key and Viewer are shared with
// the cache: read-only.
type Consumer struct {
	// Key is the key's record (without edges).
	Key *ent.ApiKey
	// Viewer is the key as the caller of the admission of its verification: its id,
	// tenant, limits and quota key.
	Viewer *viewer.Viewer
	// TenantActive is false when the key's tenant is deactivated.
	TenantActive bool
}

// Consumer looks up the consumer key key for a verification by the key callerKeyID
// (whose failure budget pays for unknown keys). A malformed key costs no database read.
// It returns ErrUnknown for a malformed key, a key that does not exist or is not a
// consumer key, a *ThrottledError when the caller's budget of unknown keys is spent,
// or a database error.
func (v *Verifier) Consumer(ctx context.Context, key, callerKeyID string) (*Consumer, error) {
	if _, err := Parse(key); err != nil {
		return nil, ErrUnknown
	}
	var cl client
	if callerKeyID != "" {
		cl = client{"verify:", callerKeyID}
	}
	e, err := v.lookup(ctx, hashKey(key), v.cfg.Now(), cl, v.cfg.VerifyFailureLimit)
	if err != nil {
		return nil, err
	}
	if e.v == nil || !e.consumer {
		return nil, ErrUnknown
	}
	return &Consumer{Key: e.rec, Viewer: e.v, TenantActive: e.active}, nil
}

// Touch records that the key keyID was used now (last_used_at, written in batches).
func (v *Verifier) Touch(keyID string) { v.touch(keyID) }

// loadOwner adds the limits and meta of vw's owner record, if the tenant keeps one.
// It returns the database's error.
func (v *Verifier) loadOwner(ctx context.Context, vw *viewer.Viewer) error {
	o, err := v.client.Owner.Query().
		Where(entowner.TenantID(vw.TenantID), entowner.OwnerID(vw.OwnerID)).
		Only(rule.SystemContext(ctx))
	switch {
	case ent.IsNotFound(err):
		return nil
	case err != nil:
		return err
	}
	vw.OwnerMeta = o.Meta
	if o.RateLimit != nil && o.RateLimitWindowSeconds != nil {
		vw.OwnerRateLimit, vw.OwnerRateWindow = *o.RateLimit, time.Duration(*o.RateLimitWindowSeconds)*time.Second
	}
	if o.Quota != nil {
		vw.OwnerQuota, vw.OwnerQuotaPeriod = *o.Quota, "month"
		if o.QuotaPeriod != nil && *o.QuotaPeriod == entowner.QuotaPeriodDay {
			vw.OwnerQuotaPeriod = "day"
		}
	}
	return nil
}

// creditsPeriod is the refill period of a credits interval ("day", "month", or "" for
// never), as the limit store names periods.
func creditsPeriod(i *entapikey.CreditsRefillInterval) string {
	switch {
	case i == nil:
		return ""
	case *i == entapikey.CreditsRefillIntervalDaily:
		return "day"
	case *i == entapikey.CreditsRefillIntervalMonthly:
		return "month"
	}
	return ""
}

func deref64(p *int64) int64 {
	if p == nil {
		return 0
	}
	return *p
}
