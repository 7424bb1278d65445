package signaling

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// testRedisServer is a redis-server started by a test on a free port of
// 127.0.0.1 in a temporary directory. It never touches the Redis on 6379.
type testRedisServer struct {
	port int
	dir  string
	args []string
	cmd  *exec.Cmd
	done chan struct{}
}

// startTestRedis starts a redis-server for t and stops it at cleanup. Without
// redis-server on PATH the test is skipped, or fails when CI is "true". extra
// arguments are appended (e.g. to turn AOF persistence on).
func startTestRedis(t *testing.T, extra ...string) *testRedisServer {
	t.Helper()
	path, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("redis-server is not on PATH (required in CI): %v", err)
		}
		t.Skip("redis-server is not on PATH; install Redis (e.g. apt-get install redis-server) to run the Redis broker tests")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	if port == 6379 {
		t.Fatal("free port is 6379: refusing to touch the default Redis")
	}
	dir := t.TempDir()
	r := &testRedisServer{port: port, dir: dir}
	r.args = append([]string{path, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", dir, "--daemonize", "no", "--loglevel", "warning"}, extra...)
	t.Cleanup(func() { r.kill(t) })
	r.start(t)
	return r
}

// url is the redis:// URL of the server.
func (r *testRedisServer) url() string { return fmt.Sprintf("redis://127.0.0.1:%d/0", r.port) }

// start runs redis-server (again, on the same port and directory) and waits
// until it answers PING.
func (r *testRedisServer) start(t *testing.T) {
	t.Helper()
	cmd := exec.Command(r.args[0], r.args[1:]...)
	cmd.Dir = r.dir
	logf, err := os.Create(r.dir + "/redis.log")
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		_ = logf.Close()
		t.Fatalf("start redis-server: %v", err)
	}
	r.cmd, r.done = cmd, make(chan struct{})
	go func(done chan struct{}) {
		_ = cmd.Wait()
		_ = logf.Close()
		close(done)
	}(r.done)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if r.ping() == nil {
			return
		}
		select {
		case <-r.done:
			log, _ := os.ReadFile(r.dir + "/redis.log")
			t.Fatalf("redis-server exited at start:\n%s", log)
		case <-ctx.Done():
			t.Fatalf("redis-server on port %d does not answer PING", r.port)
		case <-tick.C:
		}
	}
}

// kill stops redis-server at once (SIGKILL, as a crash) and waits for it.
func (r *testRedisServer) kill(t *testing.T) {
	t.Helper()
	if r.cmd == nil {
		return
	}
	_ = r.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-r.done:
	case <-time.After(10 * time.Second):
		t.Errorf("redis-server on port %d did not exit", r.port)
	}
	r.cmd = nil
}

// ping sends PING over a raw connection (the tests do not need a client).
func (r *testRedisServer) ping() error {
	c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(r.port), 200*time.Millisecond)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(500 * time.Millisecond))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "+PONG") {
		return errors.New("unexpected PING answer: " + strings.TrimSpace(line))
	}
	return nil
}
