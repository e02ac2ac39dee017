// Package console serves the Latchkey console at /console: a small dashboard of
// plain HTML, CSS and ES modules embedded in the binary (nothing loads from a CDN)
// that speaks only the public GraphQL API on the same origin, with the key the user
// pastes. It is also the reference for tenants who build their own dashboards: usage
// charts (the usage query), a live panel (usageStats and usageEvents over
// graphql-transport-ws), keys, webhooks and their deliveries, and the request log
// (usageLogs).
//
// Assets are served under /console/assets/<hash>/, where <hash> covers every file,
// so the modules import one another by relative URL and are cached as immutable;
// the page itself is no-cache, with a Content-Security-Policy that allows only this
// origin (and ws:/wss: for the live panel) and no inline script or style.
package console

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"html/template"
	"io/fs"
	"net/http"
	"sort"
	"strings"
	"sync"

	"github.com/latchkey/latchkey/internal/transport/playground"
	"github.com/latchkey/latchkey/internal/transport/webasset"
)

// Path is where the console is served.
const Path = "/console"

// AssetPrefix is the URL path under which the console's files are served.
const AssetPrefix = "/console/assets/"

// contentSecurityPolicy is sent with the page: scripts, styles and connections only
// to this origin (WebSocket for the live panel), no inline script or style.
const contentSecurityPolicy = "default-src 'none'; " +
	"script-src 'self'; " +
	"style-src 'self'; " +
	"connect-src 'self'; " + // CSP 3: 'self' covers ws:// and wss:// to this host
	"img-src 'self' data:; " +
	"base-uri 'none'; " +
	"form-action 'none'; " +
	"frame-ancestors 'none'"

//go:embed assets
var assetFS embed.FS

//go:embed page.html
var pageTemplate string

// bundle is every file of the console with the hash that names this version.
type bundle struct {
	hash  string
	files map[string]*webasset.File
}

// load reads the embedded files, and the WebSocket client the playground embeds,
// once.
var load = sync.OnceValue(func() *bundle {
	files := map[string][]byte{}
	err := fs.WalkDir(assetFS, "assets", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := assetFS.ReadFile(p)
		files[strings.TrimPrefix(p, "assets/")] = body
		return err
	})
	if err != nil {
		panic("console: reading embedded assets: " + err.Error())
	}
	ws, ok := playground.Asset("gqlws.js")
	if !ok {
		panic("console: the playground embeds no gqlws.js")
	}
	files["gqlws.js"] = ws
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	h := sha256.New()
	b := &bundle{files: map[string]*webasset.File{}}
	for _, n := range names {
		h.Write([]byte(n))
		h.Write([]byte{0})
		h.Write(files[n])
		b.files[n] = webasset.NewFile(n, files[n])
	}
	b.hash = hex.EncodeToString(h.Sum(nil)[:8])
	return b
})

// pageConfig is rendered as JSON into the page and read by app.js.
type pageConfig struct {
	Endpoint string `json:"endpoint"`
}

// Register mounts the console page at "GET /console" and its assets under
// "GET /console/assets/" on mux. endpoint is the GraphQL path, e.g. "/query".
func Register(mux *http.ServeMux, endpoint string) {
	b := load()
	tmpl := template.Must(template.New("page").Parse(pageTemplate))
	var page bytes.Buffer
	err := tmpl.Execute(&page, struct {
		Assets string
		Config pageConfig
	}{Assets: AssetPrefix + b.hash + "/", Config: pageConfig{Endpoint: endpoint}})
	if err != nil {
		panic("console: rendering page: " + err.Error())
	}
	servePage := webasset.Page(page.Bytes(), contentSecurityPolicy)
	mux.HandleFunc("GET "+Path, servePage)
	mux.HandleFunc("GET "+Path+"/{$}", servePage)
	mux.HandleFunc("GET "+AssetPrefix, func(w http.ResponseWriter, r *http.Request) {
		rest, ok := strings.CutPrefix(r.URL.Path, AssetPrefix+b.hash+"/")
		f := b.files[rest]
		if !ok || f == nil {
			http.NotFound(w, r)
			return
		}
		f.ServeHTTP(w, r)
	})
}
