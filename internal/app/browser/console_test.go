package browser_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/latchkey/latchkey/internal/app"
	"github.com/latchkey/latchkey/internal/app/apptest"
	"github.com/latchkey/latchkey/internal/platform/config"
)

// consoleEnv is a server with a tenant, a management key holding every scope (key)
// and a webhook endpoint on a local receiver.
type consoleEnv struct {
	*apptest.Env
	tenantID, keyID, key string
}

func newConsoleEnv(t *testing.T) *consoleEnv {
	t.Helper()
	e := apptest.New(t, "sqlite", app.Options{}, func(c *config.Config) {
		c.WebhookAllowPrivate, c.WebhookAllowHTTP = true, true
	})
	c := &consoleEnv{Env: e, tenantID: e.Tenant("acme")}
	c.keyID, c.key = e.Key(e.AdminToken, c.tenantID, append(apptest.AllScopes, "keys:verify")...)
	return c
}

// call makes n authenticated calls with key (each one usage event).
func (c *consoleEnv) call(t *testing.T, key string, n int) {
	t.Helper()
	for range n {
		if r := c.Do(key, `query Dashboard { viewer { isAdmin } }`, nil); r.Status != http.StatusOK {
			t.Fatalf("call: HTTP %d %s", r.Status, r.Raw)
		}
	}
}

// signIn opens the console and signs in with key.
func signIn(b *browser, base, key string) {
	b.t.Helper()
	b.do("open the console", chromedp.Navigate(base+"/console"), chromedp.WaitVisible(chromedp.ID("key")))
	b.do("paste the key", chromedp.SendKeys(chromedp.ID("key"), key), chromedp.Click(chromedp.CSS(`#signin-form button[type=submit]`)))
	b.waitJS("the console after sign-in", `!document.getElementById('nav').hidden`, 10*time.Second)
}

// The console, driven as a person would: sign in with a pasted key, see the
// requests just made in the usage chart and the live panel, create and revoke a key,
// read webhook deliveries and the request log; a refused key stops the live panel
// without retries. Nothing loads from outside the server.
func TestConsole(t *testing.T) {
	c := newConsoleEnv(t)
	base := c.Server.URL
	shots := os.Getenv("CONSOLE_SCREENSHOTS")

	// A webhook endpoint with one delivered test event.
	hooked := make(chan struct{}, 10)
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hooked <- struct{}{}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(receiver.Close)
	var wh struct {
		CreateWebhook struct{ Webhook struct{ ID string } }
	}
	c.MustDo(c.key, `mutation($u: String!) { createWebhook(input: {url: $u, events: ["*"], description: "orders service"}) { webhook { id } } }`,
		map[string]any{"u": receiver.URL + "/hooks"}, &wh)
	c.MustDo(c.key, `mutation($id: ID!) { sendTestWebhook(id: $id) { id } }`, map[string]any{"id": wh.CreateWebhook.Webhook.ID}, &struct{}{})
	select {
	case <-hooked:
	case <-time.After(10 * time.Second):
		t.Fatal("the test webhook was not delivered")
	}

	c.call(t, c.key, 7)
	_, weak := c.Key(c.key, "", "usage:read")
	if r := c.Do(weak, `{ webhooks { totalCount } }`, nil); r.Code() != "FORBIDDEN" {
		t.Fatalf("want FORBIDDEN: %s", r.Raw)
	}
	if err := c.App.Recorder.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}

	b := newBrowser(t, 1280, 900)
	// Keyboard only: the key field has the focus, Enter signs in.
	b.do("open the console", chromedp.Navigate(base+"/console"), chromedp.WaitVisible(chromedp.ID("key")))
	b.waitJS("the focus in the key field", `document.activeElement && document.activeElement.id === 'key'`, 5*time.Second)
	b.do("type the key and Enter", chromedp.KeyEvent(c.key), chromedp.KeyEvent(kb.Enter))
	b.waitJS("the console after sign-in", `!document.getElementById('nav').hidden`, 10*time.Second)
	if got := eval[string](b, `sessionStorage.getItem('latchkey.console.key') || ''`); got != c.key {
		t.Fatal("the key is not in sessionStorage")
	}
	if got := eval[string](b, `localStorage.getItem('latchkey.console.key') || ''`); got != "" {
		t.Fatal("the key went to localStorage unasked")
	}

	t.Run("usage chart", func(t *testing.T) {
		b.t = t
		b.waitJS("the usage tiles", `!!document.querySelector('.tile-requests .tile-value')`, 10*time.Second)
		n, _ := strconv.Atoi(strings.ReplaceAll(b.text(".tile-requests .tile-value"), ",", ""))
		if n < 7 {
			t.Fatalf("requests tile shows %d, want at least the 7 calls made", n)
		}
		label := eval[string](b, `document.querySelector('svg.chart').getAttribute('aria-label')`)
		points := eval[int](b, `Math.max(...[...document.querySelectorAll('svg.chart')[0].querySelectorAll('circle.dot.s-requests title')].map(t => +t.textContent.match(/Requests: ([\d,]+)/)[1].replace(/,/g, '')))`)
		if points < 7 || !strings.Contains(label, "Requests") {
			t.Fatalf("chart: label %q, highest point %d", label, points)
		}
		if !strings.Contains(b.text(".breakdowns"), "query Dashboard") {
			t.Fatalf("the breakdown by operation misses the calls: %s", b.text(".breakdowns"))
		}
		if shots != "" {
			b.screenshot(shots, "usage-1280")
		}
	})

	t.Run("live event within a second", func(t *testing.T) {
		b.t = t
		b.do("open the live panel", chromedp.Click(chromedp.CSS(`#nav a[href="#live"]`)))
		b.waitJS("the live connection", `document.querySelector('.live-status')?.dataset.state === 'live'`, 10*time.Second)
		// The subscriptions are acknowledged once the server has started them: wait
		// for the first stats message, then make one call.
		b.waitJS("the first stats", `document.querySelectorAll('svg.chart polyline, svg.chart circle').length > 0 || document.querySelector('.tile-value') !== null`, 5*time.Second)
		time.Sleep(300 * time.Millisecond)
		before := eval[int](b, `document.querySelectorAll('.events li').length`)
		start := time.Now()
		c.call(t, c.key, 1)
		b.waitJS("the call in the live panel", `document.querySelectorAll('.events li').length > `+strconv.Itoa(before)+
			` && document.querySelector('.events li').textContent.includes('Dashboard')`, 3*time.Second)
		if took := time.Since(start); took > time.Second {
			t.Fatalf("the live event arrived after %v, want within a second", took)
		}
		// usageStats counts it in its next aggregate (one a second).
		b.waitJS("the call in the stats", `document.querySelectorAll('.tile-value')[1].textContent !== '0' && !!document.querySelector('svg.chart polyline.s-requests, svg.chart circle.series.s-requests')`, 4*time.Second)
		if shots != "" {
			b.screenshot(shots, "live-1280")
		}
	})

	t.Run("create and revoke a key", func(t *testing.T) {
		b.t = t
		b.do("open keys", chromedp.Click(chromedp.CSS(`#nav a[href="#keys"]`)), chromedp.WaitVisible(chromedp.CSS(`table.keys`)))
		b.do("open the create form", chromedp.Click(chromedp.CSS(`.create-wrap > summary`)), chromedp.WaitVisible(chromedp.ID("new-key-name")))
		if shots != "" {
			b.screenshot(shots, "keys-1280")
		}
		b.do("create a key", chromedp.SendKeys(chromedp.ID("new-key-name"), "browser-made"), chromedp.Click(chromedp.CSS(`#create-key button[type=submit]`)),
			chromedp.WaitVisible(chromedp.CSS(`dialog input.secret`)))
		secret := eval[string](b, `document.querySelector('dialog input.secret').value`)
		if !strings.HasPrefix(secret, "lk_live_") {
			t.Fatalf("secret shown: %q", secret)
		}
		if shots != "" {
			b.screenshot(shots, "secret-1280")
		}
		if r := c.Do(secret, `{ viewer { apiKey { name } } }`, nil); r.Status != http.StatusOK || !strings.Contains(r.Raw, "browser-made") {
			t.Fatalf("the new key does not work: %s", r.Raw)
		}
		b.do("close the secret", chromedp.Click(chromedp.CSS(`dialog .actions button:last-child`)))
		b.waitJS("the new key in the list", `[...document.querySelectorAll('table.keys .key-name')].some(n => n.textContent === 'browser-made')`, 5*time.Second)
		// Escape cancels the confirmation and nothing happens.
		b.do("start revoking", chromedp.Click(chromedp.CSS(`button[aria-label="Revoke browser-made"]`)), chromedp.WaitVisible(chromedp.CSS(`dialog`)))
		b.do("cancel with Escape", chromedp.KeyEvent(kb.Escape))
		b.waitJS("the dialog closed", `!document.querySelector('dialog')`, 5*time.Second)
		if r := c.Do(secret, `{ viewer { isAdmin } }`, nil); r.Status != http.StatusOK {
			t.Fatalf("cancelled revocation revoked the key: HTTP %d", r.Status)
		}
		b.do("revoke it", chromedp.Click(chromedp.CSS(`button[aria-label="Revoke browser-made"]`)), chromedp.WaitVisible(chromedp.CSS(`dialog`)))
		if msg := b.text("dialog p"); !strings.Contains(msg, "browser-made") {
			t.Fatalf("the confirmation does not name the key: %q", msg)
		}
		b.do("confirm", chromedp.Click(chromedp.CSS(`dialog .actions button.danger`)))
		b.waitJS("the key revoked in the list", `[...document.querySelectorAll('table.keys tr')].some(r => r.textContent.includes('browser-made') && r.textContent.includes('REVOKED'))`, 5*time.Second)
		if r := c.Do(secret, `{ viewer { isAdmin } }`, nil); r.Status != http.StatusUnauthorized {
			t.Fatalf("the revoked key still works: HTTP %d", r.Status)
		}
	})

	t.Run("webhook deliveries", func(t *testing.T) {
		b.t = t
		b.do("open webhooks", chromedp.Click(chromedp.CSS(`#nav a[href="#webhooks"]`)))
		b.waitJS("the delivery", `[...document.querySelectorAll('.delivery')].some(d => d.textContent.includes('webhook.test') && d.textContent.includes('DELIVERED'))`, 10*time.Second)
		b.do("open the attempt log", chromedp.Click(chromedp.CSS(`.delivery details summary`)))
		if log := b.text(".delivery details table"); !strings.Contains(log, "204") {
			t.Fatalf("attempt log: %q", log)
		}
		b.do("redeliver", chromedp.Click(chromedp.CSS(`.delivery-head button`)))
		select {
		case <-hooked:
		case <-time.After(10 * time.Second):
			t.Fatal("redelivery did not arrive")
		}
		if shots != "" {
			b.screenshot(shots, "webhooks-1280")
		}
	})

	t.Run("request log", func(t *testing.T) {
		b.t = t
		b.do("open the request log", chromedp.Click(chromedp.CSS(`#nav a[href="#logs"]`)), chromedp.WaitVisible(chromedp.CSS(`table.log`)))
		b.waitJS("rows", `document.querySelectorAll('table.log tbody tr[data-outcome]').length >= 8`, 5*time.Second)
		b.do("filter by outcome", chromedp.SetValue(chromedp.ID("log-outcome"), "FORBIDDEN"), chromedp.Click(chromedp.CSS(`.filters button[type=submit]`)))
		b.waitJS("only the forbidden call", `(() => { const r = [...document.querySelectorAll('table.log tbody tr')]; return r.length === 1 && r[0].dataset.outcome === 'FORBIDDEN'; })()`, 5*time.Second)
		if shots != "" {
			b.screenshot(shots, "logs-1280")
		}
	})

	t.Run("refused key stops the live panel", func(t *testing.T) {
		b.t = t
		_, doomedKeyID := "", ""
		var out struct {
			CreateApiKey struct {
				APIKey struct{ ID string } `json:"apiKey"`
				Secret string
			}
		}
		c.MustDo(c.key, `mutation { createApiKey(input: {name: "doomed", scopes: ["usage:read"]}) { apiKey { id } secret } }`, nil, &out)
		doomedKeyID = out.CreateApiKey.APIKey.ID
		b.do("sign out", chromedp.Click(chromedp.CSS(`.who button`)))
		signIn(b, base, out.CreateApiKey.Secret)
		b.do("open the live panel", chromedp.Click(chromedp.CSS(`#nav a[href="#live"]`)))
		b.waitJS("the live connection", `document.querySelector('.live-status')?.dataset.state === 'live'`, 10*time.Second)
		sockets := b.websocketCount()
		c.MustDo(c.key, `mutation($id: ID!) { revokeApiKey(id: $id) { id } }`, map[string]any{"id": doomedKeyID}, &struct{}{})
		b.waitJS("the stream ended as refused", `document.querySelector('.live-status')?.dataset.state === 'refused'`, 5*time.Second)
		// Connecting again with the revoked key: the server closes with 4403 and the
		// panel says so, once.
		b.do("connect again", chromedp.Click(chromedp.CSS(`.controls button`)))
		b.waitJS("the 4403 refusal", `document.querySelector('.live-status')?.dataset.state === 'refused' && document.querySelector('.live-status').textContent.includes('4403')`, 5*time.Second)
		if shots != "" {
			b.screenshot(shots, "refused-1280")
		}
		time.Sleep(3 * time.Second) // graphql-ws would have retried by now
		if n := b.websocketCount() - sockets; n != 1 {
			t.Fatalf("%d WebSocket connections after the refusal, want exactly the one the user asked for", n)
		}
		if !strings.Contains(b.text(".live-status"), "Not reconnecting") {
			t.Fatalf("status: %q", b.text(".live-status"))
		}
	})

	if f := b.foreign(base); len(f) > 0 {
		t.Fatalf("the console loaded from outside the server: %v", f)
	}
	if shots != "" {
		b.t = t
		narrowScreenshots(b, base, c.key, shots)
	}
}

// narrowScreenshots saves every view at 390 pixels wide (a phone), and the sign-in
// page.
func narrowScreenshots(b *browser, base, key, dir string) {
	b.do("sign out", chromedp.Click(chromedp.CSS(`.who button`)))
	b.do("narrow", chromedp.EmulateViewport(390, 844))
	b.screenshot(dir, "signin-390")
	signIn(b, base, key)
	for _, view := range []struct{ hash, ready string }{
		{"usage", `!!document.querySelector('.tile-requests')`},
		{"live", `document.querySelector('.live-status')?.dataset.state === 'live'`},
		{"keys", `!!document.querySelector('table.keys')`},
		{"webhooks", `!!document.querySelector('.delivery')`},
		{"logs", `!!document.querySelector('table.log tbody tr[data-outcome]')`},
	} {
		b.do("open "+view.hash, chromedp.Click(chromedp.CSS(`#nav a[href="#`+view.hash+`"]`)))
		b.waitJS(view.hash, view.ready, 10*time.Second)
		time.Sleep(200 * time.Millisecond)
		b.screenshot(dir, view.hash+"-390")
		b.screenshotViewport(dir, view.hash+"-390-screen")
	}
}
