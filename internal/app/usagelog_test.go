package app_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/latchkey/latchkey/ent"
	"github.com/latchkey/latchkey/internal/app"
	"github.com/latchkey/latchkey/internal/app/apptest"
	"github.com/latchkey/latchkey/internal/domain/usage"
	"github.com/latchkey/latchkey/internal/platform/logid"
)

type logNode struct {
	ID            string
	APIKeyID      string  `json:"apiKeyID"`
	OwnerID       *string `json:"ownerID"`
	OperationType string
	OperationName string
	RootFields    []string
	Outcome       string
	LatencyMs     int
	IP            string `json:"ip"`
	At            time.Time
}

type logPage struct {
	UsageLogs struct {
		TotalCount int
		PageInfo   struct {
			HasNextPage bool
			EndCursor   *string
		}
		Edges []struct{ Node logNode }
	}
}

const usageLogsQ = `query($first: Int, $after: Cursor, $where: UsageLogWhereInput, $orderBy: UsageLogOrder) {
  usageLogs(first: $first, after: $after, where: $where, orderBy: $orderBy) {
    totalCount pageInfo { hasNextPage endCursor }
    edges { node { id apiKeyID ownerID operationType operationName rootFields outcome latencyMs ip at } }
  }
}`

func (p logPage) nodes() []logNode {
	out := make([]logNode, len(p.UsageLogs.Edges))
	for i, e := range p.UsageLogs.Edges {
		out[i] = e.Node
	}
	return out
}

// The request log: stored usage events, newest first, filtered by key, owner, outcome,
// operation, tag, IP and time, paged with cursors; usage grouped by key and operation.
func TestUsageLogs(t *testing.T) {
	forEachDialect(t, func(t *testing.T, e *apptest.Env) {
		c := newConsumerEnv(t, e, "reqlog")
		var me viewerResp
		e.MustDo(c.mgmt, viewerQ, nil, &me) // ok (mgmt)
		mgmtID := me.Viewer.APIKey.ID
		weak, weakKey := e.Key(c.mgmt, "", "usage:read")
		expectCode(t, e.Do(weakKey, `{ webhooks { totalCount } }`, nil), "FORBIDDEN") // forbidden (weak)
		ck := c.consumer(t, map[string]any{"ownerID": "cust_1"})
		if res, _ := c.verifyGQL(t, c.verifier, map[string]any{"key": ck.Secret, "tag": "GET /documents"}); res.Code != "VALID" {
			t.Fatalf("verify: %+v", res)
		}
		e.MustDo(weakKey, `query Named { viewer { isAdmin } }`, nil, &struct{}{}) // ok (weak), named
		if err := e.App.Recorder.Flush(context.Background()); err != nil {
			t.Fatal(err)
		}

		var all logPage
		e.MustDo(c.mgmt, usageLogsQ, nil, &all)
		nodes := all.nodes()
		if len(nodes) < 4 || all.UsageLogs.TotalCount != len(nodes) {
			t.Fatalf("log: %d rows, totalCount %d: %+v", len(nodes), all.UsageLogs.TotalCount, nodes)
		}
		for i := 1; i < len(nodes); i++ {
			if nodes[i].At.After(nodes[i-1].At) {
				t.Fatalf("not newest first: %v after %v", nodes[i].At, nodes[i-1].At)
			}
		}
		if n := nodes[0]; n.OperationName != "Named" || n.APIKeyID != weak || n.Outcome != "OK" || n.IP != "127.0.0.1" || !strings.HasPrefix(n.ID, "log_") {
			t.Fatalf("newest row: %+v", n)
		}

		filter := func(where map[string]any) []logNode {
			t.Helper()
			var p logPage
			e.MustDo(c.mgmt, usageLogsQ, map[string]any{"where": where}, &p)
			return p.nodes()
		}
		cases := []struct {
			name  string
			where map[string]any
			check func(logNode) bool
			want  int
		}{
			{"by key", map[string]any{"apiKeyID": weak}, func(n logNode) bool { return n.APIKeyID == weak }, 2},
			{"by outcome", map[string]any{"outcome": "FORBIDDEN"}, func(n logNode) bool { return n.Outcome == "FORBIDDEN" && n.APIKeyID == weak }, 1},
			{"by owner", map[string]any{"ownerID": "cust_1"}, func(n logNode) bool {
				return n.OwnerID != nil && *n.OwnerID == "cust_1" && n.APIKeyID == ck.ID && n.Outcome == "VALID"
			}, 1},
			{"by tag", map[string]any{"operationType": "verify", "operationName": "GET /documents"}, func(n logNode) bool { return n.APIKeyID == ck.ID }, 1},
			{"by tag prefix", map[string]any{"operationNameHasPrefix": "GET /doc"}, func(n logNode) bool { return n.APIKeyID == ck.ID }, 1},
			{"by ip", map[string]any{"ip": "127.0.0.1", "apiKeyID": mgmtID}, func(n logNode) bool { return n.APIKeyID == mgmtID }, -1},
			{"by outcomes", map[string]any{"outcomeIn": []string{"OK", "VALID"}, "apiKeyIDNEQ": mgmtID}, func(n logNode) bool { return n.Outcome != "FORBIDDEN" }, 2},
			{"future", map[string]any{"atGTE": time.Now().Add(time.Hour).Format(time.RFC3339)}, nil, 0},
			{"past", map[string]any{"atLT": time.Now().Add(time.Hour).Format(time.RFC3339), "apiKeyID": weak}, nil, 2},
		}
		for _, tc := range cases {
			got := filter(tc.where)
			if tc.want >= 0 && len(got) != tc.want || tc.want < 0 && len(got) == 0 {
				t.Fatalf("%s: %d rows, want %d: %+v", tc.name, len(got), tc.want, got)
			}
			for _, n := range got {
				if tc.check != nil && !tc.check(n) {
					t.Fatalf("%s: row %+v", tc.name, n)
				}
			}
		}

		// Pages of 1 walk the whole log, newest first, without repeats.
		seen := map[string]bool{}
		var after any
		for page := 0; ; page++ {
			var p logPage
			e.MustDo(c.mgmt, usageLogsQ, map[string]any{"first": 1, "after": after}, &p)
			for _, n := range p.nodes() {
				if seen[n.ID] {
					t.Fatalf("page %d repeats %s", page, n.ID)
				}
				seen[n.ID] = true
			}
			if !p.UsageLogs.PageInfo.HasNextPage {
				break
			}
			after = *p.UsageLogs.PageInfo.EndCursor
			if page > 50 {
				t.Fatal("paging does not end")
			}
		}
		// Rows recorded while paging (the log queries themselves) may add some.
		if len(seen) < len(nodes) {
			t.Fatalf("paged %d rows, listed %d", len(seen), len(nodes))
		}
		expectCode(t, e.Do(c.mgmt, usageLogsQ, map[string]any{"after": "bm90IGEgY3Vyc29y"}), "BAD_USER_INPUT")
		// Matches that no index serves are not in the schema: they would scan every row.
		for _, op := range []string{"operationNameContainsFold", "ipContains", "ownerIDEqualFold", "apiKeyIDHasSuffix", "outcomeContains", "ipGT"} {
			expectCode(t, e.Do(c.mgmt, usageLogsQ, map[string]any{"where": map[string]any{op: "x"}}), "GRAPHQL_VALIDATION_FAILED")
		}

		var node struct{ Node *struct{ ID, Outcome string } }
		e.MustDo(c.mgmt, `query($id: ID!) { node(id: $id) { id ... on UsageLog { outcome } } }`, map[string]any{"id": nodes[0].ID}, &node)
		if node.Node == nil || node.Node.ID != nodes[0].ID {
			t.Fatalf("node(%s) = %+v", nodes[0].ID, node.Node)
		}
		expectCode(t, e.Do(c.verifier, usageLogsQ, nil), "FORBIDDEN") // keys:verify only: no usage:read

		// Breakdowns: by key from the rollups, by operation from the log.
		from := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
		to := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
		var byKey struct {
			Usage []struct {
				APIKeyID         *string `json:"apiKeyID"`
				OperationType    *string
				Requests, Errors int
			}
		}
		e.MustDo(c.mgmt, `{ usage(from: "`+from+`", to: "`+to+`", interval: DAY, groupBy: KEY) { apiKeyID operationType requests errors } }`, nil, &byKey)
		perKey := map[string][2]int{}
		for _, b := range byKey.Usage {
			if b.APIKeyID == nil || b.OperationType != nil {
				t.Fatalf("KEY bucket %+v", b)
			}
			s := perKey[*b.APIKeyID]
			perKey[*b.APIKeyID] = [2]int{s[0] + b.Requests, s[1] + b.Errors}
		}
		if perKey[weak] != [2]int{2, 1} || perKey[ck.ID] != [2]int{1, 0} {
			t.Fatalf("by key: %v", perKey)
		}
		var byOp struct {
			Usage []struct {
				Start                        time.Time
				OperationType, OperationName *string
				Requests, Errors             int
				P99Ms                        float64
			}
		}
		e.MustDo(c.mgmt, `query($k: ID) { usage(apiKeyID: $k, from: "`+from+`", to: "`+to+`", interval: MINUTE, groupBy: OPERATION) { start operationType operationName requests errors p99Ms } }`,
			map[string]any{"k": ck.ID}, &byOp)
		if len(byOp.Usage) != 1 || *byOp.Usage[0].OperationType != "verify" || *byOp.Usage[0].OperationName != "GET /documents" ||
			byOp.Usage[0].Requests != 1 || byOp.Usage[0].Start.Second() != 0 {
			t.Fatalf("by operation: %+v", byOp.Usage)
		}
		e.MustDo(c.mgmt, `{ usage(from: "`+from+`", to: "`+to+`", interval: HOUR, groupBy: OPERATION) { start operationType operationName requests errors p99Ms } }`, nil, &byOp)
		ops := map[string]int{}
		for _, b := range byOp.Usage {
			ops[*b.OperationType+" "+*b.OperationName] += b.Requests
		}
		if ops["query Named"] != 1 || ops["verify GET /documents"] != 1 {
			t.Fatalf("by operation: %v", ops)
		}
	})
}

// The request log reads across the daily partitions of PostgreSQL (and the default
// partition, for rows outside them) as across one table: newest first with ties broken
// by id, pages of 2 without gaps or repeats, time filters on partition boundaries.
func TestUsageLogsAcrossPartitions(t *testing.T) {
	forEachDialect(t, func(t *testing.T, e *apptest.Env) {
		c := newConsumerEnv(t, e, "reqlogparts")
		const key = "key_partitions"
		today := time.Now().UTC().Truncate(24 * time.Hour)
		ats := []time.Time{
			today.Add(-48 * time.Hour), // the day before yesterday: no partition, the default one
			today.Add(-time.Microsecond),
			today, today, // a tie: id decides
			today.Add(time.Microsecond),
			today.Add(24*time.Hour - time.Microsecond),
			today.Add(24 * time.Hour),
			today.Add(30 * 24 * time.Hour), // beyond the partitions made ahead: the default one
		}
		for _, at := range ats {
			e.App.Recorder.Record(usage.Event{TenantID: c.tid, APIKeyID: key, OperationType: "query", OperationName: "Parts", Outcome: usage.OutcomeOK, At: at})
		}
		if err := e.App.Recorder.Flush(context.Background()); err != nil {
			t.Fatal(err)
		}
		walk := func(where map[string]any) []logNode {
			t.Helper()
			var all []logNode
			var after any
			for page := 0; ; page++ {
				var p logPage
				e.MustDo(c.mgmt, usageLogsQ, map[string]any{"first": 2, "after": after, "where": where}, &p)
				all = append(all, p.nodes()...)
				if !p.UsageLogs.PageInfo.HasNextPage {
					return all
				}
				after = *p.UsageLogs.PageInfo.EndCursor
				if page > 20 {
					t.Fatal("paging does not end")
				}
			}
		}
		got := walk(map[string]any{"apiKeyID": key})
		if len(got) != len(ats) {
			t.Fatalf("%d rows, want %d: %+v", len(got), len(ats), got)
		}
		for i, n := range got {
			if want := ats[len(ats)-1-i]; !n.At.Equal(want) {
				t.Fatalf("row %d at %v, want %v", i, n.At, want)
			}
			if i > 0 && n.At.Equal(got[i-1].At) && logNum(t, n.ID) >= logNum(t, got[i-1].ID) {
				t.Fatalf("tie not broken by id, newest first: %s after %s", n.ID, got[i-1].ID)
			}
		}
		ranged := walk(map[string]any{"apiKeyID": key, "atGTE": today.Format(time.RFC3339Nano), "atLT": today.Add(24 * time.Hour).Format(time.RFC3339Nano)})
		if len(ranged) != 4 {
			t.Fatalf("today's rows: %+v", ranged)
		}
		for _, n := range ranged {
			if n.At.Before(today) || !n.At.Before(today.Add(24*time.Hour)) {
				t.Fatalf("row out of range: %+v", n)
			}
		}
		var node struct{ Node *struct{ ID string } }
		for _, n := range []logNode{got[0], got[len(got)-1], got[3]} {
			e.MustDo(c.mgmt, `query($id: ID!) { node(id: $id) { id } }`, map[string]any{"id": n.ID}, &node)
			if node.Node == nil || node.Node.ID != n.ID {
				t.Fatalf("node(%s) = %+v", n.ID, node.Node)
			}
		}
	})
}

func logNum(t *testing.T, id string) int64 {
	t.Helper()
	n, err := logid.Parse(id)
	if err != nil {
		t.Fatal(err)
	}
	return int64(n)
}

// A page of the request log counts the whole log only when totalCount is asked for:
// pageInfo comes from the page itself.
func TestUsageLogsCountOnlyWhenAsked(t *testing.T) {
	var mu sync.Mutex
	var counts int
	logSQL := ent.Log(func(a ...any) {
		if s := fmt.Sprint(a...); strings.Contains(s, "COUNT(") && strings.Contains(s, "usage_logs") {
			mu.Lock()
			counts++
			mu.Unlock()
		}
	})
	e := apptest.New(t, "sqlite", app.Options{EntOptions: []ent.Option{ent.Debug(), logSQL}}, nil)
	c := newConsumerEnv(t, e, "reqlogcount")
	for range 3 {
		e.App.Recorder.Record(usage.Event{TenantID: c.tid, APIKeyID: "key_count", OperationType: "query", Outcome: usage.OutcomeOK})
	}
	if err := e.App.Recorder.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	counted := func() int {
		mu.Lock()
		defer mu.Unlock()
		n := counts
		counts = 0
		return n
	}
	where := map[string]any{"apiKeyID": "key_count"}
	var p logPage
	counted()
	e.MustDo(c.mgmt, `query($w: UsageLogWhereInput, $after: Cursor) { usageLogs(first: 2, after: $after, where: $w) { pageInfo { hasNextPage endCursor } edges { node { id } } } }`,
		map[string]any{"w": where}, &p)
	if n := counted(); n != 0 {
		t.Fatalf("a page without totalCount counted %d times", n)
	}
	if len(p.UsageLogs.Edges) != 2 || !p.UsageLogs.PageInfo.HasNextPage {
		t.Fatalf("first page: %+v", p.UsageLogs)
	}
	var p2 logPage
	e.MustDo(c.mgmt, `query($w: UsageLogWhereInput, $after: Cursor) { usageLogs(first: 2, after: $after, where: $w) { pageInfo { hasNextPage } edges { node { id } } } }`,
		map[string]any{"w": where, "after": *p.UsageLogs.PageInfo.EndCursor}, &p2)
	if len(p2.UsageLogs.Edges) != 1 || p2.UsageLogs.PageInfo.HasNextPage {
		t.Fatalf("second page: %+v", p2.UsageLogs)
	}
	e.MustDo(c.mgmt, usageLogsQ, map[string]any{"first": 2, "where": where}, &p)
	if n := counted(); n == 0 || p.UsageLogs.TotalCount != 3 {
		t.Fatalf("with totalCount: %d counts, totalCount %d", n, p.UsageLogs.TotalCount)
	}
}
