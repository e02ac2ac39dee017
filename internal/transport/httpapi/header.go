package httpapi

import "net/http"

// Canonical names of the headers read or written on every request: indexing an
// http.Header with them skips the canonicalization Get and Set do each time.
const (
	hdrAuthorization = "Authorization"
	hdrAPIKey        = "X-Api-Key"    // X-API-Key
	hdrRequestID     = "X-Request-Id" // X-Request-ID
	hdrContentType   = "Content-Type"
	hdrCacheControl  = "Cache-Control"
)

// Values set on every answer, shared: net/http and the handlers replace a header's
// values, never modify them in place.
var (
	valJSON    = []string{"application/json"}
	valNoStore = []string{"no-store"}
)

// header is h.Get(name) for a canonical name.
func header(h http.Header, name string) string {
	if v := h[name]; len(v) > 0 {
		return v[0]
	}
	return ""
}
