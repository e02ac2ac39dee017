package app_test

import (
	"bytes"
	"context"
	"regexp"
	"testing"

	"github.com/latchkey/latchkey/ent/auditlog"
	"github.com/latchkey/latchkey/internal/app"
	"github.com/latchkey/latchkey/internal/app/apptest"
	"github.com/latchkey/latchkey/internal/platform/config"
)

var adminSecret = regexp.MustCompile(`lk_admin_[A-Za-z0-9]+`)

// `latchkey admin-key` mints a working admin key in the configured database, even
// when admin keys exist, prints it once and audits it.
func TestMintAdminKey(t *testing.T) {
	forEachDialect(t, func(t *testing.T, e *apptest.Env) {
		cfg := config.Config{DatabaseURL: e.App.Config.DatabaseURL}
		var out bytes.Buffer
		if err := app.MintAdminKey(context.Background(), cfg, "ops recovery", &out); err != nil {
			t.Fatal(err)
		}
		secrets := adminSecret.FindAllString(out.String(), -1)
		if len(secrets) != 1 {
			t.Fatalf("want the secret printed once:\n%s", out.String())
		}
		var v viewerResp
		e.MustDo(secrets[0], viewerQ, nil, &v)
		if !v.Viewer.IsAdmin || v.Viewer.APIKey == nil {
			t.Fatalf("minted key: %+v", v.Viewer)
		}
		// A second one works too: recovery does not depend on what exists.
		out.Reset()
		if err := app.MintAdminKey(context.Background(), cfg, "", &out); err != nil {
			t.Fatal(err)
		}
		if second := adminSecret.FindString(out.String()); second == "" || second == secrets[0] {
			t.Fatalf("second mint: %q", out.String())
		}
		n := e.App.Store.Client.AuditLog.Query().Where(
			auditlog.Action("api_key.created"), auditlog.Actor(app.AdminKeyActor), auditlog.ObjectID(v.Viewer.APIKey.ID),
		).CountX(sysCtx())
		if n != 1 {
			t.Fatalf("audit rows for the minted key: %d", n)
		}
	})
}
