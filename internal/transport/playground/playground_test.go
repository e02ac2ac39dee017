package playground

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path"
	"regexp"
	"strings"
	"testing"
)

const (
	testTitle    = "Latchkey Playground"
	testEndpoint = "/query"
)

// newServer starts a real HTTP server with the playground registered.
func newServer(t *testing.T, title, endpoint string) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	Register(mux, title, endpoint)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	// Ask for gzip only where a test says so, and see it undecoded.
	srv.Client().Transport.(*http.Transport).DisableCompression = true
	return srv
}

// do sends a request to srv and returns the response with its body read.
func do(t *testing.T, srv *httptest.Server, method, path string, header http.Header) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

func getPage(t *testing.T, srv *httptest.Server) (*http.Response, string) {
	t.Helper()
	resp, body := do(t, srv, http.MethodGet, "/", nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET / = %d, want 200", resp.StatusCode)
	}
	return resp, string(body)
}

var refAttr = regexp.MustCompile(`\b(?:src|href)="([^"]*)"`)

// pageRefs returns the src and href attribute values of the page.
func pageRefs(page string) []string {
	var refs []string
	for _, m := range refAttr.FindAllStringSubmatch(page, -1) {
		refs = append(refs, m[1])
	}
	return refs
}

var configBlock = regexp.MustCompile(`(?s)<script id="playground-config" type="application/json">(.*?)</script>`)

// pageConfigOf decodes the JSON config block that boot.js reads.
func pageConfigOf(t *testing.T, page string) pageConfig {
	t.Helper()
	m := configBlock.FindStringSubmatch(page)
	if m == nil {
		t.Fatal("page has no playground-config block")
	}
	var cfg pageConfig
	if err := json.Unmarshal([]byte(m[1]), &cfg); err != nil {
		t.Fatalf("config block is not JSON: %v\n%s", err, m[1])
	}
	return cfg
}

func TestPageHeaders(t *testing.T) {
	resp, _ := getPage(t, newServer(t, testTitle, testEndpoint))
	tests := []struct {
		header string
		want   string
	}{
		{"Content-Type", "text/html; charset=utf-8"},
		{"Cache-Control", "no-cache"},
		{"X-Content-Type-Options", "nosniff"},
		{"Content-Security-Policy", contentSecurityPolicy},
	}
	for _, tt := range tests {
		if got := resp.Header.Get(tt.header); got != tt.want {
			t.Errorf("%s = %q, want %q", tt.header, got, tt.want)
		}
	}
}

func TestPageCSPDirectives(t *testing.T) {
	resp, _ := getPage(t, newServer(t, testTitle, testEndpoint))
	directives := map[string]string{}
	for d := range strings.SplitSeq(resp.Header.Get("Content-Security-Policy"), ";") {
		name, value, _ := strings.Cut(strings.TrimSpace(d), " ")
		directives[name] = value
	}
	tests := []struct {
		directive string
		want      string
	}{
		{"default-src", "'none'"},
		{"script-src", "'self'"},
		{"style-src", "'self'"},
		{"connect-src", "'self'"}, // CSP 3 'self' covers this host's ws:// and wss://
		{"img-src", "'self' data:"},
		{"font-src", "'self' data:"},
	}
	for _, tt := range tests {
		if got := directives[tt.directive]; got != tt.want {
			t.Errorf("CSP %s = %q, want %q", tt.directive, got, tt.want)
		}
	}
}

func TestPageLoadsNothingExternal(t *testing.T) {
	_, page := getPage(t, newServer(t, testTitle, testEndpoint))
	lower := strings.ToLower(page)
	for _, banned := range []string{"unpkg", "jsdelivr", "cdn", `src="http`, `href="http`, `src="//`, `href="//`, "<script>"} {
		if strings.Contains(lower, banned) {
			t.Errorf("page contains %q", banned)
		}
	}
	refs := pageRefs(page)
	if len(refs) == 0 {
		t.Fatal("page references no assets")
	}
	for _, ref := range refs {
		if !strings.HasPrefix(ref, AssetPrefix) {
			t.Errorf("page references %q, outside %s", ref, AssetPrefix)
		}
	}
}

func TestPageContent(t *testing.T) {
	_, page := getPage(t, newServer(t, testTitle, testEndpoint))
	cfg := pageConfigOf(t, page)
	tests := []struct {
		name string
		got  string
		want string
	}{
		{"title", page, "<title>" + testTitle + "</title>"},
		{"boot script", page, `src="` + loadAssets().byName["boot.js"].url + `"`},
		{"header hint in page", page, "X-API-Key"},
		{"endpoint", cfg.Endpoint, testEndpoint},
		{"query tells where to paste the key", cfg.DefaultQuery, `"Headers" tab`},
		{"query names the header", cfg.DefaultQuery, "X-API-Key"},
		{"query to run", cfg.DefaultQuery, "{ viewer { isAdmin scopes } }"},
		{"headers prefill", cfg.DefaultHeaders, `{"X-API-Key": ""}`},
	}
	for _, tt := range tests {
		if !strings.Contains(tt.got, tt.want) {
			t.Errorf("%s: %q not found in\n%s", tt.name, tt.want, tt.got)
		}
	}
	var headers map[string]string
	if err := json.Unmarshal([]byte(cfg.DefaultHeaders), &headers); err != nil {
		t.Fatalf("default headers are not a JSON object: %v", err)
	}
	if v, ok := headers["X-API-Key"]; !ok || v != "" {
		t.Errorf("default headers = %v, want an empty X-API-Key", headers)
	}
}

func TestPageEscapesTitleAndEndpoint(t *testing.T) {
	const (
		title    = `<script>alert("t")</script>`
		endpoint = `/q"></script><script>alert(1)</script>`
	)
	_, page := getPage(t, newServer(t, title, endpoint))
	if strings.Contains(page, "alert(1)</script>") || strings.Contains(page, `<script>alert("t")`) {
		t.Fatalf("title or endpoint not escaped:\n%s", page)
	}
	if !strings.Contains(page, "<title>&lt;script&gt;") {
		t.Errorf("title not HTML-escaped:\n%s", page)
	}
	if cfg := pageConfigOf(t, page); cfg.Endpoint != endpoint {
		t.Errorf("config endpoint = %q, want %q", cfg.Endpoint, endpoint)
	}
}

func TestPageAssetsServed(t *testing.T) {
	srv := newServer(t, testTitle, testEndpoint)
	_, page := getPage(t, srv)
	wantType := map[string]string{
		".js":  "text/javascript; charset=utf-8",
		".css": "text/css; charset=utf-8",
		".svg": "image/svg+xml",
	}
	seen := map[string]bool{}
	for _, ref := range pageRefs(page) {
		name := path.Base(ref)
		seen[name] = true
		t.Run(name, func(t *testing.T) {
			resp, body := do(t, srv, http.MethodGet, ref, nil)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("GET %s = %d, want 200", ref, resp.StatusCode)
			}
			if len(body) == 0 {
				t.Errorf("GET %s: empty body", ref)
			}
			checks := []struct{ header, want string }{
				{"Content-Type", wantType[path.Ext(name)]},
				{"Cache-Control", "public, max-age=31536000, immutable"},
				{"X-Content-Type-Options", "nosniff"},
			}
			for _, c := range checks {
				if got := resp.Header.Get(c.header); got != c.want {
					t.Errorf("%s = %q, want %q", c.header, got, c.want)
				}
			}
			embedded, _ := assetFS.ReadFile("assets/" + name)
			if !bytes.Equal(body, embedded) {
				t.Errorf("body (%d bytes) differs from embedded file (%d bytes)", len(body), len(embedded))
			}
		})
	}
	for _, name := range []string{
		"react.production.min.js",
		"react-dom.production.min.js",
		"graphiql.min.js",
		"graphiql.min.css",
		"boot.js",
		"playground.css",
	} {
		if !seen[name] {
			t.Errorf("page does not reference %s", name)
		}
	}
}

func TestAssetNotFound(t *testing.T) {
	srv := newServer(t, testTitle, testEndpoint)
	graphiqlURL := loadAssets().byName["graphiql.min.js"].url
	tests := []struct {
		name string
		path string
	}{
		{"unknown file", AssetPrefix + "nope.js"},
		{"unknown file under hash", path.Dir(graphiqlURL) + "/nope.js"},
		{"stale hash", AssetPrefix + "0000000000000000/graphiql.min.js"},
		{"unhashed name", AssetPrefix + "graphiql.min.js"},
		{"prefix itself", AssetPrefix},
		{"hash directory", path.Dir(graphiqlURL) + "/"},
		{"traversal", AssetPrefix + "..%2fplayground.go"},
		{"page template", AssetPrefix + "page.html"},
		{"other page path", "/playground"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, _ := do(t, srv, http.MethodGet, tt.path, nil)
			if resp.StatusCode != http.StatusNotFound {
				t.Errorf("GET %s = %d, want 404", tt.path, resp.StatusCode)
			}
		})
	}
}

func TestMethods(t *testing.T) {
	srv := newServer(t, testTitle, testEndpoint)
	asset := loadAssets().byName["boot.js"].url
	tests := []struct {
		method, path string
		want         int
	}{
		{http.MethodHead, "/", http.StatusOK},
		{http.MethodHead, asset, http.StatusOK},
		{http.MethodPost, "/", http.StatusMethodNotAllowed},
		{http.MethodPost, asset, http.StatusMethodNotAllowed},
	}
	for _, tt := range tests {
		resp, _ := do(t, srv, tt.method, tt.path, nil)
		if resp.StatusCode != tt.want {
			t.Errorf("%s %s = %d, want %d", tt.method, tt.path, resp.StatusCode, tt.want)
		}
	}
}

func TestAssetGzip(t *testing.T) {
	srv := newServer(t, testTitle, testEndpoint)
	a := loadAssets().byName["graphiql.min.js"]
	tests := []struct {
		acceptEncoding string
		wantGzip       bool
	}{
		{"gzip", true},
		{"br, gzip;q=0.8", true},
		{"GZIP", true},
		{"gzip;q=0", false},
		{"identity", false},
		{"", false},
	}
	for _, tt := range tests {
		t.Run(tt.acceptEncoding, func(t *testing.T) {
			resp, body := do(t, srv, http.MethodGet, a.url, http.Header{"Accept-Encoding": {tt.acceptEncoding}})
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status = %d", resp.StatusCode)
			}
			if got := resp.Header.Get("Vary"); got != "Accept-Encoding" {
				t.Errorf("Vary = %q, want Accept-Encoding", got)
			}
			gotGzip := resp.Header.Get("Content-Encoding") == "gzip"
			if gotGzip != tt.wantGzip {
				t.Fatalf("Content-Encoding = %q, want gzip: %v", resp.Header.Get("Content-Encoding"), tt.wantGzip)
			}
			if gotGzip {
				zr, err := gzip.NewReader(bytes.NewReader(body))
				if err != nil {
					t.Fatal(err)
				}
				if body, err = io.ReadAll(zr); err != nil {
					t.Fatal(err)
				}
			}
			if !bytes.Equal(body, a.Body) {
				t.Errorf("decoded body differs from embedded file")
			}
		})
	}
}

func TestConditionalRequests(t *testing.T) {
	srv := newServer(t, testTitle, testEndpoint)
	tests := []struct {
		name, path, acceptEncoding string
	}{
		{"page", "/", ""},
		{"asset", loadAssets().byName["react.production.min.js"].url, "identity"},
		{"gzipped asset", loadAssets().byName["react.production.min.js"].url, "gzip"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{"Accept-Encoding": {tt.acceptEncoding}}
			resp, _ := do(t, srv, http.MethodGet, tt.path, h)
			etag := resp.Header.Get("ETag")
			if etag == "" {
				t.Fatal("no ETag")
			}
			h.Set("If-None-Match", etag)
			resp, _ = do(t, srv, http.MethodGet, tt.path, h)
			if resp.StatusCode != http.StatusNotModified {
				t.Errorf("If-None-Match %s: status %d, want 304", etag, resp.StatusCode)
			}
		})
	}
}

func TestRegisterEmptyEndpointPanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("Register with an empty endpoint did not panic")
		}
	}()
	Register(http.NewServeMux(), testTitle, "")
}
