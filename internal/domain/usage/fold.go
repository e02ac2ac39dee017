package usage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"time"

	entsql "entgo.io/ent/dialect/sql"

	"github.com/latchkey/latchkey/ent/predicate"
	"github.com/latchkey/latchkey/ent/schema/rule"
	"github.com/latchkey/latchkey/ent/usagefold"
	"github.com/latchkey/latchkey/ent/usagerollup"
)

// The fold: a batch writes an event's minute rollup, and its hour and day rollups only
// when the event's minute is before folded_before (the single usage_folds row), so
// that an event adds to one rollup row instead of three. Fold adds the minute rows
// from folded_before up to a minute ago to the hour and day rows and moves
// folded_before on, in one transaction. Queries of hours and days add the minute rows
// from folded_before on (unfolded), in the same statement, so that they read one
// snapshot and count every event once.
//
// Exactness between instances: on PostgreSQL a batch reads folded_before FOR SHARE and
// the fold FOR UPDATE, so a fold waits for the batches that read the old value and a
// batch that starts during a fold reads the new one. SQLite has a single connection.
// The price: a fold holds every instance's batches for its duration, about 54 µs per
// key active in the folded minutes on PostgreSQL (BenchmarkFold).

const (
	// foldID is the id of the usage_folds row.
	foldID = 1
	// foldLag is how long after its end a minute is folded: its late events (a batch
	// retried after a database outage) are then written to all three levels directly.
	foldLag = time.Minute
	// foldSpan bounds the minutes one fold transaction reads (about one row per active
	// key and minute).
	foldSpan = time.Hour
	// foldSteps bounds the transactions of one Fold call (two days behind).
	foldSteps = 48
	// DefaultFoldEvery is how often Run folds.
	DefaultFoldEvery = 15 * time.Second
)

// foldedBefore reads folded_before (Unix seconds) in tx: FOR SHARE (a batch) or, with
// forUpdate, FOR UPDATE (a fold) on PostgreSQL. Without the row nothing is folded and
// batches write all three levels (math.MaxInt64). It returns the database's error.
func foldedBefore(ctx context.Context, tx *sql.Tx, dialectName string, forUpdate bool) (int64, error) {
	q := "SELECT " + usagefold.FieldFoldedBefore + " FROM " + usagefold.Table + " WHERE " + usagefold.FieldID + " = 1"
	if dialectName == "postgres" {
		if forUpdate {
			q += " FOR UPDATE"
		} else {
			q += " FOR SHARE"
		}
	}
	var t dbTime
	switch err := tx.QueryRowContext(ctx, q).Scan(&t); {
	case errors.Is(err, sql.ErrNoRows):
		return math.MaxInt64, nil
	case err != nil:
		return 0, fmt.Errorf("read usage_folds: %w", err)
	}
	return t.Unix(), nil
}

// unfolded is the predicate of the rollup rows at or after folded_before: the minute
// rows whose events the hour and day rows do not hold yet. Without the usage_folds row
// it holds for no row.
func unfolded() predicate.UsageRollup {
	return func(s *entsql.Selector) {
		s.Where(entsql.ExprP(s.C(usagerollup.FieldBucketStart) + " >= (SELECT " + usagefold.FieldFoldedBefore +
			" FROM " + usagefold.Table + " WHERE " + usagefold.FieldID + " = 1)"))
	}
}

// foldCall asks Run to fold (Fold while Run holds the writer).
type foldCall struct {
	now   time.Time
	reply chan foldResult
}

type foldResult struct {
	rows int
	err  error
}

// Fold adds the minute rollups of every minute that ended at least a minute before now
// and is not folded yet to the hour and day rollups, one transaction per hour of
// minutes and at most two days per call. With Run going, Run folds. It returns the
// number of minute rows folded, and the first database error (or ctx's).
func (r *Recorder) Fold(ctx context.Context, now time.Time) (int, error) {
	reply := make(chan foldResult, 1)
	select {
	case r.sem <- struct{}{}:
		defer func() { <-r.sem }()
		return r.fold(ctx, now)
	case r.foldReq <- foldCall{now: now, reply: reply}:
		select {
		case res := <-reply:
			return res.rows, res.err
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// fold is Fold for the holder of the writer.
func (r *Recorder) fold(ctx context.Context, now time.Time) (int, error) {
	ctx = rule.SystemContext(ctx)
	target := now.UTC().Truncate(time.Minute).Add(-foldLag).Unix()
	total := 0
	for range foldSteps {
		n, done, err := r.foldStep(ctx, target)
		total += n
		if err != nil || done {
			return total, err
		}
	}
	return total, nil
}

// foldStep folds the minutes from folded_before up to target (Unix seconds), at most
// foldSpan of them after the first minute that has rows. done reports that
// folded_before reached target (or that there is no usage_folds row).
func (r *Recorder) foldStep(ctx context.Context, target int64) (rows int, done bool, err error) {
	if r.st.Dialect != "postgres" {
		if err := r.w.prepare(ctx, r.st.DB); err != nil {
			return 0, false, err
		}
	}
	tx, err := r.st.DB.BeginTx(ctx, nil)
	if err != nil {
		return 0, false, err
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	from, err := foldedBefore(ctx, tx, r.st.Dialect, true)
	if err != nil {
		return 0, false, err
	}
	if from == math.MaxInt64 || from >= target {
		return 0, true, tx.Commit()
	}
	d := entsql.Dialect(r.st.EntDialect)
	minute := usagerollup.GranularityMinute.String()
	fromT := time.Unix(from, 0).UTC()
	// Skip minutes without rows: after a quiet day, fold only where there is usage.
	q, args := d.Select(entsql.Min(usagerollup.FieldBucketStart)).From(entsql.Table(usagerollup.Table)).
		Where(entsql.And(entsql.EQ(usagerollup.FieldGranularity, minute), entsql.GTE(usagerollup.FieldBucketStart, fromT))).Query()
	var first dbTime
	if err = tx.QueryRowContext(ctx, q, args...).Scan(&first); err != nil {
		return 0, false, fmt.Errorf("fold: first minute: %w", err)
	}
	to := target
	if !first.IsZero() && first.Unix() < target {
		to = min(target, first.Unix()+int64(foldSpan/time.Second))
		if rows, err = r.foldRange(ctx, tx, fromT, time.Unix(to, 0).UTC()); err != nil {
			return rows, false, err
		}
	}
	q, args = d.Update(usagefold.Table).Set(usagefold.FieldFoldedBefore, time.Unix(to, 0).UTC()).
		Where(entsql.EQ(usagefold.FieldID, foldID)).Query()
	if _, err = tx.ExecContext(ctx, q, args...); err != nil {
		return rows, false, fmt.Errorf("fold: move usage_folds: %w", err)
	}
	if err = tx.Commit(); err != nil {
		return rows, false, err
	}
	return rows, to >= target, nil
}

// foldRange adds the minute rows of [from, to) to their hour and day rows in tx and
// returns how many minute rows it read.
func (r *Recorder) foldRange(ctx context.Context, tx *sql.Tx, from, to time.Time) (int, error) {
	cols := append([]string{usagerollup.FieldTenantID, usagerollup.FieldAPIKeyID, usagerollup.FieldBucketStart}, counterColumns[:]...)
	q, args := entsql.Dialect(r.st.EntDialect).Select(cols...).From(entsql.Table(usagerollup.Table)).
		Where(entsql.And(
			entsql.EQ(usagerollup.FieldGranularity, usagerollup.GranularityMinute.String()),
			entsql.GTE(usagerollup.FieldBucketStart, from),
			entsql.LT(usagerollup.FieldBucketStart, to),
		)).Query()
	rs, err := tx.QueryContext(ctx, q, args...)
	if err != nil {
		return 0, fmt.Errorf("fold: read minutes: %w", err)
	}
	defer rs.Close()
	w := &r.w
	w.resetAggs()
	var (
		tenantID, apiKeyID string
		start              dbTime
		c                  [6 + HistogramBuckets]int64
		n                  int
	)
	dest := []any{&tenantID, &apiKeyID, &start}
	for i := range c {
		dest = append(dest, &c[i])
	}
	for rs.Next() {
		if err := rs.Scan(dest...); err != nil {
			return n, fmt.Errorf("fold: read minutes: %w", err)
		}
		n++
		sec := start.Unix()
		for g := 1; g < len(granularities); g++ {
			w.agg(rollupKey{apiKeyID: apiKeyID, gran: uint8(g), start: floorTo(sec, granularities[g].secs)}, tenantID).addCounts(&c)
		}
	}
	if err := rs.Err(); err != nil {
		return n, fmt.Errorf("fold: read minutes: %w", err)
	}
	if err := rs.Close(); err != nil {
		return n, err
	}
	return n, w.upsertRollups(ctx, tx, r.st.EntDialect, w.sortedAggs())
}

// foldTick folds on Run's schedule and logs what went wrong.
func (r *Recorder) foldTick(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, r.writeTimeout)
	defer cancel()
	if n, err := r.fold(ctx, r.now()); err != nil && !errors.Is(err, context.Canceled) {
		slog.Error("usage: folding minute rollups failed", "err", err, "folded_minutes", n)
	}
}
