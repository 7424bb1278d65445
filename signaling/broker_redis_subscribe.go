package signaling

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// redisGroup holds this instance's subscribers of one session and its
// delivery position. mu is the session's delivery lock: handlers run under it.
type redisGroup struct {
	sid  string
	args sessionArgs // the session's publish arguments (publishCommand)

	mu       sync.Mutex
	handlers map[uint64]Handler
	nextID   uint64
	order    offsetOrder // releases to deliver, in offset order
	catchup  bool        // read the stream after order.last (PubSub (re)subscribed)
	dead     bool
}

func newRedisGroup(sid string, window int) *redisGroup {
	g := &redisGroup{sid: sid, handlers: make(map[uint64]Handler)}
	g.order = newOffsetOrder(window, g.deliver)
	return g
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
func (g *redisGroup) offer(p *Publication, log *slog.Logger) bool {
	from := g.order.next()
	gap, skipped := g.order.offer(p)
	if skipped {
		log.Warn("offset gap not filled; skipping ahead", "session", g.sid, "from", from)
	}
	return gap
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
		g = newRedisGroup(sid, b.cfg.HistorySize)
		g.args = b.sessionArgs(sid)
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
		g.order.start(off)
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

// subscribeChannel subscribes the PubSub to this instance's channel of sid,
// then adds the instance to the session's listeners and reads the session's
// offset in one script (lua/subscribe.lua): what is published after that
// offset comes over the channel.
func (b *RedisBroker) subscribeChannel(ctx context.Context, sid string) (uint64, error) {
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	if err := b.ps.Subscribe(ctx, b.channel(sid)); err != nil {
		return 0, b.fail("subscribe", err)
	}
	vals, err := redisSubscribeScript.Run(ctx, b.client, []string{b.sessKey(sid)}, b.cfg.Instance).Int64Slice()
	if err != nil {
		return 0, b.fail("subscribe", err)
	}
	if len(vals) < 2 || vals[0] != 1 {
		return 0, ErrSessionNotFound
	}
	return uint64(vals[1]), nil
}

// unsubscribeChannel takes the instance out of sid's listeners and
// unsubscribes its channel.
func (b *RedisBroker) unsubscribeChannel(sid string) {
	if b.closed.Load() {
		return
	}
	ctx, cancel := context.WithTimeout(b.ctx, redisOpTimeout)
	defer cancel()
	ctx, cancel2 := b.opCtx(ctx)
	defer cancel2()
	// Failures leave little behind: a listener entry left over (this
	// instance down, or Redis unreachable now) costs each publication of
	// the session one PUBLISH to a channel nobody reads, until the session
	// expires or this instance listens again; the channel is forgotten and
	// a reconnection does not subscribe it again; stray messages find no
	// group.
	_ = redisUnsubscribeScript.Run(ctx, b.client, []string{b.sessKey(sid)}, b.cfg.Instance).Err()
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
		old := g.order.seen(off) // caught up already (gap repair)
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
		gap := g.offer(p, b.log)
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
	if !g.order.started || g.dead || (!g.catchup && g.order.held() == 0) {
		g.mu.Unlock()
		return nil
	}
	from := g.order.next()
	target := g.order.minHeld()
	relisten := g.catchup
	g.catchup = false
	g.mu.Unlock()

	ctx, cancel := context.WithTimeout(b.ctx, redisOpTimeout)
	defer cancel()
	ctx, cancel2 := b.opCtx(ctx)
	defer cancel2()
	var err error
	if relisten {
		// (Re)subscribed: put this instance back among the session's
		// listeners first (a Redis that restarted may have lost it), so
		// that what the stream read below does not hold comes over pub/sub.
		err = redisSubscribeScript.Run(ctx, b.client, []string{b.sessKey(g.sid)}, b.cfg.Instance).Err()
	}
	var entries []redis.XMessage
	if err == nil {
		entries, err = b.client.XRange(ctx, b.streamKey(g.sid), strconv.FormatUint(from, 10), "+").Result()
	}
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
		g.offer(p, b.log)
	}
	// Whatever is still missing below limit was in the stream before limit
	// was published, so the stream no longer holds it.
	if g.order.held() > 0 && g.order.minHeld() <= limit {
		b.log.Warn("history no longer holds missed publications; skipping ahead",
			"session", g.sid, "from", g.order.next(), "to", g.order.minHeld()-1)
		g.order.skipTo(g.order.minHeld() - 1)
	}
	return nil
}
