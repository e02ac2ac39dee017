package app_test

import (
	"testing"

	"github.com/latchkey/latchkey/internal/app/apptest"
)

// Relay lists: ordering, where filters, cursor pagination, node and nodes.
func TestListsAndNodes(t *testing.T) {
	forEachDialect(t, func(t *testing.T, e *apptest.Env) {
		ids := map[string]string{}
		for _, slug := range []string{"charlie", "alpha", "bravo"} {
			ids[slug] = e.Tenant(slug)
		}
		var tl struct {
			Tenants struct {
				TotalCount int
				Edges      []struct{ Node struct{ Slug string } }
			}
		}
		e.MustDo(e.AdminToken, `{ tenants(orderBy: {field: SLUG, direction: DESC}) { totalCount edges { node { slug } } } }`, nil, &tl)
		if tl.Tenants.TotalCount != 3 || tl.Tenants.Edges[0].Node.Slug != "charlie" || tl.Tenants.Edges[2].Node.Slug != "alpha" {
			t.Fatalf("tenants = %+v", tl.Tenants)
		}
		e.MustDo(e.AdminToken, `{ tenants(where: {slugHasPrefix: "br"}) { totalCount edges { node { slug } } } }`, nil, &tl)
		if tl.Tenants.TotalCount != 1 || tl.Tenants.Edges[0].Node.Slug != "bravo" {
			t.Fatalf("filtered tenants = %+v", tl.Tenants)
		}

		tid := ids["alpha"]
		keyID, key := e.Key(e.AdminToken, tid, "keys:read", "keys:write", "tenant:read")
		for range 4 {
			e.Key(key, "", "keys:read")
		}
		type page struct {
			APIKeys struct {
				TotalCount int
				PageInfo   struct {
					HasNextPage bool
					EndCursor   *string
				}
				Edges []struct{ Node struct{ ID string } }
			} `json:"apiKeys"`
		}
		seen := map[string]bool{}
		var after *string
		for i := 0; ; i++ {
			var p page
			e.MustDo(key, `query($after: Cursor) { apiKeys(first: 2, after: $after, orderBy: {field: CREATED_AT}) { totalCount pageInfo { hasNextPage endCursor } edges { node { id } } } }`,
				map[string]any{"after": after}, &p)
			for _, ed := range p.APIKeys.Edges {
				if seen[ed.Node.ID] {
					t.Fatalf("key %s on two pages", ed.Node.ID)
				}
				seen[ed.Node.ID] = true
			}
			if !p.APIKeys.PageInfo.HasNextPage {
				break
			}
			after = p.APIKeys.PageInfo.EndCursor
			if i > 5 {
				t.Fatal("pagination does not end")
			}
		}
		if len(seen) != 5 {
			t.Fatalf("paged through %d keys, want 5", len(seen))
		}
		var filtered page
		e.MustDo(key, `{ apiKeys(where: {revokedAtIsNil: true, nameContains: "key", hasTenantWith: {slug: "alpha"}}) { totalCount } }`, nil, &filtered)
		if filtered.APIKeys.TotalCount != 5 {
			t.Fatalf("filtered keys: %d", filtered.APIKeys.TotalCount)
		}

		var node struct {
			Node struct {
				Typename string `json:"__typename"`
				ID       string
				Prefix   string
			}
			Nodes []*struct{ ID string }
		}
		e.MustDo(key, `query($id: ID!, $t: ID!) { node(id: $id) { __typename id ... on ApiKey { prefix } } nodes(ids: [$id, $t]) { id } }`,
			map[string]any{"id": keyID, "t": tid}, &node)
		if node.Node.Typename != "ApiKey" || node.Node.ID != keyID || node.Node.Prefix == "" || len(node.Nodes) != 2 || node.Nodes[1].ID != tid {
			t.Fatalf("node = %+v", node)
		}
	})
}
