package redistest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/virtutune/link/internal/testkit"
)

// ErrNoRedisCLI means redis-cli is not on PATH (StartCluster needs it).
var ErrNoRedisCLI = errors.New("redistest: redis-cli is not on PATH (Debian: apt-get install redis-tools)")

// skipOrFail ends t when err says a binary is missing: t.Skip, or t.Fatal
// under CI=true. Other errors fail t.
func skipOrFail(t testing.TB, err error) {
	t.Helper()
	if err == nil {
		return
	}
	if errors.Is(err, ErrNoRedis) || errors.Is(err, ErrNoRedisCLI) {
		testkit.SkipOrFail(t, "%v", err)
	}
	t.Fatal(err)
}

// Do sends one command to the server over a fresh raw connection and returns
// its reply: a string (simple or bulk), an int64, a []any, nil (null), or an
// error for an error reply. It is bounded by ctx and by two seconds.
func (s *Server) Do(ctx context.Context, args ...string) (any, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", s.Addr())
	if err != nil {
		return nil, err
	}
	defer c.Close()
	dl, _ := ctx.Deadline()
	_ = c.SetDeadline(dl)
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := io.WriteString(c, b.String()); err != nil {
		return nil, err
	}
	return readRESP(bufio.NewReader(c))
}

// ReplyError is an error reply of Redis.
type ReplyError string

func (e ReplyError) Error() string { return string(e) }

func readRESP(r *bufio.Reader) (any, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return nil, err
	}
	line = strings.TrimSuffix(line, "\r\n")
	if line == "" {
		return nil, errors.New("redistest: empty RESP line")
	}
	body := line[1:]
	switch line[0] {
	case '+':
		return body, nil
	case '-':
		return nil, ReplyError(body)
	case ':':
		return strconv.ParseInt(body, 10, 64)
	case '$':
		n, err := strconv.Atoi(body)
		if err != nil || n < 0 {
			return nil, err
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return nil, err
		}
		return string(buf[:n]), nil
	case '*':
		n, err := strconv.Atoi(body)
		if err != nil || n < 0 {
			return nil, err
		}
		out := make([]any, n)
		for i := range out {
			v, err := readRESP(r)
			var re ReplyError
			if err != nil && !errors.As(err, &re) {
				return nil, err
			}
			if err != nil {
				v = err
			}
			out[i] = v
		}
		return out, nil
	}
	return nil, fmt.Errorf("redistest: unexpected RESP line %q", line)
}

// ---- Sentinel ----

// StartSentinel starts a Redis Sentinel (redis-server <dir>/sentinel.conf
// --sentinel) on a free port of 127.0.0.1 that monitors master as name, with
// quorum 1 and down-after-milliseconds 1000, and waits until it reports the
// master at master.Addr() and has connected to it (flags exactly "master").
// Kill stops it.
func StartSentinel(ctx context.Context, dir, name string, master *Server) (*Server, error) {
	path, port, err := binAndPort("redis-server")
	if err != nil {
		return nil, err
	}
	conf := filepath.Join(dir, "sentinel.conf")
	text := fmt.Sprintf("port %d\nbind 127.0.0.1\ndaemonize no\nloglevel warning\ndir %s\n"+
		"sentinel monitor %s 127.0.0.1 %d 1\nsentinel down-after-milliseconds %s 1000\n",
		port, dir, name, master.Port, name)
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil { // Sentinel rewrites it: must be writable
		return nil, err
	}
	s := &Server{Port: port, Dir: dir, args: []string{path, conf, "--sentinel"}}
	if err := s.Restart(ctx); err != nil {
		return nil, err
	}
	err = testkit.Poll(ctx, 20*time.Millisecond, func() error {
		v, err := s.Do(ctx, "SENTINEL", "get-master-addr-by-name", name)
		if err != nil {
			return err
		}
		if a, _ := v.([]any); len(a) != 2 || a[0] != "127.0.0.1" || a[1] != strconv.Itoa(master.Port) {
			return fmt.Errorf("get-master-addr-by-name = %v", v)
		}
		v, err = s.Do(ctx, "SENTINEL", "master", name)
		if err != nil {
			return err
		}
		if flags := field(v, "flags"); flags != "master" {
			return fmt.Errorf("master flags %q", flags)
		}
		return nil
	})
	if err != nil {
		_ = s.Kill()
		return nil, fmt.Errorf("redistest: sentinel on port %d does not report master %s: %w", port, name, err)
	}
	return s, nil
}

// field returns the value of key in a flat key/value array reply.
func field(v any, key string) string {
	a, _ := v.([]any)
	for i := 0; i+1 < len(a); i += 2 {
		if a[i] == key {
			s, _ := a[i+1].(string)
			return s
		}
	}
	return ""
}

// NewSentinel is StartSentinel for a test, in a temporary directory: it
// skips the test when redis-server is missing (fails it when CI is "true"),
// and kills the sentinel at cleanup.
func NewSentinel(t testing.TB, name string, master *Server) *Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	s, err := StartSentinel(ctx, t.TempDir(), name, master)
	skipOrFail(t, err)
	t.Cleanup(func() { _ = s.Kill() })
	return s
}

// SentinelURL is the RedisConfig.URL of master name behind sentinel s.
func (s *Server) SentinelURL(name string) string {
	return fmt.Sprintf("redis://127.0.0.1:%d/0?master_name=%s", s.Port, name)
}

// ---- Cluster ----

// Cluster is a Redis Cluster of masters without replicas, each a Server.
type Cluster struct {
	Nodes []*Server
}

// StartCluster starts n (at least 3) redis-server processes in cluster mode,
// each on free ports of 127.0.0.1 (its client port and an explicit cluster
// bus port) in a directory of its own under dir, joins them with
// "redis-cli --cluster create ... --cluster-replicas 0", and waits until
// every node reports cluster_state:ok, knows all n nodes and sees n masters
// serving slots.
func StartCluster(ctx context.Context, dir string, n int) (c *Cluster, err error) {
	if n < 3 {
		return nil, errors.New("redistest: a cluster needs at least 3 masters")
	}
	if _, err := exec.LookPath("redis-server"); err != nil {
		return nil, ErrNoRedis
	}
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		return nil, ErrNoRedisCLI
	}
	c = &Cluster{}
	defer func() {
		if err != nil {
			_ = c.Kill()
			c = nil
		}
	}()
	for i := range n {
		d := filepath.Join(dir, fmt.Sprintf("node%d", i))
		if err := os.MkdirAll(d, 0o755); err != nil {
			return c, err
		}
		// The bus port defaults to port+10000, which may exceed 65535 for an
		// ephemeral port: give it one of its own (Redis 7).
		bus, err := testkit.FreePort()
		if err != nil {
			return c, err
		}
		s, err := Start(ctx, d, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
			"--cluster-node-timeout", "2000", "--cluster-port", strconv.Itoa(bus))
		if err != nil {
			return c, err
		}
		c.Nodes = append(c.Nodes, s)
	}
	args := []string{"--cluster", "create"}
	for _, s := range c.Nodes {
		args = append(args, s.Addr())
	}
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	out, err := exec.CommandContext(ctx, cli, args...).CombinedOutput()
	if err != nil {
		return c, fmt.Errorf("redistest: redis-cli %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	err = testkit.Poll(ctx, 20*time.Millisecond, func() error {
		for _, s := range c.Nodes {
			v, err := s.Do(ctx, "CLUSTER", "INFO")
			if err != nil {
				return err
			}
			info, _ := v.(string)
			for _, want := range []string{"cluster_state:ok", "cluster_slots_assigned:16384",
				"cluster_known_nodes:" + strconv.Itoa(n), "cluster_size:" + strconv.Itoa(n)} {
				if !strings.Contains(info, want+"\r\n") {
					return fmt.Errorf("node %s: CLUSTER INFO lacks %s", s.Addr(), want)
				}
			}
		}
		return nil
	})
	if err != nil {
		return c, fmt.Errorf("redistest: cluster not ok: %w", err)
	}
	return c, nil
}

// NewCluster is StartCluster for a test, in a temporary directory: it skips
// the test when redis-server or redis-cli is missing (fails it when CI is
// "true"), and kills every node at cleanup.
func NewCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := StartCluster(ctx, t.TempDir(), n)
	skipOrFail(t, err)
	t.Cleanup(func() { _ = c.Kill() })
	return c
}

// URL is the cluster's RedisConfig.URL: the first node, the others as addr=.
func (c *Cluster) URL() string {
	var b strings.Builder
	b.WriteString("redis://" + c.Nodes[0].Addr())
	for i, s := range c.Nodes[1:] {
		if i == 0 {
			b.WriteString("?")
		} else {
			b.WriteString("&")
		}
		b.WriteString("addr=" + s.Addr())
	}
	return b.String()
}

// Kill stops every node (SIGKILL).
func (c *Cluster) Kill() error {
	var errs []error
	for _, s := range c.Nodes {
		errs = append(errs, s.Kill())
	}
	return errors.Join(errs...)
}
