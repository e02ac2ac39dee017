// Package keys defines the API key format, verifies presented keys and manages their
// lifecycle.
//
// A key looks like <prefix>_<kind>_<32 base62 random chars><6 base62 checksum chars>:
// the tenant's prefix (2-12 lowercase letters or digits, "lk" by default), its kind
// (live or test; admin for platform admin keys, always with the prefix "lk"), about
// 190 bits of randomness, and a CRC32 of everything before the checksum (as GitHub
// tokens do), so that typos are rejected offline and secret scanners can match the
// format. Only the SHA-256 of a key is stored.
package keys

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"hash/crc32"
	"strings"
	"unsafe"
)

// Kind is the kind of a key, written in it after the prefix.
type Kind string

// Key kinds.
const (
	// KindLive is a tenant's key of the LIVE environment.
	KindLive Kind = "live"
	// KindTest is a tenant's key of the TEST environment.
	KindTest Kind = "test"
	// KindAdmin is a platform admin's key.
	KindAdmin Kind = "admin"
)

const (
	base62       = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	randomLen    = 32 // 32 * log2(62) ≈ 190 bits
	checksumLen  = 6  // 62^6 > 2^32
	displayChars = 6  // random chars kept in the display prefix
	// DefaultPrefix starts the keys of tenants without a prefix of their own, and
	// every platform admin key.
	DefaultPrefix = "lk"
	// MaxKeyLen is the longest well-formed key; longer strings are refused before
	// anything else looks at them.
	MaxKeyLen = 12 + 1 + 5 + 1 + randomLen + checksumLen
)

// Errors returned by Parse. All of them mean the key is not a well-formed Latchkey key.
var (
	ErrFormat   = errors.New("api key: malformed")
	ErrKind     = errors.New("api key: unknown kind")
	ErrChecksum = errors.New("api key: bad checksum")
	ErrPrefix   = errors.New("api key: a prefix is 2 to 12 lowercase letters or digits")
)

// ValidPrefix reports whether p can start keys: 2 to 12 lowercase letters or digits.
func ValidPrefix(p string) bool {
	if len(p) < 2 || len(p) > 12 {
		return false
	}
	for i := 0; i < len(p); i++ {
		if c := p[i]; (c < 'a' || c > 'z') && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}

// Generate returns a new random key of the given kind with the default prefix.
// It returns an error only if the system's random source fails.
func Generate(kind Kind) (string, error) { return GenerateWith(DefaultPrefix, kind) }

// GenerateWith returns a new random key of kind starting with prefix (see ValidPrefix).
// It returns ErrPrefix for an invalid prefix, ErrKind for an admin key with a prefix
// other than the default, or an error if the system's random source fails.
func GenerateWith(prefix string, kind Kind) (string, error) {
	if !ValidPrefix(prefix) {
		return "", ErrPrefix
	}
	if kind == KindAdmin && prefix != DefaultPrefix {
		return "", ErrKind
	}
	var b strings.Builder
	head := prefix + "_" + string(kind) + "_"
	b.Grow(len(head) + randomLen + checksumLen)
	b.WriteString(head)
	buf := make([]byte, 64)
	for n := 0; n < randomLen; {
		if _, err := rand.Read(buf); err != nil {
			return "", err
		}
		for _, c := range buf {
			// Rejection sampling keeps the distribution uniform: 248 = 4*62.
			if c >= 248 || n == randomLen {
				continue
			}
			b.WriteByte(base62[c%62])
			n++
		}
	}
	b.WriteString(checksum(b.String()))
	return b.String(), nil
}

// Parse checks the format and the checksum of key without any lookup and returns its
// kind. Any prefix of 2-12 lowercase letters or digits is accepted (admin keys only
// with the default one). It returns ErrFormat, ErrKind or ErrChecksum.
func Parse(key string) (Kind, error) {
	if len(key) > MaxKeyLen {
		return "", ErrFormat
	}
	prefix, rest, ok := strings.Cut(key, "_")
	if !ok || !ValidPrefix(prefix) {
		return "", ErrFormat
	}
	kindStr, body, ok := strings.Cut(rest, "_")
	if !ok || len(body) != randomLen+checksumLen {
		return "", ErrFormat
	}
	for i := 0; i < len(body); i++ {
		if !isBase62(body[i]) {
			return "", ErrFormat
		}
	}
	kind := Kind(kindStr)
	switch {
	case kind == KindLive, kind == KindTest:
	case kind == KindAdmin && prefix == DefaultPrefix:
	default:
		return "", ErrKind
	}
	split := len(key) - checksumLen
	if cs := checksumOf(key[:split]); string(cs[:]) != key[split:] {
		return "", ErrChecksum
	}
	return kind, nil
}

// Hash returns the SHA-256 digest of key.
func Hash(key string) [sha256.Size]byte { return sha256.Sum256([]byte(key)) }

// HashHex returns the hex SHA-256 of key, the form stored in the database.
func HashHex(key string) string {
	h := Hash(key)
	return hex.EncodeToString(h[:])
}

// DisplayPrefix returns the non-secret start of a well-formed key (e.g. "lk_live_AbC123"),
// enough to recognize a key in lists and logs.
func DisplayPrefix(key string) string {
	i := strings.LastIndexByte(key, '_')
	if i < 0 || len(key) < i+1+displayChars {
		return ""
	}
	return key[:i+1+displayChars]
}

func checksum(s string) string {
	cs := checksumOf(s)
	return string(cs[:])
}

// checksumOf returns the base62 CRC32 (IEEE) of s without allocating.
func checksumOf(s string) [checksumLen]byte {
	// crc32 reads s through a byte view of its memory: a []byte(s) copy would escape
	// to the heap on every request, and crc32 neither keeps nor changes the bytes. Its
	// sliced and vector code is 4-5 times faster than a byte-wise loop on a key.
	v := crc32.ChecksumIEEE(unsafe.Slice(unsafe.StringData(s), len(s)))
	var out [checksumLen]byte
	for i := checksumLen - 1; i >= 0; i-- {
		out[i] = base62[v%62]
		v /= 62
	}
	return out
}

func isBase62(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')
}
