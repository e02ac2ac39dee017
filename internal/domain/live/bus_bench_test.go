package live

import (
	"context"
	"database/sql"
	"os"
	"syscall"
	"testing"
	"time"

	_ "github.com/lib/pq" // database/sql driver "postgres"
	"github.com/redis/go-redis/v9"

	"github.com/latchkey/latchkey/internal/data/pubsub"
	"github.com/latchkey/latchkey/internal/data/testdb"
	"github.com/latchkey/latchkey/internal/domain/usage"
)

// BenchmarkPublishAcrossInstances compares, side by side in one run, what the
// recorder's OnEvent hook costs on a shared bus: every event sent (a tenant watched
// elsewhere) over PostgreSQL NOTIFY and over Redis pub/sub, and the watched-only path
// when nobody watches. Two instances (two buses and hubs) run in the process, so the
// CPU measured includes encoding, batching, sending and the other instance
// receiving and decoding; PostgreSQL's and Redis's own CPU is not included.
//
// cpu-ns/op is the process's CPU time (user + system, getrusage) per event, measured
// until the last batch has been received; ns/op is the publisher's wall time, which
// for every-event includes waiting for the transport (the publisher is held back
// when 20,000 events are in flight, so that none is dropped).
// It needs PostgreSQL and Redis (TEST_POSTGRES_URL, TEST_REDIS_URL) and fails
// without them.
func BenchmarkPublishAcrossInstances(b *testing.B) {
	type transport struct {
		name string
		open func(b *testing.B) (pubsub.Bus, pubsub.Bus)
	}
	transports := []transport{
		{"postgres", openPostgresPair},
		{"redis", openRedisPair},
	}
	ev := usage.Event{TenantID: "ten_1", APIKeyID: "key_1", OperationType: "query", OperationName: "Viewer",
		RootFields: []string{"viewer"}, Outcome: usage.OutcomeOK, LatencyMs: 1, IP: "203.0.113.7", At: time.Now()}
	for _, tr := range transports {
		for _, mode := range []string{"every-event", "watched-only-nobody-watching"} {
			b.Run(tr.name+"/"+mode, func(b *testing.B) {
				busA, busB := tr.open(b)
				a := &Hub{Bus: busA}
				other := &Hub{Bus: busB}
				b.Cleanup(func() {
					_ = a.Shutdown(context.Background())
					_ = other.Shutdown(context.Background())
				})
				a.init()
				other.init()
				a.reg.mu.Lock()
				a.reg.allUntil = 0 // past the start-up window
				if mode == "every-event" {
					a.reg.remote[ev.TenantID] = time.Now().Add(time.Hour).UnixNano() // watched elsewhere
				}
				a.reg.mu.Unlock()

				before := busB.Stats().Received
				cpu0 := cpuTime()
				start := time.Now()
				n := 0
				for b.Loop() {
					a.Publish(ev)
					n++
					// Keep the outgoing queue (100,000) from overflowing: a publisher
					// faster than the transport would only measure dropped messages.
					if mode == "every-event" && n%10_000 == 0 {
						for uint64(n)-(busB.Stats().Received-before) > 20_000 {
							time.Sleep(100 * time.Microsecond)
						}
					}
				}
				b.StopTimer()
				publishWall := time.Since(start)
				want := uint64(0)
				if mode == "every-event" {
					want = uint64(n)
				}
				deadline := time.Now().Add(30 * time.Second)
				for busB.Stats().Received-before < want {
					if time.Now().After(deadline) {
						b.Fatalf("the other instance received %d of %d events", busB.Stats().Received-before, want)
					}
					time.Sleep(time.Millisecond)
				}
				cpu := cpuTime() - cpu0
				b.ReportMetric(float64(cpu.Nanoseconds())/float64(n), "cpu-ns/op")
				b.ReportMetric(float64(busA.Stats().Notifications)/publishWall.Seconds(), "sends/s")
			})
		}
	}
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func openPostgresPair(b *testing.B) (pubsub.Bus, pubsub.Bus) {
	u := testdb.URL(b, "postgres")
	db, err := sql.Open("postgres", u)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	open := func() pubsub.Bus {
		bus, err := pubsub.NewPostgres(context.Background(), u, db, pubsub.PostgresConfig{})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = bus.Close() })
		return bus
	}
	return open(), open()
}

func openRedisPair(b *testing.B) (pubsub.Bus, pubsub.Bus) {
	url := os.Getenv("TEST_REDIS_URL")
	if url == "" {
		url = "redis://127.0.0.1:6379/0"
	}
	opt, err := redis.ParseURL(url)
	if err != nil {
		b.Fatal(err)
	}
	client := redis.NewClient(opt)
	b.Cleanup(func() { _ = client.Close() })
	if err := client.Ping(context.Background()).Err(); err != nil {
		b.Fatalf("this benchmark needs Redis at %s: %v", url, err)
	}
	channel := "latchkey:bus:bench:" + time.Now().Format("150405.000000")
	open := func() pubsub.Bus {
		bus, err := pubsub.NewRedis(context.Background(), client, pubsub.RedisConfig{Channel: channel})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = bus.Close() })
		return bus
	}
	return open(), open()
}
