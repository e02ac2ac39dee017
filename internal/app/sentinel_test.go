package app_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/latchkey/latchkey/internal/app"
	"github.com/latchkey/latchkey/internal/app/apptest"
	"github.com/latchkey/latchkey/internal/data/testdb"
	"github.com/latchkey/latchkey/internal/platform/config"
)

// Through REDIS_SENTINEL_URL the limits live in the master the sentinels name, and
// they survive a failover: the servers follow the sentinels to the promoted replica,
// and a key's rate limit goes on from where it was (its counter was replicated), so
// a key allowed 10 calls an hour still gets exactly 10 across the switch. The
// instance bus follows too: a key revoked on one instance while the old master is
// still resynchronizing is refused by the other within pubsub.SentinelSettle and the bus's
// second.
func TestSentinelFailover(t *testing.T) {
	url := testdb.RedisSentinelURL(t)
	dbURL := testdb.URL(t, "postgres")
	share := func(c *config.Config) {
		c.DatabaseURL = dbURL
		useRedis(t, "sentinel")(c)
	}
	e := apptest.New(t, "sqlite", app.Options{}, share)
	other := apptest.New(t, "sqlite", app.Options{}, func(c *config.Config) { share(c); c.AdminToken = e.AdminToken })
	tid := e.Tenant("failover")
	_, key := limitedKey(t, e, tid, 10, 3600, "")
	for i := range 5 {
		if r := e.Do(key, viewerQ, nil); r.Status != 200 || r.Code() != "" {
			t.Fatalf("call %d before the failover: HTTP %d %s", i+1, r.Status, r.Raw)
		}
	}
	spareID, spare := limitedKey(t, e, tid, 1000, 3600, "")
	if r := other.Do(spare, viewerQ, nil); r.Status != 200 || r.Code() != "" { // now in its cache
		t.Fatalf("the other instance refused a fresh key: HTTP %d %s", r.Status, r.Raw)
	}

	opt, err := redis.ParseFailoverURL(url)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	sentinel := redis.NewSentinelClient(&redis.Options{Addr: opt.SentinelAddrs[0]})
	defer sentinel.Close()
	before, err := sentinel.GetMasterAddrByName(ctx, opt.MasterName).Result()
	if err != nil {
		t.Fatal(err)
	}
	// Every write so far has reached the replica (replication is asynchronous: a
	// failover loses what the replica had not received, as Redis documents). After an
	// earlier failover the demoted master may still be resynchronizing: wait for it.
	master := redis.NewClient(&redis.Options{Addr: before[0] + ":" + before[1]})
	defer master.Close()
	for start := time.Now(); ; {
		n, err := master.Wait(ctx, 1, time.Second).Result()
		if err == nil && n >= 1 {
			break
		}
		if time.Since(start) > 30*time.Second {
			t.Fatalf("WAIT 1: %d replicas acknowledged in 30 s (%v)", n, err)
		}
	}
	if err := sentinel.Failover(ctx, opt.MasterName).Err(); err != nil {
		t.Fatalf("SENTINEL FAILOVER: %v", err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		after, err := sentinel.GetMasterAddrByName(ctx, opt.MasterName).Result()
		if err == nil && after[1] != before[1] {
			t.Logf("failover: master %s:%s -> %s:%s", before[0], before[1], after[0], after[1])
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the sentinel still names %v 30 s after SENTINEL FAILOVER", before)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Revoked on one instance at once: the old master is still being demoted and
	// resynchronized, so the invalidation may be published where the other instance
	// no longer listens, or listen where it is not published. The other instance
	// moves its subscription when the sentinel announces the switch and drops its
	// key cache then and pubsub.SentinelSettle (2 s) later.
	e.MustDo(e.AdminToken, `mutation($id: ID!) { revokeApiKey(id: $id) { id } }`, map[string]any{"id": spareID}, &struct{}{})
	for start := time.Now(); ; time.Sleep(20 * time.Millisecond) {
		r := other.Do(spare, viewerQ, nil)
		if r.Status == 401 {
			t.Logf("revocation during the failover honoured by the other instance after %v", time.Since(start).Round(time.Millisecond))
			break
		}
		if time.Since(start) > 3*time.Second {
			t.Fatalf("the other instance still accepts a key revoked during the failover 3 s later: HTTP %d %s", r.Status, r.Raw)
		}
	}

	// The failover is over once the old master follows the new one. Until then it
	// may still take writes that the resynchronization then discards: a charge made
	// in that moment (by a client that has not heard of the switch yet) is lost, as
	// any write Redis replication has not carried. Afterwards it refuses writes
	// (READONLY), and a check that meets it is retried or refused, never lost.
	for {
		info, err := master.Info(ctx, "replication").Result()
		if err == nil && strings.Contains(info, "role:slave") && strings.Contains(info, "master_link_status:up") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the old master does not follow the new one 30 s after SENTINEL FAILOVER:\n%s", info)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// The calls go on against the new master. While the client learns of the switch a
	// call may be refused as the limit store being unreachable (INTERNAL, failing
	// closed): those charge nothing and are retried.
	admitted, unavailable := 0, 0
	for admitted+unavailable < 200 {
		r := e.Do(key, viewerQ, nil)
		switch {
		case r.Status == 200 && r.Code() == "":
			admitted++
			continue
		case r.Code() == "RATE_LIMITED":
		case r.Code() == "INTERNAL":
			unavailable++
			time.Sleep(50 * time.Millisecond)
			continue
		default:
			t.Fatalf("call after the failover: HTTP %d %s", r.Status, r.Raw)
		}
		break
	}
	if admitted != 5 {
		t.Fatalf("%d calls admitted after the failover (%d refused as unavailable), want the 5 left of 10", admitted, unavailable)
	}
	t.Logf("after the failover: 5 admitted, then RATE_LIMITED; %d calls refused while switching", unavailable)

	// Afterwards the bus works as before: revoked on one instance, refused by the
	// other within its second.
	id, late := limitedKey(t, e, tid, 1000, 3600, "")
	if r := other.Do(late, viewerQ, nil); r.Status != 200 || r.Code() != "" {
		t.Fatalf("the other instance refused a fresh key: HTTP %d %s", r.Status, r.Raw)
	}
	e.MustDo(e.AdminToken, `mutation($id: ID!) { revokeApiKey(id: $id) { id } }`, map[string]any{"id": id}, &struct{}{})
	for start := time.Now(); ; time.Sleep(20 * time.Millisecond) {
		r := other.Do(late, viewerQ, nil)
		if r.Status == 401 {
			break
		}
		if time.Since(start) > time.Second {
			t.Fatalf("the other instance still accepts a revoked key 1 s after the failover: HTTP %d %s", r.Status, r.Raw)
		}
	}
}
