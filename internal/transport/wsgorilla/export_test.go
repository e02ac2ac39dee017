package wsgorilla

import (
	"reflect"
	"time"
)

// SetHandlerExitGrace shortens the grace period before a connection that
// gqlgen abandoned is force-closed, and returns a func restoring it.
func SetHandlerExitGrace(d time.Duration) (restore func()) {
	old := handlerExitGrace.Swap(int64(d))
	return func() { handlerExitGrace.Store(old) }
}

// HandWrittenTypes returns the names of the message types WriteJSON has written
// without json.Marshal so far in this process.
func HandWrittenTypes() []string {
	var names []string
	messageShapes.Range(func(k, v any) bool {
		if v.(bool) {
			names = append(names, k.(reflect.Type).String())
		}
		return true
	})
	return names
}
