package peer_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/virtutune/link/peer"
	"github.com/virtutune/link/protocol"
)

// sendChords sends the chords of seqs from..to (chordFor), failing the test on an error.
func sendChords(ctx context.Context, t testing.TB, c *peer.Client, from, to uint64) {
	t.Helper()
	for s := from; s <= to; s++ {
		if err := c.SendChord(ctx, chordFor(s)); err != nil {
			t.Fatalf("SendChord %d: %v", s, err)
		}
	}
}

// checkSeqs asserts that the deliveries are exactly seqs want, in order,
// each with the chord sent as that seq.
func checkSeqs(t testing.TB, name string, ds []peer.Delivery, want []uint64) {
	t.Helper()
	got := make([]uint64, len(ds))
	for i, d := range ds {
		got[i] = d.Msg.Seq
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("%s: delivered seqs %v,\nwant %v (lost, duplicated or reordered)", name, got, want)
	}
	for _, d := range ds {
		var cc protocol.ChordChange
		if err := json.Unmarshal(d.Msg.Data, &cc); err != nil || cc.Chord != chordFor(d.Msg.Seq) {
			t.Fatalf("%s: seq %d carries %q, want %q", name, d.Msg.Seq, cc.Chord, chordFor(d.Msg.Seq))
		}
	}
}

func seqRange(from, to uint64) []uint64 {
	var out []uint64
	for s := from; s <= to; s++ {
		out = append(out, s)
	}
	return out
}

// TestOutboxOverflow: the phone plays on while the server is out of its
// reach, far past its outbox (16 messages here; 4,096 by default). What it
// played before reaches the PC; once the server is back, the newest 16 of
// what it played meanwhile (the older ones were dropped from the full
// outbox: a chord is state, the newest matters most); then what it plays
// after; each once and in order. The first of the newest carries the gap,
// so the server takes it and what follows without a single
// invalid_sequence (before the gap, the server refused everything after
// the dropped messages, and the phone was stuck for good).
func TestOutboxOverflow(t *testing.T) {
	ctx, e := begin(t, 30*time.Second)
	g := newWSProxy(t, strings.TrimPrefix(e.url, "http://"), impairment{})
	defer g.close()
	const outbox = 16
	pcCfg, phCfg := e.pairConfigs(ctx, func(c *peer.Config) { c.DisableP2P = true },
		func(c *peer.Config) { c.DisableP2P = true; c.Outbox = outbox })
	pc := e.dial(ctx, pcCfg)
	defer pc.Close()
	// the phone reaches the server through the proxy
	phCfg.ServerURL, phCfg.WSURL, phCfg.SessionID = g.url(), "", pcCfg.SessionID
	phone := e.dial(ctx, phCfg)
	defer phone.Close()
	rctx, stop := context.WithCancel(ctx)
	atPC := collect(rctx, pc, phone.ClientID())
	atPhone := collect(rctx, phone, "") // its errors
	defer func() { stop(); <-atPC.done; <-atPhone.done }()

	const before, during, after = 5, 100, 5
	sendChords(ctx, t, phone, 1, before)
	waitFor(ctx, t, "the chords before the outage at the PC", func() bool { return atPC.len() == before })
	if err := phone.Flush(ctx); err != nil { // the server confirmed them: the outbox is empty
		t.Fatal(err)
	}

	g.setShut(true)
	waitFor(ctx, t, "the phone to lose the server", func() bool { return phone.State() != peer.StateConnected })
	sendChords(ctx, t, phone, before+1, before+during)
	if st := phone.Stats(); st.OutboxDropped != during-outbox || st.Unconfirmed != outbox {
		t.Fatalf("phone's outbox: dropped %d, unconfirmed %d; want %d, %d", st.OutboxDropped, st.Unconfirmed, during-outbox, outbox)
	}
	g.setShut(false)
	waitFor(ctx, t, "the phone back on the server", func() bool { return phone.State() == peer.StateConnected })
	sendChords(ctx, t, phone, before+during+1, before+during+after)

	n := before + outbox + after
	waitFor(ctx, t, "the newest chords at the PC", func() bool { return atPC.len() >= n },
		func() string { return fmt.Sprintf("%d of %d arrived", atPC.len(), n) })
	if err := phone.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := pc.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	want := append(seqRange(1, before), seqRange(before+during-outbox+1, before+during+after)...)
	checkSeqs(t, "at the PC", atPC.snapshot(), want)
	if n := atPhone.ErrorCodes()[string(protocol.CodeInvalidSequence)]; n != 0 {
		t.Errorf("the server refused %d of the phone's messages as invalid_sequence", n)
	}
	if st := phone.Stats(); st.Unconfirmed != 0 {
		t.Errorf("%d messages still unconfirmed by the server", st.Unconfirmed)
	}
}

// TestRestartedClient: a phone that restarts (a new process with its stored
// token, so the same client id, its own count at 1 again) counts on from the
// seqs of its earlier run, which the server gives it as its last_seq: its
// chords reach the PC, over the relay alone or over both paths, none dropped
// (by the server or the PC) as a resend of the earlier run's.
func TestRestartedClient(t *testing.T) {
	for _, p2p := range []bool{false, true} {
		t.Run(map[bool]string{false: "relay", true: "p2p"}[p2p], func(t *testing.T) {
			ctx, e := begin(t, 30*time.Second)
			mod := func(c *peer.Config) { c.DisableP2P = !p2p }
			pcCfg, phCfg := e.pairConfigs(ctx, mod, mod)
			pc := e.dial(ctx, pcCfg)
			defer pc.Close()
			first := e.dial(ctx, phCfg)
			rctx, stop := context.WithCancel(ctx)
			atPC := collect(rctx, pc, first.ClientID())
			defer func() { stop(); <-atPC.done }()
			if p2p {
				waitP2P(ctx, t, pc, first)
			}
			sendChords(ctx, t, first, 1, 5)
			waitFor(ctx, t, "the first run's chords at the PC", func() bool { return atPC.len() == 5 })
			first.Close()

			again := e.dial(ctx, phCfg)
			defer again.Close()
			if again.ClientID() != first.ClientID() {
				t.Fatalf("the restarted phone is client %q, was %q", again.ClientID(), first.ClientID())
			}
			copies := pc.Stats().P2PCopies
			if p2p {
				waitP2P(ctx, t, pc, again)
			}
			sendChords(ctx, t, again, 6, 10)
			waitFor(ctx, t, "the second run's chords at the PC", func() bool { return atPC.len() >= 10 },
				func() string { return fmt.Sprintf("%d of 10 arrived", atPC.len()) })
			if p2p {
				// both paths race: every copy of the second run came over the channel too
				waitFor(ctx, t, "the second run's copies over the data channel", func() bool { return pc.Stats().P2PCopies >= copies+5 })
			}
			if err := again.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			checkExact(t, "at the PC", atPC.snapshot(), 10)
		})
	}
}

// TestRestartedClientAfterDirectOnly: the phone's last chords before its
// restart went over the data channel only (the server was out of its
// reach), so the server's last_seq does not count them, but the PC
// delivered them. The restarted phone learns them from the PC's first
// heartbeat over the new channel and counts on after them (its next
// message carries the gap for the server): its chords reach the PC, none
// dropped as a resend of the earlier run's.
func TestRestartedClientAfterDirectOnly(t *testing.T) {
	ctx, e := begin(t, 30*time.Second)
	g := newWSProxy(t, strings.TrimPrefix(e.url, "http://"), impairment{})
	defer g.close()
	pcCfg, phCfg := e.pairConfigs(ctx, nil, nil)
	pc := e.dial(ctx, pcCfg)
	defer pc.Close()
	// the phone reaches the server through the proxy
	phCfg.ServerURL, phCfg.WSURL, phCfg.SessionID = g.url(), "", pcCfg.SessionID
	first := e.dial(ctx, phCfg)
	rctx, stop := context.WithCancel(ctx)
	atPC := collect(rctx, pc, first.ClientID())
	defer func() { stop(); <-atPC.done }()
	waitP2P(ctx, t, pc, first)
	sendChords(ctx, t, first, 1, 5)
	waitFor(ctx, t, "the first run's chords at the PC", func() bool { return atPC.len() == 5 })
	g.setShut(true)
	waitFor(ctx, t, "the phone to lose the server", func() bool { return first.State() != peer.StateConnected })
	sendChords(ctx, t, first, 6, 8)
	waitFor(ctx, t, "the chords sent over the channel only at the PC", func() bool { return atPC.len() == 8 })
	first.Close()
	g.setShut(false)

	again := e.dial(ctx, phCfg)
	defer again.Close()
	waitP2P(ctx, t, pc, again)
	waitFor(ctx, t, "a heartbeat round trip over the new channel", func() bool {
		ls := again.Links()
		return len(ls) == 1 && ls[0].RTT > 0
	})
	sendChords(ctx, t, again, 9, 11)
	waitFor(ctx, t, "the second run's chords at the PC", func() bool { return atPC.len() >= 11 },
		func() string { return fmt.Sprintf("%d of 11 arrived", atPC.len()) })
	if err := again.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	checkExact(t, "at the PC", atPC.snapshot(), 11)
	if st := again.Stats(); st.Unconfirmed != 0 {
		t.Errorf("%d of the restarted phone's messages unconfirmed by the server", st.Unconfirmed)
	}
}
