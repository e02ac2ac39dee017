package keys_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/latchkey/latchkey/ent"
	"github.com/latchkey/latchkey/ent/schema/rule"
	"github.com/latchkey/latchkey/internal/data/store"
	"github.com/latchkey/latchkey/internal/data/testdb"
	"github.com/latchkey/latchkey/internal/domain/keys"
)

type fixture struct {
	st     *store.Store
	v      *keys.Verifier
	tenant *ent.Tenant
	now    time.Time
}

func newFixture(t testing.TB, dialect string) *fixture {
	t.Helper()
	st, err := store.Open(context.Background(), testdb.URL(t, dialect))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	f := &fixture{st: st, now: time.Now()}
	f.v = keys.NewVerifier(st.Client, st.EntDialect, keys.Config{Now: func() time.Time { return f.now }, AdminToken: "admin-token-0123456789"})
	f.tenant = st.Client.Tenant.Create().SetName("T").SetSlug("tee").SaveX(rule.SystemContext(context.Background()))
	return f
}

func (f *fixture) key(t testing.TB, mutate func(*ent.ApiKeyCreate)) (*ent.ApiKey, string) {
	t.Helper()
	secret, err := keys.Generate(keys.KindLive)
	if err != nil {
		t.Fatal(err)
	}
	c := f.st.Client.ApiKey.Create().SetTenantID(f.tenant.ID).SetName("k").
		SetPrefix(keys.DisplayPrefix(secret)).SetHash(keys.HashHex(secret)).SetScopes([]string{"keys:read"})
	if mutate != nil {
		mutate(c)
	}
	return c.SaveX(rule.SystemContext(context.Background())), secret
}

func TestVerify(t *testing.T) {
	for _, d := range testdb.Dialects {
		t.Run(d, func(t *testing.T) {
			f := newFixture(t, d)
			ctx := context.Background()
			k, secret := f.key(t, nil)
			_, expiring := f.key(t, func(c *ent.ApiKeyCreate) { c.SetExpiresAt(f.now.Add(time.Minute)) })
			_, revoked := f.key(t, func(c *ent.ApiKeyCreate) { c.SetRevokedAt(f.now) })
			unknown, _ := keys.Generate(keys.KindLive)

			cases := []struct {
				name, cred string
				advance    time.Duration
				want       error
			}{
				{"valid", secret, 0, nil},
				{"admin token", "admin-token-0123456789", 0, nil},
				{"missing", "", 0, keys.ErrMissing},
				{"malformed", "lk_live_nope", 0, keys.ErrMalformed},
				{"unknown", unknown, 0, keys.ErrUnknown},
				{"revoked", revoked, 0, keys.ErrRevoked},
				{"not yet expired", expiring, 59 * time.Second, nil},
				{"expired", expiring, 2 * time.Second, keys.ErrExpired},
			}
			for _, tc := range cases {
				f.now = f.now.Add(tc.advance)
				v, err := f.v.Verify(ctx, tc.cred)
				if !errors.Is(err, tc.want) {
					t.Fatalf("%s: err = %v, want %v", tc.name, err, tc.want)
				}
				if err == nil && v == nil {
					t.Fatalf("%s: nil viewer", tc.name)
				}
			}
			v, _ := f.v.Verify(ctx, secret)
			if v.APIKeyID != k.ID || v.TenantID != f.tenant.ID || v.KeyPrefix != k.Prefix {
				t.Fatalf("viewer = %+v", v)
			}

			// A cached key stays cached until invalidated: a revocation written behind
			// the cache's back shows only after Invalidate.
			k.Update().SetRevokedAt(f.now).ExecX(rule.SystemContext(ctx))
			if _, err := f.v.Verify(ctx, secret); err != nil {
				t.Fatalf("cached key: %v", err)
			}
			f.v.Invalidate(k.Hash)
			if _, err := f.v.Verify(ctx, secret); !errors.Is(err, keys.ErrRevoked) {
				t.Fatalf("after invalidate: %v", err)
			}
			// The TTL is the safety net behind invalidation.
			_, k2 := f.key(t, nil)
			if _, err := f.v.Verify(ctx, k2); err != nil {
				t.Fatal(err)
			}
			f.st.Client.ApiKey.Update().SetRevokedAt(f.now).ExecX(rule.SystemContext(ctx))
			f.now = f.now.Add(6 * time.Minute)
			if _, err := f.v.Verify(ctx, k2); !errors.Is(err, keys.ErrRevoked) {
				t.Fatalf("after TTL: %v", err)
			}
			// A negative entry is dropped when a key with that hash is created.
			if _, err := f.v.Verify(ctx, unknown); !errors.Is(err, keys.ErrUnknown) {
				t.Fatal(err)
			}
			f.st.Client.ApiKey.Create().SetTenantID(f.tenant.ID).SetName("late").SetPrefix(keys.DisplayPrefix(unknown)).
				SetHash(keys.HashHex(unknown)).SetScopes([]string{}).ExecX(rule.SystemContext(ctx))
			f.v.Invalidate(keys.HashHex(unknown))
			if _, err := f.v.Verify(ctx, unknown); err != nil {
				t.Fatalf("created key still unknown: %v", err)
			}
		})
	}
}

func TestExtractCredential(t *testing.T) {
	cases := []struct{ header, auth, want string }{
		{"k1", "", "k1"},
		{" k1 ", "Bearer k2", "k1"},
		{"", "Bearer k2", "k2"},
		{"", "bearer   k2 ", "k2"},
		{"", "Basic abc", ""},
		{"", "Bearer", ""},
		{"", "", ""},
	}
	for _, tc := range cases {
		if got := keys.ExtractCredential(tc.header, tc.auth); got != tc.want {
			t.Errorf("ExtractCredential(%q, %q) = %q, want %q", tc.header, tc.auth, got, tc.want)
		}
	}
}

// BenchmarkVerify measures a cache hit: parse, SHA-256, cache lookup, state checks
// and the last_used_at mark.
func BenchmarkVerify(b *testing.B) {
	f := newFixture(b, "sqlite")
	_, secret := f.key(b, nil)
	f.v = keys.NewVerifier(f.st.Client, f.st.EntDialect, keys.Config{})
	ctx := context.Background()
	if _, err := f.v.Verify(ctx, secret); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := f.v.Verify(ctx, secret); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifyParallel(b *testing.B) {
	f := newFixture(b, "sqlite")
	_, secret := f.key(b, nil)
	f.v = keys.NewVerifier(f.st.Client, f.st.EntDialect, keys.Config{})
	ctx := context.Background()
	if _, err := f.v.Verify(ctx, secret); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := f.v.Verify(ctx, secret); err != nil {
				b.Fatal(err)
			}
		}
	})
}
