package usage

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	entsql "entgo.io/ent/dialect/sql"

	"github.com/latchkey/latchkey/ent"
	"github.com/latchkey/latchkey/ent/predicate"
	"github.com/latchkey/latchkey/ent/usagelog"
)

// GroupBy splits usage buckets besides time (the GraphQL enum UsageGroupBy).
type GroupBy string

// Groupings of a usage query.
const (
	GroupNone      GroupBy = "NONE"
	GroupKey       GroupBy = "KEY"
	GroupOperation GroupBy = "OPERATION"
)

// QueryGrouped is Query with the buckets split by groupBy: by key (KEY, from the
// rollups, which are kept per key) or by operation type and name (OPERATION). The
// rollups do not know operations, so OPERATION reads the stored usage events (the
// request log), grouped in the database by time bucket, operation, outcome and
// latency bucket: it answers only for the retention period (USAGE_RETENTION) and its
// cost grows with the number of events in the range (see the README for figures).
// Buckets are ordered by Start, then key or operation. Errors are Query's, and a
// *QueryError for an unknown groupBy.
func QueryGrouped(ctx context.Context, client *ent.Client, dialect string, apiKeyID *string, from, to time.Time, interval Interval, groupBy GroupBy) ([]Bucket, error) {
	switch groupBy {
	case "", GroupNone, GroupKey, GroupOperation:
	default:
		return nil, &QueryError{Field: "groupBy", Message: fmt.Sprintf("unknown grouping %q: want NONE, KEY or OPERATION", string(groupBy))}
	}
	gran, step, start, to, err := window(from, to, interval)
	if err != nil {
		return nil, err
	}
	switch groupBy {
	case GroupKey:
		return rollups(ctx, client, apiKeyID, gran, step, start, to, true)
	case GroupOperation:
		return byOperation(ctx, client, dialect, apiKeyID, step, start, to)
	}
	return rollups(ctx, client, apiKeyID, gran, step, start, to, false)
}

// latencyCase is the SQL expression of the histogram bucket of latency_ms, the
// bucketOf of the database.
func latencyCase(col string) string {
	var b strings.Builder
	b.WriteString("CASE")
	for i, ub := range upperBounds {
		fmt.Fprintf(&b, " WHEN %s <= %d THEN %d", col, ub, i)
	}
	fmt.Fprintf(&b, " ELSE %d END", HistogramBuckets-1)
	return b.String()
}

// epochBucket is the SQL expression of the start of the step-wide bucket of the
// timestamp column col, in Unix seconds.
func epochBucket(dialect, col string, step time.Duration) string {
	secs := int64(step / time.Second)
	if dialect == "postgres" {
		return fmt.Sprintf("(FLOOR(EXTRACT(EPOCH FROM %s) / %d) * %d)::bigint", col, secs, secs)
	}
	return fmt.Sprintf("(CAST(strftime('%%s', %s) AS INTEGER) / %d) * %d", col, secs, secs)
}

// byOperation groups the stored usage events of [start, to) by bucket, operation,
// outcome and latency bucket in the database, and folds the outcomes and latencies
// into buckets here.
func byOperation(ctx context.Context, client *ent.Client, dialect string, apiKeyID *string, step time.Duration, start, to time.Time) ([]Bucket, error) {
	// Whole buckets, as the rollups answer: every step that starts before to.
	preds := []predicate.UsageLog{usagelog.AtGTE(start), usagelog.AtLT(ceil(to, step))}
	if apiKeyID != nil {
		preds = append(preds, usagelog.APIKeyID(*apiKeyID))
	}
	var rows []struct {
		Bucket        int64  `sql:"bucket"`
		OperationType string `sql:"operation_type"`
		OperationName string `sql:"operation_name"`
		Outcome       string `sql:"outcome"`
		Latency       int    `sql:"lb"`
		N             int64  `sql:"n"`
	}
	err := client.UsageLog.Query().Where(preds...).Modify(func(s *entsql.Selector) {
		bucket := epochBucket(dialect, s.C(usagelog.FieldAt), step)
		lb := latencyCase(s.C(usagelog.FieldLatencyMs))
		s.Select(
			entsql.As(bucket, "bucket"),
			s.C(usagelog.FieldOperationType),
			s.C(usagelog.FieldOperationName),
			s.C(usagelog.FieldOutcome),
			entsql.As(lb, "lb"),
			entsql.As(entsql.Count("*"), "n"),
		).GroupBy("bucket", s.C(usagelog.FieldOperationType), s.C(usagelog.FieldOperationName), s.C(usagelog.FieldOutcome), "lb")
	}).Scan(ctx, &rows)
	if err != nil {
		return nil, err
	}
	type groupKey struct {
		start     int64
		typ, name string
	}
	index := map[groupKey]int{}
	var out []Bucket
	for _, r := range rows {
		k := groupKey{r.Bucket, r.OperationType, r.OperationName}
		i, ok := index[k]
		if !ok {
			i = len(out)
			index[k] = i
			out = append(out, Bucket{Start: time.Unix(r.Bucket, 0).UTC(), OperationType: r.OperationType, OperationName: r.OperationName})
		}
		b := &out[i]
		b.Requests += r.N
		switch countAs(Outcome(r.Outcome)) {
		case countError:
			b.Errors += r.N
		case countRateLimited:
			b.RateLimited += r.N
		case countQuotaExceeded:
			b.QuotaExceeded += r.N
		}
		if r.Latency >= 0 && r.Latency < HistogramBuckets {
			b.Histogram[r.Latency] += r.N
		}
	}
	for i := range out {
		out[i].percentiles()
	}
	slices.SortFunc(out, func(a, b Bucket) int {
		if c := a.Start.Compare(b.Start); c != 0 {
			return c
		}
		if c := strings.Compare(a.OperationType, b.OperationType); c != 0 {
			return c
		}
		return strings.Compare(a.OperationName, b.OperationName)
	})
	return out, nil
}

// How an outcome counts in a bucket: in the rollups (writer.aggregate) and in the
// breakdown by operation alike.
const (
	countOK = iota
	countError
	countRateLimited
	countQuotaExceeded
)

// countAs classifies an outcome: error, forbidden and the refusals of a verification
// before its limits are errors.
func countAs(o Outcome) int {
	switch o {
	case OutcomeRateLimited:
		return countRateLimited
	case OutcomeQuotaExceeded, OutcomeUsageExceeded:
		return countQuotaExceeded
	case OutcomeOK, OutcomeValid:
		return countOK
	}
	return countError // error, forbidden and the refusals of a verification before its limits
}

// percentiles sets the bucket's percentiles from its histogram.
func (b *Bucket) percentiles() {
	b.P50Ms = b.Histogram.Quantile(0.50)
	b.P95Ms = b.Histogram.Quantile(0.95)
	b.P99Ms = b.Histogram.Quantile(0.99)
}
