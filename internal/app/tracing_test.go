package app_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/latchkey/latchkey/internal/app"
	"github.com/latchkey/latchkey/internal/app/apptest"
	"github.com/latchkey/latchkey/internal/platform/config"
	"github.com/latchkey/latchkey/internal/platform/tracing"
)

// One request's spans form one tree under the caller's trace: the HTTP server span,
// the GraphQL operation, the resolver, and the database statements the resolver
// runs. A webhook attempt is a span of its own.
func TestTraceOfOneRequest(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	e := apptest.New(t, "sqlite", app.Options{Tracing: tracing.WithProvider(tp)}, func(c *config.Config) {
		c.WebhookAllowPrivate, c.WebhookAllowHTTP = true, true
	})
	tid := e.Tenant("traced")
	_, key := e.Key(e.AdminToken, tid, "keys:read", "webhooks:write")
	exp.Reset()

	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	req, _ := http.NewRequest(http.MethodPost, e.Server.URL+"/query", strings.NewReader(`{"query":"query Keys { apiKeys(first: 5) { edges { node { id } } } }"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-API-Key", key)
	req.Header.Set("traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
	if r := e.Send(req); r.Status != http.StatusOK || r.Code() != "" {
		t.Fatalf("HTTP %d %s", r.Status, r.Raw)
	}

	spans := exp.GetSpans()
	byName := map[string]tracetest.SpanStub{}
	for _, s := range spans {
		// The server's background work (the webhook dispatcher's polls, the usage
		// recorder's writes) makes traces of its own, and may run during the request:
		// a root span of a statement on a table this request does not touch is that.
		// Anything else outside the caller's trace lost the request's context.
		statement := false
		for _, verb := range []string{"SELECT ", "INSERT ", "UPDATE ", "DELETE ", "COPY "} {
			statement = statement || strings.HasPrefix(s.Name, verb)
		}
		background := statement && !s.Parent.IsValid() && !strings.Contains(s.Name, "api_keys")
		if s.SpanContext.TraceID().String() != traceID {
			if !background {
				t.Errorf("span %q is in trace %s, not the caller's", s.Name, s.SpanContext.TraceID())
			}
			continue
		}
		if _, seen := byName[s.Name]; !seen {
			byName[s.Name] = s
		}
	}
	parentOf := func(child, parent string) {
		t.Helper()
		c, ok := byName[child]
		if !ok {
			t.Fatalf("no span %q among %v", child, names(spans))
		}
		if parent == "" {
			if c.Parent.SpanID().String() != "00f067aa0ba902b7" || !c.Parent.IsRemote() {
				t.Fatalf("%q continues %s, want the caller's span", child, c.Parent.SpanID())
			}
			return
		}
		p, ok := byName[parent]
		if !ok {
			t.Fatalf("no span %q among %v", parent, names(spans))
		}
		for _, s := range spans { // the first of its name, or another (the verifier reads keys too)
			if s.Name == child && s.Parent.SpanID() == p.SpanContext.SpanID() {
				byName[child] = s
				return
			}
		}
		t.Fatalf("no %q is a child of %q (spans: %v)", child, parent, names(spans))
	}
	parentOf("POST /query", "")
	parentOf("query Keys", "POST /query")
	parentOf("Query.apiKeys", "query Keys")
	parentOf("SELECT api_keys", "Query.apiKeys")
	if s := byName["SELECT api_keys"]; !strings.Contains(attr(s, "db.query.text"), "FROM") || attr(s, "db.system.name") != "sqlite" {
		t.Fatalf("database span attributes: %v", s.Attributes)
	}
	for _, s := range spans {
		if strings.Contains(attr(s, "db.query.text"), key) {
			t.Fatal("a span carries the key")
		}
	}

	// A webhook attempt.
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusAccepted) }))
	t.Cleanup(receiver.Close)
	var wh struct {
		CreateWebhook struct{ Webhook struct{ ID string } }
	}
	e.MustDo(key, `mutation($u: String!) { createWebhook(input: {url: $u, events: ["webhook.test"]}) { webhook { id } } }`, map[string]any{"u": receiver.URL}, &wh)
	e.MustDo(key, `mutation($id: ID!) { sendTestWebhook(id: $id) { id } }`, map[string]any{"id": wh.CreateWebhook.Webhook.ID}, &struct{}{})
	waitFor(t, 10*time.Second, func() bool {
		for _, s := range exp.GetSpans() {
			if s.Name == "webhook.attempt webhook.test" && attr(s, "http.response.status_code") == "202" && attr(s, "webhook.outcome") != "" {
				return true
			}
		}
		return false
	})
}

// Without OTEL_* variables the app has no tracing at all.
func TestTracingOffByDefault(t *testing.T) {
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "")
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")
	e := apptest.New(t, "sqlite", app.Options{}, nil)
	if e.App.Tracing != nil {
		t.Fatal("tracing is on without OTEL_* variables")
	}
}

func names(spans tracetest.SpanStubs) []string {
	var out []string
	for _, s := range spans {
		out = append(out, s.Name)
	}
	return out
}

func attr(s tracetest.SpanStub, key string) string {
	for _, a := range s.Attributes {
		if string(a.Key) == key {
			return a.Value.Emit()
		}
	}
	return ""
}
