package main

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// webhookResult is what the webhook phase measured.
type webhookResult struct {
	Sent          int // sendTestWebhook mutations answered without error
	SendErrors    int
	Received      int // distinct webhook-ids of the burst received
	Duplicates    int // receipts of an id already received (at-least-once redelivery)
	Unmatched     int // receipts of ids no mutation returned
	BadSignatures int
	Elapsed       time.Duration // first send of the burst to its last first receipt
	SendTook      time.Duration // first send to last mutation response
	Latency       summary       // burst: mutation response → receipt, per delivery
	Early         int           // deliveries received before their mutation's response
	Probe         summary       // one at a time: mutation response → receipt
	Timeline      string        // burst receipts per 500 ms since its first send
	Problems      []string
}

// PerSecond is distinct deliveries per second, from the first send to the last receipt.
func (r webhookResult) PerSecond() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Received) / r.Elapsed.Seconds()
}

// receiver is a local webhook endpoint: it answers 200 and records each delivery's
// arrival time by webhook-id, checking the Standard Webhooks signature.
type receiver struct {
	srv *httptest.Server
	key []byte // the signing secret's key bytes

	mu       sync.Mutex
	arrived  map[string]time.Time // webhook-id → first receipt
	last     time.Time            // the last first receipt of an id
	dups     int
	badSig   int
	firstBad string
	count    atomic.Int64 // receipts of distinct ids
}

func newReceiver() *receiver {
	r := &receiver{arrived: map[string]time.Time{}}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve)) // listens on 127.0.0.1
	return r
}

// setSecret sets the whsec_ secret the signatures are checked with.
func (r *receiver) setSecret(secret string) error {
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil {
		return fmt.Errorf("webhook secret: %w", err)
	}
	r.mu.Lock()
	r.key = key
	r.mu.Unlock()
	return nil
}

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	now := time.Now()
	body, err := io.ReadAll(req.Body)
	if err != nil {
		http.Error(w, "read body", http.StatusBadRequest)
		return
	}
	id := req.Header.Get("webhook-id")
	r.mu.Lock()
	ok := verifySignature(r.key, id, req.Header.Get("webhook-timestamp"), body, req.Header.Get("webhook-signature"))
	if !ok {
		if r.badSig++; r.firstBad == "" {
			r.firstBad = fmt.Sprintf("id %q timestamp %q signature %q", id, req.Header.Get("webhook-timestamp"), req.Header.Get("webhook-signature"))
		}
	}
	if _, seen := r.arrived[id]; seen {
		r.dups++
	} else {
		r.arrived[id] = now
		r.count.Add(1)
	}
	r.mu.Unlock()
	w.WriteHeader(http.StatusOK)
}

// verifySignature checks a Standard Webhooks signature header (space-separated
// "v1,<base64>" entries) against HMAC-SHA256(key, id.timestamp.body).
func verifySignature(key []byte, id, timestamp string, body []byte, header string) bool {
	if len(key) == 0 || id == "" || timestamp == "" {
		return false
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id + "." + timestamp + "."))
	mac.Write(body)
	want := mac.Sum(nil)
	for _, sig := range strings.Fields(header) {
		v, b64, ok := strings.Cut(sig, ",")
		if !ok || v != "v1" {
			continue
		}
		got, err := base64.StdEncoding.DecodeString(b64)
		if err == nil && hmac.Equal(got, want) {
			return true
		}
	}
	return false
}

// webhookProbes is the number of deliveries measured one at a time, before the burst,
// for the latency of an idle dispatcher.
const webhookProbes = 20

// sendTestMutation queues a webhook.test delivery and returns its webhook-id.
const sendTestMutation = `mutation($id: ID!) { sendTestWebhook(id: $id) { id eventID } }`

// sendTest runs sendTestMutation and returns the event id and when the answer was read.
func sendTest(ctx context.Context, c *client, key string, vars map[string]any) (string, time.Time, error) {
	var out struct {
		SendTestWebhook struct {
			ID      string `json:"id"`
			EventID string `json:"eventID"`
		} `json:"sendTestWebhook"`
	}
	err := c.call(ctx, key, true, sendTestMutation, vars, &out)
	now := time.Now()
	if err == nil && out.SendTestWebhook.EventID == "" {
		err = fmt.Errorf("no eventID in the response")
	}
	return out.SendTestWebhook.EventID, now, err
}

// runWebhooks creates a webhook to a local receiver with key (webhooks:write), sends
// webhookProbes test events one at a time (each waiting for its delivery), then fires
// n sendTestWebhook mutations with the given concurrency, mutation i to instance i
// mod len(clients), and waits (at most wait) for their deliveries.
func runWebhooks(ctx context.Context, clients []*client, key string, n, workers int, wait time.Duration) (webhookResult, error) {
	c := clients[0]
	var res webhookResult
	problem := func(format string, args ...any) {
		if len(res.Problems) < 10 {
			res.Problems = append(res.Problems, fmt.Sprintf(format, args...))
		}
	}
	rcv := newReceiver()
	defer rcv.srv.Close()
	var created struct {
		CreateWebhook struct {
			Webhook struct{ ID string } `json:"webhook"`
			Secret  string              `json:"secret"`
		} `json:"createWebhook"`
	}
	if err := c.call(ctx, key, true, `mutation($url: String!) { createWebhook(input: {url: $url, events: ["webhook.test"]}) { webhook { id } secret } }`,
		map[string]any{"url": rcv.srv.URL + "/hook"}, &created); err != nil {
		return res, fmt.Errorf("createWebhook: %w", err)
	}
	if err := rcv.setSecret(created.CreateWebhook.Secret); err != nil {
		return res, err
	}
	vars := map[string]any{"id": created.CreateWebhook.Webhook.ID}

	// One at a time: the latency of an idle dispatcher.
	probes := map[string]bool{}
	var probeLat []time.Duration
	for i := range webhookProbes {
		id, answered, err := sendTest(ctx, clients[i%len(clients)], key, vars)
		if err != nil {
			return res, fmt.Errorf("probe: %w", err)
		}
		probes[id] = true
		if at, ok := rcv.waitFor(ctx, id, 5*time.Second); ok {
			probeLat = append(probeLat, max(at.Sub(answered), 0))
		} else {
			problem("probe delivery %s not received within 5s", id)
		}
	}
	res.Probe = summarize(probeLat)

	// The burst.
	type sent struct {
		eventID string
		answer  time.Time
	}
	sends := make([]sent, n)
	var sendErrs atomic.Int64
	var firstErr atomic.Value
	next := make(chan int)
	var wg sync.WaitGroup
	start := time.Now()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				id, answered, err := sendTest(ctx, clients[i%len(clients)], key, vars)
				if err != nil {
					sendErrs.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				sends[i] = sent{eventID: id, answer: answered}
			}
		}()
	}
	for i := range n {
		if ctx.Err() != nil {
			break
		}
		next <- i
	}
	close(next)
	wg.Wait()
	res.SendTook = time.Since(start)
	res.SendErrors = int(sendErrs.Load())
	if e, ok := firstErr.Load().(string); ok {
		problem("%d mutations failed, first: %.300s", res.SendErrors, e)
	}
	want := map[string]time.Time{}
	for _, s := range sends {
		if s.eventID != "" {
			want[s.eventID] = s.answer
		}
	}
	res.Sent = len(want)
	logf("webhooks: %d sendTestWebhook answered in %s; waiting for deliveries", res.Sent, res.SendTook.Round(time.Millisecond))

	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if int(rcv.count.Load()) >= res.Sent+len(probes) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	// A moment for duplicates that would follow the last delivery.
	time.Sleep(200 * time.Millisecond)

	rcv.mu.Lock()
	defer rcv.mu.Unlock()
	res.Duplicates = rcv.dups
	res.BadSignatures = rcv.badSig
	if rcv.firstBad != "" {
		problem("bad signature: %s", rcv.firstBad)
	}
	var lat []time.Duration
	var last time.Time
	var buckets []int
	for id, at := range rcv.arrived {
		if probes[id] {
			continue
		}
		answered, ok := want[id]
		if !ok {
			res.Unmatched++
			continue
		}
		res.Received++
		if b := int(at.Sub(start) / (500 * time.Millisecond)); b >= 0 {
			for len(buckets) <= b {
				buckets = append(buckets, 0)
			}
			buckets[b]++
		}
		if at.After(last) {
			last = at
		}
		d := at.Sub(answered)
		if d < 0 {
			// Delivered (after commit) before the client had read the response.
			res.Early++
			d = 0
		}
		lat = append(lat, d)
	}
	if !last.IsZero() {
		res.Elapsed = last.Sub(start)
	}
	if missing := res.Sent - res.Received; missing > 0 {
		problem("%d deliveries not received within %s", missing, wait)
	}
	if res.Unmatched > 0 {
		problem("%d deliveries with a webhook-id no mutation returned", res.Unmatched)
	}
	res.Latency = summarize(lat)
	res.Timeline = fmt.Sprint(buckets)
	return res, nil
}

// waitFor waits up to timeout for the delivery of id and returns its arrival time.
func (r *receiver) waitFor(ctx context.Context, id string, timeout time.Duration) (time.Time, bool) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		r.mu.Lock()
		at, ok := r.arrived[id]
		r.mu.Unlock()
		if ok {
			return at, true
		}
		time.Sleep(time.Millisecond)
	}
	return time.Time{}, false
}
