package store

import (
	"context"
	stdsql "database/sql"
	"strings"

	"entgo.io/ent/dialect"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// tracedDriver gives every statement that ent sends (queries, inserts, updates, and
// those of transactions) a client span named by the statement's verb and table, with
// the SQL text (placeholders, never values) as db.query.text.
type tracedDriver struct {
	dialect.Driver
	tr     trace.Tracer
	system string // "sqlite" or "postgresql"
}

func (d *tracedDriver) start(ctx context.Context, query string) (context.Context, trace.Span) {
	return d.tr.Start(ctx, spanName(query), trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(attribute.String("db.system.name", d.system), attribute.String("db.query.text", query)))
}

func end(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, "database error")
	}
	span.End()
}

func (d *tracedDriver) Exec(ctx context.Context, query string, args, v any) error {
	ctx, span := d.start(ctx, query)
	err := d.Driver.Exec(ctx, query, args, v)
	end(span, err)
	return err
}

func (d *tracedDriver) Query(ctx context.Context, query string, args, v any) error {
	ctx, span := d.start(ctx, query)
	err := d.Driver.Query(ctx, query, args, v)
	end(span, err)
	return err
}

// ExecContext and QueryContext serve ent's client.ExecContext / QueryContext.
func (d *tracedDriver) ExecContext(ctx context.Context, query string, args ...any) (stdsql.Result, error) {
	ctx, span := d.start(ctx, query)
	r, err := d.Driver.(interface {
		ExecContext(context.Context, string, ...any) (stdsql.Result, error)
	}).ExecContext(ctx, query, args...)
	end(span, err)
	return r, err
}

func (d *tracedDriver) QueryContext(ctx context.Context, query string, args ...any) (*stdsql.Rows, error) {
	ctx, span := d.start(ctx, query)
	r, err := d.Driver.(interface {
		QueryContext(context.Context, string, ...any) (*stdsql.Rows, error)
	}).QueryContext(ctx, query, args...)
	end(span, err)
	return r, err
}

func (d *tracedDriver) Tx(ctx context.Context) (dialect.Tx, error) {
	tx, err := d.Driver.Tx(ctx)
	if err != nil {
		return nil, err
	}
	return &tracedTx{Tx: tx, d: d}, nil
}

func (d *tracedDriver) BeginTx(ctx context.Context, opts *stdsql.TxOptions) (dialect.Tx, error) {
	tx, err := d.Driver.(interface {
		BeginTx(context.Context, *stdsql.TxOptions) (dialect.Tx, error)
	}).BeginTx(ctx, opts)
	if err != nil {
		return nil, err
	}
	return &tracedTx{Tx: tx, d: d}, nil
}

// tracedTx traces the statements of a transaction like tracedDriver.
type tracedTx struct {
	dialect.Tx
	d *tracedDriver
}

func (t *tracedTx) Exec(ctx context.Context, query string, args, v any) error {
	ctx, span := t.d.start(ctx, query)
	err := t.Tx.Exec(ctx, query, args, v)
	end(span, err)
	return err
}

func (t *tracedTx) Query(ctx context.Context, query string, args, v any) error {
	ctx, span := t.d.start(ctx, query)
	err := t.Tx.Query(ctx, query, args, v)
	end(span, err)
	return err
}

func (t *tracedTx) ExecContext(ctx context.Context, query string, args ...any) (stdsql.Result, error) {
	ctx, span := t.d.start(ctx, query)
	r, err := t.Tx.(interface {
		ExecContext(context.Context, string, ...any) (stdsql.Result, error)
	}).ExecContext(ctx, query, args...)
	end(span, err)
	return r, err
}

func (t *tracedTx) QueryContext(ctx context.Context, query string, args ...any) (*stdsql.Rows, error) {
	ctx, span := t.d.start(ctx, query)
	r, err := t.Tx.(interface {
		QueryContext(context.Context, string, ...any) (*stdsql.Rows, error)
	}).QueryContext(ctx, query, args...)
	end(span, err)
	return r, err
}

// spanName is "<VERB> <table>" of a statement ("SELECT api_keys"), or its verb. It
// reads the statement's words one at a time and stops at the table: a batch INSERT
// of thousands of values is not split into a slice of words for its first three.
func spanName(query string) string {
	var verb, after string
	table := false // the next word is the table
	for f := range strings.FieldsSeq(query) {
		switch {
		case verb == "":
			verb = strings.ToUpper(f)
			switch verb {
			case "SELECT", "DELETE":
				after = "FROM"
			case "INSERT":
				after = "INTO"
			case "UPDATE":
				table = true
			default:
				return verb
			}
		case table:
			return verb + " " + strings.Trim(f, "`\"()")
		case strings.EqualFold(f, after):
			table = true
		}
	}
	if verb == "" {
		return "db"
	}
	return verb
}
