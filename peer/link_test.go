package peer_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http/httptest"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/virtutune/link/peer"
	"github.com/virtutune/link/protocol"
	"github.com/virtutune/link/signaling"
)

// A member that leaves takes its link with it at once: the PC must not show
// p2p to a phone that is gone.
func TestPeerLeavesLinkGoesAtOnce(t *testing.T) {
	defer goleak.VerifyNone(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e := newEnv(t)
	defer e.close()
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
	defer goleak.VerifyNone(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e := newEnv(t)
	defer e.close()
	_, pc, phone := e.pair(ctx, nil, nil)
	defer pc.Close()
	defer phone.Close()
	rctx, stopRecv := context.WithCancel(ctx)
	defer stopRecv()
	atPC := collect(rctx, pc, phone.ClientID())
	atPhone := collect(rctx, phone, pc.ClientID())
	waitP2P(ctx, t, pc, phone)
	if err := phone.SendChord(ctx, chordFor(1)); err != nil {
		t.Fatal(err)
	}
	waitFor(ctx, t, "the first chord", func() bool { return atPC.len() == 1 })

	// the server goes; one on the same address with another secret refuses the tokens
	addr := e.hs.Listener.Addr().String()
	_ = e.srv.Close()
	e.hs.CloseClientConnections()
	e.hs.Close()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv2, err := signaling.New(signaling.Config{Secret: []byte("another-secret-0123456789abcdef-0123456789"),
		Logger: slog.New(slog.DiscardHandler), PublicURL: e.url})
	if err != nil {
		t.Fatal(err)
	}
	hs2 := httptest.NewUnstartedServer(srv2.Handler())
	hs2.Listener.Close()
	hs2.Listener = ln
	hs2.Start()
	defer func() { _ = srv2.Close(); hs2.CloseClientConnections(); hs2.Close() }()

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
	stopRecv()
	<-atPC.done
	<-atPhone.done
}

// A client replaced by a newer connection of its own id (4100) closes its
// channels at once: the newer one takes over, and gets its own channel.
func TestReplacedClosesChannels(t *testing.T) {
	defer goleak.VerifyNone(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e := newEnv(t)
	defer e.close()
	info, err := peer.CreateSession(ctx, e.url, "")
	if err != nil {
		t.Fatal(err)
	}
	ph, err := peer.Pair(ctx, info.PairingURL)
	if err != nil {
		t.Fatal(err)
	}
	pcCfg := e.config(protocol.RolePC, nil)
	pcCfg.SessionID, pcCfg.Token = info.SessionID, info.Token
	pc, err := peer.Dial(ctx, pcCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	phCfg := e.config(protocol.RolePhone, nil)
	phCfg.ServerURL, phCfg.WSURL, phCfg.Token = "", ph.WSURL, ph.Token
	phCfg.ClientID = ph.ClientID // the id bound to the phone's token (the server refuses any other)
	old, err := peer.Dial(ctx, phCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	waitP2P(ctx, t, pc, old)
	newer, err := peer.Dial(ctx, phCfg)
	if err != nil {
		t.Fatal(err)
	}
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
