package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/virtutune/link/signaling"
	"github.com/virtutune/link/signaling/redistest"
)

// benchSecret signs the tokens of the servers the bench starts itself.
var benchSecret = []byte("virtutune-bench-secret-0123456789abcdef")

// benchLimits are the server limits of the bench's own servers: the defaults,
// except the per-connection message rate, which the bench exceeds on purpose,
// and the per-address limits, since every client of the bench comes from
// one loopback address.
func benchLimits() signaling.Limits {
	return signaling.Limits{Rate: 1e6, Burst: 1 << 20,
		SessionsPerMinute: 1e9, UpgradesPerMinute: 1e9, MaxWSPerAddr: 1e9, MaxConnsPerAddr: 1e9}
}

// instance is a signaling server the bench runs in this process on loopback.
type instance struct {
	URL string
	srv *signaling.Server
	hs  *http.Server
	ln  net.Listener
}

// startInstance starts a signaling server on 127.0.0.1 with broker (nil: memory).
// wrap, when not nil, wraps the server's handler.
func startInstance(log *slog.Logger, broker signaling.Broker, name string, wrap func(http.Handler) http.Handler) (*instance, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	url := "http://" + ln.Addr().String()
	srv, err := signaling.New(signaling.Config{
		Secret: benchSecret, PublicURL: url, Broker: broker, Logger: log, Instance: name,
		Limits: benchLimits(),
	})
	if err != nil {
		_ = ln.Close()
		return nil, err
	}
	var h http.Handler = srv
	if wrap != nil {
		h = wrap(srv)
	}
	hs := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}
	go func() { _ = hs.Serve(ln) }()
	return &instance{URL: url, srv: srv, hs: hs, ln: ln}, nil
}

func (in *instance) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = in.srv.Shutdown(ctx)
	_ = in.hs.Shutdown(ctx)
}

// redisProc is a redis-server the bench started (redistest's launcher) on a
// free port of 127.0.0.1, never 6379, in a temporary directory of its own.
type redisProc struct {
	*redistest.Server
}

// startRedis starts bin (redis-server) with persistence off and waits until
// it answers PING.
func startRedis(ctx context.Context, bin string) (*redisProc, error) {
	dir, err := os.MkdirTemp("", "virtutune-bench-redis-")
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	s, err := redistest.StartBin(ctx, bin, dir)
	if err != nil {
		_ = os.RemoveAll(dir)
		if errors.Is(err, redistest.ErrNoRedis) {
			return nil, fmt.Errorf("%w, or skip the redis path", err)
		}
		return nil, err
	}
	return &redisProc{s}, nil
}

// Close kills redis-server, waits for it and removes its directory.
func (r *redisProc) Close() {
	_ = r.Kill()
	_ = os.RemoveAll(r.Dir)
}

// startChild re-executes the bench with --serve (serveProject): a signaling
// server in its own process, so that its memory and CPU are its own.
func startChild() (*childProc, error) {
	return startProc("child server", os.Args[0], []string{"--serve"}, nil, true)
}

// cmdStat is one command's line of Redis's INFO commandstats: its calls
// and Redis's own time in them (wall time inside Redis: a command the kernel
// preempted counts its wait too).
type cmdStat struct {
	calls, usec int64
	perCall     string // usec_per_call, as Redis prints it
}

// redisInfoCommands reads INFO commandstats of the redis-server at url, by
// command name; with reset it resets the counters instead (CONFIG RESETSTAT)
// and returns nil.
func redisInfoCommands(ctx context.Context, url string, reset bool) (map[string]cmdStat, error) {
	opt, err := redis.ParseURL(url)
	if err != nil {
		return nil, err
	}
	rc := redis.NewClient(opt)
	defer rc.Close()
	if reset {
		return nil, rc.ConfigResetStat(ctx).Err()
	}
	info, err := rc.Info(ctx, "commandstats").Result()
	if err != nil {
		return nil, err
	}
	out := map[string]cmdStat{}
	for _, line := range strings.Split(info, "\n") {
		stat, ok := strings.CutPrefix(strings.TrimSpace(line), "cmdstat_")
		name, rest, found := strings.Cut(stat, ":")
		if !ok || !found {
			continue
		}
		var st cmdStat
		for _, kv := range strings.Split(rest, ",") {
			k, v, _ := strings.Cut(kv, "=")
			switch k {
			case "calls":
				st.calls, _ = strconv.ParseInt(v, 10, 64)
			case "usec":
				st.usec, _ = strconv.ParseInt(v, 10, 64)
			case "usec_per_call":
				st.perCall = v
			}
		}
		out[name] = st
	}
	return out, nil
}

// redisCommandStats resets (reset) or reads Redis's own time per call of the
// commands the broker uses: where a relay-redis message spends its time in Redis.
func redisCommandStats(ctx context.Context, url string, reset bool) []string {
	stats, err := redisInfoCommands(ctx, url, reset)
	if err != nil || reset {
		return nil
	}
	var out []string
	for _, name := range []string{"evalsha", "eval", "publish", "xadd", "hget", "hset", "hincrby", "pexpireat"} {
		if st, ok := stats[name]; ok {
			out = append(out, fmt.Sprintf("redis %s: %d calls, %s µs per call (Redis's own time)", name, st.calls, st.perCall))
		}
	}
	slices.Sort(out)
	return out
}
