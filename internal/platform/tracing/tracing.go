// Package tracing sets up OpenTelemetry tracing from the standard OTEL_* environment
// variables and hands the other floors their tracers.
//
// Tracing is on when an OTLP endpoint is configured (OTEL_EXPORTER_OTLP_ENDPOINT or
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) and neither OTEL_SDK_DISABLED=true nor
// OTEL_TRACES_EXPORTER=none says otherwise. Spans are then batched and exported over
// OTLP/HTTP (protobuf); the exporter reads its own variables (headers, timeout,
// compression, certificates), the resource OTEL_SERVICE_NAME (default latchkey) and
// OTEL_RESOURCE_ATTRIBUTES, the sampler OTEL_TRACES_SAMPLER(_ARG) (default
// parentbased_always_on). Off, New returns a nil Provider: the wiring installs no
// instrumentation at all, so tracing costs nothing.
package tracing

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
	"go.opentelemetry.io/otel/trace"
)

// Scope is the instrumentation scope of Latchkey's own spans.
const Scope = "github.com/latchkey/latchkey"

// Provider is the tracer provider and the propagator of W3C trace context.
type Provider struct {
	trace.TracerProvider
	Propagator propagation.TextMapPropagator
	shutdown   func(context.Context) error
}

// Tracer returns the tracer of Latchkey's spans, or nil for a nil Provider.
func (p *Provider) Tracer() trace.Tracer {
	if p == nil {
		return nil
	}
	return p.TracerProvider.Tracer(Scope)
}

// Shutdown flushes the spans not yet exported and stops the exporter.
func (p *Provider) Shutdown(ctx context.Context) error {
	if p == nil || p.shutdown == nil {
		return nil
	}
	return p.shutdown(ctx)
}

// WithProvider wraps a tracer provider (tests: the SDK with an in-memory exporter).
func WithProvider(tp trace.TracerProvider) *Provider {
	return &Provider{TracerProvider: tp, Propagator: propagation.TraceContext{}}
}

// Enabled reports whether getenv configures trace export (see the package doc).
func Enabled(getenv func(string) string) bool {
	if strings.EqualFold(getenv("OTEL_SDK_DISABLED"), "true") {
		return false
	}
	if exp := strings.ToLower(strings.TrimSpace(getenv("OTEL_TRACES_EXPORTER"))); exp != "" && exp != "otlp" {
		return false
	}
	return getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
}

// FromEnv returns the Provider that the OTEL_* variables configure, or nil when
// tracing is off. It returns an error for a protocol other than http/protobuf and for
// an exporter that cannot be built.
func FromEnv(ctx context.Context) (*Provider, error) {
	if !Enabled(os.Getenv) {
		return nil, nil
	}
	proto := os.Getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
	if proto == "" {
		proto = os.Getenv("OTEL_EXPORTER_OTLP_PROTOCOL")
	}
	if proto != "" && proto != "http/protobuf" {
		return nil, fmt.Errorf("OTEL_EXPORTER_OTLP_PROTOCOL=%s: Latchkey exports traces over http/protobuf only (point it at the collector's OTLP/HTTP port, 4318)", proto)
	}
	exp, err := otlptracehttp.New(ctx)
	if err != nil {
		return nil, fmt.Errorf("OTLP trace exporter: %w", err)
	}
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(semconv.ServiceName(serviceName())))
	if err != nil && !errors.Is(err, resource.ErrPartialResource) {
		return nil, err
	}
	// The environment's resource attributes win over the default service name.
	if env, err := resource.New(ctx, resource.WithFromEnv()); err == nil {
		if merged, err := resource.Merge(res, env); err == nil {
			res = merged
		}
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	return &Provider{TracerProvider: tp, Propagator: propagation.TraceContext{}, shutdown: tp.Shutdown}, nil
}

func serviceName() string {
	if s := os.Getenv("OTEL_SERVICE_NAME"); s != "" {
		return s
	}
	return "latchkey"
}
