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
	"compress/gzip"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"html/template"
	"io/fs"
	"net/http"
	"path"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/latchkey/latchkey/internal/transport/playground"
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
	"connect-src 'self' ws: wss:; " +
	"img-src 'self' data:; " +
	"base-uri 'none'; " +
	"form-action 'none'; " +
	"frame-ancestors 'none'"

//go:embed assets
var assetFS embed.FS

//go:embed page.html
var pageTemplate string

var contentTypes = map[string]string{
	".js":  "text/javascript; charset=utf-8",
	".css": "text/css; charset=utf-8",
	".svg": "image/svg+xml",
}

type asset struct {
	contentType string
	body        []byte
	gzipped     []byte // nil when not worth it
}

// bundle is every file of the console with the hash that names this version.
type bundle struct {
	hash  string
	files map[string]*asset
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
	b := &bundle{files: map[string]*asset{}}
	for _, n := range names {
		h.Write([]byte(n))
		h.Write([]byte{0})
		h.Write(files[n])
		ct, ok := contentTypes[path.Ext(n)]
		if !ok {
			ct = "text/plain; charset=utf-8"
		}
		a := &asset{contentType: ct, body: files[n]}
		if len(a.body) >= 1024 {
			var buf bytes.Buffer
			zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
			zw.Write(a.body)
			zw.Close()
			a.gzipped = buf.Bytes()
		}
		b.files[n] = a
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
	body := page.Bytes()
	sum := sha256.Sum256(body)
	etag := `"` + hex.EncodeToString(sum[:8]) + `"`
	servePage := func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Type", "text/html; charset=utf-8")
		h.Set("Cache-Control", "no-cache")
		h.Set("Content-Security-Policy", contentSecurityPolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("ETag", etag)
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(body))
	}
	mux.HandleFunc("GET "+Path, servePage)
	mux.HandleFunc("GET "+Path+"/{$}", servePage)
	mux.HandleFunc("GET "+AssetPrefix, func(w http.ResponseWriter, r *http.Request) {
		rest, ok := strings.CutPrefix(r.URL.Path, AssetPrefix+b.hash+"/")
		a := b.files[rest]
		if !ok || a == nil {
			http.NotFound(w, r)
			return
		}
		h := w.Header()
		h.Set("Content-Type", a.contentType)
		h.Set("Cache-Control", "public, max-age=31536000, immutable")
		h.Set("X-Content-Type-Options", "nosniff")
		body := a.body
		if a.gzipped != nil {
			h.Add("Vary", "Accept-Encoding")
			if strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
				body = a.gzipped
				h.Set("Content-Encoding", "gzip")
			}
		}
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(body))
	})
}
