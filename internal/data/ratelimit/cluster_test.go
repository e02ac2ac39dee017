package ratelimit

import (
	"context"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// clusterTenants returns perNode groups for every master of the cluster, ordered by
// master: the groups' hash tags put their keys on that master.
func clusterTenants(t *testing.T, client *redis.ClusterClient, prefix string, perNode int) (groups []string, master map[string]string) {
	t.Helper()
	ctx := context.Background()
	var masters []string
	var mu sync.Mutex
	if err := client.ForEachMaster(ctx, func(_ context.Context, node *redis.Client) error {
		mu.Lock()
		masters = append(masters, node.Options().Addr)
		mu.Unlock()
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	slices.Sort(masters)
	if len(masters) < 2 {
		t.Fatalf("the test cluster has %d master(s); the test needs keys on several", len(masters))
	}
	byNode := map[string][]string{}
	master = map[string]string{}
	for i := 0; len(master) < perNode*len(masters); i++ {
		if i > 10_000 {
			t.Fatalf("no %d groups per master found: %v", perNode, byNode)
		}
		g := "ten_c" + strconv.Itoa(i)
		node, err := client.MasterForKey(ctx, prefix+"{"+g+"}:x")
		if err != nil {
			t.Fatal(err)
		}
		addr := node.Options().Addr
		if len(byNode[addr]) < perNode {
			byNode[addr] = append(byNode[addr], g)
			master[g] = addr
		}
	}
	for _, m := range masters {
		groups = append(groups, byNode[m]...)
	}
	return groups, master
}

// countOf is how many of names are name.
func countOf(names []string, name string) int {
	n := 0
	for _, s := range names {
		if s == name {
			n++
		}
	}
	return n
}

// TestClusterCheckExact: three instances (clients of their own) check the limits of
// six tenants, two on each master, concurrently. Every tenant's totals are exact, its
// counters (seeded from the "database" on first use) all sit on the master that owns
// its hash tag, and none elsewhere. The checks start after SCRIPT FLUSH, and many are
// coalesced into pipelines that the cluster client splits by node. After another
// flush, checked one at a time, each node answers NOSCRIPT once and the checks go on
// (EVAL, then EVALSHA again).
func TestClusterCheckExact(t *testing.T) {
	ctx := context.Background()
	clients := []*redis.ClusterClient{newRedisClusterClient(t), newRedisClusterClient(t), newRedisClusterClient(t)}
	prefix := testPrefix(t, clients[0])
	groups, master := clusterTenants(t, clients[0], prefix, 2)

	var seeds atomic.Int64
	seed := func(_ context.Context, _ string, c Counter, _ time.Time) (int64, error) {
		seeds.Add(1)
		if c.Key != "tenant" {
			t.Errorf("seed of %q", c.Key)
		}
		return 20, nil // used this month before the test, as the database says
	}
	var instances []*RedisChecker
	for _, c := range clients {
		r, err := NewRedisChecker(c, prefix, seed)
		if err != nil {
			t.Fatal(err)
		}
		instances = append(instances, r)
	}
	// Each of a tenant's two keys has 60 an hour; the tenant 100 a month, 20 of them
	// used already: 80 of the tenant's 200 checks pass, at most 60 of either key.
	counters := func(key string, cost int64) []Counter {
		return []Counter{rateC("key:"+key, 60, time.Hour, cost), quotaC("tenant", 100, PeriodMonth, cost)}
	}
	// The checks start with no script on any node: the first of each node's calls,
	// alone or in a coalesced pipeline (split by node), falls back to EVAL.
	if err := clients[0].ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	pipelines := &countHook{}
	for _, c := range clients {
		c.AddHook(pipelines)
	}
	const attempts = 100 // per key

	var admitted sync.Map // group/key → *atomic.Int64
	var wg sync.WaitGroup
	gate := make(chan struct{})
	n := 0
	for _, g := range groups {
		for _, k := range []string{"k1", "k2"} {
			var count atomic.Int64
			admitted.Store(g+"/"+k, &count)
			for range attempts {
				r := instances[n%len(instances)]
				n++
				wg.Go(func() {
					<-gate
					d, err := r.Check(ctx, g, counters(k, 1), nil)
					if err != nil {
						t.Error(err)
						return
					}
					if d.Allowed {
						count.Add(1)
					}
				})
			}
		}
	}
	close(gate)
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	cmds := pipelines.reset()
	if n := countOf(cmds, "pipeline"); n == 0 {
		t.Errorf("no check was coalesced into a pipeline: %d commands", len(cmds))
	} else {
		t.Logf("%d commands, %d of them pipelines, %d EVAL", len(cmds), n, countOf(cmds, "eval"))
	}
	for _, g := range groups {
		var total int64
		for _, k := range []string{"k1", "k2"} {
			c, _ := admitted.Load(g + "/" + k)
			got := c.(*atomic.Int64).Load()
			total += got
			if got > 60 {
				t.Errorf("%s/%s: admitted %d, more than its 60", g, k, got)
			}
			d, err := instances[0].Check(ctx, g, counters(k, 0), nil)
			if err != nil {
				t.Fatal(err)
			}
			if d.Results[0].Remaining != 60-got || d.Results[1].Used != 100 {
				t.Errorf("%s/%s after %d admitted: key remaining %d, tenant used %d; want %d and 100",
					g, k, got, d.Results[0].Remaining, d.Results[1].Used, 60-got)
			}
		}
		if total != 80 {
			t.Errorf("%s: admitted %d, want exactly 80", g, total)
		}
	}
	// One seed read per tenant and instance at most (concurrent checks of one instance
	// share it; SET NX makes the first instance's value the one counted).
	if s := seeds.Load(); s < int64(len(groups)) || s > int64(len(groups)*len(instances)) {
		t.Errorf("%d seed reads for %d tenants on %d instances", s, len(groups), len(instances))
	}

	// Where the keys are: every tenant's on its master, nowhere else.
	var mu sync.Mutex
	found := map[string][]string{} // master → keys
	if err := clients[0].ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error {
		keys, err := node.Keys(ctx, prefix+"*").Result()
		mu.Lock()
		found[node.Options().Addr] = keys
		mu.Unlock()
		return err
	}); err != nil {
		t.Fatal(err)
	}
	month := periodLabel(PeriodMonth, time.Now().UnixNano())
	nodes := map[string]bool{}
	for _, g := range groups {
		nodes[master[g]] = true
		p := prefix + "{" + g + "}:"
		want := []string{p + "key:k1", p + "key:k2", p + "tenant:" + month}
		for addr, keys := range found {
			var have []string
			for _, k := range keys {
				if len(k) > len(p) && k[:len(p)] == p {
					have = append(have, k)
				}
			}
			slices.Sort(have)
			if addr == master[g] && !slices.Equal(have, want) {
				t.Errorf("%s on its master %s: keys %v, want %v", g, addr, have, want)
			}
			if addr != master[g] && len(have) > 0 {
				t.Errorf("%s has keys on %s, not its master %s: %v", g, addr, master[g], have)
			}
		}
	}
	if len(nodes) < 3 {
		t.Errorf("the tenants' keys sit on %d masters, want 3", len(nodes))
	}

	// Scripts are cached per node: after a flush each node answers NOSCRIPT once.
	if err := clients[1].ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	hook := &countHook{}
	clients[1].AddHook(hook)
	var want []string
	for i, g := range groups {
		if _, err := instances[1].Check(ctx, g, counters("k1", 0), nil); err != nil {
			t.Fatalf("%s after SCRIPT FLUSH: %v", g, err)
		}
		want = append(want, "evalsha")
		if i%2 == 0 { // the first tenant of its master
			want = append(want, "eval")
		}
	}
	if got := hook.reset(); !slices.Equal(got, want) {
		t.Errorf("commands after SCRIPT FLUSH: %v, want %v", got, want)
	}
}
