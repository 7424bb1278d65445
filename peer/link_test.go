package peer_test

import (
	"errors"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/virtutune/link/peer"
	"github.com/virtutune/link/protocol"
	"github.com/virtutune/link/signaling"
)

// A member that leaves takes its link with it at once: the PC must not show
// p2p to a phone that is gone.
func TestPeerLeavesLinkGoesAtOnce(t *testing.T) {
	ctx, e := begin(t, 30*time.Second)
	_, pc, phone := e.pair(ctx, nil, nil)
	defer pc.Close()
	waitP2P(ctx, t, pc, phone)
	id := phone.ClientID()
	phone.Close()
	waitFor(ctx, t, "the PC to drop the link", func() bool { return len(pc.Links()) == 0 })
	if p := pc.PathTo(id); p != protocol.PathRelay {
		t.Fatalf("path to the phone that left: %s", p)
	}
	if st := pc.Status(); st.Path != protocol.PathRelay || st.Reason != "no-peer" {
		t.Fatalf("PC status %+v; want relay, no-peer", st)
	}
}

// When the server ends the relay for good (here it restarted with another
// secret, so both reconnects are refused), the data channel that is up keeps
// carrying chords both ways; Send fails only once no channel is left.
func TestRelayEndsChannelCarriesOn(t *testing.T) {
	ctx, e := begin(t, 30*time.Second)
	d := e.pairRecording(ctx, nil, nil)
	pc, phone, atPC, atPhone := d.pc, d.phone, d.atPC, d.atPhone
	waitP2P(ctx, t, pc, phone)
	if err := phone.SendChord(ctx, chordFor(1)); err != nil {
		t.Fatal(err)
	}
	waitFor(ctx, t, "the first chord", func() bool { return atPC.len() == 1 })

	// the server goes; one on the same address with another secret refuses the tokens
	addr := e.hs.Listener.Addr().String()
	stopServer(e.srv, e.hs)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv2, hs2 := serveOn(t, ln, signaling.Config{Secret: []byte("another-secret-0123456789abcdef-0123456789"),
		Logger: slog.New(slog.DiscardHandler), PublicURL: e.url})
	defer stopServer(srv2, hs2)

	waitFor(ctx, t, "both relays ended", func() bool { return pc.Err() != nil && phone.Err() != nil })
	if !errors.Is(phone.Err(), peer.ErrTerminal) || phone.State() != peer.StateClosed {
		t.Fatalf("phone: err %v state %v; want ErrTerminal, closed", phone.Err(), phone.State())
	}
	if isDone(phone) {
		t.Fatal("the phone is done while its data channel is up")
	}
	for seq := uint64(2); seq <= 20; seq++ {
		if err := phone.SendChord(ctx, chordFor(seq)); err != nil {
			t.Fatalf("send %d with the channel up: %v", seq, err)
		}
	}
	if err := pc.SendChord(ctx, chordFor(1)); err != nil {
		t.Fatal(err)
	}
	waitFor(ctx, t, "the chords over the channel", func() bool { return atPC.len() == 20 && atPhone.len() == 1 })
	checkExact(t, "phone->PC", atPC.snapshot(), 20)

	// the PC leaves: the phone's channel ends, and with it the client
	pc.Close()
	waitFor(ctx, t, "the phone done", func() bool { return isDone(phone) })
	if err := phone.SendChord(ctx, "C"); !errors.Is(err, peer.ErrTerminal) {
		t.Fatalf("send with no path left: %v, want ErrTerminal", err)
	}
}

// A client replaced by a newer connection of its own id (4100) closes its
// channels at once: the newer one takes over, and gets its own channel.
func TestReplacedClosesChannels(t *testing.T) {
	ctx, e := begin(t, 30*time.Second)
	pcCfg, phCfg := e.pairConfigs(ctx, nil, nil)
	pc := e.dial(ctx, pcCfg)
	defer pc.Close()
	old := e.dial(ctx, phCfg)
	defer old.Close()
	waitP2P(ctx, t, pc, old)
	newer := e.dial(ctx, phCfg) // the same id: it replaces old
	defer newer.Close()
	waitFor(ctx, t, "the old one done", func() bool { return isDone(old) })
	if len(old.Links()) != 0 {
		t.Fatalf("the replaced client keeps links %+v", old.Links())
	}
	waitFor(ctx, t, "a channel between the PC and the newer phone", func() bool {
		return pc.PathTo(phCfg.ClientID) == protocol.PathP2P && newer.PathTo(pc.ClientID()) == protocol.PathP2P
	})
}

// isDone reports whether c has ended.
func isDone(c *peer.Client) bool {
	select {
	case <-c.Done():
		return true
	default:
		return false
	}
}
