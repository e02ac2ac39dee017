package browser_test

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/latchkey/latchkey/internal/app"
	"github.com/latchkey/latchkey/internal/app/apptest"
)

// setEditor replaces the text of a GraphiQL editor (CodeMirror 5): "query" or the
// visible tool editor ("headers").
func setEditor(b *browser, which, text string) {
	b.t.Helper()
	sel := `document.querySelector('.graphiql-query-editor .CodeMirror')`
	if which == "headers" {
		sel = `[...document.querySelectorAll('.graphiql-editor-tool .graphiql-editor')].find(e => !e.classList.contains('hidden')).querySelector('.CodeMirror')`
	}
	eval[chromedp.Void](b, sel+`.CodeMirror.setValue(`+js(text)+`)`)
}

// runQuery runs the query editor's operation and waits until the result pane
// contains want.
func runQuery(b *browser, want string, d time.Duration) string {
	b.t.Helper()
	// GraphiQL parses the editors' text a moment after a change (debounced); a run
	// before that would use the previous document.
	time.Sleep(700 * time.Millisecond)
	b.do("run", chromedp.Click(chromedp.CSS(`.graphiql-execute-button`)))
	result := `(document.querySelector('.result-window .CodeMirror')?.CodeMirror.getValue() || '')`
	b.waitJS("the result "+want, result+`.includes(`+js(want)+`)`, d)
	return eval[string](b, result)
}

// The playground works offline: it loads the schema from the server (introspection,
// no key), runs { viewer { isAdmin } } with the key pasted in the Headers tab, keeps
// that key in session storage only, and a refused key ends a subscription at once,
// with the reason and without reconnecting.
func TestPlayground(t *testing.T) {
	e := apptest.New(t, "sqlite", app.Options{}, nil)
	base := e.Server.URL
	b := newBrowser(t, 1280, 900)
	b.do("open the playground", chromedp.Navigate(base+"/"), chromedp.WaitVisible(chromedp.CSS(`.graphiql-query-editor .CodeMirror`)))

	b.do("open the docs", chromedp.Click(chromedp.CSS(`button[aria-label="Show Documentation Explorer"]`)))
	b.waitJS("the schema in the docs", `(document.querySelector('.graphiql-doc-explorer')?.textContent || '').includes('Query')`, 10*time.Second)

	setEditor(b, "headers", `{"X-API-Key": "`+e.AdminToken+`"}`)
	setEditor(b, "query", `{ viewer { isAdmin } }`)
	runQuery(b, `"isAdmin": true`, 10*time.Second)
	if s := os.Getenv("CONSOLE_SCREENSHOTS"); s != "" {
		b.screenshot(s, "playground-1280")
	}

	// GraphiQL writes the tab state a moment after a change.
	b.waitJS("the key in sessionStorage", `Object.keys(sessionStorage).some(k => sessionStorage.getItem(k).includes(`+js(e.AdminToken)+`))`, 5*time.Second)
	inSession := true
	inLocal := eval[bool](b, `Object.keys(localStorage).some(k => localStorage.getItem(k).includes(`+js(e.AdminToken)+`))`)
	if !inSession || inLocal {
		t.Fatalf("the key is in sessionStorage: %v, in localStorage: %v; want only sessionStorage", inSession, inLocal)
	}

	// A revoked key: the server closes the WebSocket with 4403; the playground shows
	// it at once, as a GraphQL error, and opens no second connection.
	tid := e.Tenant("playground")
	id, key := e.Key(e.AdminToken, tid, "usage:read")
	e.MustDo(e.AdminToken, `mutation($id: ID!) { revokeApiKey(id: $id) { id } }`, map[string]any{"id": id}, &struct{}{})
	setEditor(b, "headers", `{"X-API-Key": "`+key+`"}`)
	setEditor(b, "query", `subscription { usageEvents { id } }`)
	sockets := b.websocketCount()
	start := time.Now()
	res := runQuery(b, "4403", 5*time.Second)
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("the refusal took %v to show", took)
	}
	if strings.Contains(res, "stack") || !strings.Contains(res, "Not retrying") || !strings.Contains(res, "UNAUTHENTICATED") {
		t.Fatalf("result pane: %s", res)
	}
	if s := os.Getenv("CONSOLE_SCREENSHOTS"); s != "" {
		b.screenshot(s, "playground-refused-1280")
	}
	time.Sleep(3 * time.Second) // graphql-ws's first retry comes within ~3 s
	if n := b.websocketCount() - sockets; n != 1 {
		t.Fatalf("%d WebSocket connections for one refused subscription, want 1", n)
	}
	if f := b.foreign(base); len(f) > 0 {
		t.Fatalf("the playground loaded from outside the server: %v", f)
	}
}
