package app_test

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/latchkey/latchkey/ent"
	"github.com/latchkey/latchkey/ent/apikey"
	"github.com/latchkey/latchkey/internal/app"
	"github.com/latchkey/latchkey/internal/app/apptest"
	"github.com/latchkey/latchkey/internal/data/testdb"
	"github.com/latchkey/latchkey/internal/platform/config"
)

// dumpDatabase returns every value of every table as text.
func dumpDatabase(t *testing.T, db *sql.DB, dialect string) string {
	t.Helper()
	q := `SELECT name FROM sqlite_master WHERE type = 'table'`
	if dialect == "postgres" {
		q = `SELECT tablename FROM pg_tables WHERE schemaname = 'public'`
	}
	rows, err := db.Query(q)
	if err != nil {
		t.Fatal(err)
	}
	var tables []string
	for rows.Next() {
		var n string
		_ = rows.Scan(&n)
		tables = append(tables, n)
	}
	rows.Close()
	var out strings.Builder
	for _, table := range tables {
		rows, err := db.Query(`SELECT * FROM "` + table + `"`)
		if err != nil {
			t.Fatal(err)
		}
		cols, _ := rows.Columns()
		for rows.Next() {
			vals := make([]any, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := rows.Scan(ptrs...); err != nil {
				t.Fatal(err)
			}
			for _, v := range vals {
				if b, ok := v.([]byte); ok {
					v = string(b)
				}
				fmt.Fprintf(&out, "%v\t", v)
			}
			out.WriteString("\n")
		}
		rows.Close()
	}
	return out.String()
}

// The database never holds a key in plaintext, nor its secret part.
func TestNoPlaintextKeysStored(t *testing.T) {
	forEachDialect(t, func(t *testing.T, e *apptest.Env) {
		tid := e.Tenant("plain")
		var secrets []string
		for range 3 {
			_, s := e.Key(e.AdminToken, tid, "keys:read", "keys:write")
			secrets = append(secrets, s)
		}
		var rot struct{ RotateApiKey struct{ Secret string } }
		var v viewerResp
		e.MustDo(secrets[0], viewerQ, nil, &v)
		e.MustDo(secrets[0], `mutation($id: ID!) { rotateApiKey(id: $id, gracePeriodSeconds: 60) { secret } }`, map[string]any{"id": v.Viewer.APIKey.ID}, &rot)
		secrets = append(secrets, rot.RotateApiKey.Secret)
		if err := e.App.Verifier.FlushLastUsed(context.Background()); err != nil {
			t.Fatal(err)
		}
		dump := dumpDatabase(t, e.App.Store.DB, e.Dialect)
		if !strings.Contains(dump, "lk_live_") {
			t.Fatal("dump does not contain the display prefixes; the dump is broken")
		}
		for _, s := range secrets {
			secretPart := s[len("lk_live_"):]
			if strings.Contains(dump, s) || strings.Contains(dump, secretPart[6:]) {
				t.Fatalf("the database holds key %s in plaintext", s[:14])
			}
		}
	})
}

// Every mutation writes an audit entry: who (key prefix), what, which object; tenants
// see only their own.
func TestAuditLog(t *testing.T) {
	forEachDialect(t, func(t *testing.T, e *apptest.Env) {
		tid := e.Tenant("audited")
		keyID, key := e.Key(e.AdminToken, tid, apptest.AllScopes...)
		childID, _ := e.Key(key, "", "keys:read")
		e.MustDo(key, `mutation($id: ID!) { updateApiKey(id: $id, input: {name: "n2"}) { id } }`, map[string]any{"id": childID}, &struct{}{})
		e.MustDo(key, `mutation($id: ID!) { revokeApiKey(id: $id) { id } }`, map[string]any{"id": childID}, &struct{}{})
		var rot struct {
			RotateApiKey struct {
				APIKey struct{ ID string } `json:"apiKey"`
			}
		}
		e.MustDo(key, `mutation($id: ID!) { rotateApiKey(id: $id, gracePeriodSeconds: 60) { apiKey { id } } }`, map[string]any{"id": keyID}, &rot)
		e.MustDo(key, `mutation($id: ID!) { updateTenant(id: $id, input: {name: "Audited Inc"}) { id } }`, map[string]any{"id": tid}, &struct{}{})
		other := e.Tenant("other")
		e.Key(e.AdminToken, other)

		var logs struct {
			AuditLogs struct {
				TotalCount int
				Edges      []struct {
					Node struct {
						Actor, Action, ObjectType, ObjectID string
						TenantID                            *string
						CreatedAt                           time.Time
					}
				}
			}
		}
		e.MustDo(key, `{ auditLogs(first: 50) { totalCount edges { node { actor action objectType objectID tenantID createdAt } } } }`, nil, &logs)
		var got []string
		for _, ed := range logs.AuditLogs.Edges {
			n := ed.Node
			if n.TenantID == nil || *n.TenantID != tid {
				t.Fatalf("foreign audit entry: %+v", n)
			}
			got = append(got, n.Action+" "+n.ObjectID+" by "+n.Actor[:7])
		}
		// Newest first.
		want := []string{
			"tenant.updated " + tid + " by lk_live",
			"api_key.rotated " + rot.RotateApiKey.APIKey.ID + " by lk_live",
			"api_key.revoked " + childID + " by lk_live",
			"api_key.updated " + childID + " by lk_live",
			"api_key.created " + childID + " by lk_live",
			"api_key.created " + keyID + " by admin-t",
			"tenant.created " + tid + " by admin-t",
		}
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Fatalf("audit log:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
		// Admins see every tenant's entries.
		e.MustDo(e.AdminToken, `{ auditLogs(first: 50) { totalCount edges { node { actor action objectType objectID tenantID createdAt } } } }`, nil, &logs)
		if logs.AuditLogs.TotalCount != len(want)+2 {
			t.Fatalf("admin sees %d entries, want %d", logs.AuditLogs.TotalCount, len(want)+2)
		}
	})
}

// last_used_at is batched: requests do not write it, a flush does, and updated_at stays.
func TestLastUsedBatched(t *testing.T) {
	forEachDialect(t, func(t *testing.T, e *apptest.Env) {
		tid := e.Tenant("used")
		id, key := e.Key(e.AdminToken, tid, "keys:read")
		before := e.App.Store.Client.ApiKey.GetX(sysCtx(), id)
		for range 5 {
			e.MustDo(key, viewerQ, nil, &viewerResp{})
		}
		if k := e.App.Store.Client.ApiKey.GetX(sysCtx(), id); k.LastUsedAt != nil {
			t.Fatal("last_used_at written on the request path")
		}
		if err := e.App.Verifier.FlushLastUsed(context.Background()); err != nil {
			t.Fatal(err)
		}
		after := e.App.Store.Client.ApiKey.GetX(sysCtx(), id)
		if after.LastUsedAt == nil || time.Since(*after.LastUsedAt) > time.Minute {
			t.Fatalf("last_used_at = %v", after.LastUsedAt)
		}
		if !after.UpdatedAt.Equal(before.UpdatedAt) {
			t.Fatalf("updated_at changed by the flush: %v -> %v", before.UpdatedAt, after.UpdatedAt)
		}
		var out struct {
			APIKeys struct {
				Edges []struct {
					Node struct{ LastUsedAt *time.Time }
				}
			} `json:"apiKeys"`
		}
		e.MustDo(key, `{ apiKeys { edges { node { lastUsedAt } } } }`, nil, &out)
		if out.APIKeys.Edges[0].Node.LastUsedAt == nil {
			t.Fatal("lastUsedAt not exposed")
		}
	})
}

// Lists with edges load in a fixed number of queries, whatever the page size.
func TestNoNPlusOne(t *testing.T) {
	var queries atomic.Int64
	counting := app.Options{EntOptions: []ent.Option{ent.Debug(), ent.Log(func(...any) { queries.Add(1) })}}
	e := apptest.New(t, "postgres", counting, nil)
	for i := range 3 {
		tid := e.Tenant(fmt.Sprintf("n1-%d", i))
		for range 4 {
			e.Key(e.AdminToken, tid, "keys:read")
		}
	}
	queries.Store(0)
	var out struct {
		APIKeys struct {
			Edges []struct {
				Node struct{ Tenant struct{ Slug string } }
			}
		} `json:"apiKeys"`
	}
	e.MustDo(e.AdminToken, `{ apiKeys(first: 50) { edges { node { name tenant { slug } } } } }`, nil, &out)
	if len(out.APIKeys.Edges) != 12 {
		t.Fatalf("got %d keys", len(out.APIKeys.Edges))
	}
	t.Logf("queries: %d", queries.Load())
	if n := queries.Load(); n > 3 {
		t.Fatalf("listing 12 keys with their tenants took %d queries; want at most 3", n)
	}
}

// With no ADMIN_TOKEN the first start creates an admin key and prints it once, with
// the playground URL and an example call; the next start prints nothing.
func TestBootstrapAdmin(t *testing.T) {
	for _, d := range testdb.Dialects {
		t.Run(d, func(t *testing.T) {
			cfg := config.Config{DatabaseURL: testdb.URL(t, d), PublicURL: "http://localhost:8080"}
			var out bytes.Buffer
			a, err := app.New(context.Background(), cfg, app.Options{Out: &out})
			if err != nil {
				t.Fatal(err)
			}
			a.Shutdown(context.Background())
			msg := out.String()
			i := strings.Index(msg, "lk_admin_")
			if i < 0 || !strings.Contains(msg, "http://localhost:8080/") || !strings.Contains(msg, "curl") {
				t.Fatalf("bootstrap message: %q", msg)
			}
			key := msg[i : i+len("lk_admin_")+38]

			out.Reset()
			a, err = app.New(context.Background(), cfg, app.Options{Out: &out})
			if err != nil {
				t.Fatal(err)
			}
			defer a.Shutdown(context.Background())
			if out.Len() != 0 {
				t.Fatalf("second start printed %q", out.String())
			}
			v, err := a.Verifier.Verify(context.Background(), key)
			if err != nil || !v.Admin {
				t.Fatalf("admin key: %v %+v", err, v)
			}
		})
	}
}

// Instances starting together on a fresh PostgreSQL database create one admin key.
func TestBootstrapAdminConcurrentStarts(t *testing.T) {
	cfg := config.Config{DatabaseURL: testdb.URL(t, "postgres"), PublicURL: "http://localhost:8080"}
	var wg sync.WaitGroup
	var printed atomic.Int32
	apps := make([]*app.App, 3)
	for i := range apps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var out bytes.Buffer
			a, err := app.New(context.Background(), cfg, app.Options{Out: &out})
			if err != nil {
				t.Error(err)
				return
			}
			apps[i] = a
			if strings.Contains(out.String(), "lk_admin_") {
				printed.Add(1)
			}
		}()
	}
	wg.Wait()
	for _, a := range apps {
		if a != nil {
			defer a.Shutdown(context.Background())
		}
	}
	if printed.Load() != 1 {
		t.Fatalf("%d instances printed an admin key, want 1", printed.Load())
	}
	if n := apps[0].Store.Client.ApiKey.Query().Where(apikey.Admin(true)).CountX(sysCtx()); n != 1 {
		t.Fatalf("%d admin keys", n)
	}
}

// Effective limits of listed keys need no query per key.
func TestLimitsOfListedKeysNoNPlusOne(t *testing.T) {
	var queries atomic.Int64
	counting := app.Options{EntOptions: []ent.Option{ent.Debug(), ent.Log(func(...any) { queries.Add(1) })}}
	e := apptest.New(t, "sqlite", counting, nil)
	tid := e.Tenant("limits-n1")
	_, key := e.Key(e.AdminToken, tid, "keys:read")
	for range 8 {
		e.Key(e.AdminToken, tid, "keys:read")
	}
	e.MustDo(key, viewerQ, nil, &struct{}{}) // the key is cached
	queries.Store(0)
	var out struct {
		APIKeys struct {
			Edges []struct {
				Node struct{ EffectiveRateLimit int }
			}
		} `json:"apiKeys"`
	}
	e.MustDo(key, `{ apiKeys(first: 50) { edges { node { effectiveRateLimit effectiveRateLimitWindowSeconds status } } } }`, nil, &out)
	if len(out.APIKeys.Edges) != 9 || out.APIKeys.Edges[0].Node.EffectiveRateLimit != 1000 {
		t.Fatalf("keys = %+v", out.APIKeys.Edges)
	}
	if n := queries.Load(); n > 2 {
		t.Fatalf("listing 9 keys with their limits took %d queries; want at most 2", n)
	}
}
