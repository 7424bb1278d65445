package signaling

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/virtutune/link/protocol"
)

// Keys of pairing, devices, revocations and counters. Every pairing key
// shares the {pair} hash tag, so one script can end a pairing's two codes
// atomically on a Redis Cluster too (pairing is rare: one slot is enough).
func (b *RedisBroker) pairSessKey(sid string) string { return b.cfg.Prefix + "{pair}:s:" + sid }
func (b *RedisBroker) pairPrefix() string            { return b.cfg.Prefix + "{pair}:" }
func (b *RedisBroker) devKey(sid string) string      { return b.cfg.Prefix + "{" + sid + "}:d" }
func (b *RedisBroker) revKey(sid string) string      { return b.cfg.Prefix + "{" + sid + "}:r" }
func (b *RedisBroker) countKey(k string) string      { return b.cfg.Prefix + "cnt:" + k }

// The pairing scripts (lua/, like the broker's others).
var (
	//go:embed lua/put_pairing.lua
	luaPutPairing string
	//go:embed lua/take_pairing.lua
	luaTakePairing string
	//go:embed lua/count.lua
	luaCount string
	//go:embed lua/add_device.lua
	luaAddDevice string
	//go:embed lua/remove_device.lua
	luaRemoveDevice string

	redisPutPairingScript   = redis.NewScript(luaPutPairing)
	redisTakePairingScript  = redis.NewScript(luaTakePairing)
	redisCountScript        = redis.NewScript(luaCount)
	redisAddDeviceScript    = redis.NewScript(luaAddDevice)
	redisRemoveDeviceScript = redis.NewScript(luaRemoveDevice)
)

func pairLookup(kind PairKind, key string) string {
	if kind == PairByPIN {
		return "p:" + key
	}
	return "c:" + key
}

// PutPairing implements Store.
func (b *RedisBroker) PutPairing(ctx context.Context, p Pairing) error {
	if b.closed.Load() {
		return ErrBrokerClosed
	}
	raw, err := json.Marshal(p)
	if err != nil {
		return err
	}
	ttl := time.Until(p.ExpiresAt.Add(pairingTombstone)).Milliseconds()
	if ttl < 1 {
		ttl = 1
	}
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	pre := b.pairPrefix()
	n, err := redisPutPairingScript.Run(ctx, b.client,
		[]string{b.pairSessKey(p.SessionID), pre + pairLookup(PairByCode, p.CodeKey), pre + pairLookup(PairByPIN, p.PINKey)},
		raw, p.SessionID, ttl, pre).Int()
	if err != nil {
		return b.fail("put pairing", err)
	}
	if n == 0 {
		return ErrPINTaken
	}
	return nil
}

// TakePairing implements Store.
func (b *RedisBroker) TakePairing(ctx context.Context, kind PairKind, key string, now time.Time) (Pairing, error) {
	if b.closed.Load() {
		return Pairing{}, ErrBrokerClosed
	}
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	pre := b.pairPrefix()
	v, err := redisTakePairingScript.Run(ctx, b.client, []string{pre + pairLookup(kind, key)}, pre, now.UnixMilli()).Text()
	if errors.Is(err, redis.Nil) {
		return Pairing{}, ErrPairingNotFound
	}
	if err != nil {
		return Pairing{}, b.fail("take pairing", err)
	}
	switch v {
	case "":
		return Pairing{}, ErrPairingUsed
	case "x":
		return Pairing{}, ErrPairingExpired
	}
	var p Pairing
	if err := json.Unmarshal([]byte(v), &p); err != nil {
		return Pairing{}, fmt.Errorf("signaling: stored pairing: %w", err)
	}
	return p, nil
}

// CurrentPairing implements Store.
func (b *RedisBroker) CurrentPairing(ctx context.Context, sid string) (Pairing, error) {
	if b.closed.Load() {
		return Pairing{}, ErrBrokerClosed
	}
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	v, err := b.client.Get(ctx, b.pairSessKey(sid)).Result()
	if errors.Is(err, redis.Nil) {
		return Pairing{}, ErrPairingNotFound
	}
	if err != nil {
		return Pairing{}, b.fail("current pairing", err)
	}
	var p Pairing
	if err := json.Unmarshal([]byte(v), &p); err != nil {
		return Pairing{}, fmt.Errorf("signaling: stored pairing: %w", err)
	}
	return p, nil
}

// Count implements Store.
func (b *RedisBroker) Count(ctx context.Context, key string, delta int64, window time.Duration) (int64, error) {
	if b.closed.Load() {
		return 0, ErrBrokerClosed
	}
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	if delta == 0 {
		n, err := b.client.Get(ctx, b.countKey(key)).Int64()
		if errors.Is(err, redis.Nil) {
			return 0, nil
		}
		return n, b.fail("count", err)
	}
	n, err := redisCountScript.Run(ctx, b.client, []string{b.countKey(key)}, delta, window.Milliseconds()).Int64()
	return n, b.fail("count", err)
}

// AddDevice implements Store.
func (b *RedisBroker) AddDevice(ctx context.Context, sid string, d protocol.Device, limit int) error {
	if b.closed.Load() {
		return ErrBrokerClosed
	}
	raw, err := json.Marshal(d)
	if err != nil {
		return err
	}
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	n, err := redisAddDeviceScript.Run(ctx, b.client, []string{b.sessKey(sid), b.devKey(sid)}, d.ClientID, raw, limit).Int()
	switch {
	case err != nil:
		return b.fail("add device", err)
	case n == 0:
		return ErrSessionNotFound
	case n == 2:
		return ErrTooManyDevices
	}
	return nil
}

// Devices implements Store.
func (b *RedisBroker) Devices(ctx context.Context, sid string) ([]protocol.Device, error) {
	if b.closed.Load() {
		return nil, ErrBrokerClosed
	}
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	m, err := b.client.HGetAll(ctx, b.devKey(sid)).Result()
	if err != nil {
		return nil, b.fail("devices", err)
	}
	out := make([]protocol.Device, 0, len(m))
	for _, v := range m {
		var d protocol.Device
		if json.Unmarshal([]byte(v), &d) == nil {
			out = append(out, d)
		}
	}
	sortDevices(out)
	return out, nil
}

// RemoveDevice implements Store.
func (b *RedisBroker) RemoveDevice(ctx context.Context, sid, cid string) (bool, error) {
	if b.closed.Load() {
		return false, ErrBrokerClosed
	}
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	n, err := redisRemoveDeviceScript.Run(ctx, b.client, []string{b.sessKey(sid), b.devKey(sid), b.revKey(sid)}, cid).Int()
	switch {
	case err != nil:
		return false, b.fail("remove device", err)
	case n < 0:
		return false, ErrSessionNotFound
	}
	return n == 1, nil
}

// Revoked implements Store.
func (b *RedisBroker) Revoked(ctx context.Context, sid, cid string) (bool, error) {
	if b.closed.Load() {
		return false, ErrBrokerClosed
	}
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	ok, err := b.client.SIsMember(ctx, b.revKey(sid), cid).Result()
	if err != nil {
		return false, b.fail("revoked", err)
	}
	return ok, nil
}
