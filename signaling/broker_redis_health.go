package signaling

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// fail translates a driver error of operation op. Unreachable Redis (network
// errors, timeouts, LOADING, READONLY, CLUSTERDOWN, ...) becomes an error
// wrapping ErrUnavailable and marks the broker degraded.
func (b *RedisBroker) fail(op string, err error) error {
	if err == nil {
		return nil
	}
	if b.closed.Load() && errors.Is(err, redis.ErrClosed) {
		return ErrBrokerClosed
	}
	if errors.Is(err, context.Canceled) {
		return fmt.Errorf("signaling: redis %s: %w", op, err)
	}
	if redisUnavailable(err) {
		b.markDown(op, err)
		return fmt.Errorf("%w: redis %s: %w", ErrUnavailable, op, err)
	}
	return fmt.Errorf("signaling: redis %s: %w", op, err)
}

// redisAnswered reports whether err is Redis's own reply (a script's error,
// NOSCRIPT, LOADING…), not a failure to reach it: the connection it came
// over is in step.
func redisAnswered(err error) bool {
	var re redis.Error
	return errors.As(err, &re)
}

func redisUnavailable(err error) bool {
	if redisAnswered(err) {
		return redis.IsLoadingError(err) || redis.IsReadOnlyError(err) || redis.IsClusterDownError(err) ||
			redis.IsTryAgainError(err) || redis.IsMasterDownError(err) || redis.IsMaxClientsError(err) ||
			redis.HasErrorPrefix(err, "BUSY")
	}
	return true // network, timeout, pool or closed-client errors
}

func (b *RedisBroker) markDown(op string, err error) {
	if !b.down.Swap(true) {
		b.log.Warn("redis unreachable: delivering locally only until it is back", "op", op, "err", err)
		select {
		case b.kick <- struct{}{}:
		default:
		}
	}
}

func (b *RedisBroker) markUp() {
	if b.down.Swap(false) {
		b.log.Info("redis reachable again")
		select {
		case b.kick <- struct{}{}:
		default:
		}
	}
}

// opCtx bounds a call tightly while Redis is known to be down.
func (b *RedisBroker) opCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	if b.down.Load() {
		return context.WithTimeout(ctx, redisDegradedTimeout)
	}
	return ctx, func() {}
}

// Ready implements Broker: an error wrapping ErrUnavailable at once while
// the broker is degraded (a call failed and no probe has succeeded since:
// the heartbeat probes every redisProbeInterval), else a PING within
// redisReadyTimeout.
func (b *RedisBroker) Ready(ctx context.Context) error {
	if b.closed.Load() {
		return ErrBrokerClosed
	}
	if b.down.Load() {
		return fmt.Errorf("%w: redis did not answer; probing", ErrUnavailable)
	}
	ctx, cancel := context.WithTimeout(ctx, redisReadyTimeout)
	defer cancel()
	if err := b.client.Ping(ctx).Err(); err != nil {
		return b.fail("ping", err)
	}
	b.markUp()
	return nil
}

// beat refreshes this instance's heartbeat key.
func (b *RedisBroker) beat(ctx context.Context) error {
	return b.client.Set(ctx, b.instKey(b.cfg.Instance), time.Now().UnixMilli(), b.cfg.PresenceTTL).Err()
}

// heartbeatLoop refreshes the heartbeat every PresenceTTL/3, and probes Redis
// every redisProbeInterval while it is down.
func (b *RedisBroker) heartbeatLoop() {
	defer b.wg.Done()
	interval := b.cfg.PresenceTTL / 3
	t := time.NewTimer(interval)
	defer t.Stop()
	for {
		select {
		case <-b.ctx.Done():
			return
		case <-b.hbStop:
			return
		case <-b.kick:
		case <-t.C:
		}
		timeout := min(redisOpTimeout, interval)
		if b.down.Load() {
			timeout = redisDegradedTimeout // a probe: answer soon or try again
		}
		ctx, cancel := context.WithTimeout(b.ctx, timeout)
		err := b.beat(ctx)
		cancel()
		if err != nil {
			if b.ctx.Err() != nil {
				return
			}
			_ = b.fail("heartbeat", err)
		} else {
			b.markUp()
		}
		next := interval
		if b.down.Load() {
			next = redisProbeInterval
		}
		if !t.Stop() {
			select {
			case <-t.C:
			default:
			}
		}
		t.Reset(next)
	}
}

// stopHeartbeat stops refreshing this instance's heartbeat without closing
// the broker: its members become ghosts that others drop after PresenceTTL.
func (b *RedisBroker) stopHeartbeat() { b.hbOnce.Do(func() { close(b.hbStop) }) }
