package app

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/latchkey/latchkey/internal/domain/webhook"
)

// traceAttempt records a webhook delivery attempt as a client span from the
// dispatcher's report of it (tr nil: tracing is off). The attempt runs in the
// background, so the span starts a trace of its own.
func traceAttempt(tr trace.Tracer, r webhook.AttemptResult) {
	if tr == nil {
		return
	}
	_, span := tr.Start(context.Background(), "webhook.attempt "+r.EventType,
		trace.WithSpanKind(trace.SpanKindClient),
		trace.WithTimestamp(r.At),
		trace.WithAttributes(
			attribute.String("webhook.id", r.WebhookID),
			attribute.String("webhook.delivery.id", r.DeliveryID),
			attribute.String("webhook.event.id", r.EventID),
			attribute.String("webhook.event.type", r.EventType),
			attribute.String("latchkey.tenant.id", r.TenantID),
			attribute.Int("webhook.attempt", r.Attempt),
			attribute.String("webhook.outcome", string(r.Outcome)),
		))
	if r.StatusCode != 0 {
		span.SetAttributes(attribute.Int("http.response.status_code", r.StatusCode))
	}
	if r.Error != "" {
		span.SetStatus(codes.Error, r.Error)
	}
	span.End(trace.WithTimestamp(r.At.Add(r.Latency)))
}
