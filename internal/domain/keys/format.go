// Package apikey defines the API key format and verifies presented keys.
//
// A key looks like lk_live_<32 base62 random chars><6 base62 checksum chars>:
// a recognizable prefix naming its kind, about 190 bits of randomness, and a CRC32
// of everything before the checksum (as GitHub tokens do), so that typos are rejected
// offline and secret scanners can match the format. Only the SHA-256 of a key is stored.
package keys

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"hash/crc32"
	"strings"
)

// Kind is the kind of a key, written in its prefix.
type Kind string

// Key kinds.
const (
	// KindLive is a tenant's key.
	KindLive Kind = "live"
	// KindAdmin is a platform admin's key.
	KindAdmin Kind = "admin"
)

const (
	base62       = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	randomLen    = 32 // 32 * log2(62) ≈ 190 bits
	checksumLen  = 6  // 62^6 > 2^32
	displayChars = 6  // random chars kept in the display prefix
	keyPrefix    = "lk_"
)

// Errors returned by Parse. All of them mean the key is not a well-formed Latchkey key.
var (
	ErrFormat   = errors.New("api key: malformed")
	ErrKind     = errors.New("api key: unknown kind")
	ErrChecksum = errors.New("api key: bad checksum")
)

// Generate returns a new random key of the given kind.
// It returns an error only if the system's random source fails.
func Generate(kind Kind) (string, error) {
	var b strings.Builder
	head := keyPrefix + string(kind) + "_"
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

// Parse checks the format and the checksum of key without any lookup and returns its kind.
// It returns ErrFormat, ErrKind or ErrChecksum.
func Parse(key string) (Kind, error) {
	rest, ok := strings.CutPrefix(key, keyPrefix)
	if !ok {
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
	if kind != KindLive && kind != KindAdmin {
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

var ieeeTable = crc32.MakeTable(crc32.IEEE)

func checksum(s string) string {
	cs := checksumOf(s)
	return string(cs[:])
}

// checksumOf returns the base62 CRC32 of s without allocating.
func checksumOf(s string) [checksumLen]byte {
	// Byte-wise CRC32 (IEEE) over the string: the same value as crc32.ChecksumIEEE,
	// without the []byte copy that would escape to the heap on every request.
	v := ^uint32(0)
	for i := 0; i < len(s); i++ {
		v = ieeeTable[byte(v)^s[i]] ^ (v >> 8)
	}
	v = ^v
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
