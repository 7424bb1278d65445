package signaling

import (
	"context"
	"errors"
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

type pubCall struct {
	keys []string
	args []any
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
	running int        // slots taken (inline publishes and pipelines in flight)
	waiting []*pubCall // in arrival order
	kick    chan struct{}
}

// runPublish runs the publish script, itself when a slot is free and nobody
// waits, else through a pipeliner, and returns its reply; waiting in line,
// it gives up at ctx's end (the call may still run then).
func (b *RedisBroker) runPublish(ctx context.Context, keys []string, args ...any) ([]int64, error) {
	l := &b.pubs
	l.mu.Lock()
	if l.running < redisPipeliners && len(l.waiting) == 0 {
		l.running++
		l.mu.Unlock()
		vals, err := redisPublishScript.Run(ctx, b.client, keys, args...).Int64Slice()
		l.mu.Lock()
		l.running--
		more := len(l.waiting) > 0
		l.mu.Unlock()
		if more {
			l.wake()
		}
		return vals, err
	}
	c := pubCallPool.Get().(*pubCall)
	c.keys, c.args, c.vals, c.err = keys, args, nil, nil
	l.waiting = append(l.waiting, c)
	l.mu.Unlock()
	l.wake()
	select {
	case <-c.done:
		vals, err := c.vals, c.err
		c.keys, c.args, c.vals, c.err = nil, nil, nil, nil
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
// returns batch empty (and no slot) when none waits or no slot is free.
func (l *pubLine) take(batch []*pubCall) []*pubCall {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.waiting) == 0 || l.running >= redisPipeliners {
		return batch[:0]
	}
	l.running++
	n := min(len(l.waiting), redisBatchMax)
	batch = append(batch[:0], l.waiting[:n]...)
	rem := copy(l.waiting, l.waiting[n:])
	clear(l.waiting[rem:])
	l.waiting = l.waiting[:rem]
	if rem == 0 && cap(l.waiting) > 256 {
		l.waiting = nil // a burst is over
	}
	if rem > 0 && l.running < redisPipeliners {
		l.wake() // more than a batch waits: the other pipeliner too
	}
	return batch
}

// pipeliner sends the waiting publish calls as pipelines until Close.
func (b *RedisBroker) pipeliner() {
	defer b.wg.Done()
	l := &b.pubs
	batch := make([]*pubCall, 0, redisBatchMax)
	cmds := make([]*redis.Cmd, 0, redisBatchMax)
	for {
		batch = l.take(batch)
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
			c.vals, c.err = redisPublishScript.Run(ctx, b.client, c.keys, c.args...).Int64Slice()
		} else {
			pipe := b.client.Pipeline()
			cmds = cmds[:0]
			for _, c := range batch {
				cmds = append(cmds, pipe.EvalSha(ctx, redisPublishScript.Hash(), c.keys, c.args...))
			}
			_, _ = pipe.Exec(ctx)
			for i, c := range batch {
				c.vals, c.err = cmds[i].Int64Slice()
				if c.err != nil && redis.HasErrorPrefix(c.err, "NOSCRIPT") {
					// Redis lost its scripts (a restart, a failover): Run loads it again.
					c.vals, c.err = redisPublishScript.Run(ctx, b.client, c.keys, c.args...).Int64Slice()
				}
			}
		}
		cancel()
		l.mu.Lock()
		l.running--
		l.mu.Unlock()
		for i, c := range batch {
			if c.err != nil && errors.Is(c.err, context.Canceled) && b.ctx.Err() != nil {
				c.err = redis.ErrClosed
			}
			c.done <- struct{}{}
			batch[i] = nil
		}
		clear(cmds)
	}
}
