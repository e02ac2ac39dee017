package gqlserver

import (
	"context"
	"fmt"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/ast"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// tracing gives each GraphQL operation a span ("query Dashboard") and, inside it, each
// field that runs a resolver a child span ("Query.apiKeys"); fields read from a
// parent object run no code and get none. Errors of a field mark its span.
type tracing struct{ tr trace.Tracer }

var (
	_ graphql.HandlerExtension     = tracing{}
	_ graphql.OperationInterceptor = tracing{}
	_ graphql.FieldInterceptor     = tracing{}
)

func (tracing) ExtensionName() string                   { return "OpenTelemetry" }
func (tracing) Validate(graphql.ExecutableSchema) error { return nil }

func (t tracing) InterceptOperation(ctx context.Context, next graphql.OperationHandler) graphql.ResponseHandler {
	oc := graphql.GetOperationContext(ctx)
	kind, name := "operation", oc.OperationName
	if oc.Operation != nil {
		kind = string(oc.Operation.Operation)
		if name == "" {
			name = oc.Operation.Name
		}
	}
	spanName := kind
	if name != "" {
		spanName += " " + name
	}
	ctx, span := t.tr.Start(ctx, spanName, trace.WithAttributes(
		attribute.String("graphql.operation.type", kind),
		attribute.String("graphql.operation.name", name),
	))
	h := next(ctx)
	subscription := kind == string(ast.Subscription)
	ended := false
	return func(ctx context.Context) *graphql.Response {
		resp := h(ctx)
		if ended {
			return resp
		}
		if resp != nil && len(resp.Errors) > 0 {
			span.SetStatus(codes.Error, resp.Errors[0].Message)
		}
		// A query or mutation has one response; a subscription's span lasts until
		// its stream ends (a nil response).
		if !subscription || resp == nil {
			ended = true
			span.End()
		}
		return resp
	}
}

func (t tracing) InterceptField(ctx context.Context, next graphql.Resolver) (any, error) {
	fc := graphql.GetFieldContext(ctx)
	if fc == nil || !fc.IsResolver {
		return next(ctx)
	}
	ctx, span := t.tr.Start(ctx, fc.Object+"."+fc.Field.Name, trace.WithAttributes(
		attribute.String("graphql.field.path", fmt.Sprint(fc.Path())),
	))
	defer span.End()
	v, err := next(ctx)
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
	}
	return v, err
}
