package httpapi

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/latchkey/latchkey/ent/apikey"
	"github.com/latchkey/latchkey/internal/domain/verify"
)

// appendJSON writes exactly what encoding/json writes for every shape of answer.
func TestAnswerJSONMatchesEncodingJSON(t *testing.T) {
	str := func(s string) *string { return &s }
	num := func(n int) *int { return &n }
	bal := func(n int64) *int64 { return &n }
	env := apikey.EnvironmentLive
	at := time.Date(2026, 11, 30, 17, 4, 5, 123456789, time.UTC)
	zone := time.Date(2026, 12, 1, 0, 0, 0, 0, time.FixedZone("x", 3600))
	cases := []struct {
		name string
		a    verifyAnswer
	}{
		{"not found", verifyAnswer{Code: verify.Code("NOT_FOUND")}},
		{"valid, everything set", verifyAnswer{Valid: true, Code: verify.Code("VALID"), KeyID: str("key_01abc"), OwnerID: str("cust_1"),
			Name: str("customer key"), Meta: map[string]any{"plan": "gold", "seats": 3.0, "nested": map[string]any{"b": []any{true, nil}, "a": "x"}},
			Permissions: []string{"documents:read", "documents:write"}, Environment: &env, ExpiresAt: &at,
			RateLimit: &verifyLimit{Limit: 10, Remaining: 9, ResetAt: at}, Quota: &verifyQuota{Limit: 100000, Used: 1, Remaining: 99999, ResetAt: zone},
			Credits: bal(42), OwnerMeta: map[string]any{"tier": "<b>&co</b>"}}},
		{"refused", verifyAnswer{Code: verify.Code("RATE_LIMITED"), KeyID: str("key_1"), Permissions: []string{},
			RetryAfterSeconds: num(36), LimitScope: str("named:writes"), Credits: bal(0), Meta: map[string]any{}}},
		{"strings that need escaping", verifyAnswer{Code: verify.Code("VALID"), Name: str("quote \" backslash \\ tab \t <html> & é \u2028 \x00"),
			OwnerID: str("\xff invalid utf-8"), Permissions: []string{"a<b", "ü"}, LimitScope: str("")}},
		{"negative and zero numbers", verifyAnswer{RateLimit: &verifyLimit{Remaining: -1}, Quota: &verifyQuota{}, RetryAfterSeconds: num(0), Credits: bal(-5)}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			want, err := json.Marshal(tc.a)
			if err != nil {
				t.Fatal(err)
			}
			if got := tc.a.appendJSON(nil); string(got) != string(want) {
				t.Fatalf("appendJSON:\n%s\nencoding/json:\n%s", got, want)
			}
		})
	}
}

func BenchmarkAnswerJSON(b *testing.B) {
	env := apikey.EnvironmentLive
	id, name := "key_01m8pkjdvgaexryx1jp2s8e00s", "customer"
	a := verifyAnswer{Valid: true, Code: verify.Code("VALID"), KeyID: &id, Name: &name, Environment: &env,
		RateLimit: &verifyLimit{Limit: 1000, Remaining: 999, ResetAt: time.Now()}, Quota: &verifyQuota{Limit: 100000, Used: 1, Remaining: 99999, ResetAt: time.Now()}}
	b.Run("encoding-json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_, _ = json.Marshal(a)
		}
	})
	b.Run("appendJSON", func(b *testing.B) {
		b.ReportAllocs()
		buf := make([]byte, 0, 1024)
		for b.Loop() {
			buf = a.appendJSON(buf[:0])
		}
	})
}

// The header constants are in canonical form, as http.Header indexes them.
func TestHeaderNamesCanonical(t *testing.T) {
	for _, name := range []string{hdrAuthorization, hdrAPIKey, hdrRequestID, hdrContentType, hdrCacheControl} {
		if c := http.CanonicalHeaderKey(name); c != name {
			t.Errorf("%q is not canonical: %q", name, c)
		}
	}
}
