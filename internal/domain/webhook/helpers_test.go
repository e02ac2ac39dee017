package webhook_test

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/latchkey/latchkey/ent"
	"github.com/latchkey/latchkey/ent/schema/rule"
	"github.com/latchkey/latchkey/internal/data/store"
	"github.com/latchkey/latchkey/internal/data/testdb"
	"github.com/latchkey/latchkey/internal/domain/audit"
	"github.com/latchkey/latchkey/internal/domain/webhook"
	"github.com/latchkey/latchkey/internal/platform/viewer"
)

// localPolicy lets tests deliver to httptest servers on loopback over http.
var localPolicy = webhook.Policy{AllowPrivate: true, AllowHTTP: true}

func sysCtx() context.Context { return rule.SystemContext(context.Background()) }

// tenantCtx is the context of a key of tenant tid with the webhook scopes.
func tenantCtx(tid string) context.Context {
	return viewer.NewContext(context.Background(), &viewer.Viewer{
		TenantID: tid, KeyPrefix: "lk_test", Scopes: []string{"webhooks:read", "webhooks:write"},
	})
}

func openStore(t testing.TB, dialect string) *store.Store {
	t.Helper()
	s, err := store.Open(context.Background(), testdb.URL(t, dialect))
	if err != nil {
		t.Fatalf("open %s store: %v", dialect, err)
	}
	audit.Register(s.Client) // as the server's wiring does
	t.Cleanup(func() { s.Close() })
	return s
}

// forEachDialect runs fn on a fresh database of every dialect, in parallel subtests.
func forEachDialect(t *testing.T, fn func(t *testing.T, s *store.Store)) {
	t.Helper()
	for _, d := range testdb.Dialects {
		t.Run(d, func(t *testing.T) {
			t.Parallel()
			fn(t, openStore(t, d))
		})
	}
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func newTenant(t testing.TB, c *ent.Client) string {
	t.Helper()
	slug := "t-" + randHex(6)
	return c.Tenant.Create().SetName(slug).SetSlug(slug).SaveX(sysCtx()).ID
}

// newWebhook creates a webhook of tenant tid through the Manager and returns it with
// its secret.
func newWebhook(t testing.TB, c *ent.Client, tid, url string, events ...string) (*ent.Webhook, string) {
	t.Helper()
	m := &webhook.Manager{Policy: localPolicy}
	w, secret, err := m.Create(tenantCtx(tid), c, webhook.CreateParams{URL: url, Events: events})
	if err != nil {
		t.Fatalf("create webhook: %v", err)
	}
	return w, secret
}

// enqueue commits one event of type typ for tenant tid and returns the number of
// deliveries.
func enqueue(t testing.TB, c *ent.Client, tid, typ string, data any) int {
	t.Helper()
	tx, err := c.Tx(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	n, err := webhook.Enqueue(context.Background(), tx.Client(), webhook.Event{Type: typ, TenantID: tid, Data: data}, "")
	if err != nil {
		_ = tx.Rollback()
		t.Fatalf("enqueue: %v", err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	return n
}

// request is one request a receiver got.
type request struct {
	At     time.Time
	Path   string
	Header http.Header
	Body   []byte
}

// receiver is a webhook endpoint on loopback. Its reply function decides each answer
// from the 1-based number of the request; nil answers 200. It records every request
// and counts requests of the same delivery (path and webhook-id) that overlap in time.
type receiver struct {
	*httptest.Server
	reply func(n int, r *http.Request) (int, http.Header)

	mu       sync.Mutex
	reqs     []request
	inflight map[string]int
	overlaps int
	arrived  chan struct{}
}

func newReceiver(t testing.TB, reply func(n int, r *http.Request) (int, http.Header)) *receiver {
	t.Helper()
	rc := &receiver{reply: reply, inflight: map[string]int{}, arrived: make(chan struct{}, 1)}
	rc.Server = httptest.NewServer(http.HandlerFunc(rc.serve))
	t.Cleanup(rc.Close)
	return rc
}

func (rc *receiver) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	// Deliveries of one event to several webhooks share the webhook-id: a delivery is
	// the id at a path.
	id := r.URL.Path + " " + r.Header.Get("webhook-id")
	rc.mu.Lock()
	rc.reqs = append(rc.reqs, request{At: time.Now(), Path: r.URL.Path, Header: r.Header.Clone(), Body: body})
	n := len(rc.reqs)
	rc.inflight[id]++
	if rc.inflight[id] > 1 {
		rc.overlaps++
	}
	rc.mu.Unlock()
	select {
	case rc.arrived <- struct{}{}:
	default:
	}
	status, h := http.StatusOK, http.Header(nil)
	if rc.reply != nil {
		status, h = rc.reply(n, r)
	}
	rc.mu.Lock()
	rc.inflight[id]--
	rc.mu.Unlock()
	for k, v := range h {
		w.Header()[k] = v
	}
	w.WriteHeader(status)
}

func (rc *receiver) requests() []request {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]request(nil), rc.reqs...)
}

func (rc *receiver) count() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return len(rc.reqs)
}

// waitFor polls cond until it holds or the timeout passes (then fails the test).
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// testConfig is a dispatcher configuration for fast tests: local receivers, a short
// schedule and no jitter.
func testConfig() webhook.Config {
	return webhook.Config{
		Schedule:     []time.Duration{50 * time.Millisecond, 100 * time.Millisecond},
		Jitter:       -1,
		Timeout:      5 * time.Second,
		PollInterval: 100 * time.Millisecond,
		Policy:       localPolicy,
	}
}

// runDispatcher starts a dispatcher and returns a function that stops it and waits for
// Run to return (also called at cleanup).
func runDispatcher(t testing.TB, s *store.Store, cfg webhook.Config) (*webhook.Dispatcher, func()) {
	t.Helper()
	d := webhook.NewDispatcher(s.Client, s.Dialect, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return d, stop
}

// fakeResolver is a resolver that answers every query from a fixed list of addresses,
// without any network: its Dial returns one end of an in-memory pipe served by a tiny
// DNS responder.
func fakeResolver(addrs ...string) *net.Resolver {
	var ips []netip.Addr
	for _, a := range addrs {
		ips = append(ips, netip.MustParseAddr(a))
	}
	return &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, network, address string) (net.Conn, error) {
			client, server := net.Pipe()
			go serveDNS(server, ips)
			return client, nil
		},
	}
}

// serveDNS answers DNS queries in TCP framing (the Go resolver uses it on a conn that
// is not a PacketConn): A and AAAA queries get the addresses of their family.
func serveDNS(c net.Conn, ips []netip.Addr) {
	defer c.Close()
	for {
		var l [2]byte
		if _, err := io.ReadFull(c, l[:]); err != nil {
			return
		}
		q := make([]byte, binary.BigEndian.Uint16(l[:]))
		if _, err := io.ReadFull(c, q); err != nil || len(q) < 12 {
			return
		}
		// Question: labels up to a zero byte, then type and class.
		end := 12
		for end < len(q) && q[end] != 0 {
			end += int(q[end]) + 1
		}
		end += 5
		if end > len(q) {
			return
		}
		qtype := binary.BigEndian.Uint16(q[end-4:])
		var answers [][]byte
		for _, ip := range ips {
			switch {
			case qtype == 1 && ip.Is4():
				a := ip.As4()
				answers = append(answers, a[:])
			case qtype == 28 && ip.Is6():
				a := ip.As16()
				answers = append(answers, a[:])
			}
		}
		resp := make([]byte, 12, 512)
		copy(resp, q[:2])                                              // id
		binary.BigEndian.PutUint16(resp[2:], 0x8180|uint16(q[2]&1)<<8) // response, RD, RA
		binary.BigEndian.PutUint16(resp[4:], 1)                        // one question
		binary.BigEndian.PutUint16(resp[6:], uint16(len(answers)))
		resp = append(resp, q[12:end]...)
		for _, a := range answers {
			resp = append(resp, 0xC0, 0x0C) // name: pointer to the question
			resp = binary.BigEndian.AppendUint16(resp, qtype)
			resp = binary.BigEndian.AppendUint16(resp, 1)  // class IN
			resp = binary.BigEndian.AppendUint32(resp, 60) // TTL
			resp = binary.BigEndian.AppendUint16(resp, uint16(len(a)))
			resp = append(resp, a...)
		}
		out := binary.BigEndian.AppendUint16(nil, uint16(len(resp)))
		if _, err := c.Write(append(out, resp...)); err != nil {
			return
		}
	}
}
