// Package usagepart keeps the daily partitions of the PostgreSQL usage_logs table
// (see the migration usage_logs_partitioned): it creates them ahead of time and drops
// whole expired ones, so that retention never deletes rows one by one.
//
// Partition usage_logs_pYYYYMMDD holds the rows whose "at" falls on that UTC day.
// usage_logs_default takes rows outside every day partition (a clock far off, an
// event stamped in the past), so an insert never fails for a missing partition; Ensure
// moves such rows into partitions of their days. Every change runs in a transaction
// that holds an advisory lock (several instances may run it at once) and gives up
// after a short lock_timeout rather than queue the application's queries behind it.
// SQLite has no partitions: nothing here applies to it.
package usagepart

import (
	"context"
	"database/sql"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/lib/pq"
)

const (
	// Table is the partitioned table.
	Table = "usage_logs"
	// DefaultPartition takes the rows outside every day partition.
	DefaultPartition = Table + "_default"
	// prefix names the day partitions: usage_logs_p20261130.
	prefix = Table + "_p"
	// DefaultAhead is how many days after today Ensure prepares.
	DefaultAhead = 7
	// lockKey is the advisory lock of partition maintenance ("usagepart").
	lockKey = 0x7573616765706172
	// lockTimeout bounds how long maintenance waits for a table lock: creating or
	// dropping a partition briefly locks usage_logs, and every query on it would
	// queue behind a waiting maintenance.
	lockTimeout = "2s"
	day         = 24 * time.Hour
)

// Name returns the name of the partition of the UTC day of t.
func Name(t time.Time) string { return prefix + t.UTC().Format("20060102") }

// dayOf parses a partition name back to its day; ok is false for other tables.
func dayOf(name string) (time.Time, bool) {
	s, ok := strings.CutPrefix(name, prefix)
	if !ok || len(s) != 8 {
		return time.Time{}, false
	}
	d, err := time.Parse("20060102", s)
	return d, err == nil
}

// Partitions returns the days of the existing day partitions, oldest first.
// It returns the database's error.
func Partitions(ctx context.Context, db *sql.DB) ([]time.Time, error) {
	rows, err := db.QueryContext(ctx, `SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
		WHERE i.inhparent = $1::regclass`, Table)
	if err != nil {
		return nil, fmt.Errorf("usagepart: list partitions: %w", err)
	}
	defer rows.Close()
	var days []time.Time
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			return nil, fmt.Errorf("usagepart: list partitions: %w", err)
		}
		if d, ok := dayOf(name); ok {
			days = append(days, d)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("usagepart: list partitions: %w", err)
	}
	sort.Slice(days, func(i, j int) bool { return days[i].Before(days[j]) })
	return days, nil
}

// Ensure creates the partitions of the UTC days from yesterday through ahead days
// after now's that do not exist yet, and gives every day that has rows in the default
// partition a partition of its own, moving those rows into it (ids kept). It returns
// how many partitions it created and the first database error (a lock not obtained in
// time included: the next call carries on).
func Ensure(ctx context.Context, db *sql.DB, now time.Time, ahead int) (created int, err error) {
	have, err := Partitions(ctx, db)
	if err != nil {
		return 0, err
	}
	exists := make(map[time.Time]bool, len(have))
	for _, d := range have {
		exists[d] = true
	}
	today := now.UTC().Truncate(day)
	var missing []time.Time
	add := func(d time.Time) {
		if !exists[d] {
			exists[d] = true // a stray day within the range is created once
			missing = append(missing, d)
		}
	}
	for d := today.Add(-day); !d.After(today.Add(time.Duration(ahead) * day)); d = d.Add(day) {
		add(d)
	}
	stray, err := strayDays(ctx, db)
	if err != nil {
		return 0, err
	}
	for _, d := range stray {
		add(d)
	}
	for _, d := range missing {
		ok, err := create(ctx, db, d)
		if err != nil {
			return created, err
		}
		if ok {
			created++
		}
	}
	return created, nil
}

// strayDays returns the UTC days of the rows in the default partition.
func strayDays(ctx context.Context, db *sql.DB) ([]time.Time, error) {
	rows, err := db.QueryContext(ctx, `SELECT DISTINCT date_trunc('day', at, 'UTC') FROM `+pq.QuoteIdentifier(DefaultPartition))
	if err != nil {
		return nil, fmt.Errorf("usagepart: read default partition: %w", err)
	}
	defer rows.Close()
	var days []time.Time
	for rows.Next() {
		var d time.Time
		if err := rows.Scan(&d); err != nil {
			return nil, fmt.Errorf("usagepart: read default partition: %w", err)
		}
		days = append(days, d.UTC())
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("usagepart: read default partition: %w", err)
	}
	return days, nil
}

// create makes the partition of day d (if another instance did not meanwhile),
// moving the default partition's rows of that day into it, in one transaction.
func create(ctx context.Context, db *sql.DB, d time.Time) (bool, error) {
	name := Name(d)
	lo, hi := d.Format(time.RFC3339), d.Add(day).Format(time.RFC3339)
	created := false
	err := inTx(ctx, db, func(tx *sql.Tx) error {
		var exists bool
		if err := tx.QueryRowContext(ctx, `SELECT to_regclass($1) IS NOT NULL`, name).Scan(&exists); err != nil {
			return err
		}
		if exists {
			return nil
		}
		// Rows of the day in the default partition move to the new one. A query that
		// plans against the partitions as they were, then reads with a snapshot taken
		// after the move committed, would find them in neither: the whole table is
		// locked for the move (only then; a day nobody has written to moves nothing).
		var stray bool
		if err := tx.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM `+pq.QuoteIdentifier(DefaultPartition)+` WHERE at >= $1 AND at < $2)`,
			lo, hi).Scan(&stray); err != nil {
			return err
		}
		if stray {
			if _, err := tx.ExecContext(ctx, `LOCK TABLE `+pq.QuoteIdentifier(Table)+` IN ACCESS EXCLUSIVE MODE`); err != nil {
				return err
			}
		}
		// The partition is made as a table of its own, given the default partition's
		// rows of its day (ATTACH refuses a range for which the default partition
		// still holds rows), then attached. ATTACH locks usage_logs only against other
		// schema changes, so the recorder's inserts go on (CREATE TABLE ... PARTITION
		// OF would lock them out); reads wait for the moment it holds the default
		// partition, which it checks while empty.
		if _, err := tx.ExecContext(ctx, fmt.Sprintf(`CREATE TABLE %s (LIKE %s INCLUDING DEFAULTS)`,
			pq.QuoteIdentifier(name), pq.QuoteIdentifier(Table))); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `WITH m AS (DELETE FROM `+pq.QuoteIdentifier(DefaultPartition)+` WHERE at >= $1 AND at < $2 RETURNING *)
			INSERT INTO `+pq.QuoteIdentifier(name)+` SELECT * FROM m`, lo, hi); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, fmt.Sprintf(`ALTER TABLE %s ATTACH PARTITION %s FOR VALUES FROM (%s) TO (%s)`,
			pq.QuoteIdentifier(Table), pq.QuoteIdentifier(name), pq.QuoteLiteral(lo), pq.QuoteLiteral(hi))); err != nil {
			return err
		}
		created = true
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("usagepart: create %s: %w", name, err)
	}
	return created, nil
}

// DropBefore drops the day partitions whose whole day lies before cutoff, oldest
// first, after Ensure has given stray rows of the default partition their days. It
// returns the number of rows they held (the planner's estimate for a partition that
// was analyzed, an exact count for one never analyzed, i.e. small) and the first
// database error.
func DropBefore(ctx context.Context, db *sql.DB, cutoff time.Time) (rows int64, err error) {
	days, err := Partitions(ctx, db)
	if err != nil {
		return 0, err
	}
	for _, d := range days {
		if d.Add(day).After(cutoff) {
			break
		}
		name := Name(d)
		err := inTx(ctx, db, func(tx *sql.Tx) error {
			var n int64
			if err := tx.QueryRowContext(ctx, `SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass($1)`, name).Scan(&n); err != nil {
				if err == sql.ErrNoRows {
					return nil // dropped by another instance
				}
				return err
			}
			if n < 0 {
				if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM `+pq.QuoteIdentifier(name)).Scan(&n); err != nil {
					return err
				}
			}
			if _, err := tx.ExecContext(ctx, `DROP TABLE IF EXISTS `+pq.QuoteIdentifier(name)); err != nil {
				return err
			}
			rows += n
			return nil
		})
		if err != nil {
			return rows, fmt.Errorf("usagepart: drop %s: %w", name, err)
		}
	}
	return rows, nil
}

// inTx runs f in a transaction holding the maintenance advisory lock, with a short
// lock_timeout.
func inTx(ctx context.Context, db *sql.DB, f func(*sql.Tx) error) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	if _, err := tx.ExecContext(ctx, `SET LOCAL lock_timeout = '`+lockTimeout+`'`); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(lockKey)); err != nil {
		return err
	}
	if err := f(tx); err != nil {
		return err
	}
	return tx.Commit()
}
