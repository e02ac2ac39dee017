// Package usage records one event per authenticated operation and answers usage queries.
//
// The request path only calls Recorder.Record, which puts the event in a bounded
// in-process queue and never touches the database. Recorder.Run writes the queue in
// batches, one transaction each: the raw rows into usage_logs (COPY on PostgreSQL,
// multi-row INSERTs on SQLite) and the per-key minute, hour and day rollups into
// usage_rollups with an additive upsert, so raw rows and rollups never disagree and
// several instances can write the same rollup rows. A batch writes the hour and day
// rollups only of minutes already folded: Run folds the minute rollups into them
// every few seconds (fold.go). Query and Used read only the rollups; latency
// percentiles come from a fixed histogram that merges across buckets.
package usage

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/latchkey/latchkey/internal/data/store"
	"github.com/latchkey/latchkey/internal/data/usagepart"
)

// Outcome is how an operation ended.
type Outcome string

// Outcomes of an operation. In the rollups, rate_limited and quota_exceeded (and
// usage_exceeded) have counters of their own; ok and valid are successes; every other
// outcome counts as an error.
const (
	OutcomeOK            Outcome = "ok"
	OutcomeError         Outcome = "error"
	OutcomeRateLimited   Outcome = "rate_limited"
	OutcomeQuotaExceeded Outcome = "quota_exceeded"
	OutcomeForbidden     Outcome = "forbidden"
)

// Outcomes of a verification (operation type "verify"), named as its code.
const (
	OutcomeValid                   Outcome = "valid"
	OutcomeRevoked                 Outcome = "revoked"
	OutcomeExpired                 Outcome = "expired"
	OutcomeDisabled                Outcome = "disabled"
	OutcomeTenantInactive          Outcome = "tenant_inactive"
	OutcomeInsufficientPermissions Outcome = "insufficient_permissions"
	OutcomeUsageExceeded           Outcome = "usage_exceeded"
)

// Event is one authenticated operation.
type Event struct {
	TenantID string
	APIKeyID string
	// OwnerID is the owner of a consumer key (verifications); "" otherwise.
	OwnerID       string
	OperationName string
	OperationType string // query, mutation, subscription
	RootFields    []string
	Outcome       Outcome
	LatencyMs     int
	IP            string
	// Credits, when set, is the credit balance the operation left (the live one):
	// the recorder writes the last of each batch to the key's row, from where a lost
	// limit store seeds it again.
	Credits *CreditsState
	// Uncharged marks an operation that charged no quota although it was not refused
	// by a limit: refused before the limits (a revoked or disabled key, missing
	// permissions, a cost above the whole limit) or while a limit store was down. Quota
	// counters rebuilt from the stored usage leave it out.
	Uncharged bool
	// At is when the operation started; Record sets it to the current time when zero.
	// It is stored in UTC.
	At time.Time

	// queued is when Record queued the event, on the recorder's monotonic clock (ns
	// since Recorder.epoch): flush deadlines and the lag are measured from it.
	queued int64
}

// CreditsState is a credit balance after an operation: Remaining in the refill period
// starting at PeriodStart, kept under the key KeyID (the first key of a rotation chain).
type CreditsState struct {
	KeyID       string
	Remaining   int64
	PeriodStart time.Time
}

// Config tunes a Recorder. Zero values take the defaults.
//
// Together they bound what a crash (kill -9, power loss) can lose: the events recorded
// in the last FlushInterval plus the duration of one batch write while the writer
// keeps up, and never more than BufferSize + BatchSize events (see [Recorder.Run]).
type Config struct {
	// BufferSize bounds the in-process queue (default DefaultBufferSize). A full queue
	// makes Record wait up to BlockTimeout, then drop.
	BufferSize int
	BatchSize  int // max events per write (default DefaultBatchSize)
	// FlushInterval is the longest an event waits in the queue before its batch is
	// written, measured from Record (default DefaultFlushInterval).
	FlushInterval time.Duration
	// BlockTimeout is how long Record may wait for space when the queue is full before
	// dropping the event (default 0: never wait; drop and count). Waiting is the
	// recorder's backpressure: it slows callers down to what the database absorbs.
	BlockTimeout time.Duration
	// Retention: raw usage_logs older than this are pruned (default 30 days); minute
	// rollups are kept twice as long; hour and day rollups forever.
	Retention time.Duration
	// OnEvent, when set, is called for every recorded event (live subscriptions), on the
	// goroutine that calls Record, after the event is queued; dropped events are not
	// passed. It must not block, and must not modify ev.RootFields (shared with the queue).
	OnEvent func(Event)
	// OnWrite, when set, is told the size and duration of every write attempt (err is
	// nil when it committed), on the writing goroutine. It must not block.
	OnWrite func(events int, took time.Duration, err error)
}

// Defaults of Config.
const (
	// DefaultBufferSize equals DefaultBatchSize: a queue that a single write empties,
	// so that an event never waits behind more than one batch.
	DefaultBufferSize    = 5000
	DefaultBatchSize     = 5000
	DefaultFlushInterval = 100 * time.Millisecond
	DefaultRetention     = 30 * 24 * time.Hour
)

// Stats are the counters of a Recorder since it was created.
type Stats struct {
	// Queued is the number of events recorded but not yet written.
	Queued int
	// Recorded counts events accepted by Record; Written those stored; Dropped those
	// lost, either refused by Record because the queue was full or given up after
	// repeated write failures. Once the queue is empty, Recorded == Written + the
	// write-failure part of Dropped.
	Recorded, Written, Dropped uint64
	// Waits counts Record calls that found the queue full and had to wait for room
	// (backpressure), whether they then got it or dropped the event.
	Waits uint64
	// Batches counts committed write transactions; WriteErrors failed write attempts.
	Batches, WriteErrors uint64
	// Lag is how long the oldest event not yet written has been waiting since Record
	// (0 when the writer holds none): what a crash right now would lose, in time.
	Lag time.Duration
	// FoldedBefore is the fold boundary this recorder last saw fold to (or found
	// folded): every minute before it is in the hour and day rollups. Zero until its
	// first fold; normally one to two minutes ago. FoldErrors counts folds that failed.
	FoldedBefore time.Time
	FoldErrors   uint64
}

// Recorder batches usage events into the database. Record is safe for concurrent use;
// Run is started once per Recorder.
type Recorder struct {
	st  *store.Store
	cfg Config

	ch       chan Event
	flushReq chan chan error
	// sem is held by the goroutine that owns the writer: Run for its lifetime, or a
	// Flush that writes by itself while Run is not running.
	sem chan struct{}

	// epoch starts the monotonic clock of Event.queued.
	epoch time.Time
	// oldest is Event.queued + 1 of the oldest event the writer holds (0: none).
	oldest                     atomic.Int64
	pending                    atomic.Int64
	recorded, written, dropped atomic.Uint64
	waits                      atomic.Uint64
	batches, writeErrors       atomic.Uint64
	foldedBefore               atomic.Int64 // Unix seconds, 0: no fold yet
	foldErrors                 atomic.Uint64
	lastWaitLog                atomic.Int64 // epoch ns of the last backpressure warning

	// Retry and pruning knobs (tests shorten them).
	maxAttempts      int           // write attempts per batch while running
	shutdownAttempts int           // write attempts per batch while draining
	backoff          time.Duration // first retry delay, doubled up to maxBackoff
	maxBackoff       time.Duration
	writeTimeout     time.Duration
	firstPrune       time.Duration
	pruneEvery       time.Duration
	foldEvery        time.Duration
	now              func() time.Time // the clock of Record stamps, flush deadlines and pruning
	// writeHook, when set (tests), runs inside each write transaction after the raw
	// rows; an error fails the write.
	writeHook func() error
	// foldHook, when set (tests), runs inside each fold transaction after its first
	// read of the minutes, before it locks the boundary.
	foldHook func()

	// Writer state, used only by the holder of sem.
	w writer
	// foldMu is held by the fold, which runs beside the batch writer with its own
	// buffers and prepared statements (fw).
	foldMu sync.Mutex
	fw     writer
}

// NewRecorder returns a Recorder writing to st. It starts nothing: call Run.
func NewRecorder(st *store.Store, cfg Config) *Recorder {
	if cfg.BufferSize <= 0 {
		cfg.BufferSize = DefaultBufferSize
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = DefaultBatchSize
	}
	if cfg.FlushInterval <= 0 {
		cfg.FlushInterval = DefaultFlushInterval
	}
	if cfg.Retention <= 0 {
		cfg.Retention = DefaultRetention
	}
	if cfg.BlockTimeout < 0 {
		cfg.BlockTimeout = 0
	}
	return &Recorder{
		st:               st,
		cfg:              cfg,
		ch:               make(chan Event, cfg.BufferSize),
		flushReq:         make(chan chan error),
		sem:              make(chan struct{}, 1),
		epoch:            time.Now(),
		maxAttempts:      10,
		shutdownAttempts: 3,
		backoff:          100 * time.Millisecond,
		maxBackoff:       10 * time.Second,
		writeTimeout:     time.Minute,
		firstPrune:       time.Minute,
		pruneEvery:       time.Hour,
		foldEvery:        DefaultFoldEvery,
		now:              time.Now,
	}
}

// Record enqueues ev without touching the database. It is cheap (no allocation) and
// safe for concurrent use. It never blocks longer than Config.BlockTimeout: when the
// queue stays full the event is dropped and counted in Stats().Dropped, never silently.
// A nil Recorder records nothing.
func (r *Recorder) Record(ev Event) {
	if r == nil {
		return
	}
	now := r.now()
	if ev.At.IsZero() {
		ev.At = now
	}
	ev.queued = int64(now.Sub(r.epoch))
	select {
	case r.ch <- ev:
	default:
		r.waits.Add(1)
		r.warnFull(ev.queued)
		if r.cfg.BlockTimeout <= 0 || !r.recordWait(&ev) {
			r.dropped.Add(1)
			return
		}
	}
	r.recorded.Add(1)
	if r.cfg.OnEvent != nil {
		r.cfg.OnEvent(ev)
	}
}

// recordWait waits up to BlockTimeout for space in the queue (the slow path of Record).
func (r *Recorder) recordWait(ev *Event) bool {
	t := time.NewTimer(r.cfg.BlockTimeout)
	defer t.Stop()
	select {
	case r.ch <- *ev:
		return true
	case <-t.C:
		return false
	}
}

// warnFull logs, at most once per 10 s, that the queue is full: the writer is not
// keeping up and Record waits (or drops).
func (r *Recorder) warnFull(now int64) {
	now = max(now, 1) // 0 means never
	last := r.lastWaitLog.Load()
	if last != 0 && now-last < int64(10*time.Second) || !r.lastWaitLog.CompareAndSwap(last, now) {
		return
	}
	slog.Warn("usage: queue full, the writer is behind: recording waits or drops",
		"queue", cap(r.ch), "block_timeout", r.cfg.BlockTimeout, "waits_total", r.waits.Load(), "dropped_total", r.dropped.Load())
}

// Stats returns the current counters.
func (r *Recorder) Stats() Stats {
	s := Stats{
		Queued:      len(r.ch) + int(r.pending.Load()),
		Recorded:    r.recorded.Load(),
		Written:     r.written.Load(),
		Dropped:     r.dropped.Load(),
		Waits:       r.waits.Load(),
		Batches:     r.batches.Load(),
		WriteErrors: r.writeErrors.Load(),
	}
	if o := r.oldest.Load(); o > 0 {
		s.Lag = max(time.Duration(r.clock()-(o-1)), 0)
	}
	if f := r.foldedBefore.Load(); f != 0 {
		s.FoldedBefore = time.Unix(f, 0).UTC()
	}
	s.FoldErrors = r.foldErrors.Load()
	return s
}

// clock reads the recorder's clock: ns since epoch, the unit of Event.queued.
func (r *Recorder) clock() int64 { return int64(r.now().Sub(r.epoch)) }

// FlushInterval returns the configured (or default) flush interval.
func (r *Recorder) FlushInterval() time.Duration { return r.cfg.FlushInterval }

// Run writes batches until ctx is done: a batch is written when it holds BatchSize
// events or when its oldest event was recorded FlushInterval ago (however long it
// waited in the queue before the writer saw it), and it then takes every queued event
// up to BatchSize. Beside the writer, it folds minute rollups into hour and day
// rollups every 15 s (see Fold) and prunes expired usage about once an hour. When ctx
// is done it drains the queue completely and writes it before returning, so that after a
// graceful shutdown the stored rows equal the recorded events. A failed write is
// retried with exponential backoff, keeping its events; after repeated failures the
// batch is logged and counted in Stats().Dropped. Run always returns nil. It must not
// be called concurrently with itself.
//
// What a crash can lose: an event recorded at t is committed by t + FlushInterval + W
// where W is the duration of one batch write, when writes succeed, take less than
// FlushInterval and fewer than BatchSize events arrive per FlushInterval (50,000/s at
// the defaults); by t + FlushInterval + 2W otherwise, as long as BufferSize <=
// BatchSize (the defaults). In events, never more than BufferSize + BatchSize are
// unwritten: a full queue makes Record wait (BlockTimeout) or drop.
func (r *Recorder) Run(ctx context.Context) error {
	r.sem <- struct{}{}
	defer func() { <-r.sem }()
	defer r.w.close() // after the last write, before giving up the writer
	wctx := context.WithoutCancel(ctx)

	var loops sync.WaitGroup
	loops.Go(func() { r.pruneLoop(ctx) })
	loops.Go(func() { r.foldLoop(ctx) })
	defer loops.Wait()

	batch := make([]Event, 0, r.cfg.BatchSize)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	timerOn := false
	stopTimer := func() {
		if timerOn {
			timer.Stop()
			timerOn = false
		}
	}
	write := func() {
		// Everything queued by now goes too, up to a batch: it costs the same write.
		batch = r.fill(batch, r.cfg.BatchSize-len(batch))
		if len(batch) > 0 {
			r.pending.Store(int64(len(batch)))
			_ = r.writeBatch(ctx, wctx, batch, r.maxAttempts)
		}
		clear(batch) // drop references to strings and slices
		batch = batch[:0]
		r.pending.Store(0)
		r.oldest.Store(0)
		stopTimer()
	}
	for {
		select {
		case <-ctx.Done():
			_ = r.drain(ctx, wctx, batch, -1)
			return nil
		case ev := <-r.ch:
			if len(batch) == 0 {
				r.oldest.Store(ev.queued + 1)
			}
			batch = append(batch, ev)
			batch = r.fill(batch, r.cfg.BatchSize-len(batch))
			if len(batch) >= r.cfg.BatchSize {
				write()
				continue
			}
			r.pending.Store(int64(len(batch)))
			if !timerOn {
				// Due FlushInterval after the oldest event was recorded: it may have
				// waited in the queue while the previous batch was written.
				wait := time.Duration(batch[0].queued-r.clock()) + r.cfg.FlushInterval
				if wait <= 0 {
					write()
					continue
				}
				timer.Reset(wait)
				timerOn = true
			}
		case <-timer.C:
			timerOn = false
			write()
		case reply := <-r.flushReq:
			err := r.drain(ctx, wctx, batch, len(r.ch))
			clear(batch)
			batch = batch[:0]
			stopTimer()
			reply <- err
		}
	}
}

// fill moves up to n queued events into batch without waiting.
func (r *Recorder) fill(batch []Event, n int) []Event {
	for ; n > 0; n-- {
		select {
		case ev := <-r.ch:
			batch = append(batch, ev)
		default:
			return batch
		}
	}
	return batch
}

// drain writes batch and then the queue: limit events of it, or (limit < 0) until it is
// empty (bounded by the queue's capacity so that a producer that never stops cannot
// keep it busy forever). It returns the first write error.
func (r *Recorder) drain(ctx, wctx context.Context, batch []Event, limit int) error {
	attempts := r.maxAttempts
	if limit < 0 || ctx.Err() != nil {
		attempts = r.shutdownAttempts
	}
	if limit < 0 {
		limit = len(r.ch) + cap(r.ch)
	}
	var first error
	for {
		before := len(batch)
		batch = r.fill(batch, min(limit, r.cfg.BatchSize-len(batch)))
		if len(batch) == 0 {
			break
		}
		limit -= len(batch) - before
		r.pending.Store(int64(len(batch)))
		r.oldest.Store(batch[0].queued + 1)
		if err := r.writeBatch(ctx, wctx, batch, attempts); err != nil && first == nil {
			first = err
		}
		clear(batch)
		batch = batch[:0]
		r.pending.Store(0)
		r.oldest.Store(0)
	}
	return first
}

// Flush writes everything queued so far and returns when it is stored (for tests, and
// for events recorded after Run returned). With Run going, Run does the writing and
// Flush returns ctx's error if ctx ends first (Run still writes the events); otherwise
// Flush writes itself. It returns the first write error left after retries (those
// events are counted in Stats().Dropped), or nil.
func (r *Recorder) Flush(ctx context.Context) error {
	reply := make(chan error, 1)
	select {
	case r.sem <- struct{}{}:
		defer func() { <-r.sem }()
		return r.drain(ctx, context.WithoutCancel(ctx), nil, len(r.ch))
	case r.flushReq <- reply:
		select {
		case err := <-reply:
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	case <-ctx.Done():
		return ctx.Err()
	}
}

// writeBatch writes evs in one transaction, retrying with backoff up to attempts times.
// When ctx (Run's) is done it stops waiting long between attempts. After the last
// failed attempt the events are counted as dropped and the error is returned.
func (r *Recorder) writeBatch(ctx, wctx context.Context, evs []Event, attempts int) error {
	backoff := r.backoff
	for attempt := 1; ; attempt++ {
		wc, cancel := context.WithTimeout(wctx, r.writeTimeout)
		began := time.Now()
		err := r.write(wc, evs)
		took := time.Since(began)
		cancel()
		if r.cfg.OnWrite != nil {
			r.cfg.OnWrite(len(evs), took, err)
		}
		if err == nil {
			r.written.Add(uint64(len(evs)))
			r.batches.Add(1)
			return nil
		}
		r.writeErrors.Add(1)
		if ctx.Err() != nil {
			attempts = min(attempts, attempt+r.shutdownAttempts-1)
		}
		if attempt >= attempts {
			r.dropped.Add(uint64(len(evs)))
			slog.Error("usage: dropping events after failed writes", "events", len(evs), "attempts", attempt, "err", err)
			return fmt.Errorf("usage: write %d events: %w", len(evs), err)
		}
		slog.Warn("usage: write failed, retrying", "events", len(evs), "attempt", attempt, "retry_in", backoff, "err", err)
		done := ctx.Done()
		if ctx.Err() != nil {
			done = nil // shutting down: wait a short backoff, not zero
			backoff = min(backoff, time.Second)
		}
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-done:
			t.Stop()
		}
		backoff = min(2*backoff, r.maxBackoff)
	}
}

// pruneLoop prunes expired usage shortly after start and then every pruneEvery until
// ctx is done. On PostgreSQL it first prepares the partitions of the coming days (Prune
// does it again every time).
func (r *Recorder) pruneLoop(ctx context.Context) {
	if r.st.Dialect == "postgres" {
		if _, err := usagepart.Ensure(ctx, r.st.DB, r.now(), usagepart.DefaultAhead); err != nil && !errors.Is(err, context.Canceled) {
			slog.Error("usage: preparing partitions failed", "err", err)
		}
	}
	t := time.NewTimer(r.firstPrune)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			logs, rollups, err := r.Prune(ctx, r.now())
			switch {
			case err != nil && !errors.Is(err, context.Canceled):
				slog.Error("usage: prune failed", "err", err)
			case logs > 0 || rollups > 0:
				slog.Info("usage: pruned", "usage_logs", logs, "minute_rollups", rollups)
			}
			t.Reset(r.pruneEvery)
		}
	}
}
