package webhook

import (
	"context"
	"net/netip"
	"time"
)

// BlockedReason exposes blockedReason for table tests.
func BlockedReason(ip string) string { return blockedReason(netip.MustParseAddr(ip)) }

// ParseRetryAfter exposes parseRetryAfter.
func ParseRetryAfter(v string, now time.Time) time.Duration { return parseRetryAfter(v, now) }

// SetBeforeRecord installs a hook that runs after each send and before its result is
// recorded; returning false abandons the result, as a process killed then would.
func SetBeforeRecord(d *Dispatcher, f func(deliveryID string) bool) { d.beforeRecord = f }

// ClaimAndAbandon claims due deliveries as Run would and then forgets them, as a process
// killed right after its claim committed would. It returns the number claimed.
func ClaimAndAbandon(ctx context.Context, d *Dispatcher) (int, error) {
	jobs, _, err := d.claim(ctx, d.usage())
	for _, j := range jobs {
		d.release(j.d)
	}
	return len(jobs), err
}
