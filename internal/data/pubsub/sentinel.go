package pubsub

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// followSentinel listens for +switch-master announcements of opt's master on every
// sentinel of opt (duplicates are ignored) and, for each switch, moves the bus's
// subscription to the new master and runs the OnReconnect callbacks again
// SentinelSettle later (see RedisConfig.Sentinel). It returns when ctx ends.
func (b *redisBus) followSentinel(ctx context.Context, opt *redis.FailoverOptions) {
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
						default: // switches already waiting: this one follows them
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
			slog.Info("pubsub: Redis Sentinel switched master; moving the subscription", "master", master)
			if err := b.resubscribe(ctx); err != nil {
				slog.Warn("pubsub: the subscription stays on the old master", "err", err)
			}
			settle = time.After(SentinelSettle)
		case <-settle:
			settle = nil
			b.reconnect.run()
		}
	}
}
