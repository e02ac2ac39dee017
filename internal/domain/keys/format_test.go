package keys

import (
	"errors"
	"hash/crc32"
	"strings"
	"testing"
)

func TestGenerateParseRoundTrip(t *testing.T) {
	for _, kind := range []Kind{KindLive, KindAdmin} {
		seen := map[string]bool{}
		for range 200 {
			k, err := Generate(kind)
			if err != nil {
				t.Fatal(err)
			}
			if seen[k] {
				t.Fatalf("duplicate key %q", k)
			}
			seen[k] = true
			got, err := Parse(k)
			if err != nil || got != kind {
				t.Fatalf("Parse(%q) = %q, %v; want %q", k, got, err, kind)
			}
			if p := DisplayPrefix(k); !strings.HasPrefix(k, p) || len(p) != len("lk_"+string(kind)+"_")+displayChars {
				t.Fatalf("DisplayPrefix(%q) = %q", k, p)
			}
		}
	}
}

// Every single-character change of a key, at every position, must be rejected offline.
func TestParseRejectsEverySingleCharChange(t *testing.T) {
	key, err := Generate(KindLive)
	if err != nil {
		t.Fatal(err)
	}
	alphabet := base62 + "_-+/=. "
	for i := range len(key) {
		for _, c := range []byte(alphabet) {
			if c == key[i] {
				continue
			}
			mutated := key[:i] + string(c) + key[i+1:]
			if _, err := Parse(mutated); err == nil {
				t.Fatalf("Parse accepted %q (position %d changed to %q)", mutated, i, c)
			}
		}
	}
}

func TestParseErrors(t *testing.T) {
	valid, _ := Generate(KindLive)
	cases := []struct {
		name string
		in   string
		want error
	}{
		{"empty", "", ErrFormat},
		{"no prefix", "_live_" + valid[8:], ErrFormat},
		{"prefix too short", "x_live_" + valid[8:], ErrFormat},
		{"prefix too long", "abcdefghijklm_live_" + valid[8:], ErrFormat},
		{"prefix with capitals", "Acme_live_" + valid[8:], ErrFormat},
		{"another prefix, checksum of lk", "acme_live_" + valid[8:], ErrChecksum},
		{"truncated", valid[:len(valid)-1], ErrFormat},
		{"too long", valid + "a", ErrFormat},
		{"unknown kind", "lk_prod_" + valid[8:], ErrKind},
		{"admin with a tenant prefix", "acme_admin_" + valid[8:], ErrKind},
		{"bad checksum", valid[:len(valid)-1] + flip(valid[len(valid)-1]), ErrChecksum},
		{"non base62", valid[:10] + "!" + valid[11:], ErrFormat},
		{"bearer word", "Bearer " + valid, ErrFormat},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Parse(tc.in); !errors.Is(err, tc.want) {
				t.Fatalf("Parse(%q) error = %v, want %v", tc.in, err, tc.want)
			}
		})
	}
}

// Tenant prefixes and the TEST environment: generated keys parse, with their kind.
func TestPrefixesAndKinds(t *testing.T) {
	for _, tc := range []struct {
		prefix string
		kind   Kind
	}{{"lk", KindLive}, {"lk", KindTest}, {"acme", KindLive}, {"acme", KindTest}, {"a1", KindLive}, {"abcdefghij12", KindTest}, {"lk", KindAdmin}} {
		key, err := GenerateWith(tc.prefix, tc.kind)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(key, tc.prefix+"_"+string(tc.kind)+"_") || len(key) > MaxKeyLen {
			t.Fatalf("key %q", key)
		}
		if kind, err := Parse(key); err != nil || kind != tc.kind {
			t.Fatalf("Parse(%q) = %v, %v", key, kind, err)
		}
	}
	for _, bad := range []struct {
		prefix string
		kind   Kind
	}{{"Acme", KindLive}, {"a", KindLive}, {"toolongprefix", KindLive}, {"ac-me", KindLive}, {"acme", KindAdmin}} {
		if _, err := GenerateWith(bad.prefix, bad.kind); err == nil {
			t.Fatalf("GenerateWith(%q, %q) succeeded", bad.prefix, bad.kind)
		}
	}
}

func TestChecksumIsCRC32IEEE(t *testing.T) {
	for _, s := range []string{"", "lk_live_abc", strings.Repeat("x", 300)} {
		v := crc32.ChecksumIEEE([]byte(s))
		var want [checksumLen]byte
		for i := checksumLen - 1; i >= 0; i-- {
			want[i] = base62[v%62]
			v /= 62
		}
		if got := checksum(s); got != string(want[:]) {
			t.Fatalf("checksum(%q) = %q, want %q", s, got, want)
		}
	}
}

func flip(c byte) string {
	if c == 'a' {
		return "b"
	}
	return "a"
}

func FuzzParse(f *testing.F) {
	k, _ := Generate(KindLive)
	a, _ := Generate(KindAdmin)
	for _, s := range []string{k, a, "", "lk_", "lk_live_", "lk_live__", k[:20]} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		kind, err := Parse(s)
		if err != nil {
			return
		}
		if kind != KindLive && kind != KindAdmin {
			t.Fatalf("accepted unknown kind %q", kind)
		}
		// A parsed key must carry a valid checksum over its own head.
		split := len(s) - checksumLen
		if checksum(s[:split]) != s[split:] {
			t.Fatalf("accepted %q with bad checksum", s)
		}
		if DisplayPrefix(s) == "" {
			t.Fatalf("no display prefix for accepted %q", s)
		}
	})
}
