// Package ids generates the public, prefixed identifiers of Latchkey objects
// ("ten_01J…", "key_01J…"): time-ordered ULIDs behind a short type prefix, so an ID
// tells its type (used to resolve Relay nodes) and sorts by creation time.
package ids

import (
	"crypto/rand"
	"strings"
	"sync"
	"time"

	"github.com/oklog/ulid/v2"
)

// Type prefixes of the object IDs.
const (
	Tenant          = "ten"
	APIKey          = "key"
	Webhook         = "whk"
	WebhookDelivery = "whd"
	WebhookAttempt  = "wha"
	AuditLog        = "aud"
	Plan            = "pln"
	Owner           = "own"
	Event           = "msg"
)

var (
	mu      sync.Mutex
	entropy = ulid.Monotonic(rand.Reader, 0)
)

// New returns a new ID with the given type prefix.
func New(prefix string) string {
	mu.Lock()
	id := ulid.MustNew(ulid.Timestamp(time.Now()), entropy)
	mu.Unlock()
	return prefix + "_" + strings.ToLower(id.String())
}

// Prefix returns the type prefix of id, or "" when it has none.
func Prefix(id string) string {
	p, _, ok := strings.Cut(id, "_")
	if !ok {
		return ""
	}
	return p
}
