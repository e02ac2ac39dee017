// Package webasset serves files embedded in the binary to browsers: assets under
// URLs that change with their content, cached for a year as immutable and gzipped
// when it is worth it, and HTML pages revalidated on every visit, with a
// Content-Security-Policy. The playground and the console use it.
package webasset

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"
)

// contentTypes maps file extensions to Content-Type; any other file (a LICENSE, say)
// is served as plain text.
var contentTypes = map[string]string{
	".js":  "text/javascript; charset=utf-8",
	".css": "text/css; charset=utf-8",
	".svg": "image/svg+xml",
}

// Hash returns the first 16 hex digits of the SHA-256 of b: the version in a URL
// or an ETag.
func Hash(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

// File is one embedded file, ready to serve.
type File struct {
	// Body is the file's content.
	Body        []byte
	contentType string
	etag        string
	gzipped     func() []byte // compressed once, on first demand; nil when not worth it
}

// NewFile returns body, the content of the file name, ready to serve: its
// Content-Type follows name's extension, its ETag its content.
func NewFile(name string, body []byte) *File {
	ct, ok := contentTypes[path.Ext(name)]
	if !ok {
		ct = "text/plain; charset=utf-8"
	}
	f := &File{Body: body, contentType: ct, etag: `"` + Hash(body) + `"`}
	if len(body) >= 1024 {
		f.gzipped = sync.OnceValue(func() []byte { return gzipBytes(body) })
	}
	return f
}

// ServeHTTP serves the file as immutable (its URL names its version), gzipped to a
// client that accepts it, and answers If-None-Match with 304.
func (f *File) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Type", f.contentType)
	h.Set("Cache-Control", "public, max-age=31536000, immutable")
	h.Set("X-Content-Type-Options", "nosniff")
	body, etag := f.Body, f.etag
	if f.gzipped != nil {
		h.Add("Vary", "Accept-Encoding")
		if acceptsGzip(r) {
			body = f.gzipped()
			etag = strings.TrimSuffix(etag, `"`) + `.gz"`
			h.Set("Content-Encoding", "gzip")
		}
	}
	h.Set("ETag", etag)
	serveContent(w, r, body)
}

// serveContent serves body with http.ServeContent, honouring a Range header of one
// range only. net/http parses every range of a multi-range header (up to the 64 KiB
// header limit: thousands of ranges, some 20 bytes allocated per byte of header)
// before it finds their sum too large and sends the whole file anyway; nothing this
// package serves needs more than one range, so such a header is dropped unparsed and
// the whole file sent at once, as for a request without Range.
func serveContent(w http.ResponseWriter, r *http.Request, body []byte) {
	if rng := r.Header.Get("Range"); rng != "" && (strings.Contains(rng, ",") || len(r.Header.Values("Range")) > 1) {
		r = r.Clone(r.Context())
		r.Header.Del("Range")
	}
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(body))
}

// Page returns a handler of the HTML page body: revalidated on every visit (no-cache,
// with an ETag), under the Content-Security-Policy csp, and sending no Referer.
func Page(body []byte, csp string) http.HandlerFunc {
	etag := `"` + Hash(body) + `"`
	return func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Type", "text/html; charset=utf-8")
		h.Set("Cache-Control", "no-cache")
		h.Set("Content-Security-Policy", csp)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("ETag", etag)
		serveContent(w, r, body)
	}
}

func gzipBytes(b []byte) []byte {
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression) // level is valid
	zw.Write(b)                                              // writes to a bytes.Buffer cannot fail
	zw.Close()
	return buf.Bytes()
}

// acceptsGzip reports whether the request's Accept-Encoding allows gzip
// (listed, and not with q=0).
func acceptsGzip(r *http.Request) bool {
	for _, v := range r.Header.Values("Accept-Encoding") {
		for part := range strings.SplitSeq(v, ",") {
			coding, params, _ := strings.Cut(part, ";")
			if !strings.EqualFold(strings.TrimSpace(coding), "gzip") {
				continue
			}
			for p := range strings.SplitSeq(params, ";") {
				k, val, _ := strings.Cut(strings.TrimSpace(p), "=")
				if strings.EqualFold(k, "q") {
					q, err := strconv.ParseFloat(val, 64)
					return err == nil && q > 0
				}
			}
			return true
		}
	}
	return false
}
