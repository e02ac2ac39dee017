// Package loadstub holds the bare baselines the load harness and the benchmarks measure
// the server against: the I/O of POST /v1/keys/verify and of POST /query, nothing else.
package loadstub

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
)

// Verify reads and decodes the verification body as the server does (at most 16
// KiB, one JSON object of known fields, key required) and writes answer: the same
// I/O as POST /v1/keys/verify without authentication, lookup, limits or recording.
func Verify(answer []byte) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 16<<10+1))
		if err != nil || len(body) > 16<<10 {
			http.Error(w, `{"error":{"code":"BAD_USER_INPUT"}}`, http.StatusBadRequest)
			return
		}
		var in struct {
			Key         *string  `json:"key"`
			Cost        *int     `json:"cost"`
			Permissions []string `json:"permissions"`
			Tag         *string  `json:"tag"`
		}
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&in); err != nil || dec.More() || in.Key == nil {
			http.Error(w, `{"error":{"code":"BAD_USER_INPUT"}}`, http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(answer)
	}
}
