package wsgorilla

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestSendableCloseCode(t *testing.T) {
	tests := []struct {
		code, want int
	}{
		{1000, 1000},
		{1001, 1001},
		{1002, 1002},
		{1003, 1003},
		{1004, 1011}, // reserved
		{1005, 1005}, // sent as an empty close frame
		{1006, 1011}, // abnormal closure: never on the wire
		{1008, 1008},
		{1009, 1009},
		{1013, 1013},
		{1015, 1011}, // TLS handshake: never on the wire
		{0, 1011},
		{2999, 1011},
		{3000, 3000},
		{4401, 4401},
		{4403, 4403},
		{4999, 4999},
		{5000, 1011},
	}
	for _, tt := range tests {
		if got := sendableCloseCode(tt.code); got != tt.want {
			t.Errorf("sendableCloseCode(%d) = %d, want %d", tt.code, got, tt.want)
		}
	}
}

func TestTruncateReason(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"empty", "", ""},
		{"short", "forbidden", "forbidden"},
		{"exactly 123", strings.Repeat("a", 123), strings.Repeat("a", 123)},
		{"124 ascii", strings.Repeat("a", 124), strings.Repeat("a", 123)},
		// 122 ASCII bytes + a 2-byte rune straddles the limit: drop the rune.
		{"rune at boundary", strings.Repeat("a", 122) + "é", strings.Repeat("a", 122)},
		{"multibyte", strings.Repeat("€", 50), strings.Repeat("€", 41)}, // 3 bytes each
		{"invalid utf8", "bad\xffreason", "bad\uFFFDreason"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := truncateReason(tt.in)
			if got != tt.want {
				t.Errorf("truncateReason = %q, want %q", got, tt.want)
			}
			if len(got) > maxCloseReason || !utf8.ValidString(got) {
				t.Errorf("result %q: %d bytes, valid UTF-8 %v", got, len(got), utf8.ValidString(got))
			}
		})
	}
}

func TestNormalizeOrigin(t *testing.T) {
	tests := []struct {
		in, want string
	}{
		{"https://app.example.com", "https://app.example.com"},
		{"HTTPS://App.Example.COM/", "https://app.example.com"},
		{"https://app.example.com:443", "https://app.example.com"},
		{"http://app.example.com:80", "http://app.example.com"},
		{"http://app.example.com:443", "http://app.example.com:443"},
		{"https://app.example.com:8443", "https://app.example.com:8443"},
		{"http://127.0.0.1:3000", "http://127.0.0.1:3000"},
		{"null", "null"},
		{"", ""},
	}
	for _, tt := range tests {
		if got := normalizeOrigin(tt.in); got != tt.want {
			t.Errorf("normalizeOrigin(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestSameOriginAndAllowOrigins(t *testing.T) {
	tests := []struct {
		name    string
		allow   []string // nil: sameOrigin
		host    string
		origin  string
		allowed bool
	}{
		{"no origin", nil, "api.example.com", "", true},
		{"same origin", nil, "api.example.com", "https://api.example.com", true},
		{"same origin, case", nil, "api.example.com", "https://API.example.com", true},
		{"same origin with port", nil, "localhost:8080", "http://localhost:8080", true},
		{"other port", nil, "localhost:8080", "http://localhost:3000", false},
		{"foreign", nil, "api.example.com", "https://evil.example", false},
		{"null origin", nil, "api.example.com", "null", false},
		{"garbage origin", nil, "api.example.com", "::::", false},
		{"listed", []string{"https://app.example.com"}, "api.example.com", "https://app.example.com", true},
		{"listed, default port", []string{"https://app.example.com:443/"}, "api.example.com", "https://App.example.com", true},
		{"listed, still same origin", []string{"https://app.example.com"}, "api.example.com", "https://api.example.com", true},
		{"not listed", []string{"https://app.example.com"}, "api.example.com", "https://evil.example", false},
		{"scheme differs", []string{"https://app.example.com"}, "api.example.com", "http://app.example.com", false},
		{"wildcard", []string{"https://app.example.com", "*"}, "api.example.com", "https://evil.example", true},
		{"empty list", []string{}, "api.example.com", "https://evil.example", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			check := sameOrigin
			if tt.allow != nil {
				check = AllowOrigins(tt.allow)
			}
			r, _ := http.NewRequest(http.MethodGet, "http://"+tt.host+"/query", nil)
			if tt.origin != "" {
				r.Header.Set("Origin", tt.origin)
			}
			if got := check(r); got != tt.allowed {
				t.Errorf("allowed = %v, want %v", got, tt.allowed)
			}
		})
	}
}

func TestSelectSubprotocol(t *testing.T) {
	supported := []string{"graphql-ws", "graphql-transport-ws"} // gqlgen's order
	tests := []struct {
		name   string
		header []string
		want   string
	}{
		{"none", nil, ""},
		{"transport-ws", []string{"graphql-transport-ws"}, "graphql-transport-ws"},
		{"legacy", []string{"graphql-ws"}, "graphql-ws"},
		{"client prefers transport-ws", []string{"graphql-transport-ws, graphql-ws"}, "graphql-transport-ws"},
		{"client prefers legacy", []string{"graphql-ws,graphql-transport-ws"}, "graphql-ws"},
		{"unknown first", []string{"foo, graphql-transport-ws"}, "graphql-transport-ws"},
		{"several header lines", []string{"foo", "graphql-transport-ws"}, "graphql-transport-ws"},
		{"unsupported only", []string{"foo"}, ""},
		{"case sensitive", []string{"GraphQL-WS"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, _ := http.NewRequest(http.MethodGet, "http://x/query", nil)
			for _, v := range tt.header {
				r.Header.Add("Sec-WebSocket-Protocol", v)
			}
			if got := selectSubprotocol(r, supported); got != tt.want {
				t.Errorf("selectSubprotocol = %q, want %q", got, tt.want)
			}
		})
	}
}

// BenchmarkOutgoingResult measures what the adapter adds to every result it
// sends (the fan-out hot path): a look at the last bytes, no decoding.
func BenchmarkOutgoingResult(b *testing.B) {
	c := &conn{proto: transportWS}
	data := []byte(`{"payload":{"data":{"usageEvents":{"id":"evt_01","operationName":"Q","outcome":"OK","latencyMs":3}}},"id":"1","type":"next"}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, send := c.outgoing(data); !send {
			b.Fatal("result dropped")
		}
	}
}

// An id the client reuses reaches gqlgen renamed, and the renamed operation's
// messages leave with the client's id again; once it ended, it is forgotten.
func TestTrackerRenamesReusedIDs(t *testing.T) {
	var tr tracker
	if g := tr.start("1"); g != "1" {
		t.Fatalf("first use renamed to %q", g)
	}
	g := tr.start("1")
	if g != "1\x1f2" || tr.gqlgenID("1") != g {
		t.Fatalf("reuse handed to gqlgen as %q, latest %q", g, tr.gqlgenID("1"))
	}
	if id, ok := tr.clientID(g, false); id != "1" || !ok || tr.nRenamed.Load() != 1 {
		t.Fatalf("clientID(%q) = %q, %v", g, id, ok)
	}
	next := []byte(`{"payload":{"data":{"name":"x\u001f"}},"id":"1\u001f2","type":"next"}`)
	if got := string(renameTail(next, g, "1", "next")); got != `{"payload":{"data":{"name":"x\u001f"}},"id":"1","type":"next"}` {
		t.Fatalf("renamed result %s", got)
	}
	if got := string(renameTail(next, "other", "1", "next")); got != string(next) {
		t.Fatalf("a result of another operation was changed: %s", got)
	}
	if id, ok := tr.clientID(g, true); id != "1" || !ok {
		t.Fatalf("end of %q: %q, %v", g, id, ok)
	}
	if tr.nRenamed.Load() != 0 || tr.gqlgenID("1") != "1" {
		t.Fatalf("an ended renamed operation is still known: %d, %q", tr.nRenamed.Load(), tr.gqlgenID("1"))
	}
	if id, ok := tr.clientID("2", true); id != "2" || ok {
		t.Fatalf("clientID of a plain id: %q, %v", id, ok)
	}
	// Once the ids used lately are forgotten, a reused id goes to gqlgen as it is,
	// and the client's complete is for that operation, not an older renamed one.
	g = tr.start("1")
	for i := range maxUsed {
		tr.start(fmt.Sprint("other", i))
	}
	if got := tr.start("1"); got != "1" || tr.gqlgenID("1") != "1" {
		t.Fatalf("after forgetting, start = %q and complete goes to %q (a running renamed %q)", got, tr.gqlgenID("1"), g)
	}
}
