package usage

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	entsql "entgo.io/ent/dialect/sql"
	"github.com/lib/pq"

	"github.com/latchkey/latchkey/ent/apikey"
	"github.com/latchkey/latchkey/ent/schema/rule"
	"github.com/latchkey/latchkey/ent/usagelog"
	"github.com/latchkey/latchkey/ent/usagerollup"
)

// logColumns are the usage_logs columns written, in order.
var logColumns = [...]string{
	usagelog.FieldTenantID, usagelog.FieldAPIKeyID, usagelog.FieldOwnerID, usagelog.FieldOperationName,
	usagelog.FieldOperationType, usagelog.FieldRootFields, usagelog.FieldOutcome,
	usagelog.FieldLatencyMs, usagelog.FieldIP, usagelog.FieldAt,
}

// copyUsageLogs is the COPY statement of the PostgreSQL path (lib/pq turns a prepared
// COPY ... FROM STDIN into a stream fed by Exec).
var copyUsageLogs = "COPY " + usagelog.Table + " (" + strings.Join(logColumns[:], ", ") + ") FROM STDIN"

// histColumns are the lat_a..lat_p columns, in bucket order.
var histColumns = [HistogramBuckets]string{
	usagerollup.FieldLatA, usagerollup.FieldLatB, usagerollup.FieldLatC, usagerollup.FieldLatD,
	usagerollup.FieldLatE, usagerollup.FieldLatF, usagerollup.FieldLatG, usagerollup.FieldLatH,
	usagerollup.FieldLatI, usagerollup.FieldLatJ, usagerollup.FieldLatK, usagerollup.FieldLatL,
	usagerollup.FieldLatM, usagerollup.FieldLatN, usagerollup.FieldLatO, usagerollup.FieldLatP,
}

// counterColumns are the additive columns of a rollup: the upsert adds the new values.
var counterColumns = append([]string{
	usagerollup.FieldRequests, usagerollup.FieldErrors, usagerollup.FieldRateLimited,
	usagerollup.FieldQuotaExceeded, usagerollup.FieldUncharged, usagerollup.FieldLatencySumMs,
}, histColumns[:]...)

// rowCounts are a rollup row's additive values, in the order of counterColumns.
type rowCounts [6 + HistogramBuckets]int64

// rollupColumns are the usage_rollups columns written, in order.
var rollupColumns = append([]string{
	usagerollup.FieldTenantID, usagerollup.FieldAPIKeyID, usagerollup.FieldGranularity,
	usagerollup.FieldBucketStart,
}, counterColumns...)

// maxNameLen caps client-chosen strings (the operation name, root fields).
const maxNameLen = 256

// rollupChunks are the row counts of the prepared rollup upserts a batch is cut into
// on SQLite, largest first (64 rows of 26 columns: 1,664 bound variables); the last
// must be 1. Compiling a statement of a thousand rows took longer than running it.
var rollupChunks = [...]int{64, 8, 1}

// sqliteChunks are the row counts of the prepared INSERTs a batch is cut into on
// SQLite, largest first (256 rows of 10 columns stay well under SQLite's limit of 32766
// bound variables); the last must be 1.
var sqliteChunks = [...]int{256, 16, 1}

// granularities are the rollup levels: the stored enum value and the bucket width.
var granularities = [...]struct {
	name usagerollup.Granularity
	secs int64
}{
	{usagerollup.GranularityMinute, 60},
	{usagerollup.GranularityHour, 3600},
	{usagerollup.GranularityDay, 86400},
}

// writer holds buffers (and SQLite's prepared statements) reused across batches or
// folds: Recorder.w is used only by the holder of Recorder.sem, Recorder.fw only by
// the holder of Recorder.foldMu.
type writer struct {
	stmts [len(sqliteChunks)]*sql.Stmt // SQLite: the prepared INSERTs, see prepare
	// rollupStmts are SQLite's prepared rollup upserts, one per rollupChunks size.
	rollupStmts [len(rollupChunks)]*sql.Stmt
	args        []any
	json        []byte
	index       map[rollupKey]int
	aggs        []rollupAgg
	// boxes holds, per string column, the last value appended and its interface value:
	// consecutive rows mostly repeat their tenant, key, type and outcome, and reusing
	// the boxed value saves an allocation per column and row.
	boxes [len(logColumns)]box
	// order is the order insertLogs writes a batch's rows in (indexes into it).
	order []int32
	// sec and secText are the Unix second and the "2006-01-02 15:04:05" of the last
	// time sqliteTime formatted; timeBuf is its buffer.
	sec     int64
	secText string
	timeBuf []byte
}

// box is a string and the interface value holding it.
type box struct {
	s string
	v any
}

// boxed returns raw made storable (by clean, or cleanName when name is set) as an
// interface value, reusing column col's last one when raw equals the last raw value.
func (w *writer) boxed(col int, raw string, name bool) any {
	b := &w.boxes[col]
	if b.v == nil || b.s != raw {
		if name {
			b.v = cleanName(raw)
		} else {
			b.v = clean(raw)
		}
		b.s = raw
	}
	return b.v
}

type rollupKey struct {
	apiKeyID string
	gran     uint8 // index in granularities
	start    int64 // Unix seconds, UTC-aligned to the granularity
}

type rollupAgg struct {
	key                                     rollupKey
	tenantID                                string
	requests, errors, rateLimited, quotaExc int64
	uncharged                               int64
	latencySum                              int64
	hist                                    Histogram
}

// addCounts adds c to a.
func (a *rollupAgg) addCounts(c *rowCounts) {
	a.requests += c[0]
	a.errors += c[1]
	a.rateLimited += c[2]
	a.quotaExc += c[3]
	a.uncharged += c[4]
	a.latencySum += c[5]
	a.hist.Merge((*Histogram)(c[6:]))
}

// counts returns a's additive values in the order of counterColumns.
func (a *rollupAgg) counts() rowCounts {
	var c rowCounts
	c[0], c[1], c[2], c[3], c[4], c[5] = a.requests, a.errors, a.rateLimited, a.quotaExc, a.uncharged, a.latencySum
	copy(c[6:], a.hist[:])
	return c
}

// write stores evs in one transaction: the raw rows and the rollups they add to.
// It returns the database error, the transaction rolled back.
func (r *Recorder) write(ctx context.Context, evs []Event) (err error) {
	ctx = rule.SystemContext(ctx)
	if r.st.Dialect != "postgres" {
		if err := r.w.prepare(ctx, r.st.DB); err != nil {
			return err
		}
	}
	tx, err := r.st.DB.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	// First, so that a fold waits for this batch (or this batch for the fold): see
	// fold.go.
	folded, err := foldedBefore(ctx, tx, r.st.Dialect, lockShare)
	if err != nil {
		return err
	}
	if r.st.Dialect == "postgres" {
		err = r.w.copyLogs(ctx, tx, evs)
	} else {
		err = r.w.insertLogs(ctx, tx, evs)
	}
	if err != nil {
		return err
	}
	if r.writeHook != nil {
		if err = r.writeHook(); err != nil {
			return err
		}
	}
	if err = r.w.upsertRollups(ctx, tx, r.st.EntDialect, r.w.aggregate(evs, folded)); err != nil {
		return err
	}
	if err = writeCredits(ctx, tx, r.st.EntDialect, evs); err != nil {
		return err
	}
	return tx.Commit()
}

// writeCredits stores, for each key whose balance the batch changed, the balance its
// last event left: at most one flush of spending is lost when the limit store is.
func writeCredits(ctx context.Context, tx *sql.Tx, dialectName string, evs []Event) error {
	var last map[string]*CreditsState // most batches hold no credits: no map
	for i := range evs {
		if c := evs[i].Credits; c != nil {
			if last == nil {
				last = map[string]*CreditsState{}
			}
			last[c.KeyID] = c
		}
	}
	for _, c := range last {
		query, args := entsql.Dialect(dialectName).Update(apikey.Table).
			Set(apikey.FieldCreditsRemaining, c.Remaining).
			Set(apikey.FieldCreditsPeriodStart, c.PeriodStart.UTC()).
			Where(entsql.EQ(apikey.FieldID, c.KeyID)).
			Query()
		if _, err := tx.ExecContext(ctx, query, args...); err != nil {
			return fmt.Errorf("write credits: %w", err)
		}
	}
	return nil
}

// copyLogs streams the raw rows with COPY ... FROM STDIN (PostgreSQL).
func (w *writer) copyLogs(ctx context.Context, tx *sql.Tx, evs []Event) error {
	stmt, err := tx.PrepareContext(ctx, copyUsageLogs)
	if err != nil {
		return fmt.Errorf("prepare copy: %w", err)
	}
	defer stmt.Close()
	for i := range evs {
		args := w.appendRow(w.args[:0], &evs[i], false)
		_, err := stmt.ExecContext(ctx, args...)
		clear(args)
		w.args = args[:0]
		if err != nil {
			return fmt.Errorf("copy usage_logs: %w", err)
		}
	}
	if _, err := stmt.ExecContext(ctx); err != nil {
		return fmt.Errorf("copy usage_logs: %w", err)
	}
	return nil
}

// insertLogs inserts the raw rows with multi-row INSERTs (SQLite), grouped by tenant
// and key (see rowOrder).
func (w *writer) insertLogs(ctx context.Context, tx *sql.Tx, evs []Event) error {
	order := w.rowOrder(evs)
	err := w.execChunks(ctx, tx, w.stmts[:], sqliteChunks[:], len(order), func(args []any, i int) []any {
		return w.appendRow(args, &evs[order[i]], true)
	})
	if err != nil {
		return fmt.Errorf("insert usage_logs: %w", err)
	}
	return nil
}

// execChunks runs n rows through the prepared statements of SQLite in tx, stmts[c]
// taking sizes[c] rows (largest first, the last 1 row), as many of the largest as fit;
// row appends the values of row i to args. It returns the database's error.
func (w *writer) execChunks(ctx context.Context, tx *sql.Tx, stmts []*sql.Stmt, sizes []int, n int, row func(args []any, i int) []any) error {
	var inTx [max(len(sqliteChunks), len(rollupChunks))]*sql.Stmt
	for next := 0; next < n; {
		c := 0
		for sizes[c] > n-next {
			c++
		}
		if inTx[c] == nil {
			inTx[c] = tx.StmtContext(ctx, stmts[c])
		}
		args := w.args[:0]
		for i := next; i < next+sizes[c]; i++ {
			args = row(args, i)
		}
		next += sizes[c]
		_, err := inTx[c].ExecContext(ctx, args...)
		clear(args)
		w.args = args[:0]
		if err != nil {
			return err
		}
		// A chunk is about a millisecond of CPU. Requests readied on this goroutine's
		// processor wait behind it until it yields (or, past 10 ms, is preempted).
		runtime.Gosched()
	}
	return nil
}

// rowOrder returns the indexes of evs grouped by tenant, then key, each group in
// arrival order. SQLite inserts rows into each index of usage_logs by a descent from
// the root; rows of one key in a row find the same pages on the way down and land on
// the same leaf, where interleaved keys' rows each touch another path (and repeat
// fewer column values, see boxed). With 50 keys interleaved this is a fifth less CPU
// per stored row (BenchmarkRecorderIngestSQLite). The ids the rows get follow this
// order; nothing reads arrival order from them (the request log orders by at, then id).
func (w *writer) rowOrder(evs []Event) []int32 {
	order := w.order[:0]
	for i := range evs {
		order = append(order, int32(i))
	}
	slices.SortFunc(order, func(a, b int32) int {
		x, y := &evs[a], &evs[b]
		return cmp.Or(strings.Compare(x.TenantID, y.TenantID), strings.Compare(x.APIKeyID, y.APIKeyID), cmp.Compare(a, b))
	})
	w.order = order
	return order
}

// prepare prepares the INSERTs of sqliteChunks rows and the upserts of rollupChunks
// rows on db once (SQLite compiles a statement of hundreds of rows in about the time
// it takes to run it). It must run outside a transaction: the store may have a single
// connection. It returns the database's error.
func (w *writer) prepare(ctx context.Context, db *sql.DB) error {
	if err := prepareChunks(ctx, db, w.stmts[:], sqliteChunks[:], insertLogsSQL); err != nil {
		return fmt.Errorf("prepare the usage_logs insert: %w", err)
	}
	return w.prepareRollups(ctx, db)
}

// prepareRollups is prepare for the rollup upserts alone: all the fold writes.
func (w *writer) prepareRollups(ctx context.Context, db *sql.DB) error {
	if err := prepareChunks(ctx, db, w.rollupStmts[:], rollupChunks[:], upsertRollupsSQL); err != nil {
		return fmt.Errorf("prepare the usage_rollups upsert: %w", err)
	}
	return nil
}

// prepareChunks prepares stmts[c], when nil, as the statement text gives for sizes[c]
// rows. It returns the database's error.
func prepareChunks(ctx context.Context, db *sql.DB, stmts []*sql.Stmt, sizes []int, text func(rows int) string) error {
	for c, rows := range sizes {
		if stmts[c] == nil {
			stmt, err := db.PrepareContext(ctx, text(rows))
			if err != nil {
				return err
			}
			stmts[c] = stmt
		}
	}
	return nil
}

// close releases the prepared statements.
func (w *writer) close() {
	for _, stmt := range append(w.stmts[:], w.rollupStmts[:]...) {
		if stmt != nil {
			_ = stmt.Close()
		}
	}
	w.stmts, w.rollupStmts = [len(sqliteChunks)]*sql.Stmt{}, [len(rollupChunks)]*sql.Stmt{}
}

// appendRow appends the values of ev's usage_logs row, in the order of logColumns,
// made storable. The strings' interface values come from boxed, by column index. For
// SQLite (sqlite set) the time is given as the text the driver would write for it.
func (w *writer) appendRow(args []any, ev *Event, sqlite bool) []any {
	owner := w.boxed(2, ev.OwnerID, false)
	if owner == "" {
		owner = nil // an empty optional string is stored as NULL
	}
	at := storedTime(ev.At)
	var atv any
	if sqlite {
		atv = w.sqliteTime(at)
	} else {
		atv = at
	}
	return append(args, w.boxed(0, ev.TenantID, false), w.boxed(1, ev.APIKeyID, false), owner,
		w.boxed(3, ev.OperationName, true), w.boxed(4, ev.OperationType, false), w.rootFields(ev.RootFields),
		w.boxed(6, string(ev.Outcome), false), int64(ev.LatencyMs), w.boxed(8, ev.IP, false), atv)
}

// sqliteTimeFormat is the layout the SQLite driver writes times in (the store opens it
// with _time_format=sqlite).
const sqliteTimeFormat = "2006-01-02 15:04:05.999999999-07:00"

// sqliteTime returns t as t.Format(sqliteTimeFormat) does, byte for byte, reusing the
// date and time of day of the previous row when they are the same second (most rows of
// a batch): formatting every row's time in full was 2% of a verification's CPU.
func (w *writer) sqliteTime(t time.Time) string {
	if t.Location() != time.UTC {
		return t.Format(sqliteTimeFormat)
	}
	if sec := t.Unix(); sec != w.sec || w.secText == "" {
		w.sec, w.secText = sec, t.Format(time.DateTime)
	}
	b := append(w.timeBuf[:0], w.secText...)
	if ns := t.Nanosecond(); ns != 0 { // .999999999: no trailing zeros, no dot for none
		var frac [10]byte
		frac[0] = '.'
		for i := 9; i > 0; i-- {
			frac[i] = byte('0' + ns%10)
			ns /= 10
		}
		n := len(frac)
		for frac[n-1] == '0' {
			n--
		}
		b = append(b, frac[:n]...)
	}
	b = append(b, "+00:00"...)
	w.timeBuf = b
	return string(b)
}

// storedTime is t as stored: UTC, at PostgreSQL's microsecond precision on both
// dialects, so that both store the same raw rows.
func storedTime(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }

// insertLogsSQL returns an INSERT of n rows into usage_logs (SQLite only).
//
// OR FAIL: a multi-row statement that may abort (the default conflict action, ABORT,
// undoes the statement's own rows) makes SQLite copy every existing page it touches to
// a statement journal, which spills to a temporary file past 64 KiB: 1.3 writes per row,
// a third of the writer's CPU with 50 keys interleaved (index pages all over the tree).
// FAIL keeps the rows before a failing one, which changes nothing here: any error rolls
// the whole batch's transaction back (write).
func insertLogsSQL(n int) string {
	var b strings.Builder
	row := "(?" + strings.Repeat(", ?", len(logColumns)-1) + ")"
	b.Grow(64 + n*(len(row)+2))
	b.WriteString("INSERT OR FAIL INTO " + usagelog.Table + " (" + strings.Join(logColumns[:], ", ") + ") VALUES ")
	for i := range n {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(row)
	}
	return b.String()
}

// rootFields encodes fields as a JSON array for the root_fields column (NULL for nil).
func (w *writer) rootFields(fields []string) any {
	if fields == nil {
		return nil
	}
	b := append(w.json[:0], '[')
	for i, f := range fields {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, cleanName(f))
	}
	b = append(b, ']')
	w.json = b
	if last := &w.boxes[5]; last.v != nil && last.s == string(b) {
		return last.v
	}
	return w.boxed(5, string(b), false) // valid UTF-8 without NUL already
}

// appendJSONString appends s as a JSON string; GraphQL names take the fast path.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= utf8.RuneSelf || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s) // cannot fail for a string
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// clean makes s storable in PostgreSQL text and jsonb columns: valid UTF-8 and no NUL
// bytes. Strings that already are (almost all) are returned as is, without allocating.
func clean(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == 0 || c >= utf8.RuneSelf {
			if utf8.ValidString(s) && strings.IndexByte(s, 0) < 0 {
				return s
			}
			return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "")
		}
	}
	return s
}

// cleanName is clean for client-chosen names, also capped at maxNameLen bytes.
func cleanName(s string) string {
	s = clean(s)
	if len(s) <= maxNameLen {
		return s
	}
	n := maxNameLen
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// aggregate sums evs per key, granularity and bucket, sorted by (key, granularity,
// bucket) so that concurrent writers lock rollup rows in the same order. An event adds
// to its hour and day rows only when its minute is before folded (Unix seconds, see
// foldedBefore); the rows of later minutes reach them through the fold.
func (w *writer) aggregate(evs []Event, folded int64) []rollupAgg {
	w.resetAggs()
	for i := range evs {
		ev := &evs[i]
		apiKeyID := clean(ev.APIKeyID)
		sec := ev.At.Unix()
		bucket := bucketOf(ev.LatencyMs)
		counts := countAs(ev.Outcome)
		levels := granularities[:]
		if floorTo(sec, granularities[0].secs) >= folded {
			levels = levels[:1]
		}
		for g, gr := range levels {
			a := w.agg(rollupKey{apiKeyID: apiKeyID, gran: uint8(g), start: floorTo(sec, gr.secs)}, ev.TenantID)
			a.requests++
			switch counts {
			case countRateLimited:
				a.rateLimited++
			case countQuotaExceeded:
				a.quotaExc++
			case countError:
				a.errors++
				fallthrough
			case countOK:
				if ev.Uncharged {
					a.uncharged++ // limit refusals are left out of quotas already
				}
			}
			a.latencySum += int64(ev.LatencyMs)
			a.hist[bucket]++
		}
	}
	return w.sortedAggs()
}

// floorTo returns the Unix second sec rounded down to a multiple of step (UTC buckets).
func floorTo(sec, step int64) int64 { return sec - ((sec%step)+step)%step }

// resetAggs empties the aggregates for a new batch (or fold).
func (w *writer) resetAggs() {
	if w.index == nil {
		w.index = make(map[rollupKey]int)
	}
	clear(w.index)
	clear(w.aggs)
	w.aggs = w.aggs[:0]
}

// agg returns the aggregate of k, adding it (for tenantID) when it is new. The pointer
// is valid until the next call.
func (w *writer) agg(k rollupKey, tenantID string) *rollupAgg {
	j, ok := w.index[k]
	if !ok {
		j = len(w.aggs)
		w.index[k] = j
		w.aggs = append(w.aggs, rollupAgg{key: k, tenantID: tenantID})
	}
	return &w.aggs[j]
}

// sortedAggs returns the aggregates sorted by (key, granularity, bucket).
func (w *writer) sortedAggs() []rollupAgg {
	slices.SortFunc(w.aggs, func(a, b rollupAgg) int {
		return cmp.Or(strings.Compare(a.key.apiKeyID, b.key.apiKeyID), cmp.Compare(a.key.gran, b.key.gran), cmp.Compare(a.key.start, b.key.start))
	})
	return w.aggs
}

// upsertRollups adds aggs to usage_rollups, one row per key, granularity and bucket,
// added to the row already there:
//
//	INSERT INTO usage_rollups (...) VALUES (...), ...
//	ON CONFLICT (api_key_id, granularity, bucket_start)
//	DO UPDATE SET requests = requests + excluded.requests, ...
//
// On SQLite the statements are prepared once per chunk size (see prepare); PostgreSQL
// gets one statement of arrays (upsertRollupsPG). It returns the database's error.
func (w *writer) upsertRollups(ctx context.Context, tx *sql.Tx, dialectName string, aggs []rollupAgg) error {
	if dialectName == "postgres" {
		return w.upsertRollupsPG(ctx, tx, aggs)
	}
	err := w.execChunks(ctx, tx, w.rollupStmts[:], rollupChunks[:], len(aggs), func(args []any, i int) []any {
		a := &aggs[i]
		args = append(args, clean(a.tenantID), a.key.apiKeyID, granularities[a.key.gran].name.String(),
			time.Unix(a.key.start, 0).UTC())
		for _, v := range a.counts() {
			args = append(args, v)
		}
		return args
	})
	if err != nil {
		return fmt.Errorf("upsert usage_rollups: %w", err)
	}
	return nil
}

// upsertRollupsSQL is the SQLite upsert of n rollup rows. Like the raw rows' INSERT it
// is OR FAIL: an error rolls the batch's transaction back anyway, and ABORT would make
// SQLite keep a statement journal of every page the statement touches.
func upsertRollupsSQL(n int) string {
	var b strings.Builder
	row := "(?" + strings.Repeat(", ?", len(rollupColumns)-1) + ")"
	b.WriteString("INSERT OR FAIL INTO " + usagerollup.Table + " (" + strings.Join(rollupColumns, ", ") + ") VALUES ")
	for i := range n {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(row)
	}
	addOnConflict(&b, "")
	return b.String()
}

// addOnConflict writes the upserts' conflict clause: a row already there gets the new
// counts added, its columns read as qualifier+column ("t." when the table is aliased).
func addOnConflict(b *strings.Builder, qualifier string) {
	b.WriteString(" ON CONFLICT (" + usagerollup.FieldAPIKeyID + ", " + usagerollup.FieldGranularity + ", " +
		usagerollup.FieldBucketStart + ") DO UPDATE SET ")
	for i, c := range counterColumns {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(c + " = " + qualifier + c + " + excluded." + c)
	}
}

// upsertRollupsPG is the PostgreSQL statement of upsertRollups: the rows go as one
// array per column, expanded by unnest, so that the statement has 26 parameters
// whatever the batch. A multi-row VALUES list has 26 per row, and PostgreSQL parses and
// plans each of them: with a batch of a thousand keys, that was most of the database's
// time per usage event.
var upsertRollupsPG = func() string {
	var b strings.Builder
	b.WriteString("INSERT INTO " + usagerollup.Table + " AS t (" + strings.Join(rollupColumns, ", ") + ") SELECT ")
	for i, c := range rollupColumns {
		if i > 0 {
			b.WriteString(", ")
		}
		if c == usagerollup.FieldBucketStart {
			b.WriteString("to_timestamp(u." + c + ")")
		} else {
			b.WriteString("u." + c)
		}
	}
	b.WriteString(" FROM unnest(")
	for i := range rollupColumns { // tenant, key and granularity, then numbers
		if i > 0 {
			b.WriteString(", ")
		}
		typ := "int8[]"
		if i < 3 {
			typ = "text[]"
		}
		fmt.Fprintf(&b, "$%d::%s", i+1, typ)
	}
	b.WriteString(") AS u(" + strings.Join(rollupColumns, ", ") + ")")
	addOnConflict(&b, "t.")
	return b.String()
}()

// upsertRollupsPG writes aggs with the upsertRollupsPG statement. It returns the
// database's error.
func (w *writer) upsertRollupsPG(ctx context.Context, tx *sql.Tx, aggs []rollupAgg) error {
	if len(aggs) == 0 {
		return nil
	}
	n := len(aggs)
	tenants, keys, grans := make([]string, n), make([]string, n), make([]string, n)
	ints := make([]int64, n*(len(rollupColumns)-3)) // bucket_start, then the counters
	col := func(j int) []int64 { return ints[j*n : (j+1)*n : (j+1)*n] }
	for i := range aggs {
		a := &aggs[i]
		tenants[i], keys[i], grans[i] = clean(a.tenantID), a.key.apiKeyID, granularities[a.key.gran].name.String()
		col(0)[i] = a.key.start
		for j, v := range a.counts() {
			col(1 + j)[i] = v
		}
	}
	args := make([]any, 0, len(rollupColumns))
	args = append(args, pq.StringArray(tenants), pq.StringArray(keys), pq.StringArray(grans))
	for j := range len(rollupColumns) - 3 {
		args = append(args, pq.Int64Array(col(j)))
	}
	if _, err := tx.ExecContext(ctx, upsertRollupsPG, args...); err != nil {
		return fmt.Errorf("upsert usage_rollups: %w", err)
	}
	return nil
}
