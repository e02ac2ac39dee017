package console

import (
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

func serve(t *testing.T) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	Register(mux, "/query")
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func get(t *testing.T, url string) (*http.Response, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

var comments = regexp.MustCompile(`(?m)^\s*//.*$`)

var refs = regexp.MustCompile(`\b(?:src|href)="([^"#]*)"`)

// The page is served at /console with a strict CSP, references only its own hashed
// assets, and every asset (and every module an asset imports) is served.
func TestPageAndAssets(t *testing.T) {
	srv := serve(t)
	for _, p := range []string{"/console", "/console/"} {
		resp, page := get(t, srv.URL+p)
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/html; charset=utf-8" {
			t.Fatalf("GET %s: %d %s", p, resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe") {
			t.Fatalf("CSP %q", csp)
		}
		if strings.Contains(page, "<script>") || strings.Contains(page, "style=") {
			t.Fatal("inline script or style in the page")
		}
		prefix := AssetPrefix + load().hash + "/"
		for _, m := range refs.FindAllStringSubmatch(page, -1) {
			if !strings.HasPrefix(m[1], prefix) {
				t.Errorf("page references %q outside %s", m[1], prefix)
			}
		}
	}
	imports := regexp.MustCompile(`(?m)^import .*'\./([a-z]+\.js)';$|from '\./([a-z]+\.js)';$`)
	for name, a := range load().files {
		resp, body := get(t, srv.URL+AssetPrefix+load().hash+"/"+name)
		if resp.StatusCode != 200 || resp.Header.Get("Cache-Control") != "public, max-age=31536000, immutable" || body != string(a.Body) {
			t.Fatalf("GET %s: %d %q", name, resp.StatusCode, resp.Header.Get("Cache-Control"))
		}
		for _, m := range imports.FindAllStringSubmatch(body, -1) {
			dep := m[1] + m[2]
			if load().files[dep] == nil {
				t.Errorf("%s imports %s, which is not served", name, dep)
			}
		}
		// Code (comments and the SVG namespace aside) names no other origin.
		code := comments.ReplaceAllString(strings.ReplaceAll(body, "http://www.w3.org/2000/svg", ""), "")
		for _, banned := range []string{"http://", "https://", "//cdn", "unpkg", "jsdelivr"} {
			if strings.Contains(code, banned) && name != "favicon.svg" {
				t.Errorf("%s mentions %q", name, banned)
			}
		}
	}
	if resp, _ := get(t, srv.URL+AssetPrefix+"0000000000000000/app.js"); resp.StatusCode != 404 {
		t.Fatalf("stale hash: %d", resp.StatusCode)
	}
	if resp, _ := get(t, srv.URL+AssetPrefix+load().hash+"/nope.js"); resp.StatusCode != 404 {
		t.Fatalf("unknown file: %d", resp.StatusCode)
	}
}

// Assets are gzipped only for a client that accepts gzip (not with q=0), and carry
// an ETag that a revalidation answers with 304.
func TestAssetEncodingAndRevalidation(t *testing.T) {
	srv := serve(t)
	url := srv.URL + AssetPrefix + load().hash + "/console.css"
	do := func(h http.Header) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		req.Header = h
		resp, err := (&http.Client{Transport: &http.Transport{DisableCompression: true}}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	for ae, want := range map[string]string{"gzip": "gzip", "br, gzip;q=0.8": "gzip", "gzip;q=0": "", "identity": "", "": ""} {
		resp := do(http.Header{"Accept-Encoding": {ae}})
		if got := resp.Header.Get("Content-Encoding"); got != want {
			t.Errorf("Accept-Encoding %q: Content-Encoding %q, want %q", ae, got, want)
		}
		etag := resp.Header.Get("ETag")
		if etag == "" {
			t.Fatalf("Accept-Encoding %q: no ETag", ae)
		}
		if resp := do(http.Header{"Accept-Encoding": {ae}, "If-None-Match": {etag}}); resp.StatusCode != http.StatusNotModified {
			t.Errorf("Accept-Encoding %q, If-None-Match %s: %d, want 304", ae, etag, resp.StatusCode)
		}
	}
}
