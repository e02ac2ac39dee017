// Package live streams usage as it happens: every recorded usage event is published
// on the bus (pubsub) under its tenant's topic, and GraphQL subscriptions read from
// it — events one by one (Events) or as rolling aggregates (Stats). With a shared bus
// (Redis or PostgreSQL), a dashboard on one instance sees requests served by every
// instance; events are sent across instances only for tenants that some instance
// watches (the watch registry, watch.go).
//
// Streams are bounded: a slow subscriber never blocks publishers or other subscribers;
// what it cannot take is dropped and reported in the next message's droppedEvents.
// Each stream re-checks its key twice a second and ends soon after a revocation.
package live

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/latchkey/latchkey/internal/data/pubsub"
	"github.com/latchkey/latchkey/internal/domain/keys"
	"github.com/latchkey/latchkey/internal/domain/usage"
	"github.com/latchkey/latchkey/internal/platform/fault"
	"github.com/latchkey/latchkey/internal/platform/ids"
	"github.com/latchkey/latchkey/internal/platform/viewer"
)

// Event is one operation as seen by usageEvents subscribers.
type Event struct {
	ID            string    `json:"id"`
	TenantID      string    `json:"tenantID"`
	APIKeyID      string    `json:"apiKeyID"`
	OwnerID       *string   `json:"ownerID,omitempty"`
	OperationName string    `json:"operationName"`
	OperationType string    `json:"operationType"`
	RootFields    []string  `json:"rootFields"`
	Outcome       Outcome   `json:"outcome"`
	LatencyMs     int       `json:"latencyMs"`
	IP            string    `json:"ip"`
	At            time.Time `json:"at"`
	// DroppedEvents counts events this subscriber missed since its previous message.
	DroppedEvents int `json:"-"`
	// Warning is set on the early warnings streamed beside the operations (their
	// OperationType is "warning").
	Warning *Warning `json:"warning,omitempty"`
}

// Warning is an early warning: a quota or a credit balance of a key, an owner or a
// tenant crossed Threshold percent (80 or 100) in its period.
type Warning struct {
	// Type is the webhook event type: quota.threshold or credits.threshold.
	Type string `json:"type"`
	// Scope is key, owner or tenant.
	Scope     string     `json:"scope"`
	Threshold int        `json:"threshold"`
	Limit     int64      `json:"limit"`
	Used      int64      `json:"used"`
	ResetAt   *time.Time `json:"resetAt,omitempty"`
}

// OutcomeWarning is the outcome of the events that carry a Warning.
const OutcomeWarning Outcome = "warning"

// Warn streams w to the tenant's usageEvents subscribers (from every instance), as an
// event of type "warning" of the key apiKeyID (and its owner). It never blocks.
func (h *Hub) Warn(tenantID, apiKeyID, ownerID string, w Warning) {
	if !h.wantedTenant(tenantID) {
		return
	}
	h.publish(&Event{
		TenantID: tenantID, APIKeyID: apiKeyID, OwnerID: optional(ownerID),
		OperationName: w.Type, OperationType: "warning", RootFields: []string{},
		Outcome: OutcomeWarning, At: time.Now().UTC(), Warning: &w,
	})
}

// Outcome is a usage outcome ("ok", "rate_limited", …); the API floor shows it as the
// GraphQL enum UsageOutcome (graph/gqlenum).
type Outcome string

// Stats is one rolling aggregate of a usageStats subscription.
type Stats struct {
	At              time.Time
	IntervalSeconds int
	Requests        int
	Errors          int
	RateLimited     int
	P50Ms, P99Ms    float64
	DroppedEvents   int
}

// Errors returned when a subscription cannot start.
var (
	// ErrTooManySubscriptions: the key already has the maximum of open subscriptions.
	ErrTooManySubscriptions = fault.New(fault.RateLimited, "too many open subscriptions for this key")
)

// Checker re-validates the viewer of a long-lived stream (revocation, expiry).
type Checker interface {
	Recheck(ctx context.Context, v *viewer.Viewer) error
}

// Hub publishes usage events and serves live streams. Each tenant with open streams
// has one bus subscription whose messages are decoded once and offered, without
// blocking, to the queue of every stream; a usageEvents stream's queue is the very
// channel gqlgen reads, so an idle subscription costs no goroutine of its own.
type Hub struct {
	Bus pubsub.Bus
	// Checker, when set, ends streams whose key stops being valid.
	Checker Checker
	// MaxPerKey bounds the open subscriptions of one key (default 20).
	MaxPerKey int
	// Buffer is the per-subscriber queue length (default 64).
	Buffer int
	// RecheckInterval is how often streams re-validate their keys (default 500ms).
	RecheckInterval time.Duration
	// SingleInstance says the bus reaches no other instance (SQLite): events of
	// tenants nobody watches here are then not even encoded. With a shared bus they
	// are published only for tenants that some instance watches, as the instances
	// tell each other (see watch.go): a dashboard on another instance still receives
	// every operation that started after it subscribed.
	SingleInstance bool
	// WatchRefresh is how often an instance re-announces the tenants it watches on a
	// shared bus (default 5 s); an announcement holds for three refreshes.
	WatchRefresh time.Duration

	mu     sync.RWMutex // read-locked only by publish (on the request path)
	perKey map[string]int
	feeds  map[string]*feed // tenant → its bus subscription and streams
	done   chan struct{}
	once   sync.Once
	reg    *registry      // nil with SingleInstance
	wg     sync.WaitGroup // open streams
}

// feed is the bus subscription of one tenant and its streams.
type feed struct {
	sub     *pubsub.Subscription
	streams map[*stream]struct{}
}

// stream is one subscription's queue.
type stream struct {
	v        *viewer.Viewer
	tenantID string
	apiKeyID *string
	ch       chan *Event
	dropped  uint64 // guarded by Hub.mu
	closed   bool   // guarded by Hub.mu
	endErr   func(error)
	release  func()
}

func topic(tenantID string) string { return "usage:" + tenantID }

func (h *Hub) init() {
	h.once.Do(func() {
		h.done = make(chan struct{})
		h.perKey = map[string]int{}
		h.feeds = map[string]*feed{}
		if h.MaxPerKey <= 0 {
			h.MaxPerKey = 20
		}
		if h.Buffer <= 0 {
			h.Buffer = 64
		}
		if h.RecheckInterval <= 0 {
			h.RecheckInterval = 500 * time.Millisecond
		}
		go h.recheckLoop()
		if !h.SingleInstance {
			if h.WatchRefresh <= 0 {
				h.WatchRefresh = defaultWatchRefresh
			}
			h.reg = newRegistry(h.WatchRefresh)
			sub := h.Bus.Subscribe(topicWatch, 1024)
			reg := h.reg
			h.Bus.OnReconnect(func() {
				reg.openAll()
				select {
				case reg.reconnect <- struct{}{}:
				default:
				}
			})
			go h.watchLoop(sub)
		}
	})
}

// Publish sends ev to the live subscribers of its tenant on every instance. It is the
// usage recorder's OnEvent hook and never blocks. Subscriptions starting are stored
// usage but not streamed: with many dashboards open they would mostly stream each other.
func (h *Hub) Publish(ev usage.Event) {
	if ev.OperationType == "subscription" || !h.wanted(&ev) {
		return
	}
	h.publish(h.event(ev))
}

// event is ev as streamed.
func (h *Hub) event(ev usage.Event) *Event {
	return &Event{
		TenantID: ev.TenantID, APIKeyID: ev.APIKeyID, OwnerID: optional(ev.OwnerID),
		OperationName: ev.OperationName, OperationType: ev.OperationType, RootFields: ev.RootFields,
		Outcome: Outcome(ev.Outcome), LatencyMs: ev.LatencyMs, IP: ev.IP, At: ev.At.UTC(),
	}
}

// wanted reports whether ev is published: when this instance watches its tenant, or
// (on a shared bus) when another instance may; an event not published is kept for a
// replay to a watch that starts elsewhere (see registry.admit).
func (h *Hub) wanted(ev *usage.Event) bool {
	if h.watchedHere(ev.TenantID) {
		return true
	}
	return h.reg != nil && h.reg.admit(ev)
}

// wantedTenant is wanted for a message that is never replayed (warnings).
func (h *Hub) wantedTenant(tenantID string) bool {
	return h.watchedHere(tenantID) || (h.reg != nil && h.reg.watched(tenantID))
}

// watchedHere reports whether this instance has streams of tenantID.
func (h *Hub) watchedHere(tenantID string) bool {
	h.init()
	h.mu.RLock()
	_, watched := h.feeds[tenantID]
	h.mu.RUnlock()
	return watched
}

// publish gives ev an id, encodes it and sends it on its tenant's topic.
func (h *Hub) publish(ev *Event) {
	ev.ID = ids.New("use")
	b, err := json.Marshal(ev)
	if err != nil {
		slog.Error("live: encode usage event", "type", ev.OperationType, "err", err)
		return
	}
	h.Bus.Publish(topic(ev.TenantID), b)
}

// optional is s as an optional field: nil when empty.
func optional(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// open registers a new stream. It returns ErrTooManySubscriptions at the per-key
// limit and an INTERNAL error during shutdown.
func (h *Hub) open(ctx context.Context, v *viewer.Viewer, tenantID string, apiKeyID *string, endErr func(error)) (*stream, error) {
	h.init()
	h.mu.Lock()
	defer h.mu.Unlock()
	select {
	case <-h.done:
		return nil, fault.New(fault.Internal, "server shutting down")
	default:
	}
	key := v.APIKeyID
	if key != "" && h.perKey[key] >= h.MaxPerKey {
		return nil, ErrTooManySubscriptions.With("limit", h.MaxPerKey)
	}
	h.perKey[key]++
	h.wg.Add(1)
	s := &stream{v: v, tenantID: tenantID, apiKeyID: apiKeyID, ch: make(chan *Event, h.Buffer), endErr: endErr}
	s.release = func() {
		if h.perKey[key]--; h.perKey[key] <= 0 {
			delete(h.perKey, key)
		}
		h.wg.Done()
	}
	f := h.feeds[tenantID]
	if f == nil {
		f = &feed{sub: h.Bus.Subscribe(topic(tenantID), 4096), streams: map[*stream]struct{}{}}
		h.feeds[tenantID] = f
		go h.pump(tenantID, f)
		if h.reg != nil {
			h.announce([]string{tenantID}, time.Now().UnixNano())
		}
	}
	f.streams[s] = struct{}{}
	// The stream ends with its operation (client stop, connection closed).
	context.AfterFunc(ctx, func() { h.end(s, nil) })
	return s, nil
}

// end closes s once: err (a revoked key) is reported before the channel closes.
func (h *Hub) end(s *stream, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.endLocked(s, err)
}

func (h *Hub) endLocked(s *stream, err error) {
	if s.closed {
		return
	}
	s.closed = true
	if f := h.feeds[s.tenantID]; f != nil {
		delete(f.streams, s)
		if len(f.streams) == 0 {
			delete(h.feeds, s.tenantID)
			f.sub.Close()
		}
	}
	if err != nil && s.endErr != nil {
		s.endErr(err)
	}
	close(s.ch)
	s.release()
}

// pump decodes each message of a tenant's topic once and offers it to every stream
// without blocking: a full queue counts a drop for that stream only, reported in the
// next event it receives.
func (h *Hub) pump(tenantID string, f *feed) {
	for b := range f.sub.C() {
		lost := f.sub.TakeDropped()
		var ev Event
		if err := json.Unmarshal(b, &ev); err != nil || ev.TenantID != tenantID {
			continue
		}
		h.mu.Lock()
		for s := range f.streams {
			s.dropped += lost
			if s.apiKeyID != nil && *s.apiKeyID != ev.APIKeyID {
				continue
			}
			out := &ev
			if s.dropped > 0 {
				c := ev // shared by every stream: copy to annotate
				c.DroppedEvents = int(s.dropped)
				out = &c
			}
			select {
			case s.ch <- out:
				s.dropped = 0
			default:
				s.dropped++
			}
		}
		h.mu.Unlock()
	}
}

// recheckLoop re-validates the key of every open stream each RecheckInterval (once
// per distinct key) and ends the streams of keys no longer valid.
func (h *Hub) recheckLoop() {
	t := time.NewTicker(h.RecheckInterval)
	defer t.Stop()
	for {
		select {
		case <-h.done:
			return
		case <-t.C:
		}
		if h.Checker == nil {
			continue
		}
		h.mu.Lock()
		byKey := map[*viewer.Viewer][]*stream{}
		for _, f := range h.feeds {
			for s := range f.streams {
				byKey[s.v] = append(byKey[s.v], s)
			}
		}
		h.mu.Unlock()
		for v, streams := range byKey {
			err := h.Checker.Recheck(context.Background(), v)
			var ae *keys.AuthError
			if !errors.As(err, &ae) {
				continue // valid, or the database did not answer: keep streaming
			}
			// Every stream's error is reported before any of them closes: a client
			// that closes its connection on the first error then cannot cancel a
			// stream whose error is still being reported (gqlgen reads the error of
			// a subscription whose context ended without waiting for the stream).
			h.mu.Lock()
			for _, s := range streams {
				if !s.closed && s.endErr != nil {
					s.endErr(err)
				}
			}
			for _, s := range streams {
				h.endLocked(s, nil)
			}
			h.mu.Unlock()
		}
	}
}

// Active returns the number of open streams.
func (h *Hub) Active() int {
	h.init()
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, c := range h.perKey {
		n += c
	}
	return n
}

// Events streams the usage events of tenantID (one key when apiKeyID is set) until
// ctx ends, the hub shuts down or the key stops being valid; then the channel closes,
// after endErr (if set) was told why an early end happened.
// It returns ErrTooManySubscriptions at the per-key limit.
func (h *Hub) Events(ctx context.Context, v *viewer.Viewer, tenantID string, apiKeyID *string, endErr func(error)) (<-chan *Event, error) {
	s, err := h.open(ctx, v, tenantID, apiKeyID, endErr)
	if err != nil {
		return nil, err
	}
	return s.ch, nil
}

// StatsStream sends one aggregate of tenantID's usage (one key when apiKeyID is set)
// every interval; see Events for how it ends. It returns BAD_USER_INPUT for an
// interval outside 1 s to 1 h and ErrTooManySubscriptions at the per-key limit.
func (h *Hub) StatsStream(ctx context.Context, v *viewer.Viewer, tenantID string, apiKeyID *string, interval time.Duration, endErr func(error)) (<-chan *Stats, error) {
	if interval < time.Second || interval > time.Hour {
		return nil, fault.BadInput("intervalSeconds", "intervalSeconds must be between 1 and 3600")
	}
	s, err := h.open(ctx, v, tenantID, apiKeyID, endErr)
	if err != nil {
		return nil, err
	}
	out := make(chan *Stats, 1)
	go func() {
		defer close(out)
		t := time.NewTicker(interval)
		defer t.Stop()
		var cur Stats
		var hist usage.Histogram
		for {
			select {
			case ev, ok := <-s.ch:
				if !ok {
					return
				}
				cur.DroppedEvents += ev.DroppedEvents
				if ev.Warning != nil {
					continue // not an operation
				}
				cur.Requests++
				switch usage.Outcome(ev.Outcome) {
				case usage.OutcomeOK, usage.OutcomeValid:
				case usage.OutcomeRateLimited, usage.OutcomeQuotaExceeded, usage.OutcomeUsageExceeded:
					cur.RateLimited++
				default:
					cur.Errors++
				}
				hist.Observe(ev.LatencyMs)
			case now := <-t.C:
				st := cur
				st.At = now.UTC()
				st.IntervalSeconds = int(interval / time.Second)
				st.P50Ms, st.P99Ms = hist.Quantile(0.5), hist.Quantile(0.99)
				cur, hist = Stats{}, usage.Histogram{}
				select {
				case out <- &st:
				default:
					// The client has not taken the previous aggregate: what this
					// one held is counted as dropped in the next.
					cur.DroppedEvents += st.Requests
				}
			}
		}
	}()
	return out, nil
}

// Shutdown ends every stream (their subscriptions complete) and waits up to ctx for
// them to finish. It returns ctx's error if they did not finish in time.
func (h *Hub) Shutdown(ctx context.Context) error {
	h.init()
	h.mu.Lock()
	select {
	case <-h.done:
	default:
		close(h.done)
	}
	for _, f := range h.feeds {
		for s := range f.streams {
			h.endLocked(s, nil)
		}
	}
	h.mu.Unlock()
	done := make(chan struct{})
	go func() { h.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
