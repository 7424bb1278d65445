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
// reply, on both sides of the socket. So publishes are handed to a few
// pipeliners: each takes what is waiting (up to redisBatchMax calls, any
// sessions) and sends it as one pipeline, one write and one read for all,
// then hands every caller its reply. Nobody waits for a batch to fill: a
// pipeliner that finds one call sends one call, so an idle broker's latency
// is a plain round trip, and under load the batches grow by themselves.
//
// The script stays atomic per call, and the delivery contract is the same:
// a sender's publishes are sequential (each waits for its reply), and
// publishes of one session from different senders were concurrent before
// too; Redis runs each script whole, in the order the pipeline gives.
const (
	// redisPipeliners is how many pipelines can be in flight at once.
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

// runPublish runs the publish script through a pipeliner and waits for its
// reply, or for ctx (the call may still run then).
func (b *RedisBroker) runPublish(ctx context.Context, keys []string, args ...any) ([]int64, error) {
	c := pubCallPool.Get().(*pubCall)
	c.keys, c.args, c.vals, c.err = keys, args, nil, nil
	select {
	case b.pubq <- c:
	case <-ctx.Done():
		pubCallPool.Put(c)
		return nil, ctx.Err()
	case <-b.ctx.Done():
		pubCallPool.Put(c)
		return nil, redis.ErrClosed
	}
	select {
	case <-c.done:
		vals, err := c.vals, c.err
		c.keys, c.args, c.vals, c.err = nil, nil, nil, nil
		pubCallPool.Put(c)
		return vals, err
	case <-ctx.Done():
		return nil, ctx.Err() // the pipeliner still owns c: it is not reused
	case <-b.ctx.Done():
		return nil, redis.ErrClosed
	}
}

// pipeliner sends the waiting publish calls as pipelines until Close.
func (b *RedisBroker) pipeliner() {
	defer b.wg.Done()
	batch := make([]*pubCall, 0, redisBatchMax)
	cmds := make([]*redis.Cmd, 0, redisBatchMax)
	for {
		select {
		case c := <-b.pubq:
			batch = append(batch[:0], c)
		case <-b.ctx.Done():
			return
		}
	more:
		for len(batch) < redisBatchMax {
			select {
			case c := <-b.pubq:
				batch = append(batch, c)
			default:
				break more
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
