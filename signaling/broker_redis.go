package signaling

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Timing of the RedisBroker's own traffic. Not configurable: they bound how
// long a caller waits while Redis is known to be down and how fast the broker
// notices it is back.
const (
	// redisReadyTimeout bounds Ready's PING.
	redisReadyTimeout = 500 * time.Millisecond
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

// RedisBroker is the Broker of several instances sharing one Redis (a single
// server, Sentinel or Cluster). A session's registry entry, state, per-sender
// sequence numbers, history and presence live under keys with the session's
// hash tag and expire with the session. It needs Redis 6.2 or later.
//
// Publish is one round trip: a Lua script checks the sender's seq, takes the
// next session offset, updates the state, appends to the session's stream
// (its history, trimmed to about HistorySize) and PUBLISHes it to the
// channels of the other instances listening to the session. The publishing
// instance hands the publication to its own subscribers at once, from the
// script's reply (no pub/sub message comes back to it); the other instances
// receive it over one shared PubSub connection per broker.
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

	pubs    pubLine     // the publish slots and the calls waiting (broker_redis_batch.go)
	pubArgs publishArgs // publishCommand's constant arguments
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
		return nil, fmt.Errorf("%w: RedisConfig.URL: %v", ErrInvalidConfig, err)
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
		pubArgs: publishArgs{sha: redisPublishScript.Hash(), maxLen: cfg.HistorySize, maxSeq: cfg.MaxSeqClients,
			retention: cfg.SeqRetention.Milliseconds(), origin: cfg.Instance},
	}
	b.pubs.init()
	if err := b.beat(ctx); err != nil {
		cancel()
		_ = client.Close()
		return nil, b.fail("connect", err)
	}
	b.ps = client.Subscribe(bctx)
	b.wg.Add(3 + redisPipeliners)
	go b.dispatch()
	go b.repairLoop()
	go b.heartbeatLoop()
	for range redisPipeliners {
		go b.pipeliner()
	}
	return b, nil
}

// Instance returns this broker's instance id.
func (b *RedisBroker) Instance() string { return b.cfg.Instance }

// Keys. Per-session keys share the {sid} hash tag. The session hash holds
// the session's state, its senders' last seqs and its listeners (the fields
// are listed in lua/publish.lua), so that a publish reads them in one HMGET
// and writes them in one HSET. seqKey is where releases before that layout
// kept the senders' seqs: publish.lua, State and LastSeq still read it for a
// sender the hash does not know, so that a session that lived through an
// upgrade keeps refusing duplicates (publish.lua moves such a sender into the
// hash); nothing adds to it any more.
func (b *RedisBroker) sessKey(sid string) string   { return b.cfg.Prefix + "{" + sid + "}:s" }
func (b *RedisBroker) seqKey(sid string) string    { return b.cfg.Prefix + "{" + sid + "}:q" }
func (b *RedisBroker) streamKey(sid string) string { return b.cfg.Prefix + "{" + sid + "}:x" }
func (b *RedisBroker) memberKey(sid string) string { return b.cfg.Prefix + "{" + sid + "}:m" }
func (b *RedisBroker) onceKey(k string) string     { return b.cfg.Prefix + "once:" + k }
func (b *RedisBroker) instKey(inst string) string  { return b.cfg.Prefix + "inst:" + inst }

// Channels. Each instance listening to a session has a channel of its own
// for it, <prefix>{sid}:c:<instance>: the scripts publish to the channels of
// the instances in the session's listeners (the session hash's field ls) but
// the publisher's, so an instance never reads back what it published itself.
func (b *RedisBroker) chanPrefix(sid string) string { return b.cfg.Prefix + "{" + sid + "}:c:" }
func (b *RedisBroker) channel(sid string) string    { return b.chanPrefix(sid) + b.cfg.Instance }

func (b *RedisBroker) sidOf(channel string) (string, bool) {
	s, ok := strings.CutPrefix(channel, b.cfg.Prefix+"{")
	if !ok {
		return "", false
	}
	sid, _, ok := strings.Cut(s, "}:c:")
	return sid, ok
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
