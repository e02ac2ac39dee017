package ratelimit

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

func benchKeys(n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = "lk_live_" + strconv.Itoa(i) + "_0123456789abcdef"
	}
	return keys
}

var benchLimit = Limit{Rate: 1000, Period: time.Second}

func BenchmarkMemoryAllow(b *testing.B) {
	m := NewMemory(nil)
	ctx := context.Background()
	keys := benchKeys(1024)
	for _, k := range keys {
		m.Allow(ctx, k, benchLimit, 1)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		m.Allow(ctx, keys[i&1023], benchLimit, 1)
		i++
	}
}

func BenchmarkMemoryAllowParallel(b *testing.B) {
	m := NewMemory(nil)
	ctx := context.Background()
	keys := benchKeys(1024)
	for _, k := range keys {
		m.Allow(ctx, k, benchLimit, 1)
	}
	var worker atomic.Int64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := int(worker.Add(1)) * 7919
		for pb.Next() {
			m.Allow(ctx, keys[i&1023], benchLimit, 1)
			i++
		}
	})
}

func BenchmarkRedisAllow(b *testing.B) {
	client := newRedisClient(b)
	rl := NewRedis(client, testPrefix(b, client))
	ctx := context.Background()
	keys := benchKeys(1024)
	if _, err := rl.Allow(ctx, keys[0], benchLimit, 1); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, err := rl.Allow(ctx, keys[i&1023], benchLimit, 1); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

func BenchmarkRedisAllowParallel(b *testing.B) {
	client := newRedisClient(b)
	rl := NewRedis(client, testPrefix(b, client))
	ctx := context.Background()
	keys := benchKeys(1024)
	if _, err := rl.Allow(ctx, keys[0], benchLimit, 1); err != nil {
		b.Fatal(err)
	}
	var worker atomic.Int64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := int(worker.Add(1)) * 7919
		for pb.Next() {
			if _, err := rl.Allow(ctx, keys[i&1023], benchLimit, 1); err != nil {
				b.Error(err)
				return
			}
			i++
		}
	})
}
