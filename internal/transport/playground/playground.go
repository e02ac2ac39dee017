// Package playground serves a GraphiQL playground for the GraphQL API that
// works fully offline: GraphiQL, React and ReactDOM are embedded in the
// binary (see assets/VERSIONS) and the page loads nothing from a CDN.
//
// Asset URLs carry a hash of the file's content
// (/playground/assets/<hash>/<name>), so they are served as immutable and
// cached for a year; the page itself is served with Cache-Control: no-cache
// and a Content-Security-Policy that only allows this origin (plus ws:/wss:
// for subscriptions) and no inline script.
package playground

import (
	"bytes"
	"embed"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"strings"
	"sync"

	"github.com/latchkey/latchkey/internal/transport/webasset"
)

// Asset returns the embedded file name (e.g. "gqlws.js") and whether it exists; the
// console serves the WebSocket client from here too.
func Asset(name string) ([]byte, bool) {
	a, ok := loadAssets().byName[name]
	if !ok {
		return nil, false
	}
	return a.Body, true
}

// AssetPrefix is the URL path under which Register serves the embedded assets.
const AssetPrefix = "/playground/assets/"

// DefaultQuery is the query shown in the editor on a first visit.
const DefaultQuery = `# Welcome to the Latchkey GraphQL playground.
#
# Requests are authenticated with an API key.
# Open the "Headers" tab below this editor and
# paste your key as the value of X-API-Key:
#
#   {"X-API-Key": "<your API key>"}
#
# Then run this query (the play button or
# Ctrl-Enter) to see whether the key is an admin
# key and which scopes it has:

{ viewer { isAdmin scopes } }

# The Headers tab is kept in this browser tab's
# session storage: the key is forgotten when the
# tab closes. Subscriptions run over WebSocket;
# a refused key stops them at once (no retries).
# Switching playground tabs ends a running
# subscription: watch it in its own browser tab,
# or in the console at /console.
`

// DefaultHeaders is the content of the headers editor on a first visit.
const DefaultHeaders = `{"X-API-Key": ""}`

// contentSecurityPolicy is sent with the page. Scripts and styles come only
// from this origin (boot.js replaces an inline script); fonts and images may
// also be data: URLs, which graphiql.min.css uses for its embedded fonts.
const contentSecurityPolicy = "default-src 'none'; " +
	"script-src 'self'; " +
	"style-src 'self'; " +
	"connect-src 'self'; " + // CSP 3: 'self' covers ws:// and wss:// to this host
	"img-src 'self' data:; " +
	"font-src 'self' data:; " +
	"base-uri 'none'; " +
	"form-action 'none'; " +
	"frame-ancestors 'none'"

//go:embed assets
var assetFS embed.FS

//go:embed page.html
var pageTemplate string

// asset is one embedded file and the URL it is served at.
type asset struct {
	url string // full URL path, with content hash
	*webasset.File
}

// assetTable holds the embedded assets by URL path and by file name.
type assetTable struct {
	byURL  map[string]*asset
	byName map[string]*asset
}

// loadAssets reads and hashes the embedded files once.
var loadAssets = sync.OnceValue(func() *assetTable {
	t := &assetTable{byURL: map[string]*asset{}, byName: map[string]*asset{}}
	err := fs.WalkDir(assetFS, "assets", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := assetFS.ReadFile(p)
		if err != nil {
			return err
		}
		name := strings.TrimPrefix(p, "assets/")
		a := &asset{url: AssetPrefix + webasset.Hash(body) + "/" + name, File: webasset.NewFile(name, body)}
		t.byURL[a.url] = a
		t.byName[name] = a
		return nil
	})
	if err != nil {
		panic("playground: reading embedded assets: " + err.Error())
	}
	return t
})

// pageConfig is rendered as JSON into the page and read by assets/boot.js.
type pageConfig struct {
	Endpoint       string `json:"endpoint"`
	DefaultQuery   string `json:"defaultQuery"`
	DefaultHeaders string `json:"defaultHeaders"`
}

// renderPage renders the playground HTML for title and endpoint.
func renderPage(assets *assetTable, title, endpoint string) ([]byte, error) {
	tmpl, err := template.New("page").Funcs(template.FuncMap{
		"asset": func(name string) (string, error) {
			a, ok := assets.byName[name]
			if !ok {
				return "", fmt.Errorf("no embedded asset %q", name)
			}
			return a.url, nil
		},
	}).Parse(pageTemplate)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	err = tmpl.Execute(&buf, struct {
		Title  string
		Config pageConfig
	}{
		Title: title,
		Config: pageConfig{
			Endpoint:       endpoint,
			DefaultQuery:   DefaultQuery,
			DefaultHeaders: DefaultHeaders,
		},
	})
	return buf.Bytes(), err
}

// Register mounts the playground page at "GET /{$}" and its embedded assets under "GET /playground/assets/" on mux.
// endpoint is the GraphQL HTTP path, e.g. "/query"; the WebSocket URL is derived from the page's location in JS (ws:// or wss:// + host + endpoint).
//
// title is the page title. Both title and endpoint are HTML/JSON-escaped.
// Register panics if endpoint is empty or if mux already has either pattern.
func Register(mux *http.ServeMux, title, endpoint string) {
	if endpoint == "" {
		panic("playground: empty GraphQL endpoint")
	}
	assets := loadAssets()
	page, err := renderPage(assets, title, endpoint)
	if err != nil {
		panic("playground: rendering page: " + err.Error())
	}
	mux.HandleFunc("GET /{$}", webasset.Page(page, contentSecurityPolicy))
	mux.Handle("GET "+AssetPrefix, serveAsset(assets))
}

// serveAsset serves the embedded file whose hashed URL is the request path;
// any other path under AssetPrefix, including a stale hash, is 404.
func serveAsset(assets *assetTable) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		a, ok := assets.byURL[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		a.ServeHTTP(w, r)
	}
}
