package app

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/latchkey/latchkey/internal/data/pubsub"
)

// sentinelSettle is how long after a master switch the key cache is dropped once more:
// by then every instance's client has heard of the switch from the sentinels, so an
// invalidation one of them published on the demoted master just before is covered.
const sentinelSettle = 2 * time.Second

// followSentinel keeps the instance bus on the master Redis Sentinel names. go-redis
// sends commands to a promoted master at once but leaves open subscriptions where they
// are, so the bus would go on listening to the demoted master and miss what is
// published during its resynchronization. followSentinel listens for the sentinels'
// +switch-master announcements of REDIS_SENTINEL_URL's master (on every sentinel of the
// URL; duplicates are ignored) and then moves the bus's subscription to the new master
// (whose confirmation drops the key cache, as after any reconnection) and drops the
// key cache once more sentinelSettle later. It returns when ctx ends.
func (a *App) followSentinel(ctx context.Context, rawURL string) {
	resub, ok := a.Bus.(pubsub.Resubscriber)
	if !ok {
		return // SQLite: an in-process bus
	}
	opt, err := redis.ParseFailoverURL(rawURL)
	if err != nil {
		return // refused at start already
	}
	switches := make(chan string, 8)
	var listeners sync.WaitGroup
	defer listeners.Wait()
	for _, addr := range opt.SentinelAddrs {
		sentinel := redis.NewSentinelClient(&redis.Options{Addr: addr, Username: opt.SentinelUsername,
			Password: opt.SentinelPassword, TLSConfig: opt.TLSConfig, DialTimeout: opt.DialTimeout})
		ps := sentinel.Subscribe(ctx, "+switch-master")
		listeners.Add(1)
		go func() {
			defer listeners.Done()
			defer sentinel.Close()
			defer ps.Close()
			msgs := ps.Channel()
			for {
				select {
				case <-ctx.Done():
					return
				case m, ok := <-msgs:
					if !ok {
						return
					}
					// "<master name> <old ip> <old port> <new ip> <new port>"
					f := strings.Fields(m.Payload)
					if len(f) == 5 && f[0] == opt.MasterName {
						select {
						case switches <- f[3] + ":" + f[4]:
						default: // one pending switch is enough
						}
					}
				}
			}
		}()
	}
	last := ""
	var settle <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case master := <-switches:
			if master == last {
				continue
			}
			last = master
			slog.Info("redis sentinel: master switched; moving the instance bus", "master", master)
			if err := resub.Resubscribe(ctx); err != nil {
				slog.Warn("redis sentinel: the instance bus stays on the old master", "err", err)
			}
			settle = time.After(sentinelSettle)
		case <-settle:
			settle = nil
			a.Verifier.InvalidateLocal("")
		}
	}
}
