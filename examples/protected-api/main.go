// Command protected-api is a small HTTP API whose callers present consumer keys
// issued by Latchkey; GET /documents needs a key holding documents:read.
//
//	LATCHKEY_URL=http://localhost:8080 LATCHKEY_KEY=lk_live_... PORT=8081 go run ./examples/protected-api
//	curl -s localhost:8081/documents -H 'X-API-Key: acme_live_...'
//
// LATCHKEY_KEY is a management key of the tenant holding keys:verify; LATCHKEY_URL
// defaults to http://localhost:8080 and PORT to 8081.
package main

import (
	"log"
	"net/http"
	"os"
	"time"

	"github.com/latchkey/latchkey/client"
	"github.com/latchkey/latchkey/examples/protected-api/api"
)

func main() {
	key := os.Getenv("LATCHKEY_KEY")
	if key == "" {
		log.Fatal("LATCHKEY_KEY is required: a management key holding keys:verify")
	}
	latchkeyURL := getenv("LATCHKEY_URL", "http://localhost:8080")
	port := getenv("PORT", "8081")

	lk := client.New(latchkeyURL, key, client.WithTimeout(2*time.Second))
	srv := &http.Server{Addr: ":" + port, Handler: api.New(lk), ReadHeaderTimeout: 5 * time.Second}
	log.Printf("protected API on :%s, keys checked by %s", port, latchkeyURL)
	log.Fatal(srv.ListenAndServe())
}

func getenv(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
