package wsgorilla

import "time"

// SetHandlerExitGrace shortens the grace period before a connection that
// gqlgen abandoned is force-closed, and returns a func restoring it.
func SetHandlerExitGrace(d time.Duration) (restore func()) {
	old := handlerExitGrace.Swap(int64(d))
	return func() { handlerExitGrace.Store(old) }
}
