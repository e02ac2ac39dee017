package app_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/latchkey/latchkey/internal/app"
	"github.com/latchkey/latchkey/internal/app/apptest"
	"github.com/latchkey/latchkey/internal/domain/keys"
	"github.com/latchkey/latchkey/internal/platform/config"
)

// consumerEnv is a tenant with a management key (mgmt, every scope but keys:verify),
// a verifying key (verifier: keys:verify only) and helpers to make consumer keys.
type consumerEnv struct {
	*apptest.Env
	tid, mgmt, verifier string
}

func newConsumerEnv(t *testing.T, e *apptest.Env, slug string) *consumerEnv {
	t.Helper()
	tid := e.Tenant(slug)
	_, mgmt := e.Key(e.AdminToken, tid, apptest.AllScopes...)
	_, verifier := e.Key(mgmt, "", "keys:verify")
	return &consumerEnv{Env: e, tid: tid, mgmt: mgmt, verifier: verifier}
}

type consumerKey struct {
	ID, Secret string
}

// consumer creates a consumer key with the extra input fields.
func (c *consumerEnv) consumer(t *testing.T, extra map[string]any) consumerKey {
	t.Helper()
	in := map[string]any{"name": "customer key", "scopes": []string{}, "kind": "CONSUMER"}
	for k, v := range extra {
		in[k] = v
	}
	var out struct {
		CreateApiKey struct {
			APIKey struct{ ID string } `json:"apiKey"`
			Secret string
		}
	}
	c.MustDo(c.mgmt, `mutation($in: CreateApiKeyInput!) { createApiKey(input: $in) { apiKey { id } secret } }`, map[string]any{"in": in}, &out)
	return consumerKey{ID: out.CreateApiKey.APIKey.ID, Secret: out.CreateApiKey.Secret}
}

type verifyResult struct {
	Valid       bool
	Code        string
	KeyID       *string `json:"keyID"`
	OwnerID     *string `json:"ownerID"`
	Name        *string
	Meta        map[string]any
	Permissions []string
	Environment *string
	ExpiresAt   *time.Time
	RateLimit   *struct {
		Limit, Remaining int
		ResetAt          time.Time
	}
	Quota             *struct{ Limit, Used, Remaining int }
	RetryAfterSeconds int
	LimitScope        *string
	Credits           *int
	OwnerMeta         map[string]any
}

const verifyMutation = `mutation($in: VerifyApiKeyInput!) { verifyApiKey(input: $in) {
	valid code keyID ownerID name meta permissions environment expiresAt
	rateLimit { limit remaining resetAt } quota { limit used remaining }
	retryAfterSeconds limitScope credits ownerMeta } }`

// verifyGQL verifies key through GraphQL as caller.
func (c *consumerEnv) verifyGQL(t *testing.T, caller string, in map[string]any) (verifyResult, *apptest.Response) {
	t.Helper()
	r := c.Do(caller, verifyMutation, map[string]any{"in": in})
	var out struct{ VerifyApiKey verifyResult }
	if len(r.Errors) == 0 {
		r.Decode(t, &out)
	}
	return out.VerifyApiKey, r
}

// verifyREST posts body to /v1/keys/verify as caller and returns the status, the
// decoded answer and the raw body.
func verifyREST(t *testing.T, e *apptest.Env, caller, contentType, body string) (int, map[string]any, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, e.Server.URL+"/v1/keys/verify", strings.NewReader(body))
	if caller != "" {
		req.Header.Set("Authorization", "Bearer "+caller)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := e.Server.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	_ = json.Unmarshal(raw, &out)
	return resp.StatusCode, out, string(raw)
}

func restBody(v map[string]any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// The consumer key lifecycle: create with owner, meta, permissions and environment
// under the tenant's prefix; filter; update; disable and enable; rotate with grace;
// revoke; each change audited and announced by webhook.
func TestConsumerKeyLifecycle(t *testing.T) {
	forEachDialect(t, func(t *testing.T, e *apptest.Env) {
		c := newConsumerEnv(t, e, "acme")
		var tn struct{ UpdateTenant struct{ KeyPrefix string } }
		e.MustDo(c.mgmt, `mutation($id: ID!) { updateTenant(id: $id, input: {keyPrefix: "acme"}) { keyPrefix } }`, map[string]any{"id": c.tid}, &tn)
		if tn.UpdateTenant.KeyPrefix != "acme" {
			t.Fatalf("keyPrefix = %q", tn.UpdateTenant.KeyPrefix)
		}
		live := c.consumer(t, map[string]any{"ownerID": "cust_1", "meta": map[string]any{"plan": "gold", "seats": 3}, "permissions": []string{"documents:read", "documents:write"}})
		test := c.consumer(t, map[string]any{"ownerID": "cust_2", "environment": "TEST"})
		if !strings.HasPrefix(live.Secret, "acme_live_") || !strings.HasPrefix(test.Secret, "acme_test_") {
			t.Fatalf("secrets %q %q", live.Secret, test.Secret)
		}
		if _, err := keys.Parse(live.Secret); err != nil {
			t.Fatalf("parse: %v", err)
		}
		var list struct {
			APIKeys struct {
				Edges []struct {
					Node struct {
						ID, Kind, Environment string
						OwnerID               *string `json:"ownerID"`
						Enabled               bool
					}
				}
			}
		}
		for _, tc := range []struct {
			where map[string]any
			want  []string
		}{
			{map[string]any{"kind": "CONSUMER"}, []string{live.ID, test.ID}},
			{map[string]any{"ownerID": "cust_1"}, []string{live.ID}},
			{map[string]any{"environment": "TEST"}, []string{test.ID}},
			{map[string]any{"kind": "CONSUMER", "enabled": true}, []string{live.ID, test.ID}},
		} {
			e.MustDo(c.mgmt, `query($w: ApiKeyWhereInput) { apiKeys(where: $w, orderBy: {field: CREATED_AT, direction: ASC}) { edges { node { id kind environment ownerID enabled } } } }`, map[string]any{"w": tc.where}, &list)
			var got []string
			for _, e := range list.APIKeys.Edges {
				got = append(got, e.Node.ID)
			}
			if strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Fatalf("where %v: %v, want %v", tc.where, got, tc.want)
			}
		}
		// Update owner, meta, permissions; disable, then enable again.
		var up struct {
			UpdateApiKey struct {
				OwnerID     *string `json:"ownerID"`
				Meta        map[string]any
				Permissions []string
				Enabled     bool
			}
		}
		e.MustDo(c.mgmt, `mutation($id: ID!) { updateApiKey(id: $id, input: {ownerID: "cust_9", meta: {plan: "silver"}, permissions: ["documents:read"], enabled: false}) { ownerID meta permissions enabled } }`, map[string]any{"id": live.ID}, &up)
		if *up.UpdateApiKey.OwnerID != "cust_9" || up.UpdateApiKey.Meta["plan"] != "silver" || len(up.UpdateApiKey.Permissions) != 1 || up.UpdateApiKey.Enabled {
			t.Fatalf("update: %+v", up.UpdateApiKey)
		}
		if v, _ := c.verifyGQL(t, c.verifier, map[string]any{"key": live.Secret}); v.Code != "DISABLED" {
			t.Fatalf("disabled key: %+v", v)
		}
		e.MustDo(c.mgmt, `mutation($id: ID!) { updateApiKey(id: $id, input: {enabled: true, meta: null}) { enabled } }`, map[string]any{"id": live.ID}, &struct{}{})
		v, _ := c.verifyGQL(t, c.verifier, map[string]any{"key": live.Secret})
		if v.Code != "VALID" || *v.OwnerID != "cust_9" || v.Meta != nil {
			t.Fatalf("re-enabled key: %+v", v)
		}
		// Rotate with grace: the successor keeps kind, owner, prefix and environment.
		var rot struct {
			RotateApiKey struct {
				Secret string
				APIKey struct {
					ID, Kind string
					OwnerID  *string `json:"ownerID"`
				} `json:"apiKey"`
			}
		}
		e.MustDo(c.mgmt, `mutation($id: ID!) { rotateApiKey(id: $id, gracePeriodSeconds: 3600) { secret apiKey { id kind ownerID } } }`, map[string]any{"id": test.ID}, &rot)
		if !strings.HasPrefix(rot.RotateApiKey.Secret, "acme_test_") || rot.RotateApiKey.APIKey.Kind != "CONSUMER" || *rot.RotateApiKey.APIKey.OwnerID != "cust_2" {
			t.Fatalf("rotation: %+v", rot.RotateApiKey)
		}
		for _, k := range []string{test.Secret, rot.RotateApiKey.Secret} {
			if v, _ := c.verifyGQL(t, c.verifier, map[string]any{"key": k}); v.Code != "VALID" {
				t.Fatalf("during the grace period: %+v", v)
			}
		}
		e.MustDo(c.mgmt, `mutation($id: ID!) { revokeApiKey(id: $id) { id } }`, map[string]any{"id": rot.RotateApiKey.APIKey.ID}, &struct{}{})
		if v, _ := c.verifyGQL(t, c.verifier, map[string]any{"key": rot.RotateApiKey.Secret}); v.Code != "REVOKED" {
			t.Fatalf("revoked: %+v", v)
		}
		// Audited.
		var audit struct {
			AuditLogs struct {
				Edges []struct {
					Node struct{ Action, ObjectID string }
				}
			}
		}
		e.MustDo(c.mgmt, `{ auditLogs(first: 50) { edges { node { action objectID } } } }`, nil, &audit)
		seen := map[string]bool{}
		for _, a := range audit.AuditLogs.Edges {
			seen[a.Node.Action+" "+a.Node.ObjectID] = true
		}
		for _, want := range []string{"api_key.created " + live.ID, "api_key.updated " + live.ID, "api_key.rotated " + rot.RotateApiKey.APIKey.ID, "api_key.revoked " + rot.RotateApiKey.APIKey.ID} {
			if !seen[want] {
				t.Fatalf("no audit entry %q", want)
			}
		}
	})
}

// Consumer keys open nothing of Latchkey's own API: /query and the WebSocket refuse
// them with reason "consumer key".
func TestConsumerKeyRefusedOnAPI(t *testing.T) {
	e := apptest.New(t, "sqlite", appOptions(), nil)
	c := newConsumerEnv(t, e, "refuse")
	k := c.consumer(t, nil)
	expectUnauthenticated(t, e.Do(k.Secret, viewerQ, nil), "consumer key")
	_, err := e.DialWS(apptest.TransportWS, map[string]any{"apiKey": k.Secret}, nil)
	if code, reason := closeCode(err); code != 4403 || reason != "consumer key" {
		t.Fatalf("WebSocket: %v (%d %q)", err, code, reason)
	}
	if status, _, raw := verifyREST(t, e, k.Secret, "application/json", `{"key":"x"}`); status != 401 {
		t.Fatalf("consumer key as the verifying caller: %d %s", status, raw)
	}
}

// Every verification code, in the pinned order, through GraphQL and REST alike.
func TestVerifyCodes(t *testing.T) {
	forEachDialect(t, func(t *testing.T, e *apptest.Env) {
		c := newConsumerEnv(t, e, "codes")
		other := newConsumerEnv(t, e, "other")
		past := time.Now().Add(2 * time.Second)
		valid := c.consumer(t, map[string]any{"ownerID": "cust", "permissions": []string{"a", "b"}})
		revoked := c.consumer(t, map[string]any{"enabled": false})
		expiring := c.consumer(t, map[string]any{"expiresAt": past, "enabled": false})
		disabled := c.consumer(t, map[string]any{"enabled": false})
		foreign := other.consumer(t, nil)
		e.MustDo(c.mgmt, `mutation($id: ID!) { revokeApiKey(id: $id) { id } }`, map[string]any{"id": revoked.ID}, &struct{}{})
		management, _ := keys.Generate(keys.KindLive)
		last := valid.Secret[len(valid.Secret)-1]
		bad := valid.Secret[:len(valid.Secret)-1] + map[bool]string{true: "y", false: "x"}[last == 'x']
		time.Sleep(time.Until(past) + 100*time.Millisecond)
		cases := []struct {
			name  string
			in    map[string]any
			code  string
			found bool
		}{
			{"valid", map[string]any{"key": valid.Secret}, "VALID", true},
			{"valid with permissions", map[string]any{"key": valid.Secret, "permissions": []string{"a", "b"}}, "VALID", true},
			{"missing a permission", map[string]any{"key": valid.Secret, "permissions": []string{"a", "c"}}, "INSUFFICIENT_PERMISSIONS", true},
			{"revoked (and disabled)", map[string]any{"key": revoked.Secret}, "REVOKED", true},
			{"expired (and disabled)", map[string]any{"key": expiring.Secret}, "EXPIRED", true},
			{"disabled", map[string]any{"key": disabled.Secret}, "DISABLED", true},
			{"another tenant's key", map[string]any{"key": foreign.Secret}, "NOT_FOUND", false},
			{"the caller's own management key", map[string]any{"key": c.mgmt}, "NOT_FOUND", false},
			{"a key that does not exist", map[string]any{"key": management}, "NOT_FOUND", false},
			{"a bad checksum", map[string]any{"key": bad}, "NOT_FOUND", false},
			{"not a key at all", map[string]any{"key": "hello"}, "NOT_FOUND", false},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				v, r := c.verifyGQL(t, c.verifier, tc.in)
				if v.Code != tc.code || v.Valid != (tc.code == "VALID") || (v.KeyID != nil) != tc.found {
					t.Fatalf("GraphQL: %+v %s", v, r.Raw)
				}
				if !tc.found && (v.Name != nil || v.OwnerID != nil || v.RateLimit != nil) {
					t.Fatalf("NOT_FOUND tells something: %s", r.Raw)
				}
				status, out, raw := verifyREST(t, e, c.verifier, "application/json", restBody(tc.in))
				if status != 200 || out["code"] != tc.code || out["valid"] != (tc.code == "VALID") {
					t.Fatalf("REST: %d %s", status, raw)
				}
			})
		}
		// A platform admin verifies any tenant's consumer key.
		if v, r := c.verifyGQL(t, e.AdminToken, map[string]any{"key": foreign.Secret}); v.Code != "VALID" {
			t.Fatalf("admin: %s", r.Raw)
		}
		// The tenant deactivated: TENANT_INACTIVE (after the checks above).
		e.MustDo(e.AdminToken, `mutation($id: ID!) { updateTenant(id: $id, input: {active: false}) { id } }`, map[string]any{"id": other.tid}, &struct{}{})
		if v, r := c.verifyGQL(t, e.AdminToken, map[string]any{"key": foreign.Secret}); v.Code != "TENANT_INACTIVE" {
			t.Fatalf("inactive tenant: %s", r.Raw)
		}
	})
}

// A verification charges its cost to the consumer key's rate limit and 1 to its
// quota; cost 0 checks without charging; the caller pays nothing; each verification of
// a found key is one usage event of type verify named by its tag, with the owner, and
// NOT_FOUND is not stored.
func TestVerifyAccounting(t *testing.T) {
	forEachDialect(t, func(t *testing.T, e *apptest.Env) {
		c := newConsumerEnv(t, e, "acct")
		k := c.consumer(t, map[string]any{"ownerID": "cust_7", "rateLimit": 10, "rateLimitWindowSeconds": 3600, "quota": 4, "quotaPeriod": "MONTH"})
		before := e.Do(c.verifier, viewerQ, nil).Header.Get("X-RateLimit-Remaining")
		step := func(cost int, want string, remaining, used int) {
			t.Helper()
			v, r := c.verifyGQL(t, c.verifier, map[string]any{"key": k.Secret, "cost": cost, "tag": "GET /documents"})
			if v.Code != want || v.RateLimit == nil || v.RateLimit.Remaining != remaining || (v.Quota != nil && v.Quota.Used != used) {
				t.Fatalf("cost %d: %s (want %s, remaining %d, used %d)", cost, r.Raw, want, remaining, used)
			}
			if r.Header.Get("X-RateLimit-Remaining") != "" {
				t.Fatalf("the caller got rate-limit headers: %v", r.Header)
			}
		}
		step(3, "VALID", 7, 1)
		step(0, "VALID", 7, 1) // checks, charges nothing
		step(5, "VALID", 2, 2)
		step(3, "RATE_LIMITED", 2, 2)
		step(11, "RATE_LIMITED", 2, 2) // more than the whole limit: never admitted, not charged
		step(1, "VALID", 1, 3)
		step(1, "VALID", 0, 4)
		// Both limits are spent now: a check of cost 0 names the one that resets latest
		// (the month's quota), so that its retry time is the true one.
		if v, r := c.verifyGQL(t, c.verifier, map[string]any{"key": k.Secret, "cost": 0}); v.Code != "QUOTA_EXCEEDED" || v.RetryAfterSeconds < 3600 {
			t.Fatalf("limits spent: %s", r.Raw)
		}
		// A quota alone: one verification, then QUOTA_EXCEEDED with its reset.
		q := c.consumer(t, map[string]any{"quota": 1, "quotaPeriod": "DAY"})
		if v, r := c.verifyGQL(t, c.verifier, map[string]any{"key": q.Secret}); v.Code != "VALID" {
			t.Fatalf("quota 1: %s", r.Raw)
		}
		if v, r := c.verifyGQL(t, c.verifier, map[string]any{"key": q.Secret}); v.Code != "QUOTA_EXCEEDED" || v.Quota == nil || v.Quota.Used != 1 || v.Quota.Remaining != 0 {
			t.Fatalf("quota spent: %s", r.Raw)
		}
		c.verifyGQL(t, c.verifier, map[string]any{"key": "lk_live_nope"}) // NOT_FOUND: not stored
		// The caller paid nothing for any of it.
		if after := e.Do(c.verifier, viewerQ, nil).Header.Get("X-RateLimit-Remaining"); after == "" || before == "" || atoi(after) != atoi(before)-1 {
			t.Fatalf("caller charged: remaining %s before, %s after (one viewer call between)", before, after)
		}
		if err := e.App.Recorder.Flush(t.Context()); err != nil {
			t.Fatal(err)
		}
		var logs []struct {
			OperationType, OperationName, Outcome string
			OwnerID                               *string
		}
		rows, err := e.App.Store.DB.QueryContext(t.Context(), `SELECT operation_type, operation_name, outcome, owner_id FROM usage_logs WHERE api_key_id = '`+k.ID+`' ORDER BY at`)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var l struct {
				OperationType, OperationName, Outcome string
				OwnerID                               *string
			}
			if err := rows.Scan(&l.OperationType, &l.OperationName, &l.Outcome, &l.OwnerID); err != nil {
				t.Fatal(err)
			}
			logs = append(logs, l)
		}
		rows.Close()
		want := []string{"valid", "valid", "valid", "rate_limited", "rate_limited", "valid", "valid", "quota_exceeded"}
		if len(logs) != len(want) {
			t.Fatalf("%d usage rows for the consumer key, want %d: %+v", len(logs), len(want), logs)
		}
		for i, l := range logs {
			if l.OperationType != "verify" || l.Outcome != want[i] || l.OwnerID == nil || *l.OwnerID != "cust_7" || (i < 7 && l.OperationName != "GET /documents") {
				t.Fatalf("row %d: %+v", i, l)
			}
		}
		// The rollups count what the quota counted: 4.
		var u struct {
			APIKeys struct {
				Edges []struct {
					Node struct{ QuotaUsage struct{ Used int } }
				}
			}
		}
		e.MustDo(c.mgmt, `query($id: ID!) { apiKeys(where: {id: $id}) { edges { node { quotaUsage { used } } } } }`, map[string]any{"id": k.ID}, &u)
		if u.APIKeys.Edges[0].Node.QuotaUsage.Used != 4 {
			t.Fatalf("quota used %d", u.APIKeys.Edges[0].Node.QuotaUsage.Used)
		}
	})
}

func atoi(s string) int {
	n := 0
	for _, c := range s {
		n = n*10 + int(c-'0')
	}
	return n
}

// keys:verify is granted by platform admins and by keys holding keys:write or
// keys:verify; a key without it cannot verify.
func TestVerifyScope(t *testing.T) {
	e := apptest.New(t, "sqlite", appOptions(), nil)
	c := newConsumerEnv(t, e, "scope")
	k := c.consumer(t, nil)
	_, writer := e.Key(e.AdminToken, c.tid, "keys:read", "keys:write")
	_, reader := e.Key(e.AdminToken, c.tid, "keys:read")
	if r := e.Do(writer, `mutation { createApiKey(input: {name: "v", scopes: ["keys:verify"]}) { secret } }`, nil); r.Code() != "" {
		t.Fatalf("keys:write cannot grant keys:verify: %s", r.Raw)
	}
	if r := e.Do(c.verifier, `mutation { createApiKey(input: {name: "v", scopes: ["keys:verify"]}) { secret } }`, nil); r.Code() != "FORBIDDEN" {
		t.Fatalf("keys:verify alone (without keys:write) created a key: %s", r.Raw)
	}
	if _, r := c.verifyGQL(t, reader, map[string]any{"key": k.Secret}); r.Code() != "FORBIDDEN" {
		t.Fatalf("a key without keys:verify verified: %s", r.Raw)
	}
	if status, out, raw := verifyREST(t, e, reader, "application/json", restBody(map[string]any{"key": k.Secret})); status != 403 || out["error"] == nil {
		t.Fatalf("REST without keys:verify: %d %s", status, raw)
	}
	if status, _, raw := verifyREST(t, e, "", "application/json", restBody(map[string]any{"key": k.Secret})); status != 401 {
		t.Fatalf("REST without a caller: %d %s", status, raw)
	}
	if status, _, raw := verifyREST(t, e, "lk_live_nope", "application/json", restBody(map[string]any{"key": k.Secret})); status != 401 {
		t.Fatalf("REST with a malformed caller: %d %s", status, raw)
	}
}

// Bad input is a clear 400 / BAD_USER_INPUT; nothing is charged or stored.
func TestVerifyBadInput(t *testing.T) {
	e := apptest.New(t, "sqlite", appOptions(), nil)
	c := newConsumerEnv(t, e, "badin")
	k := c.consumer(t, map[string]any{"rateLimit": 5, "rateLimitWindowSeconds": 3600})
	many := make([]string, 1000)
	for i := range many {
		many[i] = "p"
	}
	long := strings.Repeat("k", 300)
	cases := []struct {
		name, contentType, body string
		gql                     map[string]any // nil: REST only
		field                   string
	}{
		{"key over 256 bytes", "application/json", restBody(map[string]any{"key": long}), map[string]any{"key": long}, "key"},
		{"negative cost", "application/json", restBody(map[string]any{"key": k.Secret, "cost": -1}), map[string]any{"key": k.Secret, "cost": -1}, "cost"},
		{"huge cost", "application/json", restBody(map[string]any{"key": k.Secret, "cost": 1_000_000}), map[string]any{"key": k.Secret, "cost": 1_000_000}, "cost"},
		{"1,000 permissions", "application/json", restBody(map[string]any{"key": k.Secret, "permissions": many}), map[string]any{"key": k.Secret, "permissions": many}, "permissions"},
		{"a long permission", "application/json", restBody(map[string]any{"key": k.Secret, "permissions": []string{strings.Repeat("p", 65)}}), map[string]any{"key": k.Secret, "permissions": []string{strings.Repeat("p", 65)}}, "permissions"},
		{"a long tag", "application/json", restBody(map[string]any{"key": k.Secret, "tag": strings.Repeat("t", 129)}), map[string]any{"key": k.Secret, "tag": strings.Repeat("t", 129)}, "tag"},
		{"a tag with a newline", "application/json", restBody(map[string]any{"key": k.Secret, "tag": "a\nb"}), map[string]any{"key": k.Secret, "tag": "a\u00e9"}, "tag"},
		{"unknown field", "application/json", `{"key":"` + k.Secret + `","kost":1}`, nil, ""},
		{"two objects", "application/json", `{"key":"` + k.Secret + `"}{}`, nil, ""},
		{"not JSON", "application/json", `key=` + k.Secret, nil, ""},
		{"wrong type", "application/json", `{"key":"` + k.Secret + `","cost":"one"}`, nil, ""},
		{"no key", "application/json", `{}`, nil, "key"},
		{"form content type", "application/x-www-form-urlencoded", `{"key":"` + k.Secret + `"}`, nil, ""},
		{"no content type", "", `{"key":"` + k.Secret + `"}`, nil, ""},
		{"a body of 1 MiB", "application/json", `{"key":"` + k.Secret + `","tag":"` + strings.Repeat("t", 1<<20) + `"}`, nil, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, out, raw := verifyREST(t, e, c.verifier, tc.contentType, tc.body)
			errObj, _ := out["error"].(map[string]any)
			if status != 400 || errObj == nil || errObj["code"] != "BAD_USER_INPUT" || (tc.field != "" && errObj["field"] != tc.field) {
				t.Fatalf("REST: %d %.300s", status, raw)
			}
			assertNoLeak(t, raw)
			if tc.gql != nil {
				if _, r := c.verifyGQL(t, c.verifier, tc.gql); r.Code() != "BAD_USER_INPUT" {
					t.Fatalf("GraphQL: %.300s", r.Raw)
				}
			}
		})
	}
	// Nothing was charged.
	if v, _ := c.verifyGQL(t, c.verifier, map[string]any{"key": k.Secret, "cost": 0}); v.RateLimit == nil || v.RateLimit.Remaining != 5 {
		t.Fatalf("charged by bad requests: %+v", v.RateLimit)
	}
	// Meta and permissions are bounded on the key too.
	for _, bad := range []map[string]any{
		{"meta": map[string]any{"big": strings.Repeat("m", 5000)}},
		{"permissions": many},
		{"ownerID": strings.Repeat("o", 129)},
		{"kind": "CONSUMER", "scopes": []string{"keys:read"}},
	} {
		in := map[string]any{"name": "bad", "scopes": []string{}, "kind": "CONSUMER"}
		for k, v := range bad {
			in[k] = v
		}
		if r := e.Do(c.mgmt, `mutation($in: CreateApiKeyInput!) { createApiKey(input: $in) { secret } }`, map[string]any{"in": in}); r.Code() != "BAD_USER_INPUT" {
			t.Fatalf("create %v: %.300s", bad, r.Raw)
		}
	}
	if r := e.Do(c.mgmt, `mutation { createApiKey(input: {name: "m", scopes: [], permissions: ["a"]}) { secret } }`, nil); r.Code() != "BAD_USER_INPUT" {
		t.Fatalf("permissions on a management key: %s", r.Raw)
	}
}

// Unknown credentials that would need a database read spend a budget per client (30
// a minute by default): spent, the client gets 429 with Retry-After for unknown keys,
// while a key already known keeps working.
func TestUnknownCredentialsThrottled(t *testing.T) {
	e := apptest.New(t, "sqlite", app.Options{}, func(c *config.Config) { c.AuthFailuresPerMinute = 5; c.VerifyFailuresPerMinute = 5 })
	c := newConsumerEnv(t, e, "throttle")
	good := c.consumer(t, nil)
	e.Do(c.mgmt, viewerQ, nil)                                     // cached now
	c.verifyGQL(t, c.verifier, map[string]any{"key": good.Secret}) // cached now
	var last *apptest.Response
	for i := 0; i < 7; i++ {
		fake, _ := keys.Generate(keys.KindLive) // valid checksum, unknown: a database read
		last = e.Do(fake, viewerQ, nil)
	}
	if last.Status != 429 || last.Header.Get("Retry-After") == "" || last.Code() != "RATE_LIMITED" {
		t.Fatalf("after 7 unknown keys: HTTP %d %s", last.Status, last.Raw)
	}
	if r := e.Do(c.mgmt, viewerQ, nil); r.Status != 200 {
		t.Fatalf("a known key refused: %s", r.Raw)
	}
	// The same for unknown consumer keys, per verifying key.
	var v verifyResult
	var r *apptest.Response
	for i := 0; i < 7; i++ {
		fake, _ := keys.GenerateWith("lk", keys.KindLive)
		v, r = c.verifyGQL(t, c.verifier, map[string]any{"key": fake})
	}
	if r.Code() != "RATE_LIMITED" {
		t.Fatalf("after 7 unknown consumer keys: %+v %s", v, r.Raw)
	}
	if v, r := c.verifyGQL(t, c.verifier, map[string]any{"key": good.Secret}); v.Code != "VALID" {
		t.Fatalf("a known consumer key: %s", r.Raw)
	}
	status, _, raw := verifyREST(t, e, c.verifier, "application/json", restBody(map[string]any{"key": mustGenerate()}))
	if status != 429 {
		t.Fatalf("REST after the budget: %d %s", status, raw)
	}
}

func mustGenerate() string {
	k, _ := keys.Generate(keys.KindLive)
	return k
}

// Verifications appear in usageEvents as they happen, with their owner and code.
func TestVerifyLive(t *testing.T) {
	e := apptest.New(t, "sqlite", appOptions(), nil)
	c := newConsumerEnv(t, e, "live-verify")
	k := c.consumer(t, map[string]any{"ownerID": "cust_live"})
	ws, err := e.DialWS(apptest.TransportWS, map[string]any{"apiKey": c.mgmt}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	if err := ws.Subscribe("1", `subscription { usageEvents { apiKeyID ownerID operationType operationName outcome } }`, nil); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // the subscription is open
	c.verifyGQL(t, c.verifier, map[string]any{"key": k.Secret, "tag": "POST /upload"})
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		m, err := ws.Next(time.Until(deadline))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(m.Payload, []byte(`"verify"`)) {
			continue
		}
		want := `{"data":{"usageEvents":{"apiKeyID":"` + k.ID + `","ownerID":"cust_live","operationType":"verify","operationName":"POST /upload","outcome":"VALID"}}}`
		if string(m.Payload) != want {
			t.Fatalf("event %s, want %s", m.Payload, want)
		}
		return
	}
	t.Fatal("no verify event")
}
