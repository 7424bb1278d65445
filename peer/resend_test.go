package peer_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/virtutune/link/peer"
	"github.com/virtutune/link/signaling"
)

// TestResendWhatTheServerDidNotTake: the server processes messages it does
// not take (here: over its rate limit, dropped with rate_limited; with Redis
// down: delivered on one instance only, answered unavailable). The client
// learns it from the last_seq of its next pong and resends them from its
// outbox without a reconnect: every chord arrives exactly once, in order.
func TestResendWhatTheServerDidNotTake(t *testing.T) {
	ctx, e := begin(t, 30*time.Second, func(c *signaling.Config) {
		c.Logger = slog.New(slog.DiscardHandler)
		c.Limits = signaling.Limits{Rate: 200, Burst: 20, FloodClose: 1 << 20}
	})
	relayOnly := func(c *peer.Config) {
		c.DisableP2P, c.PingInterval = true, 50*time.Millisecond
		c.BackoffMin, c.BackoffMax = 20*time.Millisecond, 100*time.Millisecond
	}
	d := e.pairRecording(ctx, relayOnly, relayOnly) // the phone's recorder drains its rate_limited errors
	pc, phone, atPC := d.pc, d.phone, d.atPC

	const n = 300 // far over the burst of 20: most are dropped at first
	for i := 1; i <= n; i++ {
		if err := phone.SendChord(ctx, chordFor(uint64(i))); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(ctx, t, "every chord at the PC", func() bool { return atPC.len() >= n })
	waitFor(ctx, t, "the server to hold every chord", func() bool {
		fctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		return phone.Flush(fctx) == nil && phone.Stats().Unconfirmed == 0
	})
	if err := pc.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	checkExact(t, "phone->PC", atPC.snapshot(), n)
	if r := phone.Stats().Reconnects; r != 0 {
		t.Fatalf("the phone reconnected %d times; the resend must not need a reconnect", r)
	}
}
