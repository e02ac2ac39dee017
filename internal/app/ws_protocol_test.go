package app_test

import (
	"strings"
	"testing"
	"time"

	"github.com/latchkey/latchkey/internal/app"
	"github.com/latchkey/latchkey/internal/app/apptest"
)

// expectWSClose reads c until the server closes it and checks the close frame.
func expectWSClose(t *testing.T, c *apptest.WSClient, code int, reason string) {
	t.Helper()
	for {
		m, err := c.Next(3 * time.Second)
		if err == nil {
			if m.IsData() && strings.Contains(string(m.Payload), `"operationType":"subscription"`) {
				continue // a usage event of a subscription starting
			}
			t.Fatalf("got %s %s %s, want close %d", m.Type, m.ID, m.Payload, code)
		}
		if got, text := closeCode(err); got != code || text != reason {
			t.Fatalf("closed with %d %q, want %d %q", got, text, code, reason)
		}
		return
	}
}

// TestWebSocketProtocolErrors: protocol violations on graphql-transport-ws
// close the socket with the codes of its PROTOCOL.md, through the real
// server. Never 1000: graphql-ws clients answer it by reconnecting and
// repeating the violation, forever.
func TestWebSocketProtocolErrors(t *testing.T) {
	e := apptest.New(t, "sqlite", app.Options{WebSocketInitTimeout: 300 * time.Millisecond}, nil)
	keyID, key := e.Key(e.AdminToken, e.Tenant("wsproto"), "usage:read")
	auth := map[string]any{"apiKey": key}
	acked := func(t *testing.T) *apptest.WSClient {
		t.Helper()
		c, err := e.DialWS(apptest.TransportWS, auth, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		return c
	}
	opened := func(t *testing.T) *apptest.WSClient {
		t.Helper()
		c, err := e.OpenWS(apptest.TransportWS, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		return c
	}

	t.Run("malformed JSON frame", func(t *testing.T) {
		c := acked(t)
		_ = c.SendRaw(`{"type":"subscribe","id":"1","payload":{"query":`)
		expectWSClose(t, c, 4400, "Invalid message received")
	})
	t.Run("unknown message type", func(t *testing.T) {
		c := acked(t)
		_ = c.Send("1", "start", map[string]any{"query": eventsSub}) // the legacy protocol's name
		expectWSClose(t, c, 4400, "Invalid message received")
	})
	t.Run("subscribe without a query", func(t *testing.T) {
		c := acked(t)
		_ = c.Send("1", "subscribe", map[string]any{"variables": map[string]any{}})
		expectWSClose(t, c, 4400, "Invalid message received")
	})
	t.Run("duplicate subscription id", func(t *testing.T) {
		c := acked(t)
		_ = c.Subscribe("sub-1", eventsSub, nil)
		waitFor(t, 2*time.Second, func() bool { return e.App.Live.Active() == 1 })
		_ = c.Subscribe("sub-1", eventsSub, nil)
		expectWSClose(t, c, 4409, "Subscriber for sub-1 already exists")
		// Both are gone: the running one ended with the connection, the
		// duplicate never started.
		waitFor(t, 2*time.Second, func() bool { return e.App.Live.Active() == 0 })
	})
	t.Run("second connection_init", func(t *testing.T) {
		c := acked(t)
		_ = c.Send("", "connection_init", auth)
		expectWSClose(t, c, 4429, "Too many initialisation requests")
	})
	t.Run("subscribe before connection_init", func(t *testing.T) {
		c := opened(t)
		_ = c.Subscribe("1", eventsSub, nil)
		expectWSClose(t, c, 4401, "Unauthorized")
	})
	t.Run("no connection_init", func(t *testing.T) {
		c := opened(t)
		expectWSClose(t, c, 4408, "Connection initialisation timeout")
	})
	t.Run("ping before connection_init", func(t *testing.T) {
		c := opened(t)
		_ = c.Send("", "ping", nil) // gqlgen alone closed with 1002 here
		_ = c.Send("", "connection_init", auth)
		m, err := c.Next(3 * time.Second)
		if err != nil || m.Type != "connection_ack" {
			t.Fatalf("got %v %v, want connection_ack", m, err)
		}
	})
	t.Run("id reused after the client completed it", func(t *testing.T) {
		c := acked(t)
		vars := map[string]any{"k": keyID}
		_ = c.Subscribe("1", eventsSub, vars)
		waitFor(t, 2*time.Second, func() bool { return e.App.Live.Active() == 1 })
		_ = c.Stop("1")
		_ = c.Subscribe("1", eventsSub, vars)
		waitFor(t, 2*time.Second, func() bool { return e.App.Live.Active() == 1 })
		time.Sleep(100 * time.Millisecond) // the subscription is live before the request
		e.MustDo(key, "query Reused { viewer { isAdmin } }", nil, &struct{}{})
		// No "complete" for the first operation: nextEvent fails on anything
		// but results.
		if ev := nextEvent(t, c).Data.UsageEvents; ev.OperationName != "Reused" {
			t.Fatalf("event %+v", ev)
		}
	})
	waitFor(t, 2*time.Second, func() bool { return e.App.Live.Active() == 0 && e.App.Conns.Len() == 0 })
}

// TestLegacyWebSocketProtocolErrors: the legacy graphql-ws protocol reports
// errors with messages and keeps the connection (and its subscriptions)
// open; only a missing connection_init closes it, with 4408.
func TestLegacyWebSocketProtocolErrors(t *testing.T) {
	e := apptest.New(t, "sqlite", app.Options{WebSocketInitTimeout: 300 * time.Millisecond}, nil)
	keyID, key := e.Key(e.AdminToken, e.Tenant("wslegacy"), "usage:read")
	c, err := e.DialWS(apptest.LegacyWS, map[string]any{"apiKey": key}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	vars := map[string]any{"k": keyID}
	_ = c.Subscribe("1", eventsSub, vars)
	waitFor(t, 2*time.Second, func() bool { return e.App.Live.Active() == 1 })

	expectMsg := func(typ, id, contains string) {
		t.Helper()
		m, err := c.Next(3 * time.Second)
		for err == nil && m.IsData() && strings.Contains(string(m.Payload), `"operationType":"subscription"`) {
			m, err = c.Next(3 * time.Second) // the usage event of the subscription starting
		}
		if err != nil {
			t.Fatalf("waiting for %s: %v", typ, err)
		}
		if m.Type != typ || m.ID != id || !strings.Contains(string(m.Payload), contains) {
			t.Fatalf("got %s %q %s, want %s %q with %s", m.Type, m.ID, m.Payload, typ, id, contains)
		}
	}
	_ = c.SendRaw(`{"type":"start",`) // gqlgen alone closed with 1000 here
	expectMsg("connection_error", "", "Invalid message received")
	_ = c.Send("2", "subscribe", map[string]any{"query": eventsSub})
	expectMsg("connection_error", "", `Invalid message type \"subscribe\"`)
	_ = c.Subscribe("1", eventsSub, vars)
	expectMsg("error", "1", "Subscriber for 1 already exists")

	// The first subscription still runs, alone.
	if n := e.App.Live.Active(); n != 1 {
		t.Fatalf("%d subscriptions, want 1", n)
	}
	e.MustDo(key, "query StillThere { viewer { isAdmin } }", nil, &struct{}{})
	if ev := nextEvent(t, c).Data.UsageEvents; ev.OperationName != "StillThere" {
		t.Fatalf("event %+v", ev)
	}
	_ = c.Stop("1")
	expectMsg("complete", "1", "") // graphql-ws clients expect it
	waitFor(t, 2*time.Second, func() bool { return e.App.Live.Active() == 0 })

	idle, err := e.OpenWS(apptest.LegacyWS, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	expectWSClose(t, idle, 4408, "Connection initialisation timeout")
}
