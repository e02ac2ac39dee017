package scaleout

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	_ "github.com/lib/pq" // database/sql driver "postgres"
)

// viewerQuery is the cheapest authenticated operation.
const viewerQuery = `{ viewer { isAdmin } }`

// TestScaleOut runs three server processes on one database and one Redis and checks,
// through the public API only, that they share rate limits, live usage, webhook work
// and revocations, and that SIGTERM loses no usage. The subtests run in order on the
// same processes; the last one stops them.
func TestScaleOut(t *testing.T) {
	began := time.Now()
	c := newCluster(t)
	ready := time.Now()
	t.Logf("%d servers ready in %v", len(c.servers), ready.Sub(began).Round(time.Millisecond))
	tenant := c.createTenant(t, "Scale-out", "scale-out")
	// One unlimited key drives the live-usage and webhook checks.
	_, key := c.createKey(t, tenant, "unlimited", 1_000_000, 60)

	phase := func(name string, f func(t *testing.T)) {
		start := time.Now()
		t.Run(name, f)
		t.Logf("%s: %v", name, time.Since(start).Round(time.Millisecond))
	}
	phase("SharedRateLimit", func(t *testing.T) { testSharedRateLimit(t, c, tenant) })
	// Within the start-up window every instance still publishes every usage event.
	phase("SharedLiveUsage", func(t *testing.T) { testSharedLiveUsage(t, c, 0, key) })
	phase("SharedWebhookWork", func(t *testing.T) { testSharedWebhookWork(t, c, key) })
	phase("RevocationHonouredByAll", func(t *testing.T) { testRevocation(t, c, tenant) })
	phase("VerificationChangesHonouredByAll", func(t *testing.T) { testVerificationPropagation(t, c, tenant) })
	phase("LiveUsageWatchedOnly", func(t *testing.T) { testWatchedOnly(t, c, ready) })
	phase("GracefulShutdownKeepsUsage", func(t *testing.T) { testGracefulShutdown(t, c) })
}

// testSharedRateLimit fires 90 concurrent requests of a key limited to 30 per hour,
// spread over the processes in turn: exactly 30 are admitted in total.
func testSharedRateLimit(t *testing.T, c *cluster, tenant string) {
	const (
		limit = 30
		total = 3 * limit
	)
	_, key := c.createKey(t, tenant, "limited", limit, 3600)

	ctx, cancel := context.WithTimeout(context.Background(), 2*requestTimeout)
	defer cancel()
	responses := make([]*gqlResponse, total)
	errs := make([]error, total)
	gate := make(chan struct{})
	var wg sync.WaitGroup
	for i := range total {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-gate
			responses[i], errs[i] = c.query(ctx, c.servers[i%len(c.servers)], key, viewerQuery, nil)
		}()
	}
	close(gate)
	wg.Wait()

	byStatus := map[int]int{}
	perServer := map[string]map[int]int{}
	for i, r := range responses {
		s := c.servers[i%len(c.servers)]
		if errs[i] != nil {
			t.Errorf("request %d: %v", i, errs[i])
			continue
		}
		byStatus[r.Status]++
		if perServer[s.name] == nil {
			perServer[s.name] = map[int]int{}
		}
		perServer[s.name][r.Status]++
		switch r.Status {
		case http.StatusOK:
			var d struct{ Viewer struct{ IsAdmin *bool } }
			if len(r.Errors) > 0 || json.Unmarshal(r.Data, &d) != nil || d.Viewer.IsAdmin == nil || *d.Viewer.IsAdmin {
				t.Errorf("%s: admitted request answered %s", s.name, r.Body)
			}
			if got := r.Header.Get("X-RateLimit-Limit"); got != strconv.Itoa(limit) {
				t.Errorf("%s: X-RateLimit-Limit = %q, want %d", s.name, got, limit)
			}
		case http.StatusTooManyRequests:
			if secs, err := strconv.Atoi(r.Header.Get("Retry-After")); err != nil || secs < 1 {
				t.Errorf("%s: 429 with Retry-After %q, want a positive number of seconds", s.name, r.Header.Get("Retry-After"))
			}
			if r.code() != "RATE_LIMITED" {
				t.Errorf("%s: 429 with body %s, want extensions.code RATE_LIMITED", s.name, r.Body)
			}
		}
	}
	t.Logf("statuses by process: %v", perServer)
	want := map[int]int{http.StatusOK: limit, http.StatusTooManyRequests: total - limit}
	if fmt.Sprint(byStatus) != fmt.Sprint(want) {
		t.Errorf("%d concurrent requests over %d processes: statuses %v, want %v", total, len(c.servers), byStatus, want)
	}
}

// usageEventNext is the payload of a usageEvents "next" message.
type usageEventNext struct {
	Data struct {
		UsageEvents struct {
			OperationName string `json:"operationName"`
		} `json:"usageEvents"`
	} `json:"data"`
	Errors []gqlError `json:"errors"`
}

// awaitOperation reads subscription id's messages until one reports an operation
// named name. Events of other operations are skipped.
func awaitOperation(ctx context.Context, ws *wsClient, id, name string) error {
	for {
		m, err := ws.next(ctx)
		if err != nil {
			return fmt.Errorf("waiting for a usage event of %q: %w", name, err)
		}
		if m.ID != id {
			continue
		}
		switch m.Type {
		case "next":
			var p usageEventNext
			if err := json.Unmarshal(m.Payload, &p); err != nil {
				return fmt.Errorf("next payload %s: %w", m.Payload, err)
			}
			if len(p.Errors) > 0 {
				return fmt.Errorf("subscription error: %s", m.Payload)
			}
			if p.Data.UsageEvents.OperationName == name {
				return nil
			}
		case "error", "complete":
			return fmt.Errorf("subscription ended: %s %s", m.Type, m.Payload)
		}
	}
}

// testSharedLiveUsage subscribes to usage on process sub and checks that it sees an
// operation served by every other process, sent as soon as the subscription streams
// operations of its own process.
func testSharedLiveUsage(t *testing.T, c *cluster, sub int, key string) {
	p := c.servers[sub]
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	ws, err := dialWS(ctx, p.base, key)
	if err != nil {
		t.Fatalf("%s: %v", p.name, err)
	}
	defer ws.Close()
	if err := ws.subscribe("1", `subscription { usageEvents { operationName } }`); err != nil {
		t.Fatal(err)
	}

	// The subscription is registered asynchronously: wait until it streams an
	// operation served by its own process before measuring the cross-process path.
	live := false
	for attempt := 0; attempt < 20 && !live; attempt++ {
		c.mustQuery(t, p, key, `query ProbeOwn { viewer { isAdmin } }`, nil, nil)
		probeCtx, probeCancel := context.WithTimeout(ctx, 250*time.Millisecond)
		err := awaitOperation(probeCtx, ws, "1", "ProbeOwn")
		probeCancel()
		switch {
		case err == nil:
			live = true
		case !errors.Is(err, context.DeadlineExceeded):
			t.Fatalf("%s: %v", p.name, err)
		}
	}
	if !live {
		t.Fatalf("%s: the usageEvents subscription never streamed an operation served by its own process", p.name)
	}
	c.ops.Add(1) // the subscription itself, recorded when it started

	for i, other := range c.servers {
		if i == sub {
			continue
		}
		name := fmt.Sprintf("FromProcess%d", i+1)
		sent := time.Now()
		c.mustQuery(t, other, key, `query `+name+` { viewer { isAdmin } }`, nil, nil)
		waitCtx, waitCancel := context.WithDeadline(ctx, sent.Add(2*time.Second))
		err := awaitOperation(waitCtx, ws, "1", name)
		waitCancel()
		if err != nil {
			t.Fatalf("subscriber on %s, operation on %s: %v", p.name, other.name, err)
		}
		t.Logf("operation served by %s reached the subscriber on %s in %v", other.name, p.name, time.Since(sent).Round(time.Millisecond))
	}
}

// testWatchedOnly waits until every process has left its start-up window (in which
// it publishes every usage event), checks that an operation of a tenant nobody
// watches is not sent to the other instances, and that a subscription on the last
// process then still sees operations served by the others right after it streams.
func testWatchedOnly(t *testing.T, c *cluster, ready time.Time) {
	// The window is 1.5 watch refreshes (7.5 s) from a process's first operation.
	if d := time.Until(ready.Add(9 * time.Second)); d > 0 {
		t.Logf("waiting %v for the start-up window to end", d.Round(time.Millisecond))
		time.Sleep(d)
	}
	tenant := c.createTenant(t, "Watched only", "watched-only")
	_, key := c.createKey(t, tenant, "watched", 1_000_000, 60)
	first := c.servers[0]
	suppressed := c.metric(t, first, "latchkey_live_events_suppressed_total")
	sent := c.metric(t, first, "latchkey_bus_sent_total")
	c.mustQuery(t, first, key, `query Unwatched { viewer { isAdmin } }`, nil, nil)
	if got := c.metric(t, first, "latchkey_live_events_suppressed_total") - suppressed; got != 1 {
		t.Fatalf("%s: %v usage events suppressed for a tenant nobody watches, want 1", first.name, got)
	}
	// The operation's usage event was not sent: nothing else is (no change, no webhook).
	time.Sleep(100 * time.Millisecond)
	if got := c.metric(t, first, "latchkey_bus_sent_total") - sent; got != 0 {
		t.Errorf("%s: %v frames sent to other instances after an unwatched operation, want 0", first.name, got)
	}
	testSharedLiveUsage(t, c, len(c.servers)-1, key)
	replayed := 0.0
	for _, s := range c.servers {
		replayed += c.metric(t, s, "latchkey_live_events_replayed_total")
	}
	t.Logf("usage events replayed to the new watch: %v", replayed)
}

// receiver is a webhook endpoint that records the webhook-id of every request.
type receiver struct {
	mu   sync.Mutex
	seen map[string]int // webhook-id -> requests
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	_, _ = io.Copy(io.Discard, req.Body)
	r.mu.Lock()
	r.seen[req.Header.Get("webhook-id")]++
	r.mu.Unlock()
	w.WriteHeader(http.StatusOK)
}

// snapshot returns a copy of the webhook-ids seen so far.
func (r *receiver) snapshot() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := make(map[string]int, len(r.seen))
	for k, v := range r.seen {
		m[k] = v
	}
	return m
}

// testSharedWebhookWork queues 40 test deliveries through every process while all
// dispatchers run: each arrives exactly once.
func testSharedWebhookWork(t *testing.T, c *cluster, key string) {
	const (
		sends   = 40
		workers = 8
	)
	rec := &receiver{seen: map[string]int{}}
	srv := httptest.NewServer(rec) // 127.0.0.1
	defer srv.Close()

	var created struct {
		CreateWebhook struct {
			Webhook struct{ ID string } `json:"webhook"`
		} `json:"createWebhook"`
	}
	c.mustQuery(t, c.servers[0], key, `mutation($url: String!) { createWebhook(input: {url: $url, events: ["webhook.test"]}) { webhook { id } } }`,
		map[string]any{"url": srv.URL}, &created)
	hook := created.CreateWebhook.Webhook.ID

	ctx, cancel := context.WithTimeout(context.Background(), 2*requestTimeout)
	defer cancel()
	start := time.Now()
	eventIDs := make([]string, sends)
	errs := make([]error, sends)
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				s := c.servers[i%len(c.servers)]
				r, err := c.query(ctx, s, key, `mutation($id: ID!) { sendTestWebhook(id: $id) { id eventID } }`, map[string]any{"id": hook})
				if err == nil && (r.Status != http.StatusOK || len(r.Errors) > 0) {
					err = fmt.Errorf("%s: sendTestWebhook: HTTP %d %s", s.name, r.Status, r.Body)
				}
				if err != nil {
					errs[i] = err
					continue
				}
				var d struct {
					SendTestWebhook struct{ ID, EventID string } `json:"sendTestWebhook"`
				}
				if err := json.Unmarshal(r.Data, &d); err != nil || d.SendTestWebhook.EventID == "" {
					errs[i] = fmt.Errorf("%s: sendTestWebhook returned %s", s.name, r.Data)
					continue
				}
				eventIDs[i] = d.SendTestWebhook.EventID
			}
		}()
	}
	for i := range sends {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{}
	for _, id := range eventIDs {
		if want[id] {
			t.Fatalf("sendTestWebhook returned event id %s twice", id)
		}
		want[id] = true
	}

	deadline := start.Add(10 * time.Second)
	for {
		got := rec.snapshot()
		missing := 0
		for id := range want {
			if got[id] == 0 {
				missing++
			}
		}
		if missing == 0 {
			t.Logf("%d deliveries arrived %v after the first send", sends, time.Since(start).Round(time.Millisecond))
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d test events had not arrived 10 s after the first send (received: %v)", missing, sends, got)
		}
		time.Sleep(20 * time.Millisecond)
	}

	// A second dispatcher sending a claimed delivery again would do so at once; give
	// it a moment (longer than the whole retry schedule) before judging.
	time.Sleep(time.Second)
	got := rec.snapshot()
	var problems []string
	for id, n := range got {
		switch {
		case !want[id]:
			problems = append(problems, fmt.Sprintf("unexpected webhook-id %q (%d requests)", id, n))
		case n != 1:
			problems = append(problems, fmt.Sprintf("webhook-id %s delivered %d times", id, n))
		}
	}
	sort.Strings(problems)
	for _, p := range problems {
		t.Error(p)
	}

	// The delivery records agree: one attempt each, delivered.
	var deliveries struct {
		WebhookDeliveries struct {
			TotalCount int
			Edges      []struct {
				Node struct {
					EventID  string
					Status   string
					Attempts int
				}
			}
		} `json:"webhookDeliveries"`
	}
	for {
		c.mustQuery(t, c.servers[1], key, `query($id: ID!) { webhookDeliveries(webhookID: $id, first: 50) { totalCount edges { node { eventID status attempts } } } }`,
			map[string]any{"id": hook}, &deliveries)
		pending := 0
		for _, e := range deliveries.WebhookDeliveries.Edges {
			if e.Node.Status == "PENDING" {
				pending++
			}
		}
		if pending == 0 || time.Now().After(deadline.Add(5*time.Second)) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n := deliveries.WebhookDeliveries.TotalCount; n != sends {
		t.Errorf("webhookDeliveries totalCount = %d, want %d", n, sends)
	}
	for _, e := range deliveries.WebhookDeliveries.Edges {
		if n := e.Node; n.Status != "DELIVERED" || n.Attempts != 1 || !want[n.EventID] {
			t.Errorf("delivery of event %s: status %s after %d attempts, want DELIVERED after 1", n.EventID, n.Status, n.Attempts)
		}
	}
}

// testRevocation revokes a key that every process has cached, on process 1: the
// process that revoked it refuses it on the next request, the others within a second.
func testRevocation(t *testing.T, c *cluster, tenant string) {
	id, key := c.createKey(t, tenant, "to-revoke", 1_000_000, 60)
	for _, s := range c.servers {
		c.mustQuery(t, s, key, viewerQuery, nil, nil) // now cached by every process
	}
	c.mustQuery(t, c.servers[0], c.admin, `mutation($id: ID!) { revokeApiKey(id: $id) { id } }`, map[string]any{"id": id}, nil)
	revoked := time.Now()

	type revCase struct {
		name   string
		server *server
		within time.Duration // 0: the very next request
	}
	cases := []revCase{{"same process", c.servers[0], 0}}
	for _, s := range c.servers[1:] {
		cases = append(cases, revCase{"other process " + s.name, s, time.Second})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), tc.within+requestTimeout)
			defer cancel()
			for polls := 1; ; polls++ {
				r, err := c.query(ctx, tc.server, key, viewerQuery, nil)
				if err != nil {
					t.Fatal(err)
				}
				if r.Status == http.StatusUnauthorized {
					if r.code() != "UNAUTHENTICATED" {
						t.Errorf("%s: 401 with body %s, want extensions.code UNAUTHENTICATED", tc.server.name, r.Body)
					}
					t.Logf("%s refused the revoked key %v after the revocation (request %d): %s",
						tc.server.name, time.Since(revoked).Round(time.Millisecond), polls, r.Body)
					return
				}
				if r.Status != http.StatusOK {
					t.Fatalf("%s: HTTP %d %s, want 200 or 401", tc.server.name, r.Status, r.Body)
				}
				if time.Since(revoked) > tc.within {
					t.Fatalf("%s still accepted the key revoked on %s %v ago (request %d)",
						tc.server.name, c.servers[0].name, time.Since(revoked).Round(time.Millisecond), polls)
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
}

// testVerificationPropagation verifies a consumer key on every process (cached by
// all), then disables, re-enables and revokes it on process 1: each change holds on
// process 1 from the very next verification and on process 2 within a second. The
// key's rate limit is shared exactly: 20 verifications spread over all admit 10.
func testVerificationPropagation(t *testing.T, c *cluster, tenant string) {
	var v struct{ CreateApiKey struct{ Secret string } }
	c.mustQuery(t, c.servers[0], c.admin, `mutation($t: ID!) { createApiKey(input: {tenantID: $t, name: "verifier", scopes: ["keys:verify"]}) { secret } }`, map[string]any{"t": tenant}, &v)
	var ck struct {
		CreateApiKey struct {
			APIKey struct{ ID string } `json:"apiKey"`
			Secret string
		}
	}
	c.mustQuery(t, c.servers[0], c.admin, `mutation($t: ID!) { createApiKey(input: {tenantID: $t, name: "customer", scopes: [], kind: CONSUMER, ownerID: "cust", rateLimit: 10, rateLimitWindowSeconds: 3600}) { apiKey { id } secret } }`, map[string]any{"t": tenant}, &ck)
	verifier, consumer, id := v.CreateApiKey.Secret, ck.CreateApiKey.Secret, ck.CreateApiKey.APIKey.ID
	code := func(s *server, cost int) string {
		t.Helper()
		var out struct{ VerifyApiKey struct{ Code string } }
		c.mustQuery(t, s, verifier, `mutation($k: String!, $c: Int) { verifyApiKey(input: {key: $k, cost: $c}) { code } }`, map[string]any{"k": consumer, "c": cost}, &out)
		return out.VerifyApiKey.Code
	}
	for _, s := range c.servers {
		if got := code(s, 0); got != "VALID" {
			t.Fatalf("%s: %s", s.name, got)
		}
	}
	// Shared limit: 20 verifications of cost 1, alternating, admit exactly 10.
	admitted := 0
	for i := 0; i < 20; i++ {
		if code(c.servers[i%len(c.servers)], 1) == "VALID" {
			admitted++
		}
	}
	if admitted != 10 {
		t.Fatalf("%d of 20 verifications admitted across %d processes, want 10", admitted, len(c.servers))
	}
	for _, step := range []struct {
		mutation, want string
	}{
		{`mutation($id: ID!) { updateApiKey(id: $id, input: {enabled: false}) { id } }`, "DISABLED"},
		{`mutation($id: ID!) { updateApiKey(id: $id, input: {enabled: true}) { id } }`, "RATE_LIMITED"}, // enabled again; its limit is spent
		{`mutation($id: ID!) { revokeApiKey(id: $id) { id } }`, "REVOKED"},
	} {
		c.mustQuery(t, c.servers[0], c.admin, step.mutation, map[string]any{"id": id}, nil)
		changed := time.Now()
		if got := code(c.servers[0], 0); got != step.want {
			t.Fatalf("same process after %q: %s, want %s", step.mutation, got, step.want)
		}
		for _, other := range c.servers[1:] {
			for {
				got := code(other, 0)
				if got == step.want {
					t.Logf("%s answered %s %v after the change", other.name, got, time.Since(changed).Round(time.Millisecond))
					break
				}
				if time.Since(changed) > time.Second {
					t.Fatalf("%s still answers %s %v after %q", other.name, got, time.Since(changed).Round(time.Millisecond), step.mutation)
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
	}
}

// testGracefulShutdown sends SIGTERM to every process, which must exit 0, and then
// counts the stored usage rows: one per operation answered.
func testGracefulShutdown(t *testing.T, c *cluster) {
	start := time.Now()
	errs := make([]error, len(c.servers))
	var wg sync.WaitGroup
	for i, s := range c.servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = s.terminate()
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d processes exited 0 %v after SIGTERM", len(c.servers), time.Since(start).Round(time.Millisecond))

	dsn, err := postgresDSN(c.dbURL)
	if err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("postgres", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var stored int64
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM usage_logs`).Scan(&stored); err != nil {
		t.Fatal(err)
	}
	if answered := c.ops.Load(); stored != answered {
		t.Errorf("usage_logs holds %d rows; the processes answered %d authenticated operations (HTTP 200 or 429, and subscriptions started)", stored, answered)
	} else {
		t.Logf("usage_logs holds %d rows, one per operation answered", stored)
	}
}
