package webhook_test

import (
	"encoding/base64"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/latchkey/latchkey/internal/domain/webhook"
)

func TestNewSecret(t *testing.T) {
	seen := map[string]bool{}
	for range 50 {
		s, err := webhook.NewSecret()
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(s, "whsec_") {
			t.Fatalf("secret %q lacks whsec_ prefix", s)
		}
		key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(s, "whsec_"))
		if err != nil || len(key) < 24 {
			t.Fatalf("secret decodes to %d bytes (%v), want >= 24", len(key), err)
		}
		if seen[s] {
			t.Fatal("duplicate secret")
		}
		seen[s] = true
	}
}

// The Standard Webhooks reference vector.
func TestSignReferenceVector(t *testing.T) {
	got, err := webhook.Sign([]string{"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"},
		"msg_p5jXN8AQM9LWM0D4loKWxJek", time.Unix(1614265330, 0), []byte(`{"test": 2432232314}`))
	if err != nil {
		t.Fatal(err)
	}
	if want := "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="; got != want {
		t.Fatalf("Sign = %q, want %q", got, want)
	}
}

func headers(id string, ts time.Time, sig string) http.Header {
	h := http.Header{}
	h.Set("webhook-id", id)
	h.Set("webhook-timestamp", strconv.FormatInt(ts.Unix(), 10))
	h.Set("webhook-signature", sig)
	return h
}

func verify(t *testing.T, secret string, body []byte, h http.Header) error {
	t.Helper()
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		t.Fatal(err)
	}
	return wh.Verify(body, h)
}

// Signatures checked by the independent Standard Webhooks library.
func TestSignVerifiesWithStandardWebhooks(t *testing.T) {
	s1, _ := webhook.NewSecret()
	s2, _ := webhook.NewSecret()
	other, _ := webhook.NewSecret()
	body := []byte(`{"type":"webhook.test","timestamp":"2026-01-02T03:04:05.123456789Z","data":{"k":"<v>"}}`)
	now := time.Now()
	cases := []struct {
		name     string
		signWith []string
		verifyBy string
		body     []byte
		id       string
		ts       time.Time
		ok       bool
	}{
		{"one secret", []string{s1}, s1, body, "msg_1", now, true},
		{"rotation: new secret verifies", []string{s2, s1}, s2, body, "msg_1", now, true},
		{"rotation: old secret verifies", []string{s2, s1}, s1, body, "msg_1", now, true},
		{"wrong secret", []string{s1}, other, body, "msg_1", now, false},
		{"after rotation: old secret fails", []string{s2}, s1, body, "msg_1", now, false},
		{"tampered body", []string{s1}, s1, append([]byte(" "), body...), "msg_1", now, false},
		{"other id", []string{s1}, s1, body, "msg_2", now, false},
		{"stale timestamp", []string{s1}, s1, body, "msg_1", now.Add(-10 * time.Minute), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sig, err := webhook.Sign(tc.signWith, "msg_1", tc.ts, body)
			if err != nil {
				t.Fatal(err)
			}
			if n := len(strings.Fields(sig)); n != len(tc.signWith) {
				t.Fatalf("%d signatures in %q, want %d", n, sig, len(tc.signWith))
			}
			err = verify(t, tc.verifyBy, tc.body, headers(tc.id, tc.ts, sig))
			if (err == nil) != tc.ok {
				t.Fatalf("verify: %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

func TestSignRejectsBadSecrets(t *testing.T) {
	for _, secrets := range [][]string{nil, {"whsec_x"}, {"whsec_" + base64.StdEncoding.EncodeToString(make([]byte, 8))}, {"not base64!"}} {
		_, err := webhook.Sign(secrets, "msg_1", time.Now(), []byte("{}"))
		if err == nil {
			t.Errorf("Sign(%q) succeeded", secrets)
		}
		if len(secrets) > 0 && !errors.Is(err, webhook.ErrInvalidSecret) {
			t.Errorf("Sign(%q) = %v, want ErrInvalidSecret", secrets, err)
		}
	}
}

func TestEventBody(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 600, time.FixedZone("X", 3600))
	cases := []struct {
		name string
		ev   webhook.Event
		want string
	}{
		{"data", webhook.Event{Type: "api_key.created", Data: map[string]any{"id": "key_1", "name": "<a&b>"}, At: at},
			`{"type":"api_key.created","timestamp":"2026-01-02T02:04:05.0000006Z","data":{"id":"key_1","name":"<a&b>"}}`},
		{"nil data is an empty object", webhook.Event{Type: "webhook.test", At: at},
			`{"type":"webhook.test","timestamp":"2026-01-02T02:04:05.0000006Z","data":{}}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.ev.Body()
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.want {
				t.Fatalf("Body = %s\nwant   %s", got, tc.want)
			}
		})
	}
	if _, err := (webhook.Event{Type: "x", Data: func() {}}).Body(); err == nil {
		t.Error("Body of unmarshalable data succeeded")
	}
}

func TestParseSchedule(t *testing.T) {
	cases := []struct {
		in      string
		want    []time.Duration
		wantErr bool
	}{
		{"5s,5m,30m", []time.Duration{5 * time.Second, 5 * time.Minute, 30 * time.Minute}, false},
		{" 50ms , 1h ", []time.Duration{50 * time.Millisecond, time.Hour}, false},
		{"", webhook.DefaultSchedule, false},
		{"5s,,5m", nil, true},
		{"5", nil, true},
		{"-5s", nil, true},
		{"0s", nil, true},
		{"soon", nil, true},
	}
	for _, tc := range cases {
		got, err := webhook.ParseSchedule(tc.in)
		if (err != nil) != tc.wantErr {
			t.Errorf("ParseSchedule(%q) error = %v, wantErr %v", tc.in, err, tc.wantErr)
			continue
		}
		if !tc.wantErr && !equalDurations(got, tc.want) {
			t.Errorf("ParseSchedule(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
	def, _ := webhook.ParseSchedule("5s,5m,30m,2h,5h,10h,10h")
	if !equalDurations(def, webhook.DefaultSchedule) {
		t.Errorf("DefaultSchedule = %v, want the Standard Webhooks schedule", webhook.DefaultSchedule)
	}
}

func equalDurations(a, b []time.Duration) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	cases := []struct {
		in   string
		want time.Duration
	}{
		{"", 0},
		{"1", time.Second},
		{"120", 2 * time.Minute},
		{"0", 0},
		{"-3", 0},
		{"soon", 0},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{now.Add(-time.Hour).Format(http.TimeFormat), 0},
		{"999999999", 24 * time.Hour},
	}
	for _, tc := range cases {
		if got := webhook.ParseRetryAfter(tc.in, now); got != tc.want {
			t.Errorf("ParseRetryAfter(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}
