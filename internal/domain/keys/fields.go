package keys

import (
	"encoding/json"
	"slices"
	"strings"
	"unicode/utf8"

	entapikey "github.com/latchkey/latchkey/ent/apikey"
	"github.com/latchkey/latchkey/internal/platform/fault"
)

// Bounds of the settings a verification returns.
const (
	MaxPermissions   = 100
	MaxPermissionLen = 64
)

// ValidPermission checks one permission name: 1 to 64 printable ASCII characters
// without spaces. It returns a BAD_USER_INPUT error naming "permissions".
func ValidPermission(p string) *fault.Error {
	if p == "" || len(p) > MaxPermissionLen {
		return fault.BadInput("permissions", "a permission is 1 to %d characters", MaxPermissionLen)
	}
	for i := 0; i < len(p); i++ {
		if c := p[i]; c <= 0x20 || c > 0x7e {
			return fault.BadInput("permissions", "a permission is printable ASCII without spaces")
		}
	}
	return nil
}

// MaxMetaBytes bounds a key's meta, as JSON.
const MaxMetaBytes = 4 << 10

// ValidMeta checks a key's meta: a JSON object of at most 4 KiB without NUL anywhere.
// It returns a BAD_USER_INPUT error naming "meta".
func ValidMeta(meta map[string]any) *fault.Error {
	if meta == nil {
		return nil
	}
	b, err := json.Marshal(meta)
	if err != nil {
		return fault.BadInput("meta", "meta must be a JSON object")
	}
	if len(b) > MaxMetaBytes {
		return fault.BadInput("meta", "meta must be at most %d bytes of JSON", MaxMetaBytes)
	}
	if !utf8.Valid(b) || hasNUL(meta) {
		return fault.BadInput("meta", "meta must not contain NUL")
	}
	return nil
}

// hasNUL reports whether a NUL character appears in any key or string of v (a decoded
// JSON value).
func hasNUL(v any) bool {
	switch x := v.(type) {
	case string:
		return strings.ContainsRune(x, 0)
	case map[string]any:
		for k, e := range x {
			if strings.ContainsRune(k, 0) || hasNUL(e) {
				return true
			}
		}
	case []any:
		return slices.ContainsFunc(x, hasNUL)
	}
	return false
}

// kindOf is the kind written in a tenant key of environment env.
func kindOf(env entapikey.Environment) Kind {
	if env == entapikey.EnvironmentTest {
		return KindTest
	}
	return KindLive
}
