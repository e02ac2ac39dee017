package app_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/latchkey/latchkey/internal/app"
	"github.com/latchkey/latchkey/internal/app/apptest"
	"github.com/latchkey/latchkey/internal/data/testdb"
	"github.com/latchkey/latchkey/internal/platform/config"
)

const eventsSub = `subscription($k: ID) { usageEvents(apiKeyID: $k) { id apiKeyID operationName operationType rootFields outcome latencyMs ip at droppedEvents } }`

type usageEventMsg struct {
	Data struct {
		UsageEvents struct {
			ID, APIKeyID, OperationName, OperationType, Outcome string
			RootFields                                          []string
			DroppedEvents                                       int
		} `json:"usageEvents"`
	} `json:"data"`
	Errors []apptest.Error `json:"errors"`
}

// nextEvent returns the next usage event of a query or mutation (subscriptions
// starting are operations too, and are skipped here).
func nextEvent(t *testing.T, c *apptest.WSClient) usageEventMsg {
	t.Helper()
	for {
		m, err := c.Next(3 * time.Second)
		if err != nil {
			t.Fatalf("waiting for an event: %v", err)
		}
		if !m.IsData() {
			t.Fatalf("got %s %s, want data", m.Type, m.Payload)
		}
		var ev usageEventMsg
		if err := json.Unmarshal(m.Payload, &ev); err != nil || len(ev.Errors) > 0 {
			t.Fatalf("event payload %s: %v", m.Payload, err)
		}
		if ev.Data.UsageEvents.OperationType != "subscription" {
			return ev
		}
	}
}

// expectQuiet fails if c receives anything but subscription-start events within d.
func expectQuiet(t *testing.T, c *apptest.WSClient, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		m, err := c.Next(time.Until(deadline))
		if err != nil {
			return
		}
		if m.IsData() && strings.Contains(string(m.Payload), `"operationType":"subscription"`) {
			continue
		}
		t.Fatalf("unexpected message %s %s", m.Type, m.Payload)
	}
}

// nextFor returns the next message for operation id, skipping others.
func nextFor(t *testing.T, c *apptest.WSClient, id string) *apptest.WSMessage {
	t.Helper()
	var seen []string
	for {
		m, err := c.Next(3 * time.Second)
		if err != nil {
			t.Fatalf("waiting for a message for %s: %v (seen: %v)", id, err, seen)
		}
		if m.ID == id {
			return m
		}
		seen = append(seen, m.ID+" "+m.Type+" "+string(m.Payload))
	}
}

func TestSubscriptionProtocols(t *testing.T) {
	e := apptest.New(t, "sqlite", app.Options{}, nil)
	tid := e.Tenant("live")
	keyID, key := e.Key(e.AdminToken, tid, "usage:read", "keys:read")
	for _, proto := range []string{apptest.TransportWS, apptest.LegacyWS} {
		t.Run(proto, func(t *testing.T) {
			c, err := e.DialWS(proto, map[string]any{"apiKey": key}, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if err := c.Subscribe("1", eventsSub, map[string]any{"k": keyID}); err != nil {
				t.Fatal(err)
			}
			time.Sleep(100 * time.Millisecond) // the subscription is live before requests start
			names := []string{"First", "Second", "Third"}
			for _, n := range names {
				e.MustDo(key, "query "+n+" { viewer { isAdmin } }", nil, &struct{}{})
			}
			for _, n := range names {
				ev := nextEvent(t, c).Data.UsageEvents
				if ev.OperationName != n || ev.APIKeyID != keyID || ev.Outcome != "OK" || ev.OperationType != "query" || ev.RootFields[0] != "viewer" || ev.ID == "" {
					t.Fatalf("event = %+v, want operation %s", ev, n)
				}
			}
			expectQuiet(t, c, 300*time.Millisecond)
			if err := c.Stop("1"); err != nil {
				t.Fatal(err)
			}
			waitFor(t, 2*time.Second, func() bool { return e.App.Live.Active() == 0 })
		})
	}
	// The key may also come from the upgrade request's headers.
	c, err := e.DialWS(apptest.TransportWS, nil, http.Header{"X-Api-Key": {key}})
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
}

func closeCode(err error) (int, string) {
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		return ce.Code, ce.Text
	}
	return 0, err.Error()
}

func TestSubscriptionAuth(t *testing.T) {
	e := apptest.New(t, "sqlite", app.Options{}, nil)
	tid := e.Tenant("wsauth")
	_, key := e.Key(e.AdminToken, tid, "usage:read")
	_, noScope := e.Key(e.AdminToken, tid, "keys:read")
	revokedID, revoked := e.Key(e.AdminToken, tid, "usage:read")
	e.MustDo(e.AdminToken, `mutation($id: ID!) { revokeApiKey(id: $id) { id } }`, map[string]any{"id": revokedID}, &struct{}{})

	for _, tc := range []struct {
		name    string
		payload map[string]any
		code    int
		reason  string
	}{
		{"no key", nil, 4401, "authentication required"},
		{"malformed", map[string]any{"apiKey": "nope"}, 4403, "malformed key"},
		{"revoked", map[string]any{"Authorization": "Bearer " + revoked}, 4403, "key revoked"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := e.DialWS(apptest.TransportWS, tc.payload, nil)
			if err == nil {
				c.Close()
				t.Fatal("connection accepted")
			}
			if code, reason := closeCode(err); code != tc.code || reason != tc.reason {
				t.Fatalf("closed with %d %q, want %d %q", code, reason, tc.code, tc.reason)
			}
		})
	}
	// A key without usage:read is refused the subscription itself.
	c, err := e.DialWS(apptest.TransportWS, map[string]any{"X-API-Key": noScope}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.Subscribe("1", eventsSub, nil)
	if m := nextFor(t, c, "1"); !strings.Contains(string(m.Payload), "FORBIDDEN") {
		t.Fatalf("subscription without scope: %s %s", m.Type, m.Payload)
	}
	_ = key
}

// Two tenants subscribed: each sees only its own events.
func TestSubscriptionIsolation(t *testing.T) {
	e := apptest.New(t, "sqlite", app.Options{}, nil)
	subs := map[string]*apptest.WSClient{}
	keys := map[string]string{}
	for _, slug := range []string{"iso-a", "iso-b"} {
		_, key := e.Key(e.AdminToken, e.Tenant(slug), "usage:read")
		c, err := e.DialWS(apptest.TransportWS, map[string]any{"apiKey": key}, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.Subscribe("1", eventsSub, nil); err != nil {
			t.Fatal(err)
		}
		subs[slug], keys[slug] = c, key
	}
	time.Sleep(100 * time.Millisecond)
	e.MustDo(keys["iso-a"], "query FromA { viewer { isAdmin } }", nil, &struct{}{})
	e.MustDo(keys["iso-b"], "query FromB { viewer { isAdmin } }", nil, &struct{}{})
	if ev := nextEvent(t, subs["iso-a"]); ev.Data.UsageEvents.OperationName != "FromA" {
		t.Fatalf("A got %+v", ev)
	}
	if ev := nextEvent(t, subs["iso-b"]); ev.Data.UsageEvents.OperationName != "FromB" {
		t.Fatalf("B got %+v", ev)
	}
	expectQuiet(t, subs["iso-a"], 300*time.Millisecond)
	expectQuiet(t, subs["iso-b"], 100*time.Millisecond)
	// Naming another tenant's key is NOT_FOUND.
	_ = subs["iso-b"].Subscribe("2", eventsSub, map[string]any{"k": mustViewerKeyID(t, e, keys["iso-a"])})
	if m := nextFor(t, subs["iso-b"], "2"); !strings.Contains(string(m.Payload), "NOT_FOUND") {
		t.Fatalf("foreign key subscription: %s %s", m.Type, m.Payload)
	}
}

func mustViewerKeyID(t *testing.T, e *apptest.Env, key string) string {
	var v viewerResp
	e.MustDo(key, viewerQ, nil, &v)
	return v.Viewer.APIKey.ID
}

// Revoking the key ends its open subscriptions within a second.
func TestRevocationEndsSubscriptions(t *testing.T) {
	e := apptest.New(t, "sqlite", app.Options{}, nil)
	keyID, key := e.Key(e.AdminToken, e.Tenant("revoke-live"), "usage:read")
	c, err := e.DialWS(apptest.TransportWS, map[string]any{"apiKey": key}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.Subscribe("1", eventsSub, nil)
	time.Sleep(100 * time.Millisecond)
	start := time.Now()
	e.MustDo(e.AdminToken, `mutation($id: ID!) { revokeApiKey(id: $id) { id } }`, map[string]any{"id": keyID}, &struct{}{})
	m := nextFor(t, c, "1")
	if m.Type != "error" || !strings.Contains(string(m.Payload), "key revoked") {
		t.Fatalf("after revoke: %s %s", m.Type, m.Payload)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("subscription ended %v after the revocation", d)
	}
	// New operations on the same connection are refused too.
	_ = c.Subscribe("2", eventsSub, nil)
	if m := nextFor(t, c, "2"); !strings.Contains(string(m.Payload), "UNAUTHENTICATED") {
		t.Fatalf("new subscription after revoke: %s %s", m.Type, m.Payload)
	}
}

func TestUsageStatsSubscription(t *testing.T) {
	e := apptest.New(t, "sqlite", app.Options{}, nil)
	keyID, key := e.Key(e.AdminToken, e.Tenant("stats"), "usage:read")
	c, err := e.DialWS(apptest.TransportWS, map[string]any{"apiKey": key}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.Subscribe("1", `subscription($k: ID) { usageStats(apiKeyID: $k, intervalSeconds: 1) { at intervalSeconds requests errors rateLimited p50Ms p99Ms droppedEvents } }`, map[string]any{"k": keyID})
	time.Sleep(100 * time.Millisecond)
	for range 4 {
		e.MustDo(key, viewerQ, nil, &struct{}{})
	}
	e.Do(key, `{ apiKeys { totalCount } }`, nil) // forbidden: an error
	total, errs := 0, 0
	deadline := time.Now().Add(4 * time.Second)
	for total < 6 && time.Now().Before(deadline) {
		m, err := c.Next(3 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		var s struct {
			Data struct {
				UsageStats struct{ IntervalSeconds, Requests, Errors int } `json:"usageStats"`
			} `json:"data"`
		}
		if err := json.Unmarshal(m.Payload, &s); err != nil || s.Data.UsageStats.IntervalSeconds != 1 {
			t.Fatalf("stats %s: %v", m.Payload, err)
		}
		total += s.Data.UsageStats.Requests
		errs += s.Data.UsageStats.Errors
		if total == 5 {
			break
		}
	}
	if total != 5 || errs != 1 {
		t.Fatalf("aggregated %d requests and %d errors, want 5 and 1", total, errs)
	}
}

// At most MAX_SUBSCRIPTIONS_PER_KEY open subscriptions per key.
func TestSubscriptionLimitPerKey(t *testing.T) {
	e := apptest.New(t, "sqlite", app.Options{}, func(c *config.Config) { c.MaxSubscriptionsPerKey = 3 })
	_, key := e.Key(e.AdminToken, e.Tenant("sublimit"), "usage:read")
	c, err := e.DialWS(apptest.TransportWS, map[string]any{"apiKey": key}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := 1; i <= 3; i++ {
		_ = c.Subscribe(fmt.Sprint(i), eventsSub, nil)
	}
	waitFor(t, 2*time.Second, func() bool { return e.App.Live.Active() == 3 })
	_ = c.Subscribe("4", eventsSub, nil)
	if m := nextFor(t, c, "4"); !strings.Contains(string(m.Payload), "too many open subscriptions") {
		t.Fatalf("4th subscription: %s %s", m.Type, m.Payload)
	}
	// Closing one frees a slot.
	_ = c.Stop("1")
	waitFor(t, 2*time.Second, func() bool { return e.App.Live.Active() == 2 })
	_ = c.Subscribe("5", eventsSub, nil)
	waitFor(t, 2*time.Second, func() bool { return e.App.Live.Active() == 3 })
}

// Two instances on PostgreSQL: a dashboard on one sees requests served by the other,
// and a revocation on one is honoured by the other within a second.
func TestLiveAcrossInstances(t *testing.T) {
	dbURL := testdb.URL(t, "postgres")
	a := apptest.New(t, "postgres", app.Options{}, func(c *config.Config) { c.DatabaseURL = dbURL })
	b := apptest.New(t, "postgres", app.Options{}, func(c *config.Config) { c.DatabaseURL = dbURL; c.AdminToken = a.AdminToken })
	keyID, key := a.Key(a.AdminToken, a.Tenant("cross"), "usage:read")
	c, err := a.DialWS(apptest.TransportWS, map[string]any{"apiKey": key}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.Subscribe("1", eventsSub, nil)
	time.Sleep(150 * time.Millisecond)
	b.MustDo(key, "query ServedByB { viewer { isAdmin } }", nil, &struct{}{})
	if ev := nextEvent(t, c); ev.Data.UsageEvents.OperationName != "ServedByB" {
		t.Fatalf("event = %+v", ev)
	}
	// b has the key cached; revoke on a.
	b.MustDo(key, viewerQ, nil, &struct{}{})
	a.MustDo(a.AdminToken, `mutation($id: ID!) { revokeApiKey(id: $id) { id } }`, map[string]any{"id": keyID}, &struct{}{})
	deadline := time.Now().Add(time.Second)
	for {
		r := b.Do(key, viewerQ, nil)
		if r.Status == http.StatusUnauthorized {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("instance b still accepts the revoked key after 1s: HTTP %d", r.Status)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// 1,000 concurrent subscriptions, all closed, leave no goroutine behind.
func TestManySubscriptionsNoLeak(t *testing.T) {
	e := apptest.New(t, "sqlite", app.Options{}, func(c *config.Config) { c.MaxSubscriptionsPerKey = 1000 })
	_, key := limitedKey(t, e, e.Tenant("many"), 1000000, 60, "") // subscribing costs 5 tokens each
	before := runtime.NumGoroutine()
	const conns, perConn = 100, 10
	clients := make([]*apptest.WSClient, conns)
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	for i := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := e.DialWS(apptest.TransportWS, map[string]any{"apiKey": key}, nil)
			if err != nil {
				errs <- err
				return
			}
			for j := range perConn {
				if err := c.Subscribe(fmt.Sprint(j), eventsSub, nil); err != nil {
					errs <- err
				}
			}
			clients[i] = c
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, func() bool { return e.App.Live.Active() == conns*perConn })
	// One request reaches all 1,000.
	e.MustDo(key, "query Broadcast { viewer { isAdmin } }", nil, &struct{}{})
	for _, c := range clients[:5] {
		if ev := nextEvent(t, c); ev.Data.UsageEvents.OperationName != "Broadcast" {
			t.Fatalf("event = %+v", ev)
		}
	}
	for _, c := range clients {
		c.Close()
	}
	if !eventually(5*time.Second, func() bool { return e.App.Live.Active() == 0 && e.App.Conns.Len() == 0 }) {
		buf := make([]byte, 4<<20)
		t.Fatalf("active %d conns %d:\n%s", e.App.Live.Active(), e.App.Conns.Len(), buf[:runtime.Stack(buf, true)])
	}
	if !eventually(10*time.Second, func() bool { return runtime.NumGoroutine() <= before+5 }) {
		buf := make([]byte, 1<<20)
		t.Fatalf("goroutines: %d before, %d after:\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
	}
}

func eventually(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

func waitFor(t *testing.T, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v (goroutines: %d)", d, runtime.NumGoroutine())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Shutdown completes open subscriptions and closes their connections.
func TestShutdownCompletesSubscriptions(t *testing.T) {
	e := apptest.New(t, "sqlite", app.Options{}, nil)
	_, key := e.Key(e.AdminToken, e.Tenant("bye"), "usage:read")
	c, err := e.DialWS(apptest.TransportWS, map[string]any{"apiKey": key}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.Subscribe("1", eventsSub, nil)
	waitFor(t, 2*time.Second, func() bool { return e.App.Live.Active() == 1 })
	go e.App.Live.Shutdown(t.Context())
	if m := nextFor(t, c, "1"); m.Type != "complete" {
		t.Fatalf("on shutdown: %s %s", m.Type, m.Payload)
	}
}

// A key revoked after connection_init cannot run further operations on the open
// connection, whether it came in the init payload or in the upgrade headers.
func TestRevokedKeyOnOpenConnection(t *testing.T) {
	e := apptest.New(t, "sqlite", app.Options{}, nil)
	tid := e.Tenant("ws-revoke")
	for _, via := range []string{"payload", "header"} {
		t.Run(via, func(t *testing.T) {
			keyID, key := e.Key(e.AdminToken, tid, "keys:write")
			var c *apptest.WSClient
			var err error
			if via == "payload" {
				c, err = e.DialWS(apptest.TransportWS, map[string]any{"apiKey": key}, nil)
			} else {
				c, err = e.DialWS(apptest.TransportWS, nil, http.Header{"X-Api-Key": {key}})
			}
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			e.MustDo(e.AdminToken, `mutation($id: ID!) { revokeApiKey(id: $id) { id } }`, map[string]any{"id": keyID}, &struct{}{})
			_ = c.Subscribe("1", `mutation { createApiKey(input: {name: "after", scopes: []}) { secret } }`, nil)
			if m := nextFor(t, c, "1"); !strings.Contains(string(m.Payload), "key revoked") || strings.Contains(string(m.Payload), "lk_live_") {
				t.Fatalf("mutation after revocation: %s %s", m.Type, m.Payload)
			}
		})
	}
}
