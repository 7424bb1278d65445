package signaling

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/virtutune/link/protocol"
)

// CreateSession implements Store. Re-creating an existing id resets its
// state, history and presence but keeps its offset counter, so offsets of an
// id never go backwards.
func (b *RedisBroker) CreateSession(ctx context.Context, s SessionInfo) error {
	if b.closed.Load() {
		return ErrBrokerClosed
	}
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	err := redisCreateScript.Run(ctx, b.client,
		[]string{b.sessKey(s.ID), b.seqKey(s.ID), b.streamKey(s.ID), b.memberKey(s.ID)},
		s.ID, s.UserID, s.CreatedAt.UnixMilli(), s.ExpiresAt.UnixMilli()).Err()
	return b.fail("create session", err)
}

// Session implements Store.
func (b *RedisBroker) Session(ctx context.Context, id string) (SessionInfo, error) {
	if b.closed.Load() {
		return SessionInfo{}, ErrBrokerClosed
	}
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	vals, err := b.client.HMGet(ctx, b.sessKey(id), "uid", "created", "exp").Result()
	if err != nil {
		return SessionInfo{}, b.fail("session", err)
	}
	exp, ok := redisInt(vals[2])
	if !ok || time.Now().UnixMilli() >= exp {
		return SessionInfo{}, ErrSessionNotFound
	}
	uid, _ := redisInt(vals[0])
	created, _ := redisInt(vals[1])
	return SessionInfo{ID: id, UserID: uid, CreatedAt: time.UnixMilli(created), ExpiresAt: time.UnixMilli(exp)}, nil
}

// ExtendSession implements Store.
func (b *RedisBroker) ExtendSession(ctx context.Context, id string, at time.Time) error {
	if b.closed.Load() {
		return ErrBrokerClosed
	}
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	n, err := redisExtendScript.Run(ctx, b.client,
		[]string{b.sessKey(id), b.seqKey(id), b.streamKey(id), b.memberKey(id), b.devKey(id), b.revKey(id)},
		at.UnixMilli()).Int()
	if err != nil {
		return b.fail("extend session", err)
	}
	if n == 0 {
		return ErrSessionNotFound
	}
	return nil
}

// UseOnce implements Store (SET NX PX). A ttl under a millisecond counts as one.
func (b *RedisBroker) UseOnce(ctx context.Context, key string, ttl time.Duration) (bool, error) {
	if b.closed.Load() {
		return false, ErrBrokerClosed
	}
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	ok, err := b.client.SetNX(ctx, b.onceKey(key), 1, max(ttl, time.Millisecond)).Result()
	if err != nil {
		return false, b.fail("use once", err)
	}
	return ok, nil
}

// Join implements Store. m.Instance defaults to this broker's instance.
func (b *RedisBroker) Join(ctx context.Context, sid string, m protocol.Member) error {
	if m.Instance == "" {
		m.Instance = b.cfg.Instance
	}
	raw, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("signaling: redis join: %w", err)
	}
	return b.presence(ctx, "join", sid, m.ClientID, string(raw))
}

// Admit implements Store with one script: the role's members are counted
// and the newcomer stored atomically, so simultaneous joins on any number of
// instances never exceed limit. (Members of instances that died are still
// counted until a Members call drops them; the hub calls Members first.)
func (b *RedisBroker) Admit(ctx context.Context, sid string, m protocol.Member, limit int) error {
	if b.closed.Load() {
		return ErrBrokerClosed
	}
	if m.Instance == "" {
		m.Instance = b.cfg.Instance
	}
	raw, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("signaling: redis admit: %w", err)
	}
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	n, err := redisAdmitScript.Run(ctx, b.client, []string{b.sessKey(sid), b.memberKey(sid)}, m.ClientID, string(raw), m.Role, limit).Int()
	if err != nil {
		return b.fail("admit", err)
	}
	switch n {
	case 0:
		return ErrSessionNotFound
	case 2:
		return ErrSessionFull
	}
	return nil
}

// Leave implements Store: one script removes the member only if its stored
// presence is still exactly m's.
func (b *RedisBroker) Leave(ctx context.Context, sid string, m protocol.Member) (bool, error) {
	if b.closed.Load() {
		return false, ErrBrokerClosed
	}
	if m.Instance == "" {
		m.Instance = b.cfg.Instance
	}
	raw, err := json.Marshal(m)
	if err != nil {
		return false, fmt.Errorf("signaling: redis leave: %w", err)
	}
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	n, err := redisLeaveScript.Run(ctx, b.client, []string{b.memberKey(sid)}, m.ClientID, string(raw)).Int()
	if err != nil {
		return false, b.fail("leave", err)
	}
	return n == 1, nil
}

func (b *RedisBroker) presence(ctx context.Context, op, sid, cid, val string) error {
	if b.closed.Load() {
		return ErrBrokerClosed
	}
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	n, err := redisJoinScript.Run(ctx, b.client, []string{b.sessKey(sid), b.memberKey(sid)}, cid, val).Int()
	if err != nil {
		return b.fail(op, err)
	}
	if n == 0 {
		return ErrSessionNotFound
	}
	return nil
}

// Members implements Store: oldest first, without the members of instances
// whose heartbeat expired (those are removed).
func (b *RedisBroker) Members(ctx context.Context, sid string) ([]protocol.Member, error) {
	if b.closed.Load() {
		return nil, ErrBrokerClosed
	}
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	pipe := b.client.Pipeline()
	expCmd := pipe.HGet(ctx, b.sessKey(sid), "exp")
	allCmd := pipe.HGetAll(ctx, b.memberKey(sid))
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, b.fail("members", err)
	}
	if errors.Is(expCmd.Err(), redis.Nil) {
		return nil, ErrSessionNotFound
	}
	all := allCmd.Val()
	out := make([]protocol.Member, 0, len(all))
	raws := make([]string, 0, len(all))
	others := map[string]*redis.IntCmd{}
	for _, raw := range all {
		var m protocol.Member
		if json.Unmarshal([]byte(raw), &m) != nil {
			continue
		}
		out = append(out, m)
		raws = append(raws, raw)
		if m.Instance != b.cfg.Instance {
			others[m.Instance] = nil
		}
	}
	if len(others) > 0 {
		pipe := b.client.Pipeline()
		for inst := range others {
			others[inst] = pipe.Exists(ctx, b.instKey(inst))
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return nil, b.fail("members", err)
		}
		live := out[:0]
		var ghosts []any
		for i, m := range out {
			if c := others[m.Instance]; c != nil && c.Val() == 0 {
				ghosts = append(ghosts, m.ClientID, raws[i])
				continue
			}
			live = append(live, m)
		}
		out = live
		if len(ghosts) > 0 {
			// Best effort: a failure only leaves the ghosts for the next call to filter.
			_ = redisDropGhostsScript.Run(ctx, b.client, []string{b.memberKey(sid)}, ghosts...).Err()
		}
	}
	sortMembers(out)
	return out, nil
}
