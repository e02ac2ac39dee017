package usage

import (
	"cmp"
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"
	"time"

	entsql "entgo.io/ent/dialect/sql"

	"github.com/latchkey/latchkey/ent"
	"github.com/latchkey/latchkey/ent/apikey"
	"github.com/latchkey/latchkey/ent/predicate"
	"github.com/latchkey/latchkey/ent/schema/rule"
	"github.com/latchkey/latchkey/ent/usagelog"
	"github.com/latchkey/latchkey/ent/usagerollup"
	"github.com/latchkey/latchkey/internal/data/usagepart"
)

// Interval is the width of the buckets a usage query returns.
type Interval string

// Intervals of a usage query (the GraphQL enum UsageInterval).
const (
	IntervalMinute Interval = "MINUTE"
	IntervalHour   Interval = "HOUR"
	IntervalDay    Interval = "DAY"
)

// MaxBuckets is the largest number of interval steps a query may span.
const MaxBuckets = 10000

// granularity returns the rollup level and the width of an interval.
func (i Interval) granularity() (usagerollup.Granularity, time.Duration, bool) {
	switch i {
	case IntervalMinute:
		return usagerollup.GranularityMinute, time.Minute, true
	case IntervalHour:
		return usagerollup.GranularityHour, time.Hour, true
	case IntervalDay:
		return usagerollup.GranularityDay, 24 * time.Hour, true
	}
	return "", 0, false
}

// Bucket is the usage of one interval step.
type Bucket struct {
	Start time.Time // UTC
	// APIKeyID is the key of the bucket when grouped by key (QueryGrouped).
	APIKeyID string
	// OperationType and OperationName are the operation of the bucket when grouped
	// by operation (QueryGrouped).
	OperationType, OperationName                 string
	Requests, Errors, RateLimited, QuotaExceeded int64
	// P50Ms, P95Ms and P99Ms are latency percentiles interpolated from Histogram.
	P50Ms, P95Ms, P99Ms float64
	Histogram           Histogram
}

// QueryError is an invalid usage query argument; the API reports it as BAD_USER_INPUT.
type QueryError struct {
	Field   string // the argument at fault: "from", "to" or "interval"
	Message string
}

// Error returns "usage: <field>: <message>".
func (e *QueryError) Error() string { return "usage: " + e.Field + ": " + e.Message }

// rollupSum is one row of the rollups summed per bucket (and per key when grouped by
// key: api_key_id is selected only then).
type rollupSum struct {
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

func (s *rollupSum) histogram() Histogram {
	return Histogram{s.LatA, s.LatB, s.LatC, s.LatD, s.LatE, s.LatF, s.LatG, s.LatH,
		s.LatI, s.LatJ, s.LatK, s.LatL, s.LatM, s.LatN, s.LatO, s.LatP}
}

// dbTime scans a timestamp as either driver returns it for an aggregate query
// (time.Time, or text on SQLite).
type dbTime struct{ time.Time }

// sqliteTimeLayouts are the text forms SQLite may hand back for a datetime column.
var sqliteTimeLayouts = []string{
	"2006-01-02 15:04:05.999999999-07:00",
	"2006-01-02 15:04:05.999999999Z07:00",
	"2006-01-02T15:04:05.999999999Z07:00",
	"2006-01-02 15:04:05.999999999",
	"2006-01-02T15:04:05.999999999",
}

// Scan implements sql.Scanner.
func (t *dbTime) Scan(v any) error {
	switch v := v.(type) {
	case nil: // an aggregate over no row
		t.Time = time.Time{}
		return nil
	case time.Time:
		t.Time = v.UTC()
		return nil
	case string:
		return t.parse(v)
	case []byte:
		return t.parse(string(v))
	}
	return fmt.Errorf("usage: cannot scan %T as a time", v)
}

func (t *dbTime) parse(s string) error {
	s = strings.TrimSpace(s)
	for _, layout := range sqliteTimeLayouts {
		if p, err := time.Parse(layout, s); err == nil {
			t.Time = p.UTC()
			return nil
		}
	}
	return fmt.Errorf("usage: cannot parse time %q", s)
}

// Query returns the usage of one key (apiKeyID != nil) or of all keys the viewer in ctx
// may see, as one bucket per interval step that has data, from the step containing
// from up to (excluding) to, ordered by Start (UTC). It reads only usage_rollups,
// through client with the caller's ctx, so the ent privacy rules scope it to the
// viewer's tenant (admins see every tenant).
//
// It returns a *QueryError for to <= from, a range of more than MaxBuckets steps or an
// unknown interval; the privacy error when ctx has no viewer; database errors as is.
func Query(ctx context.Context, client *ent.Client, apiKeyID *string, from, to time.Time, interval Interval) ([]Bucket, error) {
	gran, step, start, to, err := window(from, to, interval)
	if err != nil {
		return nil, err
	}
	return rollups(ctx, client, apiKeyID, gran, step, start, to, false)
}

// window checks the range and interval of a usage query and returns the rollup level,
// the step, and the range in UTC from the start of the step containing from. It
// returns a *QueryError for an unknown interval, to <= from or more than MaxBuckets
// steps.
func window(from, to time.Time, interval Interval) (gran usagerollup.Granularity, step time.Duration, start, end time.Time, err error) {
	gran, step, ok := interval.granularity()
	if !ok {
		return "", 0, start, end, &QueryError{Field: "interval", Message: fmt.Sprintf("unknown interval %q: want MINUTE, HOUR or DAY", string(interval))}
	}
	from, to = from.UTC(), to.UTC()
	if !to.After(from) {
		return "", 0, start, end, &QueryError{Field: "to", Message: "must be after from"}
	}
	start = from.Truncate(step)
	if to.Sub(start) > step*MaxBuckets {
		return "", 0, start, end, &QueryError{Field: "to", Message: fmt.Sprintf("the range spans more than %d %s buckets; shorten it or use a wider interval", MaxBuckets, strings.ToLower(string(interval)))}
	}
	return gran, step, start, to, nil
}

// rollups sums the rollups of gran (step wide) in [start, to) per bucket, and per key
// too when perKey, ordered by bucket (then key).
func rollups(ctx context.Context, client *ent.Client, apiKeyID *string, gran usagerollup.Granularity, step time.Duration, start, to time.Time, perKey bool) ([]Bucket, error) {
	which := usagerollup.GranularityEQ(gran)
	if gran != usagerollup.GranularityMinute {
		// The minutes not folded yet are in no hour or day row: add them.
		which = usagerollup.Or(which, usagerollup.And(usagerollup.GranularityEQ(usagerollup.GranularityMinute), unfolded()))
	}
	preds := []predicate.UsageRollup{
		which,
		usagerollup.BucketStartGTE(start),
		// Whole buckets: the last one's unfolded minutes after to count too.
		usagerollup.BucketStartLT(ceil(to, step)),
	}
	if apiKeyID != nil {
		preds = append(preds, usagerollup.APIKeyID(*apiKeyID))
	}
	var rows []rollupSum
	err := client.UsageRollup.Query().Where(preds...).Modify(func(s *entsql.Selector) {
		group := []string{s.C(usagerollup.FieldBucketStart)}
		if perKey {
			group = append(group, s.C(usagerollup.FieldAPIKeyID))
		}
		cols := append(make([]string, 0, len(group)+len(counterColumns)), group...)
		for _, c := range counterColumns {
			if c == usagerollup.FieldLatencySumMs {
				continue
			}
			cols = append(cols, entsql.As(entsql.Sum(s.C(c)), c))
		}
		s.Select(cols...).GroupBy(group...).OrderBy(group...)
	}).Scan(ctx, &rows)
	if err != nil {
		return nil, err
	}
	// An hour's or day's row and its unfolded minute rows make one bucket.
	type bucketKey struct {
		start int64
		key   string
	}
	at := make(map[bucketKey]int, len(rows))
	out := make([]Bucket, 0, len(rows))
	for i := range rows {
		r := &rows[i]
		b := Bucket{
			Start: r.BucketStart.Truncate(step), APIKeyID: r.APIKeyID,
			Requests: r.Requests, Errors: r.Errors, RateLimited: r.RateLimited, QuotaExceeded: r.QuotaExceeded,
			Histogram: r.histogram(),
		}
		k := bucketKey{b.Start.Unix(), b.APIKeyID}
		j, ok := at[k]
		if !ok {
			at[k] = len(out)
			out = append(out, b)
			continue
		}
		o := &out[j]
		o.Requests += b.Requests
		o.Errors += b.Errors
		o.RateLimited += b.RateLimited
		o.QuotaExceeded += b.QuotaExceeded
		o.Histogram.Merge(&b.Histogram)
	}
	slices.SortFunc(out, func(a, b Bucket) int {
		return cmp.Or(a.Start.Compare(b.Start), strings.Compare(a.APIKeyID, b.APIKeyID))
	})
	for i := range out {
		out[i].percentiles()
	}
	return out, nil
}

// Used returns the number of requests of a key since `since` that count against a
// quota (every operation except those refused by a limit and those that charged
// nothing, see Event.Uncharged), read from the rollups
// with the system context; it seeds quota counters after a restart. since is rounded
// up to the minute; the first partial hour and day are read from the minute and hour
// rollups, the rest from day rollups. Events still queued in a Recorder are not
// counted. It returns database errors as is.
func Used(ctx context.Context, client *ent.Client, apiKeyID string, since time.Time) (int64, error) {
	return used(ctx, client, usagerollup.APIKeyID(apiKeyID), since)
}

// TenantUsed is Used for all the keys of tenantID together (a tenant-wide quota).
func TenantUsed(ctx context.Context, client *ent.Client, tenantID string, since time.Time) (int64, error) {
	return used(ctx, client, usagerollup.TenantID(tenantID), since)
}

// OwnerUsed is Used for all the keys of tenantID whose owner is ownerID (an owner's
// quota). It returns database errors as is.
func OwnerUsed(ctx context.Context, client *ent.Client, tenantID, ownerID string, since time.Time) (int64, error) {
	ids, err := client.ApiKey.Query().
		Where(apikey.TenantID(tenantID), apikey.OwnerID(ownerID)).
		IDs(rule.SystemContext(ctx))
	if err != nil || len(ids) == 0 {
		return 0, err
	}
	return used(ctx, client, usagerollup.APIKeyIDIn(ids...), since)
}

func used(ctx context.Context, client *ent.Client, which predicate.UsageRollup, since time.Time) (int64, error) {
	ctx = rule.SystemContext(ctx)
	since = ceil(since.UTC(), time.Minute)
	hour := ceil(since, time.Hour)
	day := ceil(hour, 24*time.Hour)
	var rows []struct {
		Used int64 `sql:"used"`
	}
	err := client.UsageRollup.Query().Where(
		which,
		usagerollup.Or(
			// The first partial hour, and every minute not folded yet.
			usagerollup.And(usagerollup.GranularityEQ(usagerollup.GranularityMinute), usagerollup.BucketStartGTE(since),
				usagerollup.Or(usagerollup.BucketStartLT(hour), unfolded())),
			usagerollup.And(usagerollup.GranularityEQ(usagerollup.GranularityHour), usagerollup.BucketStartGTE(hour), usagerollup.BucketStartLT(day)),
			usagerollup.And(usagerollup.GranularityEQ(usagerollup.GranularityDay), usagerollup.BucketStartGTE(day)),
		),
	).Modify(func(s *entsql.Selector) {
		s.Select(fmt.Sprintf("COALESCE(SUM(%s - %s - %s - %s), 0) AS used",
			s.C(usagerollup.FieldRequests), s.C(usagerollup.FieldRateLimited), s.C(usagerollup.FieldQuotaExceeded), s.C(usagerollup.FieldUncharged)))
	}).Scan(ctx, &rows)
	if err != nil {
		return 0, err
	}
	if len(rows) == 0 {
		return 0, nil
	}
	return rows[0].Used, nil
}

// ceil rounds t (UTC) up to a multiple of d.
func ceil(t time.Time, d time.Duration) time.Time {
	if tr := t.Truncate(d); tr.Before(t) {
		return tr.Add(d)
	}
	return t
}

// pruneChunk bounds the rows one prune statement deletes, so that pruning never holds
// long locks (or SQLite's single connection) for long.
const pruneChunk = 5000

// Prune deletes raw usage_logs older than now - Retention and minute rollups older than
// now - 2×Retention, in chunks of at most 5000 rows, with the system context; hour and
// day rollups are kept. On PostgreSQL, where usage_logs is partitioned by day, it
// deletes no raw row: it prepares the coming days' partitions and drops the partitions
// whose whole day is older than now - Retention (so a raw row is kept up to a day
// longer), and the count of raw rows is the planner's estimate (see usagepart). Run
// calls it about once an hour. It returns the numbers of rows deleted and the first
// database error (or ctx's).
func (r *Recorder) Prune(ctx context.Context, now time.Time) (logs, rollups int64, err error) {
	ctx = rule.SystemContext(ctx)
	client := r.st.Client
	cutoff := now.UTC().Add(-r.cfg.Retention)
	if r.st.Dialect == "postgres" {
		logs, err = prunePartitions(ctx, r.st.DB, now, cutoff)
	} else {
		logs, err = pruneRows(ctx, client, cutoff)
	}
	if err != nil {
		return logs, 0, err
	}
	cutoff = now.UTC().Add(-2 * r.cfg.Retention)
	for {
		n, err := client.UsageRollup.Delete().Where(func(s *entsql.Selector) {
			sub := entsql.Select(usagerollup.FieldID).From(entsql.Table(usagerollup.Table)).
				Where(entsql.And(
					entsql.EQ(usagerollup.FieldGranularity, usagerollup.GranularityMinute.String()),
					entsql.LT(usagerollup.FieldBucketStart, cutoff),
					folded(), // never a minute not folded yet
				)).Limit(pruneChunk)
			s.Where(entsql.In(s.C(usagerollup.FieldID), sub))
		}).Exec(ctx)
		rollups += int64(n)
		if err != nil {
			return logs, rollups, err
		}
		if n < pruneChunk {
			break
		}
	}
	return logs, rollups, nil
}

// prunePartitions prepares the coming days' partitions of usage_logs and drops those
// whose whole day is before cutoff (PostgreSQL).
func prunePartitions(ctx context.Context, db *sql.DB, now, cutoff time.Time) (int64, error) {
	if _, err := usagepart.Ensure(ctx, db, now, usagepart.DefaultAhead); err != nil {
		return 0, err
	}
	return usagepart.DropBefore(ctx, db, cutoff)
}

// pruneRows deletes the usage_logs rows older than cutoff in chunks (SQLite).
func pruneRows(ctx context.Context, client *ent.Client, cutoff time.Time) (logs int64, err error) {
	for {
		n, err := client.UsageLog.Delete().Where(func(s *entsql.Selector) {
			sub := entsql.Select(usagelog.FieldID).From(entsql.Table(usagelog.Table)).
				Where(entsql.LT(usagelog.FieldAt, cutoff)).Limit(pruneChunk)
			s.Where(entsql.In(s.C(usagelog.FieldID), sub))
		}).Exec(ctx)
		logs += int64(n)
		if err != nil || n < pruneChunk {
			return logs, err
		}
	}
}

// ChainUsed returns what the keys of a rotation chain used since start, from the
// rollups: the chain is the key quotaKey and every key whose quota it counts (rotation
// successors). It is the seed of a quota counter that memory or Redis no longer holds.
// It returns the database's error.
func ChainUsed(ctx context.Context, client *ent.Client, quotaKey string, start time.Time) (int64, error) {
	ids, err := client.ApiKey.Query().
		Where(apikey.Or(apikey.ID(quotaKey), apikey.QuotaKey(quotaKey))).
		IDs(rule.SystemContext(ctx))
	if err != nil || len(ids) == 0 {
		return 0, err
	}
	return used(ctx, client, usagerollup.APIKeyIDIn(ids...), start)
}
