package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// subscriptionQuery is what every subscriber runs; droppedEvents reveals a subscriber
// the server found too slow.
const subscriptionQuery = `subscription { usageEvents { operationName at droppedEvents } }`

// fanPrefix names the measured operations (Fan0, Fan1, ...); other events (the
// warm-up) only prove that a subscription is live.
const fanPrefix = "Fan"

// fanoutResult is what the fan-out phase measured.
type fanoutResult struct {
	Subscribers int // asked for
	Connected   int // acknowledged connection_init and sent subscribe
	Ready       int // received a warm-up event before the measured events
	Events      int
	Expected    int // Ready × Events
	Delivered   int // measured events received by ready subscribers
	Dropped     int // sum of droppedEvents reported by the server
	Latency     summary
	ConnectTook time.Duration
	WarmTook    time.Duration
	Problems    []string // connect failures, subscription errors, server closes
}

// fanoutHooks are optional callbacks of runFanout.
type fanoutHooks struct {
	// Idle runs once every subscription is live and idle, with their number.
	Idle func(ready int)
	// Events runs just before the measured events; the function it returns runs
	// after the last delivery (or timeout).
	Events func() (wait func())
}

// subscriber is one WebSocket connection with one usageEvents subscription.
type subscriber struct {
	conn *websocket.Conn
	wmu  sync.Mutex // gorilla allows one concurrent writer
	done chan struct{}

	warm     atomic.Bool // received a non-measured event
	answered atomic.Bool // received next, error or complete for the subscription

	mu      sync.Mutex
	fan     []fanReceipt
	subErr  string // the first error message for the subscription
	readErr error  // why reading ended, when not closed by us
	closing bool
}

// fanReceipt is one measured event as received: raw, decoded after the phase (see
// decode).
type fanReceipt struct {
	raw      []byte // the graphql-transport-ws message
	received time.Time
	name     string
	at       time.Time // the event's "at" (when the server started the operation)
	dropped  int
}

// fanMarker is in a message of a measured event, and only there (gqlgen writes the
// selected fields in order, without spaces).
var fanMarker = []byte(`"operationName":"` + fanPrefix)

// decode fills in r from its message, or returns what is wrong with it.
func (r *fanReceipt) decode() error {
	var m wsMessage
	if err := json.Unmarshal(r.raw, &m); err != nil || m.Type != "next" {
		return fmt.Errorf("unexpected message %.300s", r.raw)
	}
	ev, err := decodeEvent(m.Payload)
	if err != nil {
		return err
	}
	r.name, r.at, r.dropped = ev.OperationName, ev.At, ev.DroppedEvents
	return nil
}

// fanEvent is what the subscribers select of a usage event.
type fanEvent struct {
	OperationName string    `json:"operationName"`
	At            time.Time `json:"at"`
	DroppedEvents int       `json:"droppedEvents"`
}

// decodeEvent reads the usage event of a next message's payload, or returns the
// payload as a subscription error.
func decodeEvent(payload json.RawMessage) (fanEvent, error) {
	var p struct {
		Data struct {
			UsageEvents fanEvent `json:"usageEvents"`
		} `json:"data"`
		Errors json.RawMessage `json:"errors"`
	}
	if err := json.Unmarshal(payload, &p); err != nil || len(p.Errors) > 0 {
		return fanEvent{}, fmt.Errorf("subscription error: %.300s", payload)
	}
	return p.Data.UsageEvents, nil
}

// wsMessage is a graphql-transport-ws message.
type wsMessage struct {
	ID      string          `json:"id,omitempty"`
	Type    string          `json:"type"`
	Payload json.RawMessage `json:"payload,omitempty"`
}

func (s *subscriber) write(m any) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	_ = s.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	return s.conn.WriteJSON(m)
}

// dialSubscriber connects to wsURL with graphql-transport-ws, authenticates with key
// in connection_init, waits for connection_ack and subscribes.
func dialSubscriber(ctx context.Context, wsURL, key string) (*subscriber, error) {
	d := websocket.Dialer{Subprotocols: []string{"graphql-transport-ws"}, HandshakeTimeout: 10 * time.Second}
	conn, resp, err := d.DialContext(ctx, wsURL, nil)
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("dial: HTTP %s", resp.Status)
		}
		return nil, fmt.Errorf("dial: %w", err)
	}
	s := &subscriber{conn: conn, done: make(chan struct{})}
	fail := func(err error) (*subscriber, error) {
		conn.Close()
		return nil, err
	}
	if p := conn.Subprotocol(); p != "graphql-transport-ws" {
		return fail(fmt.Errorf("server chose subprotocol %q", p))
	}
	if err := s.write(map[string]any{"type": "connection_init", "payload": map[string]any{"apiKey": key}}); err != nil {
		return fail(fmt.Errorf("connection_init: %w", err))
	}
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		var m wsMessage
		if err := conn.ReadJSON(&m); err != nil {
			return fail(fmt.Errorf("waiting for connection_ack: %w", err))
		}
		if m.Type == "connection_ack" {
			break
		}
		if m.Type == "ping" {
			if err := s.write(map[string]any{"type": "pong"}); err != nil {
				return fail(err)
			}
		}
	}
	_ = conn.SetReadDeadline(time.Time{})
	if err := s.write(map[string]any{"id": "1", "type": "subscribe", "payload": map[string]any{"query": subscriptionQuery}}); err != nil {
		return fail(fmt.Errorf("subscribe: %w", err))
	}
	go s.read()
	return s, nil
}

// read handles the server's messages until the connection ends. The receipt time is
// taken before decoding.
func (s *subscriber) read() {
	defer close(s.done)
	for {
		_, b, err := s.conn.ReadMessage()
		now := time.Now()
		if err != nil {
			s.mu.Lock()
			if !s.closing {
				s.readErr = err
			}
			s.mu.Unlock()
			return
		}
		if bytes.Contains(b, fanMarker) {
			// Kept as is and decoded after the phase: the clients share the server's
			// cores, and decoding was a third of their CPU per delivery.
			s.answered.Store(true)
			s.mu.Lock()
			s.fan = append(s.fan, fanReceipt{raw: b, received: now})
			s.mu.Unlock()
			continue
		}
		var m wsMessage
		if err := json.Unmarshal(b, &m); err != nil {
			continue
		}
		switch m.Type {
		case "ping":
			_ = s.write(map[string]any{"type": "pong"})
		case "next":
			s.answered.Store(true)
			ev, err := decodeEvent(m.Payload)
			if err != nil {
				s.setErr(string(m.Payload))
				continue
			}
			if !strings.HasPrefix(ev.OperationName, fanPrefix) {
				s.warm.Store(true)
			}
		case "error":
			s.answered.Store(true)
			s.setErr(string(m.Payload))
		case "complete":
			s.answered.Store(true)
			s.setErr("subscription completed by the server")
		}
	}
}

func (s *subscriber) setErr(msg string) {
	s.mu.Lock()
	if s.subErr == "" {
		s.subErr = msg
	}
	s.mu.Unlock()
}

// fanCount returns the number of measured events received.
func (s *subscriber) fanCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.fan)
}

// close ends the connection with a normal closure and waits for the reader.
func (s *subscriber) close() {
	s.mu.Lock()
	s.closing = true
	s.mu.Unlock()
	s.wmu.Lock()
	_ = s.conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
	s.wmu.Unlock()
	select {
	case <-s.done:
	case <-time.After(2 * time.Second):
	}
	s.conn.Close()
	<-s.done
}

// runFanout opens n subscribers with subKey, subscriber i on instance i mod
// len(clients), proves each subscription live with warm-up operations, then sends
// events operations named Fan<i> with opKey 200 ms apart to the first instance and
// measures, per subscriber and event, the delay from the event's "at" to its receipt.
// With several instances, the subscribers of the others receive the events through
// the bus. Admitted subscriptions are added to the ledger (the server records each as
// one operation).
//
// hooks, when set, run while every subscription is idle (Idle: after the warm-up,
// before the measured events) and around the measured events (Events, started before
// the first and waited for after the last delivery): the fanout subcommand reads the
// server's memory and CPU profile there.
func runFanout(ctx context.Context, clients []*client, subKey, opKey string, n, events int, hooks fanoutHooks) (fanoutResult, error) {
	res := fanoutResult{Subscribers: n, Events: events}
	problem := func(format string, args ...any) {
		if len(res.Problems) < 10 {
			res.Problems = append(res.Problems, fmt.Sprintf(format, args...))
		}
	}
	c := clients[0]
	wsURLs := make([]string, len(clients))
	for i, cl := range clients {
		wsURLs[i] = "ws" + strings.TrimPrefix(cl.base, "http") + "/query"
	}

	// Connect with bounded concurrency.
	start := time.Now()
	subs := make([]*subscriber, n)
	errs := make([]error, n)
	next := make(chan int)
	var wg sync.WaitGroup
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				subs[i], errs[i] = dialSubscriber(ctx, wsURLs[i%len(wsURLs)], subKey)
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	res.ConnectTook = time.Since(start)
	var live []*subscriber
	failures := map[string]int{}
	for i, s := range subs {
		if s != nil {
			live = append(live, s)
		} else {
			failures[errs[i].Error()]++
		}
	}
	for msg, k := range failures {
		problem("%d connections failed: %s", k, msg)
	}
	res.Connected = len(live)
	defer func() {
		var cw sync.WaitGroup
		for _, s := range live {
			cw.Add(1)
			go func() { defer cw.Done(); s.close() }()
		}
		cw.Wait()
	}()
	defer func() {
		// Every subscription the server answered was recorded as one operation.
		for _, s := range live {
			if s.answered.Load() {
				c.ledger.served.Add(1)
			}
		}
	}()
	logf("fan-out: %d/%d subscribers connected in %s", res.Connected, n, res.ConnectTook.Round(time.Millisecond))
	if len(live) == 0 {
		return res, errors.New("no subscriber connected")
	}

	// Warm up until every subscription has seen an event (or given an error).
	warmStart := time.Now()
	warmDeadline := warmStart.Add(15 * time.Second)
	warmBody := requestBody(`query Warm { viewer { isAdmin } }`, nil)
	for {
		pending := 0
		for _, s := range live {
			if !s.warm.Load() && s.subErrSnapshot() == "" && !s.ended() {
				pending++
			}
		}
		if pending == 0 || time.Now().After(warmDeadline) || ctx.Err() != nil {
			break
		}
		if _, err := c.post(ctx, opKey, true, warmBody); err != nil {
			return res, fmt.Errorf("warm-up operation: %w", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	res.WarmTook = time.Since(warmStart)
	var ready []*subscriber
	for _, s := range live {
		switch {
		case s.warm.Load():
			ready = append(ready, s)
		case s.subErrSnapshot() != "":
			problem("subscription error: %.300s", s.subErrSnapshot())
		case s.ended():
			problem("connection ended before any event: %v", s.readErrSnapshot())
		default:
			problem("subscription received no warm-up event within 15s")
		}
	}
	res.Ready = len(ready)
	res.Expected = res.Ready * events
	logf("fan-out: %d subscriptions live after %s of warm-up; sending %d events 200 ms apart", res.Ready, res.WarmTook.Round(time.Millisecond), events)
	if hooks.Idle != nil {
		hooks.Idle(res.Ready)
	}
	eventsDone := func() {}
	if hooks.Events != nil {
		eventsDone = hooks.Events()
	}

	// The measured events.
	tick := time.NewTicker(200 * time.Millisecond)
	for i := range events {
		if i > 0 {
			<-tick.C
		}
		if err := c.call(ctx, opKey, true, fmt.Sprintf("query %s%d { viewer { isAdmin } }", fanPrefix, i), nil, nil); err != nil {
			tick.Stop()
			return res, fmt.Errorf("event %d: %w", i, err)
		}
	}
	tick.Stop()
	waitDeadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(waitDeadline) && ctx.Err() == nil {
		missing := 0
		for _, s := range ready {
			if s.fanCount() < events && !s.ended() {
				missing++
			}
		}
		if missing == 0 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	eventsDone()

	var delays []time.Duration
	for _, s := range ready {
		s.mu.Lock()
		for i := range s.fan {
			r := &s.fan[i]
			if err := r.decode(); err != nil {
				problem("%v", err)
				continue
			}
			delays = append(delays, r.received.Sub(r.at))
			res.Dropped += r.dropped
		}
		if s.readErr != nil {
			problem("connection closed during the phase: %v", s.readErr)
		}
		if s.subErr != "" {
			problem("subscription error: %.300s", s.subErr)
		}
		s.mu.Unlock()
	}
	res.Delivered = len(delays)
	res.Latency = summarize(delays)
	return res, nil
}

func (s *subscriber) subErrSnapshot() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.subErr
}

func (s *subscriber) readErrSnapshot() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.readErr
}

// ended reports whether the connection's reader has stopped.
func (s *subscriber) ended() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}
