package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"log"
	"net/http"
	"os"

	"github.com/latchkey/latchkey/client"
)

func ExampleClient_Verify() {
	c := client.New("https://latchkey.example.com", os.Getenv("LATCHKEY_KEY"))
	res, err := c.Verify(context.Background(), "acme_live_...", client.VerifyOptions{
		Permissions: []string{"documents:read"},
		Tag:         "export",
	})
	switch {
	case errors.Is(err, client.ErrUnavailable):
		log.Print("Latchkey cannot be asked now: ", err)
	case err != nil:
		log.Fatal(err) // a management key without keys:verify, a bad request, ...
	case !res.Valid:
		log.Printf("refused: %s", res.Code)
	default:
		log.Printf("key of %s (%v)", res.OwnerID, res.Meta["plan"])
	}
}

func ExampleClient_Middleware() {
	c := client.New("https://latchkey.example.com", os.Getenv("LATCHKEY_KEY"))
	documents := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key, _ := client.FromContext(r.Context())
		_ = json.NewEncoder(w).Encode(map[string]any{"owner": key.OwnerID})
	})
	mux := http.NewServeMux()
	mux.Handle("GET /documents", c.Middleware(client.MiddlewareOptions{
		Verify: client.VerifyOptions{Permissions: []string{"documents:read"}, Tag: "GET /documents"},
	})(documents))
	log.Fatal(http.ListenAndServe(":8081", mux))
}
