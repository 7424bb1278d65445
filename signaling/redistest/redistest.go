// Package redistest runs a real redis-server for tests and benchmarks: a
// child process on a free port of 127.0.0.1 in a directory of its own, that
// can be killed (as a crash) and started again on the same port. It never
// touches the Redis on port 6379. It is not a mock: the point of the tests
// that use it is to run against the real thing. virtutune-bench starts its
// redis-server with it too (StartBin).
//
// redistest.go is one server (Start, New, Kill, Pause, Restart);
// topology.go a Sentinel, a Cluster and raw commands (Do).
package redistest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/virtutune/link/internal/testkit"
)

// ErrNoRedis means redis-server is not on PATH.
var ErrNoRedis = errors.New("redistest: redis-server is not on PATH (Debian: apt-get install redis-server)")

// Server is one redis-server child process. Its methods are safe for
// concurrent use.
type Server struct {
	Port int
	Dir  string
	args []string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// Start starts redis-server on a free port with persistence off (extra
// arguments are appended, e.g. "--appendonly", "yes"), in dir, and waits
// until it answers PING or ctx ends.
func Start(ctx context.Context, dir string, extra ...string) (*Server, error) {
	return StartBin(ctx, "redis-server", dir, extra...)
}

// StartBin is Start with another redis-server binary (a name looked up on
// PATH, or a path), as virtutune-bench's --redis-server gives it.
func StartBin(ctx context.Context, bin, dir string, extra ...string) (*Server, error) {
	path, port, err := binAndPort(bin)
	if err != nil {
		return nil, err
	}
	s := &Server{Port: port, Dir: dir}
	s.args = append([]string{path, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", dir, "--daemonize", "no", "--loglevel", "warning"}, extra...)
	if err := s.Restart(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// binAndPort finds bin (redis-server) and a free port for it.
func binAndPort(bin string) (string, int, error) {
	path, err := exec.LookPath(bin)
	if err != nil {
		if bin != "redis-server" {
			return "", 0, fmt.Errorf("%w: %s: %v", ErrNoRedis, bin, err)
		}
		return "", 0, ErrNoRedis
	}
	port, err := testkit.FreePort()
	return path, port, err
}

// New is Start for a test: it skips the test when redis-server is missing
// (fails it under CI=true), kills the server at cleanup, and then, if the
// test failed, logs the end of the server's log.
func New(t testing.TB, extra ...string) *Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	s, err := Start(ctx, t.TempDir(), extra...)
	skipOrFail(t, err)
	t.Cleanup(func() {
		_ = s.Kill()
		if t.Failed() {
			t.Logf("---- last lines of redis-server's log (%s) ----\n%s", s.LogPath(), s.LogTail(40))
		}
	})
	return s
}

// LogPath is the file the server's output goes to.
func (s *Server) LogPath() string { return filepath.Join(s.Dir, "redis.log") }

// LogTail returns the last n lines of the server's log.
func (s *Server) LogTail(n int) string {
	b, _ := os.ReadFile(s.LogPath())
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// URL is the server's redis:// URL (database 0).
func (s *Server) URL() string { return fmt.Sprintf("redis://127.0.0.1:%d/0", s.Port) }

// Addr is host:port.
func (s *Server) Addr() string { return "127.0.0.1:" + strconv.Itoa(s.Port) }

// Restart starts redis-server again (on the same port and directory) if it
// is not running, and waits until it answers PING.
func (s *Server) Restart(ctx context.Context) error {
	s.mu.Lock()
	if s.cmd != nil {
		s.mu.Unlock()
		return nil
	}
	cmd := exec.Command(s.args[0], s.args[1:]...)
	cmd.Dir = s.Dir
	// It dies with the test binary, should that be killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	logf, err := os.OpenFile(s.LogPath(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		s.mu.Unlock()
		return err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		s.mu.Unlock()
		_ = logf.Close()
		return fmt.Errorf("redistest: start redis-server: %w", err)
	}
	done := make(chan struct{})
	s.cmd, s.done = cmd, done
	s.mu.Unlock()
	go func() {
		_ = cmd.Wait()
		_ = logf.Close()
		close(done)
	}()
	exited := false
	err = testkit.Poll(ctx, 10*time.Millisecond, func() error {
		err := s.Ping()
		select {
		case <-done:
			exited = err != nil
			return nil
		default:
		}
		return err
	})
	switch {
	case exited:
		return fmt.Errorf("redistest: redis-server exited at start:\n%s", s.LogTail(40))
	case err != nil:
		return fmt.Errorf("redistest: redis-server on port %d does not answer PING: %w", s.Port, err)
	}
	return nil
}

// Kill stops redis-server at once (SIGKILL, as a crash) and waits for it.
func (s *Server) Kill() error {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return nil
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-done:
		return nil
	case <-time.After(10 * time.Second):
		return fmt.Errorf("redistest: redis-server on port %d did not exit", s.Port)
	}
}

// Pause stops the process (SIGSTOP, to the PID this Server started and no
// other): it keeps its connections and answers nothing, as a stalled Redis
// does, until Resume.
func (s *Server) Pause() error { return s.signal(syscall.SIGSTOP) }

// Resume lets a paused process go on (SIGCONT).
func (s *Server) Resume() error { return s.signal(syscall.SIGCONT) }

func (s *Server) signal(sig syscall.Signal) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return errors.New("redistest: redis-server is not running")
	}
	return s.cmd.Process.Signal(sig)
}

// Pid is the running process's id (0 when it is not running), for the
// caller's own accounting (virtutune-bench reads its CPU time).
func (s *Server) Pid() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

// Running reports whether the process is running.
func (s *Server) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cmd != nil
}

// Ping sends PING over a raw connection.
func (s *Server) Ping() error {
	c, err := net.DialTimeout("tcp", s.Addr(), 200*time.Millisecond)
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
		return errors.New("redistest: unexpected PING answer: " + strings.TrimSpace(line))
	}
	return nil
}
