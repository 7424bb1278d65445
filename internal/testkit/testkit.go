// Package testkit holds the helpers that every test package of VirtuTune Link
// shares, so that each is written once: waiting on a condition with a
// deadline (Eventually, Poll, Until) instead of sleeping, a context bounded
// for a test, a free port of 127.0.0.1, the tools a test needs (skipped when
// missing, failed under CI=true), logs routed to t.Logf, and the accept loop
// of a test's TCP proxy (Forward). The Go peers' harness (a recorder, a
// sender, the exactly-once check) is internal/peertest.
//
// It is an ordinary package (not a _test.go file) because external test
// packages (signaling_test, web_test) and helper packages (redistest) cannot
// see another package's test files. Only tests import it, and redistest
// (whose launcher virtutune-bench also runs its redis-server with).
package testkit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// PollEvery is how often Eventually checks its condition.
const PollEvery = 5 * time.Millisecond

// Poll calls cond every interval, at once first, until it returns nil (Poll
// returns nil) or ctx is done (Poll returns ctx's error with cond's last).
func Poll(ctx context.Context, every time.Duration, cond func() error) error {
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		err := cond()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %v)", ctx.Err(), err)
		case <-tick.C:
		}
	}
}

var errNotYet = errors.New("condition not met")

// Until calls cond every interval, at once first, until it holds (Until
// reports true) or ctx is done (false).
func Until(ctx context.Context, every time.Duration, cond func() bool) bool {
	return Poll(ctx, every, func() error {
		if cond() {
			return nil
		}
		return errNotYet
	}) == nil
}

// Eventually waits until cond holds, checking it every PollEvery, and fails
// t (Fatalf, "timed out waiting for <what>") when ctx is done first; explain,
// if given, says what was there instead. Call it from the test's goroutine.
func Eventually(ctx context.Context, t testing.TB, what string, cond func() bool, explain ...func() string) {
	t.Helper()
	if Until(ctx, PollEvery, cond) {
		return
	}
	var why []string
	for _, f := range explain {
		why = append(why, f())
	}
	t.Fatalf("timed out waiting for %s %s", what, strings.Join(why, "; "))
}

// Context returns a context that ends after d or when t ends.
func Context(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// FreePort returns a TCP port of 127.0.0.1 that was free a moment ago, never
// 6379 (the machine's own Redis is never a test's).
func FreePort() (int, error) {
	for range 10 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		_ = l.Close()
		if port != 6379 {
			return port, nil
		}
	}
	return 0, errors.New("testkit: no free port other than 6379")
}

// Port is FreePort for a test: it fails t when there is none.
func Port(t testing.TB) int {
	t.Helper()
	p, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// Forward is the accept loop of a test's TCP proxy: it accepts connections
// on ln until ln is closed and, for each, dials target and hands both ends
// to pair, which owns them from then on (a failed dial closes the accepted
// one). pair returns false to stop accepting.
func Forward(ln net.Listener, target string, pair func(client, server net.Conn) bool) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", target)
		if err != nil {
			_ = c.Close()
			continue
		}
		if !pair(c, s) {
			return
		}
	}
}

// CI reports whether the tests run under CI=true, where a missing tool fails
// a test instead of skipping it.
func CI() bool { return os.Getenv("CI") == "true" }

// SkipOrFail skips t with the message, or fails it under CI=true: on CI a
// missing tool is a broken runner, not a reason to pass silently.
func SkipOrFail(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if CI() {
		t.Fatalf("%s (CI=true: this test must run)", msg)
	}
	t.Skip(msg)
}

// debPackages names the Debian package of the tools whose package is named
// otherwise.
var debPackages = map[string]string{"nginx": "nginx-light", "node": "nodejs", "redis-cli": "redis-tools"}

// Need returns the path of the program a test needs: found on PATH or at one
// of alsoAt (e.g. /usr/sbin/nginx). Without it t is skipped, or failed under
// CI=true (SkipOrFail).
func Need(t testing.TB, name string, alsoAt ...string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, p := range alsoAt {
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	pkg := debPackages[name]
	if pkg == "" {
		pkg = name
	}
	SkipOrFail(t, "%s is not installed (Debian: apt-get install %s)", name, pkg)
	return ""
}

// logWriter writes to t.Logf until t's cleanup, and drops what comes later
// (a goroutine that logs after its test ended would make testing panic).
type logWriter struct {
	t  testing.TB
	mu sync.Mutex
	on bool
}

func (w *logWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.on {
		w.t.Logf("%s", bytes.TrimRight(p, "\n"))
	}
	return len(p), nil
}

// Logger returns a text logger that writes records at level and above to
// t.Logf (Debug with VIRTUTUNE_TEST_DEBUG set), until t's cleanup.
func Logger(t testing.TB, level slog.Level) *slog.Logger {
	w := &logWriter{t: t, on: true}
	t.Cleanup(func() { w.mu.Lock(); w.on = false; w.mu.Unlock() })
	if os.Getenv("VIRTUTUNE_TEST_DEBUG") != "" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

// Buffer is a bytes.Buffer that several goroutines may write at once (logs
// of servers and clients a test prints only when it fails). The zero value
// is ready to use.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (l *Buffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String returns what was written so far.
func (l *Buffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
