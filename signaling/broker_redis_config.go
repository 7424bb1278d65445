package signaling

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
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
	// unique among the live instances sharing one Redis, and must not
	// contain ',' (a session's listeners are a comma-separated list).
	Instance string
	// HistorySize bounds each session's history in messages (default 1024).
	HistorySize int
	// HistoryTTL hides history entries older than this (default 10 minutes).
	HistoryTTL time.Duration
	// PresenceTTL is how long this instance's members stay listed after it
	// stops heartbeating (it heartbeats every PresenceTTL/3; default 30s).
	PresenceTTL time.Duration
	// MaxSeqClients bounds the senders whose last seq a session remembers
	// (default 64), SeqRetention when an absent one may be forgotten
	// (default 10 minutes): the rule of ErrTooManySenders, as in MemoryConfig.
	MaxSeqClients int
	SeqRetention  time.Duration
	// Logger receives the broker's logs (default: discarded).
	Logger *slog.Logger
}

// Validate reports the first setting that makes no sense.
func (c *RedisConfig) Validate() error {
	switch {
	case c.URL == "":
		return fmt.Errorf("%w: RedisConfig.URL is required", ErrInvalidConfig)
	case strings.ContainsAny(c.Prefix, "{}"):
		return fmt.Errorf("%w: RedisConfig.Prefix %q must not contain '{' or '}'", ErrInvalidConfig, c.Prefix)
	case strings.Contains(c.Instance, ","):
		return fmt.Errorf("%w: RedisConfig.Instance %q must not contain ','", ErrInvalidConfig, c.Instance)
	case c.HistorySize < 0:
		return fmt.Errorf("%w: RedisConfig.HistorySize must not be negative", ErrInvalidConfig)
	case c.HistoryTTL < 0:
		return fmt.Errorf("%w: RedisConfig.HistoryTTL must not be negative", ErrInvalidConfig)
	case c.MaxSeqClients < 0 || c.SeqRetention < 0:
		return fmt.Errorf("%w: RedisConfig.MaxSeqClients and SeqRetention must not be negative", ErrInvalidConfig)
	case c.PresenceTTL < 0 || (c.PresenceTTL > 0 && c.PresenceTTL < 30*time.Millisecond):
		return fmt.Errorf("%w: RedisConfig.PresenceTTL must be 0 (default) or at least 30ms", ErrInvalidConfig)
	}
	u, err := url.Parse(c.URL)
	if err != nil {
		return fmt.Errorf("%w: RedisConfig.URL: %v", ErrInvalidConfig, err)
	}
	switch u.Scheme {
	case "redis", "rediss", "unix":
	default:
		return fmt.Errorf("%w: RedisConfig.URL: scheme %q is not redis, rediss or unix", ErrInvalidConfig, u.Scheme)
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
	if c.MaxSeqClients == 0 {
		c.MaxSeqClients = defaultMaxSeqClients
	}
	if c.SeqRetention == 0 {
		c.SeqRetention = defaultSeqRetention
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// redisCallTimeout is the read and write timeout of every Redis command
// unless the URL names its own (read_timeout, write_timeout): a Redis that
// stalls (paused, swapping, a long script of someone else's) fails the call
// within it, and the broker goes local-only at once (see the type's outage
// rule) instead of holding every caller for go-redis's default 3 s.
const redisCallTimeout = 500 * time.Millisecond

// Buffers of the client's connections. go-redis gives each pooled
// connection a 32 KiB reader and a 32 KiB writer, and each connection of its
// pipeline pool 128 KiB of each: at the thirty-odd connections an instance
// opens under load, 2-5 MB, the largest thing in an instance's heap (more
// than its thousand members' state). The broker's commands and replies are
// small: a publish is one EVALSHA of about half a KiB and its reply a few
// integers, and a full pipeline of them (redisBatchMax) is written in 8 KiB
// pieces; a larger reply (a resume's history, up to a few hundred KiB)
// streams through the reader a buffer at a time. The URL's
// pipeline_read_buffer_size and pipeline_write_buffer_size still apply (a
// cluster client opens a pipeline pool only when the URL sets them).
const (
	redisConnBuffer     = 8 << 10
	redisPipelineBuffer = 16 << 10
)

// newRedisClient builds the go-redis client for a URL (see RedisConfig.URL).
// Every client respects its callers' context deadlines
// (ContextTimeoutEnabled), its commands time out after redisCallTimeout
// unless the URL says otherwise, and its buffers are the sizes above.
func newRedisClient(raw string) (redis.UniversalClient, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, err
	}
	q := u.Query()
	timeouts := func(read, write *time.Duration, ctxTimeout *bool) {
		*ctxTimeout = true
		if !q.Has("read_timeout") {
			*read = redisCallTimeout
		}
		if !q.Has("write_timeout") {
			*write = redisCallTimeout
		}
	}
	switch {
	case q.Has("master_name"):
		o, err := redis.ParseFailoverURL(raw)
		if err != nil {
			return nil, err
		}
		timeouts(&o.ReadTimeout, &o.WriteTimeout, &o.ContextTimeoutEnabled)
		connBuffers(&o.ReadBufferSize, &o.WriteBufferSize)
		pipelineBuffers(&o.PipelineReadBufferSize, &o.PipelineWriteBufferSize)
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
			timeouts(&o.ReadTimeout, &o.WriteTimeout, &o.ContextTimeoutEnabled)
			connBuffers(&o.ReadBufferSize, &o.WriteBufferSize)
			pipelineBuffers(&o.PipelineReadBufferSize, &o.PipelineWriteBufferSize)
			return redis.NewClient(o), nil
		}
		o, err := redis.ParseClusterURL(u.String())
		if err != nil {
			return nil, err
		}
		timeouts(&o.ReadTimeout, &o.WriteTimeout, &o.ContextTimeoutEnabled)
		connBuffers(&o.ReadBufferSize, &o.WriteBufferSize) // (no pipeline pool unless the URL sizes one)
		return redis.NewClusterClient(o), nil
	default:
		o, err := redis.ParseURL(raw)
		if err != nil {
			return nil, err
		}
		timeouts(&o.ReadTimeout, &o.WriteTimeout, &o.ContextTimeoutEnabled)
		connBuffers(&o.ReadBufferSize, &o.WriteBufferSize)
		pipelineBuffers(&o.PipelineReadBufferSize, &o.PipelineWriteBufferSize)
		return redis.NewClient(o), nil
	}
}

// connBuffers sets a client's connection buffers (redisConnBuffer).
func connBuffers(rd, wr *int) { *rd, *wr = redisConnBuffer, redisConnBuffer }

// pipelineBuffers sets the buffers of go-redis's pipeline pool
// (redisPipelineBuffer) where the URL did not.
func pipelineBuffers(rd, wr *int) {
	if *rd == 0 {
		*rd = redisPipelineBuffer
	}
	if *wr == 0 {
		*wr = redisPipelineBuffer
	}
}
