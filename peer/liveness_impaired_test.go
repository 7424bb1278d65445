package peer_test

import (
	"context"
	"testing"
	"time"

	"github.com/virtutune/link/peer"
	"github.com/virtutune/link/protocol"
)

// verdictOf is what c's status says of member id's liveness ("" while its
// link is up, or when id is not a member).
func verdictOf(c *peer.Client, id string) string {
	for _, l := range c.Status().Liveness {
		if l.Peer == id {
			return l.Verdict
		}
	}
	return "-"
}

// The probe over the relay tells the truth when the data channel cannot:
// with the direct path dead (UDP silently dropped) and the phone idle, the
// PC's status says the phone answers (live), its link down; with the
// phone's WebSocket held too (nothing reaches or leaves it), silent; live
// again once it is let through; and not probed ("") once the direct path is
// back. Times are logged, not asserted (each wait is bounded).
func TestLivenessWhileDirectPathDead(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	h := newImpaired(ctx, t, impairment{})
	defer h.close()
	waitP2P(ctx, t, h.pc, h.phone)
	ph := h.phone.ClientID()
	if v := verdictOf(h.pc, ph); v != peer.LiveNotProbed {
		t.Fatalf("the phone's liveness with its link up: %q, want not probed", v)
	}
	linkDown := func() bool { return h.pc.PathTo(ph) == protocol.PathRelay }

	died := time.Now()
	h.lan.udpDead.Store(true)
	waitFor(ctx, t, "the PC's link to the idle phone down, the phone answering by the relay", func() bool {
		return linkDown() && verdictOf(h.pc, ph) == peer.LiveOK
	})
	answering := time.Since(died)
	// The phone stays idle: over four probe intervals, looked at all along
	// (not at one moment at the end), it is never taken for silent (late,
	// a probe answered after 250 ms, is what a loaded machine may show).
	for end := time.Now().Add(4 * 250 * time.Millisecond); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if v := verdictOf(h.pc, ph); !linkDown() || (v != peer.LiveOK && v != peer.LiveLate) {
			t.Fatalf("%v later: the PC's path to the phone %s, its liveness %q; want relay and live (or late) throughout",
				time.Since(died).Round(time.Millisecond), h.pc.PathTo(ph), v)
		}
	}

	held := time.Now()
	h.proxy.setBlack(true)
	waitFor(ctx, t, "the phone shown silent while nothing reaches it", func() bool { return verdictOf(h.pc, ph) == peer.LiveSilent })
	silent := time.Since(held)
	freed := time.Now()
	h.proxy.setBlack(false)
	waitFor(ctx, t, "the phone answering again", func() bool { return verdictOf(h.pc, ph) == peer.LiveOK })
	again := time.Since(freed)

	h.lan.udpDead.Store(false)
	waitFor(ctx, t, "p2p again, the phone no longer probed", func() bool {
		return h.pc.PathTo(ph) == protocol.PathP2P && verdictOf(h.pc, ph) == peer.LiveNotProbed
	})
	t.Logf("direct path dead: the idle phone shown answering after %v; with its WebSocket held: silent after %v, answering %v after it was let through",
		answering.Round(time.Millisecond), silent.Round(time.Millisecond), again.Round(time.Millisecond))
}
