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
	"github.com/latchkey/latchkey/ent/usagerollup"
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
// Buckets are ordered by Start, then key or operation. Errors are Query's.
func QueryGrouped(ctx context.Context, client *ent.Client, dialect string, apiKeyID *string, from, to time.Time, interval Interval, groupBy GroupBy) ([]Bucket, error) {
	switch groupBy {
	case "", GroupNone:
		return Query(ctx, client, apiKeyID, from, to, interval)
	case GroupKey, GroupOperation:
	default:
		return nil, &QueryError{Field: "groupBy", Message: fmt.Sprintf("unknown grouping %q: want NONE, KEY or OPERATION", string(groupBy))}
	}
	gran, step, ok := interval.granularity()
	if !ok {
		return nil, &QueryError{Field: "interval", Message: fmt.Sprintf("unknown interval %q: want MINUTE, HOUR or DAY", string(interval))}
	}
	from, to = from.UTC(), to.UTC()
	if !to.After(from) {
		return nil, &QueryError{Field: "to", Message: "must be after from"}
	}
	start := from.Truncate(step)
	if to.Sub(start) > step*MaxBuckets {
		return nil, &QueryError{Field: "to", Message: fmt.Sprintf("the range spans more than %d %s buckets; shorten it or use a wider interval", MaxBuckets, strings.ToLower(string(interval)))}
	}
	if groupBy == GroupKey {
		return byKey(ctx, client, apiKeyID, gran, start, to)
	}
	return byOperation(ctx, client, dialect, apiKeyID, step, start, to)
}

// byKey sums the rollups per bucket and key.
func byKey(ctx context.Context, client *ent.Client, apiKeyID *string, gran usagerollup.Granularity, start, to time.Time) ([]Bucket, error) {
	preds := []predicate.UsageRollup{
		usagerollup.GranularityEQ(gran),
		usagerollup.BucketStartGTE(start),
		usagerollup.BucketStartLT(to),
	}
	if apiKeyID != nil {
		preds = append(preds, usagerollup.APIKeyID(*apiKeyID))
	}
	var rows []keyRollupSum
	err := client.UsageRollup.Query().Where(preds...).Modify(func(s *entsql.Selector) {
		cols := []string{s.C(usagerollup.FieldBucketStart), s.C(usagerollup.FieldAPIKeyID)}
		for _, c := range counterColumns {
			if c == usagerollup.FieldLatencySumMs {
				continue
			}
			cols = append(cols, entsql.As(entsql.Sum(s.C(c)), c))
		}
		s.Select(cols...).
			GroupBy(s.C(usagerollup.FieldBucketStart), s.C(usagerollup.FieldAPIKeyID)).
			OrderBy(s.C(usagerollup.FieldBucketStart), s.C(usagerollup.FieldAPIKeyID))
	}).Scan(ctx, &rows)
	if err != nil {
		return nil, err
	}
	out := make([]Bucket, len(rows))
	for i := range rows {
		r := &rows[i]
		b := Bucket{
			Start: r.BucketStart.Time, APIKeyID: r.APIKeyID,
			Requests: r.Requests, Errors: r.Errors, RateLimited: r.RateLimited, QuotaExceeded: r.QuotaExceeded,
			Histogram: r.histogram(),
		}
		b.percentiles()
		out[i] = b
	}
	return out, nil
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

// How an outcome counts in a bucket (as the rollups count it, see writer.aggregate).
const (
	countOK = iota
	countError
	countRateLimited
	countQuotaExceeded
)

// countAs classifies an outcome the way the rollups do.
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

// keyRollupSum is one row of the rollups summed per bucket and key (ent's scan takes
// no embedded structs, so it repeats rollupSum's fields).
type keyRollupSum struct {
	APIKeyID      string `sql:"api_key_id"`
	BucketStart   dbTime `sql:"bucket_start"`
	Requests      int64  `sql:"requests"`
	Errors        int64  `sql:"errors"`
	RateLimited   int64  `sql:"rate_limited"`
	QuotaExceeded int64  `sql:"quota_exceeded"`
	Uncharged     int64  `sql:"uncharged"`
	LatA          int64  `sql:"lat_a"`
	LatB          int64  `sql:"lat_b"`
	LatC          int64  `sql:"lat_c"`
	LatD          int64  `sql:"lat_d"`
	LatE          int64  `sql:"lat_e"`
	LatF          int64  `sql:"lat_f"`
	LatG          int64  `sql:"lat_g"`
	LatH          int64  `sql:"lat_h"`
	LatI          int64  `sql:"lat_i"`
	LatJ          int64  `sql:"lat_j"`
	LatK          int64  `sql:"lat_k"`
	LatL          int64  `sql:"lat_l"`
	LatM          int64  `sql:"lat_m"`
	LatN          int64  `sql:"lat_n"`
	LatO          int64  `sql:"lat_o"`
	LatP          int64  `sql:"lat_p"`
}

func (s *keyRollupSum) histogram() Histogram {
	return Histogram{s.LatA, s.LatB, s.LatC, s.LatD, s.LatE, s.LatF, s.LatG, s.LatH,
		s.LatI, s.LatJ, s.LatK, s.LatL, s.LatM, s.LatN, s.LatO, s.LatP}
}
