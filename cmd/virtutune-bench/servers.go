package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/virtutune/link/signaling"
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

// redisProc is a redis-server the bench started on a free port of 127.0.0.1.
type redisProc struct {
	URL  string
	cmd  *exec.Cmd
	dir  string
	done chan struct{}
}

// startRedis starts `redis-server --port <free> --save "" --appendonly no` on
// 127.0.0.1 in a temporary directory; it never uses port 6379.
func startRedis(ctx context.Context, bin string) (*redisProc, error) {
	path, err := exec.LookPath(bin)
	if err != nil {
		return nil, fmt.Errorf("redis-server not found (%w): install it (apt-get install redis-server) or skip the redis path", err)
	}
	var port int
	for range 10 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		port = ln.Addr().(*net.TCPAddr).Port
		_ = ln.Close()
		if port != 6379 {
			break
		}
	}
	if port == 6379 {
		return nil, errors.New("no free port other than 6379")
	}
	dir, err := os.MkdirTemp("", "virtutune-bench-redis-")
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(path, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", dir, "--daemonize", "no", "--loglevel", "warning")
	cmd.Dir = dir
	if err := cmd.Start(); err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("start redis-server: %w", err)
	}
	r := &redisProc{URL: fmt.Sprintf("redis://127.0.0.1:%d/0", port), cmd: cmd, dir: dir, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(r.done) }()
	opt, _ := redis.ParseURL(r.URL)
	rc := redis.NewClient(opt)
	defer rc.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		pctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		err := rc.Ping(pctx).Err()
		cancel()
		if err == nil {
			return r, nil
		}
		select {
		case <-r.done:
			_ = os.RemoveAll(dir)
			return nil, errors.New("redis-server exited at start")
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			r.Close()
			return nil, fmt.Errorf("redis-server on port %d does not answer PING: %w", port, err)
		}
	}
}

// Close kills redis-server and waits for it.
func (r *redisProc) Close() {
	_ = r.cmd.Process.Kill()
	<-r.done
	_ = os.RemoveAll(r.dir)
}

// childServer is the bench itself re-executed with --serve: a signaling
// server in its own process, so that its memory and CPU are its own.
type childServer struct {
	URL   string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	done  chan struct{}
}

// childStats is what a --serve child reports at /bench/stats.
type childStats struct {
	Mem goMem   `json:"mem"`
	CPU float64 `json:"cpu_seconds"`
}

// startChild re-executes the bench with --serve and waits for its URL.
func startChild(ctx context.Context) (*childServer, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, "--serve")
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	c := &childServer{cmd: cmd, stdin: stdin, done: make(chan struct{})}
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default:
			}
		}
	}()
	go func() { _ = cmd.Wait(); close(c.done) }()
	select {
	case l := <-lines:
		u, ok := strings.CutPrefix(l, "LISTEN ")
		if !ok {
			c.Close()
			return nil, fmt.Errorf("child server said %q", l)
		}
		c.URL = u
		return c, nil
	case <-c.done:
		return nil, errors.New("child server exited at start")
	case <-ctx.Done():
		c.Close()
		return nil, ctx.Err()
	case <-time.After(20 * time.Second):
		c.Close()
		return nil, errors.New("child server did not start within 20s")
	}
}

// Pid is the child's process id.
func (c *childServer) Pid() int { return c.cmd.Process.Pid }

// Stats asks the child for its memory (after a GC) and CPU time.
func (c *childServer) Stats(ctx context.Context) (childStats, error) {
	var st childStats
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, c.URL+"/bench/stats", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	err = json.NewDecoder(resp.Body).Decode(&st)
	return st, err
}

// saveProfile writes the child's profile (heap or goroutine) to file.
func (c *childServer) saveProfile(ctx context.Context, kind, file string) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, c.URL+"/bench/"+kind, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	_, err = io.Copy(f, resp.Body)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// Close ends the child (closing its stdin asks it to shut down) and waits.
func (c *childServer) Close() {
	_ = c.stdin.Close()
	select {
	case <-c.done:
	case <-time.After(10 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
}

// redisCommandStats resets (reset) or reads Redis's own time per call of the
// commands the broker uses: where a relay-redis message spends its time in Redis.
func redisCommandStats(ctx context.Context, url string, reset bool) []string {
	opt, err := redis.ParseURL(url)
	if err != nil {
		return nil
	}
	rc := redis.NewClient(opt)
	defer rc.Close()
	if reset {
		_ = rc.ConfigResetStat(ctx).Err()
		return nil
	}
	info, err := rc.Info(ctx, "commandstats").Result()
	if err != nil {
		return nil
	}
	var out []string
	for _, line := range strings.Split(info, "\n") {
		line = strings.TrimSpace(line)
		name, rest, ok := strings.Cut(strings.TrimPrefix(line, "cmdstat_"), ":")
		if !ok || !strings.HasPrefix(line, "cmdstat_") {
			continue
		}
		switch name {
		case "evalsha", "eval", "publish", "xadd", "hget", "hset", "hincrby", "pexpireat":
		default:
			continue
		}
		var calls, per string
		for _, kv := range strings.Split(rest, ",") {
			k, v, _ := strings.Cut(kv, "=")
			switch k {
			case "calls":
				calls = v
			case "usec_per_call":
				per = v
			}
		}
		out = append(out, fmt.Sprintf("redis %s: %s calls, %s µs per call (Redis's own time)", name, calls, per))
	}
	slices.Sort(out)
	return out
}
