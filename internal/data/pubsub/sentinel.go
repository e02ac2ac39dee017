package pubsub

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// SentinelCheck is how often the bus also asks the sentinels which master they name
// (see RedisConfig.Sentinel): a switch announced while its connection to the
// sentinels was down, or one whose move failed, is acted on at the next check.
const SentinelCheck = time.Second

// followSentinel listens for +switch-master announcements of opt's master on every
// sentinel of opt (duplicates are ignored) and asks them every SentinelCheck which
// master they name; for each switch it moves the bus's subscription to the new
// master, which runs the OnReconnect callbacks, and runs them again SentinelSettle
// later (see RedisConfig.Sentinel). known is the master the subscription is on, or ""
// to take the one the sentinels name at the start. It returns when ctx ends.
func (b *redisBus) followSentinel(ctx context.Context, opt *redis.FailoverOptions, known string) {
	sentinels := make([]*redis.SentinelClient, 0, len(opt.SentinelAddrs))
	defer func() {
		for _, s := range sentinels {
			_ = s.Close()
		}
	}()
	switches := make(chan string, 8)
	var listeners sync.WaitGroup
	defer listeners.Wait()
	for _, addr := range opt.SentinelAddrs {
		sentinel := redis.NewSentinelClient(&redis.Options{Addr: addr, Username: opt.SentinelUsername,
			Password: opt.SentinelPassword, TLSConfig: opt.TLSConfig, DialTimeout: opt.DialTimeout})
		sentinels = append(sentinels, sentinel)
		ps := sentinel.Subscribe(ctx, "+switch-master")
		listeners.Add(1)
		go func() {
			defer listeners.Done()
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
						case switches <- net.JoinHostPort(f[3], f[4]):
						default: // switches already waiting; the next check sees the last one
						}
					}
				}
			}
		}()
	}

	last := known
	if last == "" {
		last = namedMaster(ctx, sentinels, opt.MasterName)
	}
	check := time.NewTicker(SentinelCheck)
	defer check.Stop()
	var settle <-chan time.Time
	move := func(master string) {
		slog.Info("pubsub: Redis Sentinel switched master; moving the subscription", "master", master)
		if err := b.resubscribe(ctx); err != nil {
			slog.Warn("pubsub: the subscription stays on the old master until the next check", "err", err)
			return
		}
		last = master
		settle = time.After(SentinelSettle)
	}
	for {
		select {
		case <-ctx.Done():
			return
		case master := <-switches:
			if master != last {
				move(master)
			}
		case <-check.C:
			switch master := namedMaster(ctx, sentinels, opt.MasterName); {
			case master == "" || master == last:
			case last == "":
				last = master // nothing known to compare with
			default:
				move(master)
			}
		case <-settle:
			settle = nil
			b.reconnect.run()
		}
	}
}

// namedMaster asks the sentinels in turn for the address of the master called name,
// and returns the first answer ("" when none answers within SentinelCheck).
func namedMaster(ctx context.Context, sentinels []*redis.SentinelClient, name string) string {
	for _, s := range sentinels {
		qctx, cancel := context.WithTimeout(ctx, SentinelCheck)
		a, err := s.GetMasterAddrByName(qctx, name).Result()
		cancel()
		if err == nil && len(a) == 2 {
			return net.JoinHostPort(a[0], a[1])
		}
	}
	return ""
}
