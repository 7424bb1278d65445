package testkit

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestPoll(t *testing.T) {
	ctx := Context(t, 10*time.Second)
	var n atomic.Int32
	if err := Poll(ctx, time.Millisecond, func() error {
		if n.Add(1) < 3 {
			return errors.New("not yet")
		}
		return nil
	}); err != nil || n.Load() != 3 {
		t.Fatalf("Poll: %v after %d calls, want nil after 3", err, n.Load())
	}
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	err := Poll(short, time.Millisecond, func() error { return errors.New("never") })
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "never") {
		t.Fatalf("Poll past its deadline: %v, want the deadline and the last error", err)
	}
	if Until(short, time.Millisecond, func() bool { return false }) {
		t.Fatal("Until reported true for a condition that never holds")
	}
	if !Until(short, time.Millisecond, func() bool { return true }) {
		t.Fatal("Until reported false for a condition that holds (checked at once)")
	}
}

// fakeTB records Fatalf instead of ending the goroutine.
type fakeTB struct {
	testing.TB
	fatal string
}

func (f *fakeTB) Helper() {}
func (f *fakeTB) Fatalf(format string, args ...any) {
	f.fatal = fmt.Sprintf(format, args...)
}

func TestEventually(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	f := &fakeTB{TB: t}
	Eventually(ctx, f, "the impossible", func() bool { return false }, func() string { return "it was not" })
	if f.fatal != "timed out waiting for the impossible it was not" {
		t.Fatalf("Eventually failed with %q", f.fatal)
	}
	f.fatal = ""
	Eventually(ctx, f, "the obvious", func() bool { return true })
	if f.fatal != "" {
		t.Fatalf("Eventually failed on a condition that holds: %q", f.fatal)
	}
}

func TestFreePort(t *testing.T) {
	p := Port(t)
	if p == 6379 || p <= 0 {
		t.Fatalf("port %d", p)
	}
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
	if err != nil {
		t.Fatalf("the free port %d is not free: %v", p, err)
	}
	l.Close()
}
