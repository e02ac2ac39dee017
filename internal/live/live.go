// Package live streams usage as it happens: every recorded usage event is published
// on the bus (pubsub) under its tenant's topic, and GraphQL subscriptions read from
// it — events one by one (Events) or as rolling aggregates (Stats). With the
// PostgreSQL bus, a dashboard on one instance sees requests served by every instance.
//
// Streams are bounded: a slow subscriber never blocks publishers or other subscribers;
// what it cannot take is dropped and reported in the next message's droppedEvents.
// Each stream re-checks its key twice a second and ends soon after a revocation.
package live

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync"
	"time"

	"github.com/latchkey/latchkey/internal/apierr"
	"github.com/latchkey/latchkey/internal/ids"
	"github.com/latchkey/latchkey/internal/pubsub"
	"github.com/latchkey/latchkey/internal/usage"
	"github.com/latchkey/latchkey/internal/viewer"
)

// Event is one operation as seen by usageEvents subscribers.
type Event struct {
	ID            string        `json:"id"`
	TenantID      string        `json:"tenantID"`
	APIKeyID      string        `json:"apiKeyID"`
	OperationName string        `json:"operationName"`
	OperationType string        `json:"operationType"`
	RootFields    []string      `json:"rootFields"`
	Outcome       usage.Outcome `json:"outcome"`
	LatencyMs     int           `json:"latencyMs"`
	IP            string        `json:"ip"`
	At            time.Time     `json:"at"`
	// DroppedEvents counts events this subscriber missed since its previous message.
	DroppedEvents int `json:"-"`
}

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
	ErrTooManySubscriptions = apierr.New(apierr.RateLimited, "too many open subscriptions for this key")
)

// Checker re-validates the viewer of a long-lived stream (revocation, expiry).
type Checker interface {
	Recheck(ctx context.Context, v *viewer.Viewer) error
}

// Hub publishes usage events and serves live streams.
type Hub struct {
	Bus pubsub.Bus
	// Checker, when set, ends streams whose key stops being valid.
	Checker Checker
	// MaxPerKey bounds the open subscriptions of one key (default 20).
	MaxPerKey int
	// Buffer is the per-subscriber queue length (default 256).
	Buffer int
	// RecheckInterval is how often a stream re-validates its key (default 500ms).
	RecheckInterval time.Duration

	mu     sync.Mutex
	perKey map[string]int
	done   chan struct{}
	once   sync.Once
	wg     sync.WaitGroup
}

func topic(tenantID string) string { return "usage:" + tenantID }

func (h *Hub) init() {
	h.once.Do(func() {
		h.done = make(chan struct{})
		h.perKey = map[string]int{}
		if h.MaxPerKey <= 0 {
			h.MaxPerKey = 20
		}
		if h.Buffer <= 0 {
			h.Buffer = 256
		}
		if h.RecheckInterval <= 0 {
			h.RecheckInterval = 500 * time.Millisecond
		}
	})
}

// Publish sends ev to the live subscribers of its tenant on every instance. It is the
// usage recorder's OnEvent hook and never blocks. Subscriptions starting are stored
// usage but not streamed: with many dashboards open they would mostly stream each other.
func (h *Hub) Publish(ev usage.Event) {
	if ev.OperationType == "subscription" {
		return
	}
	b, err := json.Marshal(Event{
		ID: ids.New("use"), TenantID: ev.TenantID, APIKeyID: ev.APIKeyID,
		OperationName: ev.OperationName, OperationType: ev.OperationType, RootFields: ev.RootFields,
		Outcome: ev.Outcome, LatencyMs: ev.LatencyMs, IP: ev.IP, At: ev.At.UTC(),
	})
	if err != nil {
		slog.Error("live: encode usage event", "err", err)
		return
	}
	h.Bus.Publish(topic(ev.TenantID), b)
}

// acquire counts a new stream of key; it returns ErrTooManySubscriptions at the limit.
func (h *Hub) acquire(keyID string) (release func(), err error) {
	h.init()
	h.mu.Lock()
	defer h.mu.Unlock()
	select {
	case <-h.done:
		return nil, apierr.New(apierr.Internal, "server shutting down")
	default:
	}
	if keyID != "" && h.perKey[keyID] >= h.MaxPerKey {
		return nil, ErrTooManySubscriptions.With("limit", h.MaxPerKey)
	}
	h.perKey[keyID]++
	h.wg.Add(1)
	var once sync.Once
	return func() {
		once.Do(func() {
			h.mu.Lock()
			if h.perKey[keyID]--; h.perKey[keyID] <= 0 {
				delete(h.perKey, keyID)
			}
			h.mu.Unlock()
			h.wg.Done()
		})
	}, nil
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

// stream runs one subscription: it reads the tenant's topic, keeps events of apiKeyID
// (all when nil), and calls emit for each, until ctx ends, the hub shuts down or the
// viewer's key stops being valid. onTick, if set, runs every tick.
func (h *Hub) stream(ctx context.Context, v *viewer.Viewer, tenantID string, apiKeyID *string,
	tick time.Duration, onEvent func(Event) bool, onTick func(now time.Time, dropped int) bool, onEnd func(error)) error {
	release, err := h.acquire(v.APIKeyID)
	if err != nil {
		return err
	}
	sub := h.Bus.Subscribe(topic(tenantID), h.Buffer)
	go func() {
		defer release()
		defer sub.Close()
		recheck := time.NewTicker(h.RecheckInterval)
		defer recheck.Stop()
		var tc <-chan time.Time
		if tick > 0 {
			t := time.NewTicker(tick)
			defer t.Stop()
			tc = t.C
		}
		for {
			select {
			case <-ctx.Done():
				onEnd(nil)
				return
			case <-h.done:
				onEnd(nil)
				return
			case <-recheck.C:
				if h.Checker != nil {
					if err := h.Checker.Recheck(ctx, v); err != nil {
						onEnd(err)
						return
					}
				}
			case now := <-tc:
				if !onTick(now, int(sub.TakeDropped())) {
					onEnd(nil)
					return
				}
			case b, ok := <-sub.C():
				if !ok {
					onEnd(nil)
					return
				}
				var ev Event
				if err := json.Unmarshal(b, &ev); err != nil || ev.TenantID != tenantID {
					continue
				}
				if apiKeyID != nil && ev.APIKeyID != *apiKeyID {
					continue
				}
				if tick == 0 {
					ev.DroppedEvents = int(sub.TakeDropped())
				}
				if !onEvent(ev) {
					onEnd(nil)
					return
				}
			}
		}
	}()
	return nil
}

// Events streams the usage events of tenantID (one key when apiKeyID is set) to the
// returned channel until ctx ends. The channel is closed at the end; endErr, when
// set, receives why a stream ended early (a revoked key), before the close.
// It returns ErrTooManySubscriptions at the per-key limit.
func (h *Hub) Events(ctx context.Context, v *viewer.Viewer, tenantID string, apiKeyID *string, endErr func(error)) (<-chan *Event, error) {
	out := make(chan *Event, 1)
	err := h.stream(ctx, v, tenantID, apiKeyID, 0,
		func(ev Event) bool {
			select {
			case out <- &ev:
				return true
			case <-ctx.Done():
				return false
			case <-h.done:
				return false
			}
		},
		nil,
		func(err error) {
			if err != nil && endErr != nil {
				endErr(err)
			}
			close(out)
		})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// StatsStream sends one aggregate of tenantID's usage (one key when apiKeyID is set)
// every interval until ctx ends; see Events for the channel and endErr.
func (h *Hub) StatsStream(ctx context.Context, v *viewer.Viewer, tenantID string, apiKeyID *string, interval time.Duration, endErr func(error)) (<-chan *Stats, error) {
	if interval < time.Second || interval > time.Hour {
		return nil, apierr.BadInput("intervalSeconds", "intervalSeconds must be between 1 and 3600")
	}
	out := make(chan *Stats, 1)
	var cur Stats
	var hist usage.Histogram
	err := h.stream(ctx, v, tenantID, apiKeyID, interval,
		func(ev Event) bool {
			cur.Requests++
			switch ev.Outcome {
			case usage.OutcomeError, usage.OutcomeForbidden:
				cur.Errors++
			case usage.OutcomeRateLimited, usage.OutcomeQuotaExceeded:
				cur.RateLimited++
			}
			hist.Observe(ev.LatencyMs)
			return true
		},
		func(now time.Time, dropped int) bool {
			s := cur
			s.At = now.UTC()
			s.IntervalSeconds = int(interval / time.Second)
			s.P50Ms, s.P99Ms = hist.Quantile(0.5), hist.Quantile(0.99)
			s.DroppedEvents = dropped
			cur, hist = Stats{}, usage.Histogram{}
			select {
			case out <- &s:
			default:
				// The client has not taken the previous aggregate: this one is
				// coalesced into the next by counting what it held as dropped.
				cur.DroppedEvents += s.Requests
			}
			return true
		},
		func(err error) {
			if err != nil && endErr != nil {
				endErr(err)
			}
			close(out)
		})
	if err != nil {
		return nil, err
	}
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
