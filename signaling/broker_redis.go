package signaling

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/virtutune/link/protocol"
)

// Timing of the RedisBroker's own traffic. Not configurable: they bound how
// long a caller waits while Redis is known to be down and how fast the broker
// notices it is back.
const (
	// redisReadyTimeout bounds Ready's PING.
	redisReadyTimeout = time.Second
	// redisDegradedTimeout bounds each Redis call while the broker knows Redis
	// is unreachable, so that local delivery is not held up by dial timeouts.
	redisDegradedTimeout = 300 * time.Millisecond
	// redisProbeInterval is how often a degraded broker probes Redis.
	redisProbeInterval = 250 * time.Millisecond
	// redisOpTimeout bounds background calls (heartbeat, gap repair, unsubscribe).
	redisOpTimeout = 2 * time.Second
	// redisRepairGrace is how long an offset gap may stay open before the
	// broker reads the missing publications from the stream: a concurrent
	// local Publish usually fills it within microseconds.
	redisRepairGrace = 20 * time.Millisecond
	// redisRepairRetry is the delay between failed gap repairs.
	redisRepairRetry = 250 * time.Millisecond
	// redisPubSubHealthCheck is how long the shared PubSub connection may stay
	// silent before it is pinged, and how long the ping's answer may take
	// before the connection counts as dead and is replaced (a connection that
	// died silently, without an error, is otherwise noticed only when TCP
	// gives up, minutes later).
	redisPubSubHealthCheck = time.Second
	// redisPubSubRetry is the pause between failed attempts to read the PubSub
	// (Redis unreachable: each attempt dials again).
	redisPubSubRetry = 100 * time.Millisecond
)

// RedisConfig configures a RedisBroker. Zero values mean the defaults.
type RedisConfig struct {
	// URL locates Redis (required). Forms:
	//
	//	redis://[user:pass@]host:6379/0               one server (DB 0)
	//	rediss://host:6380/0                           one server over TLS
	//	unix:///run/redis.sock?db=0                    a Unix socket
	//	redis://host:7000?addr=host2:7001&addr=host3:7002
	//	                                               Redis Cluster (seed nodes; any addr= makes it a cluster)
	//	redis://host:7000?cluster=true                 Redis Cluster with a single seed node
	//	redis://sentinel1:26379?master_name=mymaster&addr=sentinel2:26379
	//	                                               Sentinel (the host and every addr= are sentinels)
	//
	// Other query parameters are go-redis's (dial_timeout, read_timeout,
	// pool_size, max_retries, ...); see redis.ParseURL, redis.ParseClusterURL
	// and redis.ParseFailoverURL.
	URL string
	// Prefix starts every key and channel name (default "vt:"). It must not
	// contain '{' or '}' (per-session keys use a {session} hash tag, so that
	// one Lua script touches one cluster slot).
	Prefix string
	// Instance names this instance in presence (Member.Instance) and on
	// publications (default: host name plus a random suffix). It must be
	// unique among the live instances sharing one Redis.
	Instance string
	// HistorySize bounds each session's history in messages (default 1024).
	HistorySize int
	// HistoryTTL hides history entries older than this (default 10 minutes).
	HistoryTTL time.Duration
	// PresenceTTL is how long this instance's members stay listed after it
	// stops heartbeating (it heartbeats every PresenceTTL/3; default 30s).
	PresenceTTL time.Duration
	// Logger receives the broker's logs (default: discarded).
	Logger *slog.Logger
}

// Validate reports the first setting that makes no sense.
func (c *RedisConfig) Validate() error {
	switch {
	case c.URL == "":
		return fmt.Errorf("%w: RedisConfig.URL is required", errInvalidConfig)
	case strings.ContainsAny(c.Prefix, "{}"):
		return fmt.Errorf("%w: RedisConfig.Prefix %q must not contain '{' or '}'", errInvalidConfig, c.Prefix)
	case c.HistorySize < 0:
		return fmt.Errorf("%w: RedisConfig.HistorySize must not be negative", errInvalidConfig)
	case c.HistoryTTL < 0:
		return fmt.Errorf("%w: RedisConfig.HistoryTTL must not be negative", errInvalidConfig)
	case c.PresenceTTL < 0 || (c.PresenceTTL > 0 && c.PresenceTTL < 30*time.Millisecond):
		return fmt.Errorf("%w: RedisConfig.PresenceTTL must be 0 (default) or at least 30ms", errInvalidConfig)
	}
	u, err := url.Parse(c.URL)
	if err != nil {
		return fmt.Errorf("%w: RedisConfig.URL: %v", errInvalidConfig, err)
	}
	switch u.Scheme {
	case "redis", "rediss", "unix":
	default:
		return fmt.Errorf("%w: RedisConfig.URL: scheme %q is not redis, rediss or unix", errInvalidConfig, u.Scheme)
	}
	return nil
}

func (c *RedisConfig) fill() {
	if c.Prefix == "" {
		c.Prefix = "vt:"
	}
	if c.Instance == "" {
		host, _ := os.Hostname()
		if host == "" {
			host = "vt"
		}
		var b [4]byte
		_, _ = rand.Read(b[:])
		c.Instance = host + "-" + hex.EncodeToString(b[:])
	}
	if c.HistorySize == 0 {
		c.HistorySize = 1024
	}
	if c.HistoryTTL == 0 {
		c.HistoryTTL = 10 * time.Minute
	}
	if c.PresenceTTL == 0 {
		c.PresenceTTL = 30 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// newRedisClient builds the go-redis client for a URL (see RedisConfig.URL).
func newRedisClient(raw string) (redis.UniversalClient, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, err
	}
	q := u.Query()
	switch {
	case q.Has("master_name"):
		o, err := redis.ParseFailoverURL(raw)
		if err != nil {
			return nil, err
		}
		return redis.NewFailoverClient(o), nil
	case q.Has("addr") || q.Has("cluster"):
		cluster := q.Get("cluster")
		if cluster != "" && cluster != "true" && cluster != "1" && cluster != "false" && cluster != "0" {
			return nil, fmt.Errorf("cluster=%q is not a boolean", cluster)
		}
		q.Del("cluster")
		u.RawQuery = q.Encode()
		if !q.Has("addr") && (cluster == "false" || cluster == "0") {
			o, err := redis.ParseURL(u.String())
			if err != nil {
				return nil, err
			}
			return redis.NewClient(o), nil
		}
		o, err := redis.ParseClusterURL(u.String())
		if err != nil {
			return nil, err
		}
		return redis.NewClusterClient(o), nil
	default:
		o, err := redis.ParseURL(raw)
		if err != nil {
			return nil, err
		}
		return redis.NewClient(o), nil
	}
}

// RedisBroker is the Broker of several instances sharing one Redis (a single
// server, Sentinel or Cluster). A session's registry entry, state, per-sender
// sequence numbers, history and presence live under keys with the session's
// hash tag and expire with the session. It needs Redis 6.2 or later.
//
// Publish is one round trip: a Lua script checks the sender's seq, takes the
// next session offset, updates the state, appends to the session's stream
// (its history, trimmed to about HistorySize) and PUBLISHes to the session's
// channel. The publishing instance then hands the publication to its own
// subscribers at once (it does not wait for its pub/sub echo, which it drops);
// other instances receive it over one shared PubSub connection per broker.
//
// Delivery: handlers of one session are called one at a time (from the
// publishing goroutine, the PubSub dispatcher or the gap repairer, never
// concurrently, under the session's delivery lock, so a handler must not call
// the broker), each publication exactly once and in offset order. A
// publication that arrives ahead of its predecessor is held back; the gap is
// filled from the stream (XRANGE) if it does not close by itself within
// moments; after a PubSub reconnection every subscribed session is caught up
// from the stream. Only offsets that history no longer holds are skipped (the
// hub's clients then resume from History, which reports Complete false).
//
// Outage rule: while Redis is unreachable, the broker keeps working locally.
// Publish delivers to this instance's subscribers only, with Off 0, stores
// nothing, checks no seq, and returns PublishResult{Local: true} with an
// error wrapping ErrUnavailable: the hub answers the sender with the
// unavailable error code, the client keeps the message in its outbox and
// resends it (same seq) after recovery, Redis accepts it then (it never saw
// that seq) and delivers it everywhere; local receivers drop the second copy
// by (from, seq). Cross-instance messages are therefore delayed, never stored
// twice nor lost. Send delivers locally and returns ErrUnavailable. Ready
// reports ErrUnavailable meanwhile, and calls fail fast (about 300ms) rather
// than waiting for dial timeouts. go-redis reconnects the PubSub by itself and
// restores its subscriptions; the broker then catches every session up from
// its stream, so cross-instance delivery resumes without a restart. A Redis
// restart keeps sessions only if Redis persists its data (AOF); otherwise
// sessions are gone (ErrSessionNotFound) and clients must start over.
//
// Presence: Join stores the member (with this instance's id) in a hash per
// session; this instance refreshes a heartbeat key every PresenceTTL/3, and
// Members leaves out (and removes) members whose instance stopped
// heartbeating, so an instance that dies leaves no ghosts after PresenceTTL.
//
// Close stops every goroutine the broker started and waits for them.
type RedisBroker struct {
	cfg    RedisConfig
	log    *slog.Logger
	client redis.UniversalClient
	ps     *redis.PubSub

	ctx    context.Context // canceled by Close; for background work only
	cancel context.CancelFunc
	wg     sync.WaitGroup
	closed atomic.Bool
	down   atomic.Bool
	kick   chan struct{} // wakes the heartbeat loop when Redis went down
	hbStop chan struct{} // stops the heartbeat loop (tests simulate a dead instance)
	hbOnce sync.Once

	subMu  sync.Mutex // serializes Subscribe and unsubscribe (PubSub commands)
	mu     sync.Mutex // guards groups
	groups map[string]*redisGroup

	repairMu   sync.Mutex
	repairSet  map[*redisGroup]struct{}
	repairKick chan struct{}
}

var _ Broker = (*RedisBroker)(nil)

// NewRedisBroker connects to Redis, checks it answers within ctx, and starts
// the broker's PubSub dispatcher, gap repairer and presence heartbeat; Close
// stops them. It fails with an error wrapping ErrUnavailable when Redis cannot
// be reached.
func NewRedisBroker(ctx context.Context, cfg RedisConfig) (*RedisBroker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.fill()
	client, err := newRedisClient(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("%w: RedisConfig.URL: %v", errInvalidConfig, err)
	}
	bctx, cancel := context.WithCancel(context.Background())
	b := &RedisBroker{
		cfg:        cfg,
		log:        cfg.Logger.With("component", "redis_broker", "instance", cfg.Instance),
		client:     client,
		ctx:        bctx,
		cancel:     cancel,
		kick:       make(chan struct{}, 1),
		hbStop:     make(chan struct{}),
		groups:     make(map[string]*redisGroup),
		repairSet:  make(map[*redisGroup]struct{}),
		repairKick: make(chan struct{}, 1),
	}
	if err := b.beat(ctx); err != nil {
		cancel()
		_ = client.Close()
		return nil, b.fail("connect", err)
	}
	b.ps = client.Subscribe(bctx)
	b.wg.Add(3)
	go b.dispatch()
	go b.repairLoop()
	go b.heartbeatLoop()
	return b, nil
}

// Instance returns this broker's instance id.
func (b *RedisBroker) Instance() string { return b.cfg.Instance }

// Keys. Per-session keys share the {sid} hash tag.
func (b *RedisBroker) sessKey(sid string) string   { return b.cfg.Prefix + "{" + sid + "}:s" }
func (b *RedisBroker) seqKey(sid string) string    { return b.cfg.Prefix + "{" + sid + "}:q" }
func (b *RedisBroker) streamKey(sid string) string { return b.cfg.Prefix + "{" + sid + "}:x" }
func (b *RedisBroker) memberKey(sid string) string { return b.cfg.Prefix + "{" + sid + "}:m" }
func (b *RedisBroker) channel(sid string) string   { return b.cfg.Prefix + "{" + sid + "}:c" }
func (b *RedisBroker) onceKey(k string) string     { return b.cfg.Prefix + "once:" + k }
func (b *RedisBroker) instKey(inst string) string  { return b.cfg.Prefix + "inst:" + inst }

func (b *RedisBroker) sidOf(channel string) (string, bool) {
	s, ok := strings.CutPrefix(channel, b.cfg.Prefix+"{")
	if !ok {
		return "", false
	}
	return strings.CutSuffix(s, "}:c")
}

// ---- errors and health ----

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

func redisUnavailable(err error) bool {
	var re redis.Error
	if errors.As(err, &re) {
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

// Ready implements Broker: a PING within a second; an error wrapping
// ErrUnavailable while Redis is unreachable.
func (b *RedisBroker) Ready(ctx context.Context) error {
	if b.closed.Load() {
		return ErrBrokerClosed
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
		ctx, cancel := context.WithTimeout(b.ctx, min(redisOpTimeout, interval))
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

// Close implements Broker. It stops the dispatcher, the repairer and the
// heartbeat, waits for them, removes this instance's heartbeat (its members
// disappear from Members at once) and closes the Redis client.
func (b *RedisBroker) Close() error {
	if !b.closed.CompareAndSwap(false, true) {
		return nil
	}
	b.cancel()
	_ = b.ps.Close() // ends the dispatcher's read
	b.wg.Wait()
	b.mu.Lock()
	for sid, g := range b.groups {
		g.mu.Lock()
		g.dead = true
		g.mu.Unlock()
		delete(b.groups, sid)
	}
	b.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), redisDegradedTimeout)
	_ = b.client.Del(ctx, b.instKey(b.cfg.Instance)).Err()
	cancel()
	return b.client.Close()
}

// ---- Store ----

var redisCreateScript = redis.NewScript(`
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
redis.call('HDEL', KEYS[1], 'chord', 'chord_from', 'practice')
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'uid', ARGV[2], 'created', ARGV[3], 'exp', ARGV[4])
redis.call('HSETNX', KEYS[1], 'off', 0)
redis.call('PEXPIREAT', KEYS[1], ARGV[4])
return 1`)

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

var redisExtendScript = redis.NewScript(`
local exp = redis.call('HGET', KEYS[1], 'exp')
if not exp then return 0 end
if tonumber(ARGV[1]) > tonumber(exp) then
  redis.call('HSET', KEYS[1], 'exp', ARGV[1])
  for i = 1, #KEYS do redis.call('PEXPIREAT', KEYS[i], ARGV[1]) end
end
return 1`)

// ExtendSession implements Store.
func (b *RedisBroker) ExtendSession(ctx context.Context, id string, at time.Time) error {
	if b.closed.Load() {
		return ErrBrokerClosed
	}
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	n, err := redisExtendScript.Run(ctx, b.client,
		[]string{b.sessKey(id), b.seqKey(id), b.streamKey(id), b.memberKey(id)}, at.UnixMilli()).Int()
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

var redisJoinScript = redis.NewScript(`
local exp = redis.call('HGET', KEYS[1], 'exp')
if not exp then return 0 end
if ARGV[2] == '' then
  redis.call('HDEL', KEYS[2], ARGV[1])
else
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
  redis.call('PEXPIREAT', KEYS[2], exp)
end
return 1`)

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

var redisLeaveScript = redis.NewScript(`
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return 1
end
return 0`)

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

var redisDropGhostsScript = redis.NewScript(`
for i = 1, #ARGV, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i+1] then redis.call('HDEL', KEYS[1], ARGV[i]) end
end
return 1`)

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

// ---- publications ----

// redisPub is the compact encoding of a Publication in the stream and on
// pub/sub. Off and Seq of a Publish travel in the message header (the Lua
// script assigns them), not in this JSON.
type redisPub struct {
	T  protocol.Type      `json:"t"`
	D  json.RawMessage    `json:"d,omitempty"`
	F  string             `json:"f,omitempty"`
	Q  uint64             `json:"q,omitempty"`
	To string             `json:"to,omitempty"`
	Dr []string           `json:"dr,omitempty"`
	At float64            `json:"at,omitempty"`
	C  string             `json:"c,omitempty"`
	P  *protocol.Practice `json:"p,omitempty"`
	S  string             `json:"s,omitempty"`
	I  string             `json:"i,omitempty"`
}

func encodePub(p *Publication) (string, error) {
	raw, err := json.Marshal(redisPub{T: p.Type, D: p.Data, F: p.From, Q: p.Seq, To: p.To, Dr: p.Direct,
		At: p.At, C: p.Chord, P: p.Practice, S: p.Skip, I: p.Instance})
	if err != nil {
		return "", fmt.Errorf("signaling: encode publication: %w", err)
	}
	return string(raw), nil
}

func decodePub(raw string) (*Publication, error) {
	var r redisPub
	if err := json.Unmarshal([]byte(raw), &r); err != nil {
		return nil, err
	}
	return &Publication{Type: r.T, Data: r.D, From: r.F, Seq: r.Q, To: r.To, Direct: r.Dr, At: r.At,
		Chord: r.C, Practice: r.P, Skip: r.S, Instance: r.I}, nil
}

// redisPublishScript: KEYS session, seqs, stream; ARGV seqFrom (""= not
// sequenced), seq, from, chord, practice JSON, payload, maxlen, now ms,
// channel. Returns {0, off, seq}, {1} not found, {2, seq} duplicate, {3, seq}
// skips ahead.
//
// Every redis.call costs a script about as much as the command itself again
// (arguments and reply are converted between Lua and Redis), so the script
// makes as few as it can: one HMGET, one HSET of all the session's fields,
// and PEXPIREAT only on a key it has just created. Keys already there keep
// the expiry that CreateSession and ExtendSession gave them (HSET and XADD
// keep a key's expiry), and all of a session's keys expire at the same
// millisecond, so while the session hash exists, so do the others.
var redisPublishScript = redis.NewScript(`
local s = redis.call('HMGET', KEYS[1], 'exp', 'off')
if not s[1] then return {1} end
local seq = tonumber(ARGV[2])
if ARGV[1] ~= '' then
  local last = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
  if seq == 0 then
    seq = last + 1
  elseif seq <= last then
    return {2, seq}
  elseif seq > last + 1 then
    return {3, seq}
  end
  if redis.call('HSET', KEYS[2], ARGV[1], seq) == 1 then
    redis.call('PEXPIREAT', KEYS[2], s[1]) -- a new field, perhaps a new key
  end
end
local off = (tonumber(s[2]) or 0) + 1
if ARGV[4] ~= '' and ARGV[5] ~= '' then
  redis.call('HSET', KEYS[1], 'off', off, 'chord', ARGV[4], 'chord_from', ARGV[3], 'practice', ARGV[5])
elseif ARGV[4] ~= '' then
  redis.call('HSET', KEYS[1], 'off', off, 'chord', ARGV[4], 'chord_from', ARGV[3])
elseif ARGV[5] ~= '' then
  redis.call('HSET', KEYS[1], 'off', off, 'practice', ARGV[5])
else
  redis.call('HSET', KEYS[1], 'off', off)
end
local id = off .. '-0'
if not redis.call('XADD', KEYS[3], 'NOMKSTREAM', 'MAXLEN', '~', ARGV[7], id, 'q', seq, 't', ARGV[8], 'd', ARGV[6]) then
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[7], id, 'q', seq, 't', ARGV[8], 'd', ARGV[6])
  redis.call('PEXPIREAT', KEYS[3], s[1])
end
redis.call('PUBLISH', ARGV[9], 'p' .. off .. ':' .. seq .. ':' .. ARGV[6])
return {0, off, seq}`)

// Publish implements Broker in one round trip (see the type's doc for the
// outage rule: PublishResult.Local with an error wrapping ErrUnavailable).
func (b *RedisBroker) Publish(ctx context.Context, sid string, p *Publication) (PublishResult, error) {
	if b.closed.Load() {
		return PublishResult{}, ErrBrokerClosed
	}
	p.Instance = b.cfg.Instance
	payload, err := encodePub(p)
	if err != nil {
		return PublishResult{}, err
	}
	var seqFrom, practice string
	if p.sequenced() {
		seqFrom = p.From
	}
	if p.Practice != nil {
		raw, err := json.Marshal(p.Practice)
		if err != nil {
			return PublishResult{}, fmt.Errorf("signaling: encode practice: %w", err)
		}
		practice = string(raw)
	}
	var vals []int64
	if b.down.Load() {
		// Known down: the heartbeat probe notices its return. Do not make
		// every message wait for Redis to fail again.
		err = fmt.Errorf("%w: redis is down", ErrUnavailable)
	} else {
		rctx, cancel := b.opCtx(ctx)
		vals, err = redisPublishScript.Run(rctx, b.client,
			[]string{b.sessKey(sid), b.seqKey(sid), b.streamKey(sid)},
			seqFrom, p.Seq, p.From, p.Chord, practice, payload, b.cfg.HistorySize, time.Now().UnixMilli(), b.channel(sid),
		).Int64Slice()
		cancel()
		if err != nil {
			err = b.fail("publish", err)
		}
	}
	if err != nil {
		if errors.Is(err, ErrUnavailable) {
			p.Off = 0
			if g := b.group(sid); g != nil {
				g.mu.Lock()
				g.deliver(p)
				g.mu.Unlock()
			}
			return PublishResult{Seq: p.Seq, Local: true}, err
		}
		return PublishResult{}, err
	}
	b.markUp()
	switch vals[0] {
	case 1:
		return PublishResult{}, ErrSessionNotFound
	case 2:
		return PublishResult{Seq: uint64(vals[1]), Duplicate: true}, nil
	case 3:
		return PublishResult{Seq: uint64(vals[1])}, ErrBadSequence
	}
	p.Off, p.Seq = uint64(vals[1]), uint64(vals[2])
	if g := b.group(sid); g != nil {
		g.mu.Lock()
		gap := g.offer(p, b.cfg.HistorySize, b.log)
		g.mu.Unlock()
		if gap {
			b.requestRepair(g)
		}
	}
	return PublishResult{Off: p.Off, Seq: p.Seq}, nil
}

var redisSendScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('PUBLISH', ARGV[1], ARGV[2])
return 1`)

// Send implements Broker: this instance's subscribers get p at once, other
// instances over pub/sub, at most once; nothing is stored. While Redis is
// unreachable p reaches local subscribers only and Send returns an error
// wrapping ErrUnavailable.
func (b *RedisBroker) Send(ctx context.Context, sid string, p *Publication) error {
	if b.closed.Load() {
		return ErrBrokerClosed
	}
	p.Instance = b.cfg.Instance
	payload, err := encodePub(p)
	if err != nil {
		return err
	}
	if b.down.Load() {
		err = fmt.Errorf("%w: redis is down", ErrUnavailable)
	} else {
		rctx, cancel := b.opCtx(ctx)
		n, rerr := redisSendScript.Run(rctx, b.client, []string{b.sessKey(sid)}, b.channel(sid), "e"+payload).Int()
		cancel()
		if rerr == nil && n == 0 {
			return ErrSessionNotFound
		}
		err = b.fail("send", rerr)
	}
	if err != nil && !errors.Is(err, ErrUnavailable) {
		return err
	}
	if err == nil {
		b.markUp()
	}
	if g := b.group(sid); g != nil {
		g.mu.Lock()
		g.deliver(p)
		g.mu.Unlock()
	}
	return err
}

// History implements Broker. History is exact to HistorySize messages and
// HistoryTTL even though the stream is trimmed approximately.
func (b *RedisBroker) History(ctx context.Context, sid string, since uint64) (HistoryResult, error) {
	if b.closed.Load() {
		return HistoryResult{}, ErrBrokerClosed
	}
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	pipe := b.client.TxPipeline()
	offCmd := pipe.HMGet(ctx, b.sessKey(sid), "exp", "off")
	rangeCmd := pipe.XRange(ctx, b.streamKey(sid), strconv.FormatUint(since+1, 10), "+")
	if _, err := pipe.Exec(ctx); err != nil {
		return HistoryResult{}, b.fail("history", err)
	}
	vals := offCmd.Val()
	if _, ok := redisInt(vals[0]); !ok {
		return HistoryResult{}, ErrSessionNotFound
	}
	offset, _ := redisInt(vals[1])
	res := HistoryResult{Offset: uint64(offset)}
	var floor uint64 // offsets <= floor are outside the HistorySize window
	if res.Offset > uint64(b.cfg.HistorySize) {
		floor = res.Offset - uint64(b.cfg.HistorySize)
	}
	res.Complete = since >= floor
	oldest := time.Now().Add(-b.cfg.HistoryTTL).UnixMilli()
	want := since + 1
	for _, e := range rangeCmd.Val() {
		p, at, err := redisEntry(e)
		if err != nil {
			b.log.Warn("undecodable history entry", "session", sid, "id", e.ID, "err", err)
			res.Complete = false
			continue
		}
		if p.Off < want {
			continue
		}
		if p.Off > want {
			res.Complete = false // trimmed
		}
		want = p.Off + 1
		if p.Off <= floor {
			continue
		}
		if at < oldest {
			res.Complete = false
			continue
		}
		res.Pubs = append(res.Pubs, p)
	}
	if want <= res.Offset {
		res.Complete = false
	}
	return res, nil
}

// redisEntry decodes a stream entry: the publication and its time (ms).
func redisEntry(e redis.XMessage) (*Publication, int64, error) {
	id, _, _ := strings.Cut(e.ID, "-")
	off, err := strconv.ParseUint(id, 10, 64)
	if err != nil {
		return nil, 0, err
	}
	d, _ := e.Values["d"].(string)
	p, err := decodePub(d)
	if err != nil {
		return nil, 0, err
	}
	p.Off = off
	if q, ok := redisInt(e.Values["q"]); ok {
		p.Seq = uint64(q)
	}
	at, _ := redisInt(e.Values["t"])
	return p, at, nil
}

// State implements Broker.
func (b *RedisBroker) State(ctx context.Context, sid string) (State, error) {
	if b.closed.Load() {
		return State{}, ErrBrokerClosed
	}
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	// One MULTI/EXEC: the sequence numbers are read atomically with the offset.
	var stCmd *redis.SliceCmd
	var seqCmd *redis.MapStringStringCmd
	_, err := b.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		stCmd = p.HMGet(ctx, b.sessKey(sid), "exp", "off", "chord", "chord_from", "practice")
		seqCmd = p.HGetAll(ctx, b.seqKey(sid))
		return nil
	})
	if err != nil {
		return State{}, b.fail("state", err)
	}
	vals := stCmd.Val()
	if _, ok := redisInt(vals[0]); !ok {
		return State{}, ErrSessionNotFound
	}
	var st State
	off, _ := redisInt(vals[1])
	st.Offset = uint64(off)
	st.Chord, _ = vals[2].(string)
	st.ChordFrom, _ = vals[3].(string)
	st.Seqs = make(map[string]uint64, len(seqCmd.Val()))
	for id, v := range seqCmd.Val() {
		if n, ok := redisInt(v); ok {
			st.Seqs[id] = uint64(n)
		}
	}
	if raw, _ := vals[4].(string); raw != "" {
		if err := json.Unmarshal([]byte(raw), &st.Practice); err != nil {
			return State{}, fmt.Errorf("signaling: redis state: practice: %w", err)
		}
	}
	return st, nil
}

// LastSeq implements Broker.
func (b *RedisBroker) LastSeq(ctx context.Context, sid, cid string) (uint64, error) {
	if b.closed.Load() {
		return 0, ErrBrokerClosed
	}
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	pipe := b.client.Pipeline()
	expCmd := pipe.HGet(ctx, b.sessKey(sid), "exp")
	seqCmd := pipe.HGet(ctx, b.seqKey(sid), cid)
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return 0, b.fail("last seq", err)
	}
	if errors.Is(expCmd.Err(), redis.Nil) {
		return 0, ErrSessionNotFound
	}
	n, _ := redisInt(seqCmd.Val())
	return uint64(n), nil
}

// redisInt reads an integer reply or an integer held in a string reply.
func redisInt(v any) (int64, bool) {
	switch v := v.(type) {
	case int64:
		return v, true
	case string:
		n, err := strconv.ParseInt(v, 10, 64)
		return n, err == nil
	}
	return 0, false
}

// ---- subscriptions ----

// redisGroup holds this instance's subscribers of one session and its
// delivery position. mu is the session's delivery lock: handlers run under it.
type redisGroup struct {
	sid string

	mu       sync.Mutex
	handlers map[uint64]Handler
	nextID   uint64
	ready    bool   // last is known
	last     uint64 // offset last delivered
	pending  map[uint64]*Publication
	catchup  bool // read the stream after last (PubSub (re)subscribed)
	dead     bool
}

func (g *redisGroup) deliver(p *Publication) {
	if g.dead {
		return
	}
	for _, h := range g.handlers {
		h(p)
	}
}

// offer delivers p in offset order, holding it back when it arrives early.
// It reports whether a gap is open. Called with g.mu held.
func (g *redisGroup) offer(p *Publication, maxPending int, log *slog.Logger) bool {
	if g.ready && p.Off <= g.last {
		return false
	}
	if !g.ready || p.Off != g.last+1 {
		g.pending[p.Off] = p
		if g.ready && len(g.pending) > maxPending {
			log.Warn("offset gap not filled; skipping ahead", "session", g.sid, "from", g.last+1)
			g.skipTo(g.minPending() - 1)
		}
		return g.ready && len(g.pending) > 0
	}
	g.deliver(p)
	g.last = p.Off
	g.drain()
	return len(g.pending) > 0
}

func (g *redisGroup) drain() {
	for {
		p, ok := g.pending[g.last+1]
		if !ok {
			return
		}
		delete(g.pending, p.Off)
		g.deliver(p)
		g.last = p.Off
	}
}

func (g *redisGroup) minPending() uint64 {
	var m uint64
	for off := range g.pending {
		if m == 0 || off < m {
			m = off
		}
	}
	return m
}

// skipTo gives up on offsets up to off and delivers what follows in order.
func (g *redisGroup) skipTo(off uint64) {
	if off > g.last {
		g.last = off
	}
	for o := range g.pending {
		if o <= g.last {
			delete(g.pending, o)
		}
	}
	g.drain()
}

func (b *RedisBroker) group(sid string) *redisGroup {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.groups[sid]
}

// Subscribe implements Broker. The first subscriber of a session on this
// instance subscribes the shared PubSub to the session's channel; it gets the
// publications after the session's offset at that moment. Handlers of a
// session are never called concurrently (see the type's doc).
func (b *RedisBroker) Subscribe(ctx context.Context, sid string, h Handler) (func(), error) {
	if b.closed.Load() {
		return nil, ErrBrokerClosed
	}
	b.subMu.Lock()
	defer b.subMu.Unlock()
	g := b.group(sid)
	var id uint64
	if g == nil {
		g = &redisGroup{sid: sid, handlers: make(map[uint64]Handler), pending: make(map[uint64]*Publication)}
		g.nextID++
		id = g.nextID
		g.handlers[id] = h
		b.mu.Lock()
		b.groups[sid] = g
		b.mu.Unlock()
		off, err := b.subscribeChannel(ctx, sid)
		if err != nil {
			b.mu.Lock()
			delete(b.groups, sid)
			b.mu.Unlock()
			g.mu.Lock()
			g.dead = true
			g.mu.Unlock()
			b.unsubscribeChannel(sid)
			return nil, err
		}
		g.mu.Lock()
		g.ready = true
		g.skipTo(off)
		g.catchup = true
		g.mu.Unlock()
		b.requestRepair(g)
	} else {
		g.mu.Lock()
		g.nextID++
		id = g.nextID
		g.handlers[id] = h
		g.mu.Unlock()
	}
	var once sync.Once
	return func() { once.Do(func() { b.unsubscribe(g, id) }) }, nil
}

// subscribeChannel subscribes the PubSub to sid's channel and returns the
// session's offset read after that.
func (b *RedisBroker) subscribeChannel(ctx context.Context, sid string) (uint64, error) {
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	if err := b.ps.Subscribe(ctx, b.channel(sid)); err != nil {
		return 0, b.fail("subscribe", err)
	}
	vals, err := b.client.HMGet(ctx, b.sessKey(sid), "exp", "off").Result()
	if err != nil {
		return 0, b.fail("subscribe", err)
	}
	if _, ok := redisInt(vals[0]); !ok {
		return 0, ErrSessionNotFound
	}
	off, _ := redisInt(vals[1])
	return uint64(off), nil
}

func (b *RedisBroker) unsubscribeChannel(sid string) {
	if b.closed.Load() {
		return
	}
	ctx, cancel := context.WithTimeout(b.ctx, redisOpTimeout)
	defer cancel()
	ctx, cancel2 := b.opCtx(ctx)
	defer cancel2()
	// A failure leaves nothing behind: the channel is already forgotten and a
	// reconnection does not subscribe it again; stray messages find no group.
	_ = b.ps.Unsubscribe(ctx, b.channel(sid))
}

func (b *RedisBroker) unsubscribe(g *redisGroup, id uint64) {
	b.subMu.Lock()
	defer b.subMu.Unlock()
	g.mu.Lock()
	delete(g.handlers, id)
	empty := len(g.handlers) == 0
	if empty {
		g.dead = true
	}
	g.mu.Unlock()
	if !empty {
		return
	}
	b.mu.Lock()
	mine := b.groups[g.sid] == g
	if mine {
		delete(b.groups, g.sid)
	}
	b.mu.Unlock()
	if mine {
		b.unsubscribeChannel(g.sid)
	}
}

// dispatch reads the shared PubSub and hands its messages to the sessions'
// groups until Close. It reads the connection itself rather than through
// go-redis's Channel, whose reader goroutine passes each message over a Go
// channel (and wakes its health-check goroutine): that hand-off cost every
// cross-instance message a goroutine wake-up, often on the other CPU.
//
// Health and reconnection, as Channel does them and a bit stricter: after
// redisPubSubHealthCheck without traffic it pings the connection, and if
// not even the answer arrives within another redisPubSubHealthCheck, the
// read fails as a dead connection. go-redis's PubSub drops a connection on
// any read or write error (a read that merely times out while idle is not
// one) and dials again on the next read, subscribing to every channel it
// held; the "subscribe" confirmations then make each session catch up from
// its stream.
func (b *RedisBroker) dispatch() {
	defer b.wg.Done()
	pinged := false // a ping is unanswered so far
	failures := 0
	for {
		var msg any
		var err error
		if pinged {
			// A timeout under a context deadline is not an idle timeout to
			// go-redis: it drops the connection.
			ctx, cancel := context.WithTimeout(b.ctx, redisPubSubHealthCheck)
			msg, err = b.ps.Receive(ctx)
			cancel()
		} else {
			msg, err = b.ps.ReceiveTimeout(b.ctx, redisPubSubHealthCheck)
		}
		if err != nil {
			if b.ctx.Err() != nil || errors.Is(err, redis.ErrClosed) {
				return
			}
			var ne net.Error
			switch {
			case errors.As(err, &ne) && ne.Timeout() && !pinged:
				// Idle: the connection is kept; check it is alive.
				ctx, cancel := context.WithTimeout(b.ctx, redisOpTimeout)
				perr := b.ps.Ping(ctx) // a failed write drops the connection
				cancel()
				pinged = perr == nil
				continue
			case errors.As(err, &ne) && ne.Timeout():
				b.log.Warn("redis pub/sub connection silent; reconnecting")
			}
			pinged = false
			if failures++; failures > 1 {
				select {
				case <-b.ctx.Done():
					return
				case <-time.After(redisPubSubRetry):
				}
			}
			continue
		}
		failures, pinged = 0, false
		switch m := msg.(type) {
		case *redis.Message:
			b.onMessage(m.Channel, m.Payload)
		case *redis.Subscription:
			if m.Kind != "subscribe" {
				continue
			}
			// (Re)subscribed: catch up from the stream what pub/sub may have missed.
			if sid, ok := b.sidOf(m.Channel); ok {
				if g := b.group(sid); g != nil {
					g.mu.Lock()
					g.catchup = true
					g.mu.Unlock()
					b.requestRepair(g)
				}
			}
		}
	}
}

func (b *RedisBroker) onMessage(channel, payload string) {
	sid, ok := b.sidOf(channel)
	if !ok || payload == "" {
		return
	}
	g := b.group(sid)
	if g == nil {
		return
	}
	switch payload[0] {
	case 'e':
		p, err := decodePub(payload[1:])
		if err != nil {
			b.log.Warn("undecodable message", "session", sid, "err", err)
			return
		}
		if p.Instance == b.cfg.Instance {
			return // delivered locally by Send
		}
		g.mu.Lock()
		g.deliver(p)
		g.mu.Unlock()
	case 'p':
		offS, rest, ok1 := strings.Cut(payload[1:], ":")
		seqS, raw, ok2 := strings.Cut(rest, ":")
		off, err1 := strconv.ParseUint(offS, 10, 64)
		seq, err2 := strconv.ParseUint(seqS, 10, 64)
		if !ok1 || !ok2 || err1 != nil || err2 != nil {
			b.log.Warn("undecodable message header", "session", sid)
			return
		}
		g.mu.Lock()
		old := g.ready && off <= g.last // our own echo, or caught up already
		g.mu.Unlock()
		if old {
			return
		}
		p, err := decodePub(raw)
		if err != nil {
			b.log.Warn("undecodable message", "session", sid, "err", err)
			return
		}
		p.Off, p.Seq = off, seq
		g.mu.Lock()
		gap := g.offer(p, b.cfg.HistorySize, b.log)
		g.mu.Unlock()
		if gap {
			b.requestRepair(g)
		}
	}
}

// requestRepair asks the repairer to read g's missing publications from the
// stream after redisRepairGrace.
func (b *RedisBroker) requestRepair(g *redisGroup) {
	b.repairMu.Lock()
	b.repairSet[g] = struct{}{}
	b.repairMu.Unlock()
	select {
	case b.repairKick <- struct{}{}:
	default:
	}
}

func (b *RedisBroker) repairLoop() {
	defer b.wg.Done()
	t := time.NewTimer(time.Hour)
	t.Stop()
	armed := false
	for {
		select {
		case <-b.ctx.Done():
			return
		case <-b.repairKick:
			if !armed {
				t.Reset(redisRepairGrace)
				armed = true
			}
			continue
		case <-t.C:
			armed = false
		}
		b.repairMu.Lock()
		set := b.repairSet
		b.repairSet = make(map[*redisGroup]struct{})
		b.repairMu.Unlock()
		failed := false
		for g := range set {
			if err := b.repair(g); err != nil {
				if b.ctx.Err() != nil {
					return
				}
				failed = true
				b.repairMu.Lock()
				b.repairSet[g] = struct{}{}
				b.repairMu.Unlock()
			}
		}
		if failed {
			t.Reset(redisRepairRetry)
			armed = true
		}
	}
}

// repair reads g's stream after its last delivered offset and offers what it
// finds; offsets the stream no longer holds are skipped.
func (b *RedisBroker) repair(g *redisGroup) error {
	g.mu.Lock()
	if !g.ready || g.dead || (!g.catchup && len(g.pending) == 0) {
		g.mu.Unlock()
		return nil
	}
	from := g.last + 1
	target := g.minPending()
	g.catchup = false
	g.mu.Unlock()

	ctx, cancel := context.WithTimeout(b.ctx, redisOpTimeout)
	defer cancel()
	ctx, cancel2 := b.opCtx(ctx)
	defer cancel2()
	entries, err := b.client.XRange(ctx, b.streamKey(g.sid), strconv.FormatUint(from, 10), "+").Result()
	if err != nil {
		g.mu.Lock()
		g.catchup = true
		g.mu.Unlock()
		return b.fail("repair", err)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	limit := target
	for _, e := range entries {
		p, _, err := redisEntry(e)
		if err != nil {
			continue
		}
		limit = max(limit, p.Off)
		g.offer(p, b.cfg.HistorySize, b.log)
	}
	// Whatever is still missing below limit was in the stream before limit
	// was published, so the stream no longer holds it.
	if len(g.pending) > 0 && g.minPending() <= limit {
		b.log.Warn("history no longer holds missed publications; skipping ahead",
			"session", g.sid, "from", g.last+1, "to", g.minPending()-1)
		g.skipTo(g.minPending() - 1)
	}
	return nil
}
