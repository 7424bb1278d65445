package signaling

import (
	"context"
	"errors"
	"net"
	"sync"

	"github.com/redis/go-redis/v9"
)

// Publishing through Redis in pipelines. Every Publish is one run of
// lua/publish.lua; run one by one, each costs its own round trip, its own
// write and read on a pooled connection, and a goroutine parked on the
// reply, on both sides of the socket. So publishes share at most
// redisPipeliners slots:
//
//   - A publish that finds a slot free and nobody waiting runs its script
//     itself, on its own goroutine: at low rates (most publishes) that is a
//     plain round trip, with no hand-off to another goroutine and back (two
//     wake-ups, often on the other CPU, which cost more than the round trip's
//     own work).
//   - Otherwise it waits in line, and a pipeliner goroutine takes what is
//     waiting (up to redisBatchMax calls, any sessions) as one pipeline, one
//     write and one read for all, and hands every caller its reply. Nobody
//     waits for a batch to fill: under load the batches grow by themselves.
//
// The script stays atomic per call, and the delivery contract is the same:
// a sender's publishes are sequential (each waits for its reply), and
// publishes of one session from different senders were concurrent before
// too; Redis runs each script whole, in the order it receives them.
const (
	// redisPipeliners is how many publishes or pipelines can be in flight
	// at once.
	redisPipeliners = 2
	// redisBatchMax bounds the calls of one pipeline.
	redisBatchMax = 128
)

// Each slot has a connection of its own (a *redis.Conn taken from the
// client, on a single-node or Sentinel client; a Cluster client's pool
// otherwise): a command through the client's pool pays for a health check
// when it takes an idle connection (a MSG_PEEK read, one more system call
// per publish, and three allocations), and the slot's holder is the only
// user of its connection anyway. A slot's connection is dropped after any
// error that is not Redis's own answer (a timeout, a broken connection:
// it may hold an unread reply) and taken again, health-checked, from the
// pool on its next use. A connection that broke without a timeout (Redis
// restarted or failed over while it sat idle) is retried once at once on a
// fresh one, as go-redis retries a command on its pool: a script that did
// run before the connection broke runs again and finds its seq taken (a
// duplicate), exactly as with go-redis's own retry.
type pubCall struct {
	args []any // the EVALSHA command, whole (publishCommand)
	vals []int64
	err  error
	done chan struct{}
}

var pubCallPool = sync.Pool{New: func() any { return &pubCall{done: make(chan struct{}, 1)} }}

// pubLine is the broker's publish slots and the calls waiting for one. Its
// length is bounded by the callers: each waits for its own call, so at most
// one call per connection is in line.
type pubLine struct {
	mu      sync.Mutex
	free    []int      // the slots not taken (inline publishes and pipelines in flight take one)
	waiting []*pubCall // in arrival order
	kick    chan struct{}
	conns   [redisPipeliners]pubConn // a slot's connection; only the slot's holder touches it
}

// pubConn is what a slot publishes through: a connection of its own, or the
// client.
type pubConn interface {
	Do(ctx context.Context, args ...any) *redis.Cmd
	Pipeline() redis.Pipeliner
	redis.Scripter
}

func (l *pubLine) init() {
	l.kick = make(chan struct{}, 1)
	for i := range redisPipeliners {
		l.free = append(l.free, i)
	}
}

// slotConn returns slot i's connection. Called by the slot's holder.
func (b *RedisBroker) slotConn(i int) pubConn {
	l := &b.pubs
	if l.conns[i] == nil {
		if c, ok := b.client.(*redis.Client); ok {
			l.conns[i] = c.Conn()
		} else {
			l.conns[i] = b.client
		}
	}
	return l.conns[i]
}

// slotDone drops slot i's connection after err unless Redis itself answered
// with it, and reports whether the call is worth one retry on a fresh
// connection (a connection of the slot's own broke without a timeout).
// Called by the slot's holder.
func (b *RedisBroker) slotDone(i int, err error) (retry bool) {
	if err == nil || redisAnswered(err) {
		return false
	}
	l := &b.pubs
	c, own := l.conns[i].(*redis.Conn)
	if own {
		_ = c.Close()
	}
	l.conns[i] = nil
	var ne net.Error
	timeout := errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) || (errors.As(err, &ne) && ne.Timeout())
	return own && !timeout && b.ctx.Err() == nil
}

// onSlot runs call on slot i's connection, and once more on a fresh one when
// slotDone says so; call reports the connection's failure, if any.
func (b *RedisBroker) onSlot(i int, call func(pubConn) error) {
	if b.slotDone(i, call(b.slotConn(i))) {
		b.slotDone(i, call(b.slotConn(i)))
	}
}

// slotRun runs the publish command args on slot i's connection.
func (b *RedisBroker) slotRun(ctx context.Context, i int, args []any) (vals []int64, err error) {
	b.onSlot(i, func(c pubConn) error {
		vals, err = runScript(ctx, c, args)
		return err
	})
	return vals, err
}

// slotPipeline runs batch as one pipeline on slot i's connection.
func (b *RedisBroker) slotPipeline(ctx context.Context, i int, batch []*pubCall, cmds []*redis.Cmd) {
	b.onSlot(i, func(conn pubConn) error {
		pipe := conn.Pipeline()
		cmds = cmds[:0]
		for _, c := range batch {
			cmds = append(cmds, pipe.Do(ctx, c.args...))
		}
		_, _ = pipe.Exec(ctx)
		defer clear(cmds)
		var connErr error
		for j, c := range batch {
			c.vals, c.err = cmds[j].Int64Slice()
			if c.err != nil && redis.HasErrorPrefix(c.err, "NOSCRIPT") {
				c.vals, c.err = runScript(ctx, conn, c.args)
			}
			if c.err != nil && connErr == nil && !redisAnswered(c.err) {
				connErr = c.err // the connection's failure, not one script's
			}
		}
		return connErr
	})
}

// runScript runs the publish command args (EVALSHA) on c, loading the
// script first when Redis lost it (a restart, a failover).
func runScript(ctx context.Context, c pubConn, args []any) ([]int64, error) {
	vals, err := c.Do(ctx, args...).Int64Slice()
	if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
		if err = redisPublishScript.Load(ctx, c).Err(); err == nil {
			vals, err = c.Do(ctx, args...).Int64Slice()
		}
	}
	return vals, err
}

// runPublish runs the publish command args (publishCommand), itself when a
// slot is free and nobody waits, else through a pipeliner, and returns its
// reply; waiting in line, it gives up at ctx's end (the call may still run
// then).
func (b *RedisBroker) runPublish(ctx context.Context, args []any) ([]int64, error) {
	l := &b.pubs
	l.mu.Lock()
	if len(l.free) > 0 && len(l.waiting) == 0 {
		i := l.free[len(l.free)-1]
		l.free = l.free[:len(l.free)-1]
		l.mu.Unlock()
		vals, err := b.slotRun(ctx, i, args)
		l.mu.Lock()
		l.free = append(l.free, i)
		more := len(l.waiting) > 0
		l.mu.Unlock()
		if more {
			l.wake()
		}
		return vals, err
	}
	c := pubCallPool.Get().(*pubCall)
	c.args, c.vals, c.err = args, nil, nil
	l.waiting = append(l.waiting, c)
	l.mu.Unlock()
	l.wake()
	select {
	case <-c.done:
		vals, err := c.vals, c.err
		c.args, c.vals, c.err = nil, nil, nil
		pubCallPool.Put(c)
		return vals, err
	case <-ctx.Done():
		return nil, ctx.Err() // the pipeliner owns c now: it is not reused
	case <-b.ctx.Done():
		return nil, redis.ErrClosed
	}
}

// wake tells a pipeliner that calls wait.
func (l *pubLine) wake() {
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

// take takes a slot and up to redisBatchMax waiting calls into batch; it
// returns batch empty (and slot -1) when none waits or no slot is free.
func (l *pubLine) take(batch []*pubCall) ([]*pubCall, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.waiting) == 0 || len(l.free) == 0 {
		return batch[:0], -1
	}
	slot := l.free[len(l.free)-1]
	l.free = l.free[:len(l.free)-1]
	n := min(len(l.waiting), redisBatchMax)
	batch = append(batch[:0], l.waiting[:n]...)
	rem := copy(l.waiting, l.waiting[n:])
	clear(l.waiting[rem:])
	l.waiting = l.waiting[:rem]
	if rem == 0 && cap(l.waiting) > 256 {
		l.waiting = nil // a burst is over
	}
	if rem > 0 && len(l.free) > 0 {
		l.wake() // more than a batch waits: the other pipeliner too
	}
	return batch, slot
}

// pipeliner sends the waiting publish calls as pipelines until Close.
func (b *RedisBroker) pipeliner() {
	defer b.wg.Done()
	l := &b.pubs
	batch := make([]*pubCall, 0, redisBatchMax)
	cmds := make([]*redis.Cmd, 0, redisBatchMax)
	for {
		var slot int
		batch, slot = l.take(batch)
		if len(batch) == 0 {
			select {
			case <-l.kick:
				continue
			case <-b.ctx.Done():
				return
			}
		}
		ctx, cancel := b.opCtx(b.ctx)
		if len(batch) == 1 {
			c := batch[0]
			c.vals, c.err = b.slotRun(ctx, slot, c.args)
		} else {
			b.slotPipeline(ctx, slot, batch, cmds)
		}
		cancel()
		l.mu.Lock()
		l.free = append(l.free, slot)
		l.mu.Unlock()
		for i, c := range batch {
			if c.err != nil && errors.Is(c.err, context.Canceled) && b.ctx.Err() != nil {
				c.err = redis.ErrClosed
			}
			c.done <- struct{}{}
			batch[i] = nil
		}
	}
}
