package app_test

import (
	"bytes"
	"net/http"
	"syscall"
	"testing"

	"github.com/latchkey/latchkey/cmd/loadtest/loadstub"
	"github.com/latchkey/latchkey/internal/app"
	"github.com/latchkey/latchkey/internal/app/apptest"
)

// BenchmarkVerifyHandler compares, without the network, what one POST
// /v1/keys/verify costs the server's handler against a bare net/http handler
// that reads and strictly decodes the same body and writes a fixed answer (the
// stub of `make load`). The recorder writes the usage rows on the same cores, so
// "latchkey" includes their cost (cpu-ns/op is the process's CPU time per
// verification); the syscalls both sides pay are left out, which makes this ratio
// lower than the one `make load` measures over real connections.
func BenchmarkVerifyHandler(b *testing.B) {
	e := apptest.New(b, benchDialect(), app.Options{}, nil)
	var tenant struct{ CreateTenant struct{ ID string } }
	e.MustDo(e.AdminToken, `mutation { createPlan(input: {name: "bench", keyRateLimit: 1000000000, keyRateLimitWindowSeconds: 3600}) { name } }`, nil, &struct{}{})
	e.MustDo(e.AdminToken, `mutation { createTenant(input: {name: "bench", slug: "bench", plan: "bench"}) { id } }`, nil, &tenant)
	_, verifier := e.Key(e.AdminToken, tenant.CreateTenant.ID, "keys:verify")
	var out struct {
		CreateApiKey struct{ Secret string }
	}
	e.MustDo(e.AdminToken, `mutation($t: ID!) { createApiKey(input: {tenantID: $t, name: "customer", kind: CONSUMER, scopes: [], rateLimit: 1000000000, rateLimitWindowSeconds: 3600, quota: 1000000000000, quotaPeriod: MONTH}) { secret } }`,
		map[string]any{"t": tenant.CreateTenant.ID}, &out)
	body := []byte(`{"key":"` + out.CreateApiKey.Secret + `","permissions":[],"tag":"bench"}`)
	for _, side := range []struct {
		name string
		h    http.Handler
	}{{"stub", loadstub.Verify([]byte(`{"valid":true,"code":"VALID"}`))}, {"latchkey", e.App.Handler}} {
		b.Run(side.name, func(b *testing.B) {
			serveParallel(b, side.h, "/v1/keys/verify", verifier, body)
		})
	}
}

// BenchmarkViewerHandler is BenchmarkVerifyHandler for GraphQL: the authenticated,
// rate-limited and recorded { viewer { apiKey { id } } } through the server's handler
// against bare gqlgen answering { __typename } (the stub of `make load`) and, as a
// reference, bare gqlgen answering the same query from constants, without the network,
// CPU per request with the recorder's writes included.
func BenchmarkViewerHandler(b *testing.B) {
	e := apptest.New(b, benchDialect(), app.Options{}, nil)
	var out struct {
		CreateApiKey struct{ Secret string }
	}
	e.MustDo(e.AdminToken, `mutation($t: ID!) { createApiKey(input: {tenantID: $t, name: "bench", scopes: [], rateLimit: 1000000000, rateLimitWindowSeconds: 3600, quota: 1000000000000, quotaPeriod: MONTH}) { secret } }`,
		map[string]any{"t": e.Tenant("bench")}, &out)
	for _, side := range []struct {
		name, body, key string
		h               http.Handler
	}{
		{"stub", `{"query":"{ __typename }"}`, "", loadstub.GraphQL()},
		{"stub-viewer", `{"query":"{ viewer { apiKey { id } } }"}`, "", loadstub.GraphQL()},
		{"latchkey", `{"query":"{ viewer { apiKey { id } } }"}`, out.CreateApiKey.Secret, e.App.Handler},
	} {
		b.Run(side.name, func(b *testing.B) {
			serveParallel(b, side.h, "/query", side.key, []byte(side.body))
		})
	}
}

// serveParallel serves POSTs of body to path with the credential key (if set) to h
// from parallel goroutines, without the network, and reports the process's CPU per
// request; every answer must be 200.
func serveParallel(b *testing.B, h http.Handler, path, key string, body []byte) {
	b.ReportAllocs()
	cpu := processCPU()
	defer func() { b.ReportMetric(float64(processCPU()-cpu)/float64(b.N), "cpu-ns/op") }()
	b.RunParallel(func(pb *testing.PB) {
		w := &discardWriter{h: http.Header{}}
		for pb.Next() {
			req, _ := http.NewRequest(http.MethodPost, "http://bench"+path, bytes.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			if key != "" {
				req.Header.Set("Authorization", "Bearer "+key)
			}
			clear(w.h)
			w.status = 0
			h.ServeHTTP(w, req)
			if w.status != http.StatusOK {
				b.Fatalf("HTTP %d", w.status)
			}
		}
	})
}

// processCPU is the CPU time this process has used (user and system), in
// nanoseconds: with the recorder writing on the same cores, CPU per operation is a
// steadier measure than the wall time.
func processCPU() int64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// discardWriter is a ResponseWriter that keeps the status and drops the body.
type discardWriter struct {
	h      http.Header
	status int
}

func (w *discardWriter) Header() http.Header { return w.h }
func (w *discardWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return len(p), nil
}
func (w *discardWriter) WriteHeader(s int) { w.status = s }
