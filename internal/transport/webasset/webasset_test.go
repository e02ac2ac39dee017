package webasset

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// One range is served as 206; a header of several ranges is not parsed at all and the
// whole file is sent as 200: otherwise 6,000 one-byte ranges of a 24 KB header would
// be parsed (about 20 bytes allocated per header byte) and answered with a multipart
// body of 6,000 parts, some 25 times the request.
func TestRangeRequests(t *testing.T) {
	body := []byte(strings.Repeat("0123456789", 1000)) // 10,000 bytes
	f := NewFile("app.js", body)
	page := Page(body, "default-src 'none'")
	serve := map[string]http.HandlerFunc{"asset": f.ServeHTTP, "page": page}
	cases := []struct {
		name, rng string
		status    int
		body      string
	}{
		{"no range", "", 200, string(body)},
		{"one range", "bytes=2-4", 206, "234"},
		{"two ranges", "bytes=0-0,2-2", 200, string(body)},
		{"6,000 ranges", "bytes=0-0" + strings.Repeat(",0-0", 6000), 200, string(body)},
		{"6,000 distinct ranges", "bytes=0-0" + strings.Repeat(",1-1", 6000), 200, string(body)},
	}
	for kind, h := range serve {
		for _, tc := range cases {
			t.Run(kind+" "+tc.name, func(t *testing.T) {
				r := httptest.NewRequest(http.MethodGet, "/x", nil)
				if tc.rng != "" {
					r.Header.Set("Range", tc.rng)
				}
				w := httptest.NewRecorder()
				h(w, r)
				if w.Code != tc.status || w.Body.String() != tc.body {
					t.Fatalf("HTTP %d, %d bytes (%s), want %d, %d bytes", w.Code, w.Body.Len(), w.Header().Get("Content-Type"), tc.status, len(tc.body))
				}
				if r.Header.Get("Range") != tc.rng {
					t.Fatal("the caller's request was changed")
				}
			})
		}
	}
	// Two Range header lines are several ranges too.
	r := httptest.NewRequest(http.MethodGet, "/x", nil)
	r.Header.Add("Range", "bytes=0-0")
	r.Header.Add("Range", "bytes=2-2")
	w := httptest.NewRecorder()
	f.ServeHTTP(w, r)
	if w.Code != 200 || w.Body.Len() != len(body) {
		t.Fatalf("two Range lines: HTTP %d, %d bytes", w.Code, w.Body.Len())
	}
}
