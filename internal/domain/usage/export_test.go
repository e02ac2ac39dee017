package usage

import "time"

// SetWriteHook makes every write call f inside its transaction, after the raw rows.
func SetWriteHook(r *Recorder, f func() error) { r.writeHook = f }

// SetRetry shortens the retry schedule.
func SetRetry(r *Recorder, attempts int, backoff time.Duration) {
	r.maxAttempts, r.shutdownAttempts = attempts, attempts
	r.backoff, r.maxBackoff = backoff, backoff
}

// SetClock makes r read now for Record stamps, flush deadlines and Stats().Lag (call
// before Run and Record).
func SetClock(r *Recorder, now func() time.Time) {
	r.now = now
	r.epoch = now()
}

// SetFoldHook makes every fold call f after its first read of the minutes, before it
// locks the boundary.
func SetFoldHook(r *Recorder, f func()) { r.foldHook = f }

// SetFoldEvery makes Run fold every d (call before Run).
func SetFoldEvery(r *Recorder, d time.Duration) { r.foldEvery = d }
