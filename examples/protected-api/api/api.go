// Package api is the HTTP API of the protected-api example: documents that the
// callers of a tenant's own API read with the consumer keys Latchkey issued to them.
// The example program serves it; its tests run it against a real Latchkey server.
package api

import (
	"encoding/json"
	"net/http"

	"github.com/latchkey/latchkey/client"
)

// Document is what the API serves.
type Document struct {
	ID    string `json:"id"`
	Title string `json:"title"`
}

var documents = []Document{{ID: "doc_1", Title: "Getting started"}, {ID: "doc_2", Title: "Pricing"}}

// New returns the API's handler, which checks every caller's key with lk:
//
//	GET /documents   needs a consumer key holding documents:read
//	GET /healthz     open
func New(lk *client.Client) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /documents", requires(lk, "documents:read", "GET /documents", listDocuments))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	return mux
}

// requires protects h: only keys holding permission pass, and each call is recorded
// in the tenant's usage log under tag.
func requires(lk *client.Client, permission, tag string, h http.HandlerFunc) http.Handler {
	return lk.Middleware(client.MiddlewareOptions{
		Verify: client.VerifyOptions{Permissions: []string{permission}, Tag: tag},
	})(h)
}

// listDocuments answers with the documents and who asked (the key's owner and the
// plan stored in its meta).
func listDocuments(w http.ResponseWriter, r *http.Request) {
	key, _ := client.FromContext(r.Context()) // always there behind the middleware
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"owner":     key.OwnerID,
		"plan":      key.Meta["plan"],
		"documents": documents,
	})
}
