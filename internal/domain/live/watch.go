package live

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/latchkey/latchkey/internal/domain/usage"
)

// The watch registry: on a shared bus, usage events are published only for tenants
// that some instance watches (has a usageEvents or usageStats stream of), so that an
// instance serving a tenant nobody looks at does not encode its events or send them
// to the others.
//
// Every instance announces on the bus, on topicWatch, the tenants it watches: at
// once when it starts watching one (with the time it started), and all of them every
// WatchRefresh. An announcement holds for three refreshes. An instance that has just
// started, or whose bus reconnected (announcements may have been missed), publishes
// everything for one and a half refreshes, by which time every watcher has announced
// itself again.
//
// An announcement takes a moment to arrive (Redis: about a millisecond; PostgreSQL:
// up to one bus tick). Events an instance did not publish meanwhile are not lost: each
// instance keeps its last replayBuffer unpublished events, and when a new watch of a
// tenant arrives, it publishes those of the tenant that happened since the watch
// started (less replaySlack, for clocks that differ between machines). A stream thus
// receives, from every instance, the operations that started after it opened, as long
// as the announcement arrives before replayBuffer further unpublished events have
// been recorded there (at 25,000 operations/s, 160 ms).

const (
	topicWatch          = "live:watch"
	defaultWatchRefresh = 5 * time.Second
	watchTTLRefreshes   = 3
	replayBuffer        = 4096
	replaySlack         = 100 * time.Millisecond
)

// announcement is a topicWatch message.
type announcement struct {
	Instance string   `json:"i"`
	Tenants  []string `json:"t"`
	// Since, for a new watch, is when it started (Unix nanoseconds): events of the
	// tenants since then that were not published are published now.
	Since int64 `json:"s,omitempty"`
}

// registry is what this instance knows of the tenants other instances watch, and the
// recent events it did not publish.
type registry struct {
	instance  string
	refresh   time.Duration
	reconnect chan struct{} // the bus reconnected: re-announce

	mu       sync.Mutex
	remote   map[string]int64 // tenant → when the last announcement of it expires (Unix ns)
	allUntil int64            // publish every event until then (Unix ns)
	ring     [replayBuffer]usage.Event
	next     int

	suppressed, replayed atomic.Uint64
}

func newRegistry(refresh time.Duration) *registry {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	r := &registry{
		instance:  hex.EncodeToString(b),
		refresh:   refresh,
		reconnect: make(chan struct{}, 1),
		remote:    map[string]int64{},
	}
	r.openAll()
	return r
}

// openAll makes every event published until every watcher has announced itself again.
func (r *registry) openAll() {
	r.mu.Lock()
	r.allUntil = time.Now().Add(r.refresh + r.refresh/2).UnixNano()
	r.mu.Unlock()
}

// admit reports whether ev must be published because another instance may watch its
// tenant; if not, it keeps ev for a replay.
func (r *registry) admit(ev *usage.Event) bool {
	now := time.Now().UnixNano()
	r.mu.Lock()
	if r.watchedLocked(ev.TenantID, now) {
		r.mu.Unlock()
		return true
	}
	r.ring[r.next] = *ev
	r.next = (r.next + 1) % replayBuffer
	r.mu.Unlock()
	r.suppressed.Add(1)
	return false
}

// watched reports whether another instance may watch tenantID.
func (r *registry) watched(tenantID string) bool {
	now := time.Now().UnixNano()
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.watchedLocked(tenantID, now)
}

// watchedLocked is watched at now, with r.mu held: every tenant counts as watched
// right after a (re)connection, else those another instance announced.
func (r *registry) watchedLocked(tenantID string, now int64) bool {
	return now < r.allUntil || r.remote[tenantID] > now
}

// receive records another instance's announcement and, for a new watch, passes the
// kept events of its tenants since it started to publish, in the order they were
// recorded. It holds the lock meanwhile, so that no event of these tenants is
// published before them.
func (r *registry) receive(a announcement, publish func(usage.Event)) {
	if a.Instance == r.instance {
		return
	}
	now := time.Now()
	expires := now.Add(watchTTLRefreshes * r.refresh).UnixNano()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, t := range a.Tenants {
		r.remote[t] = max(r.remote[t], expires)
	}
	if a.Since == 0 {
		return
	}
	since := time.Unix(0, a.Since).Add(-replaySlack)
	tenants := make(map[string]bool, len(a.Tenants))
	for _, t := range a.Tenants {
		tenants[t] = true
	}
	for i := range replayBuffer {
		ev := &r.ring[(r.next+i)%replayBuffer]
		if ev.TenantID == "" || !tenants[ev.TenantID] || ev.At.Before(since) {
			continue
		}
		publish(*ev)
		r.replayed.Add(1)
		*ev = usage.Event{} // published once
	}
}

// prune forgets expired announcements.
func (r *registry) prune() {
	now := time.Now().UnixNano()
	r.mu.Lock()
	defer r.mu.Unlock()
	for t, exp := range r.remote {
		if exp <= now {
			delete(r.remote, t)
		}
	}
}

// WatchStats counts what the watch registry saved.
type WatchStats struct {
	// Suppressed counts usage events not published because no other instance watched
	// their tenant (always 0 on a single instance, where they are not counted).
	Suppressed uint64
	// Replayed counts suppressed events published later for a watch that had just
	// started elsewhere.
	Replayed uint64
}

// WatchStats returns the registry's counters.
func (h *Hub) WatchStats() WatchStats {
	h.init()
	if h.reg == nil {
		return WatchStats{}
	}
	return WatchStats{Suppressed: h.reg.suppressed.Load(), Replayed: h.reg.replayed.Load()}
}

// announce tells the other instances that this one watches tenants (since the given
// time, for a new watch; 0 for a refresh).
func (h *Hub) announce(tenants []string, since int64) {
	b, err := json.Marshal(announcement{Instance: h.reg.instance, Tenants: tenants, Since: since})
	if err != nil {
		slog.Error("live: encode watch announcement", "err", err)
		return
	}
	h.Bus.Publish(topicWatch, b)
}

// watchLoop follows the other instances' announcements and refreshes this one's
// until the hub shuts down.
func (h *Hub) watchLoop(sub interface {
	C() <-chan []byte
	Close()
}) {
	defer sub.Close()
	t := time.NewTicker(h.reg.refresh)
	defer t.Stop()
	for {
		select {
		case <-h.done:
			return
		case b, ok := <-sub.C():
			if !ok {
				return
			}
			var a announcement
			if json.Unmarshal(b, &a) != nil {
				continue
			}
			h.reg.receive(a, func(ev usage.Event) { h.publish(h.event(ev)) })
		case <-h.reg.reconnect:
			h.refreshWatches()
		case <-t.C:
			h.reg.prune()
			h.refreshWatches()
		}
	}
}

// refreshWatches announces every tenant this instance watches.
func (h *Hub) refreshWatches() {
	h.mu.RLock()
	tenants := make([]string, 0, len(h.feeds))
	for t := range h.feeds {
		tenants = append(tenants, t)
	}
	h.mu.RUnlock()
	if len(tenants) > 0 {
		h.announce(tenants, 0)
	}
}
