package main

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/virtutune/link/internal/testkit"
)

// TestLoadSessionResends checks the load client's sender against a real
// server: a chord that never reached the session (as a publish refused with
// unavailable) makes the server refuse the next seq as skipping ahead, the
// phone asks for a pong, and the sender resends from after the pong's
// last_seq, so the receiver gets
// every chord once and in order; a hole longer than the sender keeps is
// declared as a gap and the chords after it still arrive.
func TestLoadSessionResends(t *testing.T) {
	in, err := startInstance(slog.New(slog.DiscardHandler), nil, "bench-a", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	api := newAPIClient(in.URL)
	defer api.hc.CloseIdleConnections()
	w := &worker{target: "project"}
	s, err := w.dialSession(ctx, workerCmd{Target: "project", API: in.URL, PhoneBase: in.URL, PCBase: in.URL}, api, 0)
	if err != nil {
		t.Fatal(err)
	}
	go s.readLoop(s.pc, true)
	go s.readLoop(s.phone, false)
	defer func() {
		s.phone.close()
		s.pc.close()
	}()
	// lose skips n seqs as if their publishes had failed: counted as
	// sent, kept for a resend, never written.
	lose := func(n int) {
		for range n {
			s.seq++
			s.sentAt[s.seq%uint64(len(s.sentAt))] = nowMillis()
			s.sentN.Add(1)
		}
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		if err := testkit.Poll(ctx, 2*time.Millisecond, func() error {
			if !cond() {
				return fmt.Errorf("waiting for %s", what)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	unique := func() uint64 {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.unique
	}
	send := func() {
		t.Helper()
		if err := s.send(); err != nil {
			t.Fatal(err)
		}
	}

	send()
	send()
	waitFor("seqs 1-2", func() bool { return unique() == 2 })
	lose(1) // seq 3
	send()  // seq 4: refused; the pong's last_seq is 2
	waitFor("the pong", func() bool { return s.resendFrom.Load() == 3 })
	send() // 3 and 4 again, then 5
	waitFor("seqs 3-5", func() bool { return unique() == 5 })
	if got := s.resent.Load(); got != 2 {
		t.Errorf("resent %d, want 2", got)
	}

	lose(len(s.sentAt) + 6) // seqs 6-75: more than the sender keeps
	send()                  // 76: refused; the pong's last_seq is 5
	waitFor("the second pong", func() bool { return s.resendFrom.Load() == 6 })
	send() // 13-76 again (6-12 given up as a gap), then 77
	want := uint64(5 + len(s.sentAt) + 1)
	waitFor("seqs 13-77", func() bool { return unique() == want })
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dup != 0 || s.reord != 0 || s.maxSeq != 77 {
		t.Errorf("dup %d, reordered %d, max seq %d", s.dup, s.reord, s.maxSeq)
	}
	if got := s.resent.Load(); got != 2+uint64(len(s.sentAt)) {
		t.Errorf("resent %d, want %d", got, 2+len(s.sentAt))
	}
}
