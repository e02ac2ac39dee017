package ratelimit

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// benchRate never denies in a benchmark: one unit occupies 1 ns.
var benchRate = Limit{Rate: 1_000_000_000, Period: time.Second}

// benchOne is a check of one rate limit.
func benchOne() []Counter {
	return []Counter{{Kind: RateKind, Key: "key:key_1", Limit: benchRate, Cost: 1}}
}

// benchFive is a check of three named rate limits of a key, the tenant's rate limit and
// the tenant's quota.
func benchFive() []Counter {
	return []Counter{
		{Kind: RateKind, Key: "named:key_1:requests", Limit: benchRate, Cost: 1},
		{Kind: RateKind, Key: "named:key_1:writes", Limit: benchRate, Cost: 1},
		{Kind: RateKind, Key: "named:key_1:search", Limit: benchRate, Cost: 1},
		{Kind: RateKind, Key: "tenant", Limit: benchRate, Cost: 1},
		{Kind: QuotaKind, Key: "tenant", Quota: maxUnits, Period: PeriodMonth, Cost: 1},
	}
}

// benchCheck runs checks of counters for 1024 groups (tenants) in turn.
func benchCheck(b *testing.B, c Checker, counters []Counter) {
	ctx := context.Background()
	groups := benchKeys(1024)
	dst := make([]CounterResult, 0, len(counters))
	for _, g := range groups { // every counter present: the steady state
		if _, err := c.Check(ctx, g, counters, dst); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		d, err := c.Check(ctx, groups[i&1023], counters, dst)
		if err != nil || !d.Allowed {
			b.Fatalf("%+v, %v", d, err)
		}
		dst = d.Results
		i++
	}
}

// BenchmarkCheck compares a check of one rate limit with a check of five counters
// (three named rate limits, the tenant's rate limit and quota), in memory and in Redis
// (one round trip each). The target is the five within 2x of the one.
func BenchmarkCheck(b *testing.B) {
	b.Run("memory/1-rate", func(b *testing.B) { benchCheck(b, NewMemoryChecker(nil, nil), benchOne()) })
	b.Run("memory/5-counters", func(b *testing.B) { benchCheck(b, NewMemoryChecker(nil, nil), benchFive()) })
	client := newRedisClient(b)
	redisChecker := func() *RedisChecker {
		r, err := NewRedisChecker(client, testPrefix(b, client), nil)
		if err != nil {
			b.Fatal(err)
		}
		return r
	}
	b.Run("redis/1-rate", func(b *testing.B) { benchCheck(b, redisChecker(), benchOne()) })
	b.Run("redis/5-counters", func(b *testing.B) { benchCheck(b, redisChecker(), benchFive()) })
}

// BenchmarkCheckRatio measures the same two checks alternately, in blocks, so that a
// change in the machine's load between them does not skew their ratio: it reports the
// ns of each and five/one, the ratio with the target of at most 2.
func BenchmarkCheckRatio(b *testing.B) {
	client := newRedisClient(b)
	impls := []struct {
		name  string
		new   func() Checker
		block int
	}{
		{"memory", func() Checker { return NewMemoryChecker(nil, nil) }, 256},
		{"redis", func() Checker {
			r, err := NewRedisChecker(client, testPrefix(b, client), nil)
			if err != nil {
				b.Fatal(err)
			}
			return r
		}, 4},
	}
	for _, impl := range impls {
		b.Run(impl.name, func(b *testing.B) {
			ctx := context.Background()
			groups := benchKeys(1024)
			one, five := impl.new(), impl.new()
			oneC, fiveC := benchOne(), benchFive()
			dst := make([]CounterResult, 0, len(fiveC))
			for _, g := range groups {
				if _, err := one.Check(ctx, g, oneC, dst); err != nil {
					b.Fatal(err)
				}
				if _, err := five.Check(ctx, g, fiveC, dst); err != nil {
					b.Fatal(err)
				}
			}
			var tOne, tFive time.Duration
			i := 0
			run := func(c Checker, counters []Counter) time.Duration {
				start := time.Now()
				for range impl.block {
					d, err := c.Check(ctx, groups[i&1023], counters, dst)
					if err != nil || !d.Allowed {
						b.Fatalf("%+v, %v", d, err)
					}
					dst = d.Results
					i++
				}
				return time.Since(start)
			}
			n := 0
			for b.Loop() {
				tOne += run(one, oneC)
				tFive += run(five, fiveC)
				n += impl.block
			}
			b.ReportMetric(float64(tOne.Nanoseconds())/float64(n), "ns/check-1")
			b.ReportMetric(float64(tFive.Nanoseconds())/float64(n), "ns/check-5")
			b.ReportMetric(float64(tFive)/float64(tOne), "ratio-5/1")
		})
	}
}

// BenchmarkCheckConcurrent runs Redis checks from 32 goroutines (as 32 connections of
// the load harness would on this 2-core machine), each check alone in its round trip
// ("solo") against checks that arrive while one is in flight sharing the next
// ("coalesced"), on one Redis server and on the test Redis Cluster (where a pipeline
// is split by node). The goroutines go through 64 tenants' counters in step, so
// concurrent checks often share counters, as the checks of a hot key do (those of one
// round trip then go as one script call); "distinct" gives each goroutine its own
// tenants, so that a round trip's checks rarely share counters. Run them in one
// invocation and compare them, not absolute figures.
func BenchmarkCheckConcurrent(b *testing.B) {
	for _, store := range []string{"redis", "cluster"} {
		var client redis.UniversalClient
		if store == "cluster" {
			client = newRedisClusterClient(b)
		} else {
			client = newRedisClient(b)
		}
		benchCheckConcurrent(b, store+"/solo", client, true, false)
		benchCheckConcurrent(b, store+"/coalesced", client, false, false)
		benchCheckConcurrent(b, store+"/coalesced-distinct", client, false, true)
	}
}

// benchCheckConcurrent runs the concurrent five-counter check on client as benchmark
// name; with distinct, each goroutine checks its own tenants.
func benchCheckConcurrent(b *testing.B, name string, client redis.UniversalClient, solo, distinct bool) {
	b.Run(name, func(b *testing.B) {
		rc, err := NewRedisChecker(client, testPrefix(b, client), nil)
		if err != nil {
			b.Fatal(err)
		}
		rc.solo = solo
		groups := benchKeys(64)
		if distinct {
			groups = benchKeys(64 * 64)
		}
		counters := benchFive()
		b.ReportAllocs()
		b.SetParallelism(16)
		var next atomic.Int64
		b.RunParallel(func(pb *testing.PB) {
			ctx := context.Background()
			dst := make([]CounterResult, 0, len(counters))
			base := 0
			if distinct { // goroutine g checks tenants 64g to 64g+63
				base = int(next.Add(1)-1) % 64 * 64
			}
			for i := 0; pb.Next(); i++ {
				d, err := rc.Check(ctx, groups[base+(i&63)], counters, dst)
				if err != nil || !d.Allowed {
					b.Fatalf("%+v, %v", d, err)
				}
				dst = d.Results
			}
		})
	})
}

// BenchmarkCheckCluster measures the five-counter check on one Redis server and on the
// test Redis Cluster alternately, in blocks, so that a change in the machine's load
// between them does not skew their ratio: it reports the ns of each and cluster/redis.
// Both are one EVALSHA round trip; the cluster client also picks the node that owns the
// check's slot.
func BenchmarkCheckCluster(b *testing.B) {
	ctx := context.Background()
	single, cluster := newRedisClient(b), newRedisClusterClient(b)
	onSingle, err := NewRedisChecker(single, testPrefix(b, single), nil)
	if err != nil {
		b.Fatal(err)
	}
	onCluster, err := NewRedisChecker(cluster, testPrefix(b, cluster), nil)
	if err != nil {
		b.Fatal(err)
	}
	groups := benchKeys(1024)
	counters := benchFive()
	dst := make([]CounterResult, 0, len(counters))
	for _, g := range groups { // every counter present: the steady state
		for _, c := range []Checker{onSingle, onCluster} {
			if _, err := c.Check(ctx, g, counters, dst); err != nil {
				b.Fatal(err)
			}
		}
	}
	const block = 4
	var tSingle, tCluster time.Duration
	i := 0
	run := func(c Checker) time.Duration {
		start := time.Now()
		for range block {
			d, err := c.Check(ctx, groups[i&1023], counters, dst)
			if err != nil || !d.Allowed {
				b.Fatalf("%+v, %v", d, err)
			}
			dst = d.Results
			i++
		}
		return time.Since(start)
	}
	n := 0
	for b.Loop() {
		tSingle += run(onSingle)
		tCluster += run(onCluster)
		n += block
	}
	b.ReportMetric(float64(tSingle.Nanoseconds())/float64(n), "ns/check-redis")
	b.ReportMetric(float64(tCluster.Nanoseconds())/float64(n), "ns/check-cluster")
	b.ReportMetric(float64(tCluster)/float64(tSingle), "ratio-cluster/redis")
}
