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
		{"no prefix", "xx_live_" + valid[8:], ErrFormat},
		{"truncated", valid[:len(valid)-1], ErrFormat},
		{"too long", valid + "a", ErrFormat},
		{"unknown kind", "lk_test_" + valid[8:], ErrKind},
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
