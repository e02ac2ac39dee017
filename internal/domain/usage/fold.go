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
	"github.com/lib/pq"

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
// The price: while a fold holds the boundary, every instance's batches wait; the fold
// therefore adds the minutes before it takes the lock and under it only what changed
// meanwhile (see foldStep).

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
	// foldLockTimeout bounds every lock wait of a fold (PostgreSQL's default
	// deadlock_timeout is 1 s: the fold gives up first); foldRetries is how often a
	// step that gave up is tried again, 50, 100 and 150 ms later.
	foldLockTimeout = "500ms"
	foldRetries     = 3
)

// How foldedBefore locks the usage_folds row (PostgreSQL; SQLite has one connection).
type foldLock uint8

const (
	lockNone   foldLock = iota // a plain read
	lockShare                  // a batch: FOR SHARE
	lockUpdate                 // a fold: FOR UPDATE
)

// foldedBefore reads folded_before (Unix seconds) in tx, locked as lock says. Without
// the row nothing is folded and batches write all three levels (math.MaxInt64). It
// returns the database's error.
func foldedBefore(ctx context.Context, tx *sql.Tx, dialectName string, lock foldLock) (int64, error) {
	q := selectFoldedBefore
	if dialectName == "postgres" {
		switch lock {
		case lockShare:
			q += " FOR SHARE"
		case lockUpdate:
			q += " FOR UPDATE"
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

// selectFoldedBefore reads the boundary; as a subquery, statements compare rollup
// times with it in the snapshot they read the rollups in.
var selectFoldedBefore = fmt.Sprintf("SELECT %s FROM %s WHERE %s = %d",
	usagefold.FieldFoldedBefore, usagefold.Table, usagefold.FieldID, foldID)

// unfolded is the predicate of the rollup rows at or after folded_before: the minute
// rows whose events the hour and day rows do not hold yet. Without the usage_folds row
// it holds for no row.
func unfolded() predicate.UsageRollup {
	return func(s *entsql.Selector) { s.Where(vsFoldedBefore(s.C(usagerollup.FieldBucketStart), ">=")) }
}

// folded is the predicate of the rollup rows before folded_before (of a statement on
// usage_rollups alone): the minute rows the hour and day rows hold already. Without
// the usage_folds row it holds for no row.
func folded() *entsql.Predicate { return vsFoldedBefore(usagerollup.FieldBucketStart, "<") }

// vsFoldedBefore compares column with folded_before, read in the statement's snapshot.
func vsFoldedBefore(column, op string) *entsql.Predicate {
	return entsql.ExprP(column + " " + op + " (" + selectFoldedBefore + ")")
}

// Fold adds the minute rollups of every minute that ended at least a minute before now
// and is not folded yet to the hour and day rollups, one transaction per hour of
// minutes and at most two days per call. It runs beside the batch writer, with its
// own buffers, one fold at a time per Recorder (Run folds every 15 s). It returns the
// number of minute rows folded, and the first database error (or ctx's).
func (r *Recorder) Fold(ctx context.Context, now time.Time) (int, error) {
	r.foldMu.Lock()
	defer r.foldMu.Unlock()
	return r.fold(ctx, now)
}

// foldLoop folds every foldEvery until ctx is done, then releases the fold's prepared
// statements.
func (r *Recorder) foldLoop(ctx context.Context) {
	t := time.NewTicker(r.foldEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			r.foldMu.Lock()
			r.fw.close()
			r.foldMu.Unlock()
			return
		case <-t.C:
			r.foldMu.Lock()
			r.foldTick(ctx)
			r.foldMu.Unlock()
		}
	}
}

// fold is Fold for the holder of foldMu.
func (r *Recorder) fold(ctx context.Context, now time.Time) (int, error) {
	ctx = rule.SystemContext(ctx)
	target := now.UTC().Truncate(time.Minute).Add(-foldLag).Unix()
	total := 0
	for range foldSteps {
		var (
			n    int
			done bool
			err  error
		)
		for retry := 0; ; retry++ {
			n, done, err = r.foldStep(ctx, target)
			total += n
			if err == nil || !retryable(err) || retry == foldRetries {
				break
			}
			// A lock wait cut short (see foldStep): the fold gives way and tries again.
			select {
			case <-time.After(time.Duration(retry+1) * 50 * time.Millisecond):
			case <-ctx.Done():
				return total, ctx.Err()
			}
		}
		if err != nil && ctx.Err() == nil { // not a shutdown
			r.foldErrors.Add(1)
		}
		if err != nil || done {
			return total, err
		}
	}
	return total, nil
}

// retryable reports a fold step that gave way to a lock holder (PostgreSQL's
// lock_timeout or deadlock error): trying again soon is all it takes.
func retryable(err error) bool {
	var pqErr *pq.Error
	return errors.As(err, &pqErr) && (pqErr.Code == "55P03" || pqErr.Code == "40P01")
}

// foldStep folds the minutes from folded_before up to target (Unix seconds), at most
// foldSpan of them after the first minute that has rows. done reports that
// folded_before reached target (or that there is no usage_folds row).
//
// The batches wait while a fold holds the boundary, so the fold does most of its work
// before it takes it: it reads the minute rows and adds them to the hour and day rows
// (uncommitted, so no query sees them yet), then locks the boundary, which waits for
// the batches in flight, reads the minute rows again and adds what those batches
// wrote meanwhile, moves the boundary and commits. A fold that finds the boundary
// moved by another when it gets the lock rolls back. A batch with a late event for an
// hour row the fold holds waits for it while the fold waits for the batch: the fold's
// lock_timeout ends that (rare) standoff before PostgreSQL's deadlock check would, and
// Fold tries the step again.
func (r *Recorder) foldStep(ctx context.Context, target int64) (rows int, done bool, err error) {
	if r.st.Dialect != "postgres" {
		if err := r.fw.prepareRollups(ctx, r.st.DB); err != nil {
			return 0, false, err
		}
	}
	tx, err := r.st.DB.BeginTx(ctx, nil)
	if err != nil {
		return 0, false, err
	}
	defer func() { _ = tx.Rollback() }() // after Commit, a no-op
	if r.st.Dialect == "postgres" {
		// The fold, not a batch, gives way when they wait for each other: a batch with
		// a late event for an hour row this fold holds, while the fold waits for the
		// batch's FOR SHARE (PostgreSQL would end that after deadlock_timeout, 1 s,
		// failing either). Another fold's hour rows are waited for the same way.
		if _, err = tx.ExecContext(ctx, "SET LOCAL lock_timeout = '"+foldLockTimeout+"'"); err != nil {
			return 0, false, err
		}
	}
	from, err := foldedBefore(ctx, tx, r.st.Dialect, lockNone)
	if err != nil {
		return 0, false, err
	}
	if from == math.MaxInt64 || from >= target {
		if from != math.MaxInt64 {
			r.foldedBefore.Store(from)
		}
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
	seen := map[minuteKey]rowCounts{}
	if !first.IsZero() && first.Unix() < target {
		to = min(target, first.Unix()+int64(foldSpan/time.Second))
		if rows, err = r.foldRange(ctx, tx, fromT, time.Unix(to, 0).UTC(), seen); err != nil {
			return rows, false, err
		}
	}
	if r.foldHook != nil {
		r.foldHook()
	}
	now, err := foldedBefore(ctx, tx, r.st.Dialect, lockUpdate)
	if err != nil {
		return rows, false, err
	}
	if now != from { // another fold moved it meanwhile: start again from there
		return 0, false, nil
	}
	// What the batches in flight wrote since the first read (or since the search for
	// the first minute, when there was none before target).
	n, err := r.foldRange(ctx, tx, fromT, time.Unix(to, 0).UTC(), seen)
	if err != nil {
		return rows, false, err
	}
	rows = max(rows, n)
	q, args = d.Update(usagefold.Table).Set(usagefold.FieldFoldedBefore, time.Unix(to, 0).UTC()).
		Where(entsql.EQ(usagefold.FieldID, foldID)).Query()
	if _, err = tx.ExecContext(ctx, q, args...); err != nil {
		return rows, false, fmt.Errorf("fold: move usage_folds: %w", err)
	}
	if err = tx.Commit(); err != nil {
		return rows, false, err
	}
	r.foldedBefore.Store(to)
	return rows, to >= target, nil
}

// minuteKey is a minute rollup row: its key and minute (Unix seconds).
type minuteKey struct {
	apiKeyID string
	start    int64
}

// foldRange adds the minute rows of [from, to) to their hour and day rows in tx, less
// what seen says an earlier read of the same range added already, and records in seen
// what it read. It returns how many minute rows it read.
func (r *Recorder) foldRange(ctx context.Context, tx *sql.Tx, from, to time.Time, seen map[minuteKey]rowCounts) (int, error) {
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
	w := &r.fw
	w.resetAggs()
	var (
		tenantID, apiKeyID string
		start              dbTime
		c                  rowCounts
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
		k := minuteKey{apiKeyID, sec}
		add := c
		if old, ok := seen[k]; ok {
			if old[0] == c[0] { // rows only grow, and every event adds a request
				continue
			}
			for i := range add {
				add[i] -= old[i]
			}
		}
		seen[k] = c
		for g := 1; g < len(granularities); g++ {
			w.agg(rollupKey{apiKeyID: apiKeyID, gran: uint8(g), start: floorTo(sec, granularities[g].secs)}, tenantID).addCounts(&add)
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
