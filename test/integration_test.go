package test

// Two server instances (child processes of the test) share one real Redis:
// the phone on one, the PC on the other. These tests show that the original
// protocol's flows, WebRTC signaling and the relay work across instances
// exactly as on one.

import (
	"encoding/json"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/virtutune/link/internal/peertest"
	"github.com/virtutune/link/internal/testkit"
	"github.com/virtutune/link/peer"
	"github.com/virtutune/link/protocol"
)

// membersByID indexes a session state's members.
func membersByID(st protocol.SessionState) map[string]protocol.Member {
	out := map[string]protocol.Member{}
	for _, m := range st.Members {
		out[m.ClientID] = m
	}
	return out
}

// wantMembers asserts that st lists exactly the given client ids, each on
// the given instance.
func wantMembers(t testing.TB, name string, st protocol.SessionState, want map[string]string) {
	t.Helper()
	got := membersByID(st)
	if len(got) != len(want) {
		t.Fatalf("%s: session_state lists %d members %+v, want %d", name, len(got), st.Members, len(want))
	}
	for id, inst := range want {
		m, ok := got[id]
		if !ok {
			t.Fatalf("%s: session_state lacks member %s: %+v", name, id, st.Members)
		}
		if m.Instance != inst {
			t.Fatalf("%s: member %s is on instance %q, want %q", name, id, m.Instance, inst)
		}
	}
}

func decodeState(t testing.TB, m *protocol.Message) protocol.SessionState {
	t.Helper()
	var st protocol.SessionState
	if err := json.Unmarshal(m.Data, &st); err != nil {
		t.Fatalf("session_state: %v", err)
	}
	return st
}

// TestTwoInstancesOriginalFlows: PC on instance B, phone on instance A, the
// relay only. Every flow of the original protocol crosses instances: the
// connection_update both ways, chord_change to the other member only,
// practice_update to both, ping answered with pong to the sender alone, the
// errors of the seed, the disconnect notice, and a newcomer's snapshot on
// either instance. Then 1,000 chord changes each way arrive exactly once and
// in order.
func TestTwoInstancesOriginalFlows(t *testing.T) {
	ctx := testkit.Context(t, 60*time.Second)
	log := testkit.Logger(t, slog.LevelWarn)
	_, a, b := twoInstances(t, false, "")

	info := createSession(ctx, t, a.url)
	pc, phone, atPC, atPhone := joinPCAndPhone(ctx, t, log, info, b, a, true) // paired through A

	// The newcomer's own connection_update came first (peer.Dial checks it
	// in its handshake and keeps it); then the state with both members and
	// where each is connected. (The raw clients below check the order on the wire.)
	testkit.Eventually(ctx, t, "the phone's session_state", func() bool { return len(atPhone.OfType(protocol.TypeSessionState)) == 1 })
	if first := atPhone.Matching(func(peer.Delivery) bool { return true })[0]; first.Msg.Type != protocol.TypeSessionState {
		t.Fatalf("phone's first delivery: %s %s, want session_state", first.Msg.Type, first.Msg.Data)
	}
	wantMembers(t, "phone's snapshot", phone.SessionState(), map[string]string{pc.ClientID(): "B", phone.ClientID(): "A"})

	// connection_update crosses from A to B.
	testkit.Eventually(ctx, t, "the PC to hear the phone connect", func() bool { return len(atPC.ConnUpdates(phone.ClientID())) == 1 })
	if got := atPC.ConnUpdates(phone.ClientID())[0]; got.Status != protocol.StatusConnected || got.Role != protocol.RolePhone || got.UserID != info.UserID {
		t.Fatalf("PC got %+v about the phone", got)
	}

	// chord_change: to the other member only, both ways.
	if err := phone.SendChord(ctx, "Am"); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(ctx, t, "the phone's chord at the PC", func() bool { return atPC.CountFrom(phone.ClientID()) == 1 })
	if err := pc.SendChord(ctx, "G"); err != nil { // after Am: the session's chord is G
		t.Fatal(err)
	}
	testkit.Eventually(ctx, t, "the PC's chord at the phone", func() bool { return atPhone.CountFrom(pc.ClientID()) == 1 })
	// practice_update: to both, the sender included.
	if err := phone.PracticeStart(ctx); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(ctx, t, "practice started at both", func() bool {
		return len(atPC.OfType(protocol.TypePracticeUpdate)) == 1 && len(atPhone.OfType(protocol.TypePracticeUpdate)) == 1
	})
	if err := pc.PracticeEnd(ctx); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(ctx, t, "practice ended at both", func() bool {
		return len(atPC.OfType(protocol.TypePracticeUpdate)) == 2 && len(atPhone.OfType(protocol.TypePracticeUpdate)) == 2
	})
	settle(ctx, t, pc, phone)
	for name, r := range map[string]*peertest.Recorder{"PC": atPC, "phone": atPhone} {
		var st []string
		for _, d := range r.OfType(protocol.TypePracticeUpdate) {
			var pu protocol.PracticeUpdate
			_ = json.Unmarshal(d.Msg.Data, &pu)
			st = append(st, pu.Status)
		}
		if len(st) != 2 || st[0] != protocol.PracticeStarted || st[1] != protocol.PracticeEnded {
			t.Fatalf("%s got practice updates %v, want [started ended]", name, st)
		}
	}
	if n := atPhone.CountFrom(phone.ClientID()) + atPC.CountFrom(pc.ClientID()); n != 0 {
		t.Fatalf("a sender got its own chord_change back (%d)", n)
	}

	// Original clients (token in the query, no seq): one on each instance.
	tok1 := pairPhone(ctx, t, newPairing(ctx, t, b.url, info)).Token
	raw1 := dialRaw(ctx, t, b.url, info.SessionID, tok1, "")
	st1 := decodeState(t, raw1.wait(ctx, "session_state", isType(protocol.TypeSessionState, nil)))
	tok2 := pairPhone(ctx, t, newPairing(ctx, t, a.url, info)).Token
	raw2 := dialRaw(ctx, t, a.url, info.SessionID, tok2, "")
	st2 := decodeState(t, raw2.wait(ctx, "session_state", isType(protocol.TypeSessionState, nil)))
	for name, rc := range map[string]*rawClient{"newcomer on B": raw1, "newcomer on A": raw2} {
		if ms := rc.all(); ms[0].Type != protocol.TypeConnectionUpdate || ms[1].Type != protocol.TypeSessionState {
			t.Fatalf("%s: first messages %s, %s; want its own connection_update, then session_state", name, ms[0].Type, ms[1].Type)
		}
	}
	// The newcomer's snapshot is the same wherever it lands.
	for name, st := range map[string]protocol.SessionState{"newcomer on B": st1, "newcomer on A": st2} {
		if st.Chord != "G" || st.ChordFrom != pc.ClientID() || st.Practice.Status != protocol.PracticeEnded {
			t.Fatalf("%s: snapshot chord %q from %q, practice %q; want G from the PC, ended", name, st.Chord, st.ChordFrom, st.Practice.Status)
		}
	}
	wantMembers(t, "newcomer on B", st1, map[string]string{pc.ClientID(): "B", phone.ClientID(): "A", raw1.id: "B"})
	wantMembers(t, "newcomer on A", st2, map[string]string{pc.ClientID(): "B", phone.ClientID(): "A", raw1.id: "B", raw2.id: "A"})

	// ping: the pong, with the same timestamp, goes to the sender alone.
	raw1.send(`{"type":"ping","data":{"timestamp":"2024-01-01T12:00:00Z"}}`)
	raw2.send(`{"type":"ping","data":{"timestamp":1700000000123}}`)
	raw1.wait(ctx, "its pong", isType(protocol.TypePong, map[string]string{"timestamp": `"2024-01-01T12:00:00Z"`}))
	raw2.wait(ctx, "its pong", isType(protocol.TypePong, map[string]string{"timestamp": `1700000000123`}))
	// The seed's errors; the connection stays open.
	raw1.send(`{not json`)
	raw1.wait(ctx, "Invalid JSON format", isType(protocol.TypeError, map[string]string{"message": `"Invalid JSON format"`}))
	raw1.send(`{"type":"strum","data":{}}`)
	raw1.wait(ctx, "unknown type", isType(protocol.TypeError, map[string]string{"message": `"Unknown message type: strum"`}))
	raw1.send(`{"type":"chord_change","data":{}}`)
	raw1.wait(ctx, "Chord is required", isType(protocol.TypeError, map[string]string{"message": `"Chord is required"`}))
	// An original client's chord (no seq) reaches every other member, on both instances.
	raw1.send(`{"type":"chord_change","data":{"chord":"Em"}}`)
	raw2.wait(ctx, "raw1's chord", isType(protocol.TypeChordChange, map[string]string{"chord": `"Em"`}))
	testkit.Eventually(ctx, t, "raw1's chord at PC and phone", func() bool {
		return atPC.CountFrom(raw1.id) == 1 && atPhone.CountFrom(raw1.id) == 1
	})
	raw2.send(`{"type":"ping","data":{"timestamp":2}}`)
	raw2.wait(ctx, "its second pong", isType(protocol.TypePong, map[string]string{"timestamp": `2`}))
	raw1.send(`{"type":"ping","data":{"timestamp":1}}`)
	raw1.wait(ctx, "its second pong", isType(protocol.TypePong, map[string]string{"timestamp": `1`}))
	for name, rc := range map[string]*rawClient{"raw1": raw1, "raw2": raw2} {
		pongs, own := 0, 0
		for _, m := range rc.all() {
			switch m.Type {
			case protocol.TypePong:
				pongs++
			case protocol.TypeChordChange:
				if m.From == rc.id {
					own++
				}
			}
		}
		if pongs != 2 || own != 0 {
			t.Fatalf("%s received %d pongs (want its own 2) and %d of its own chords (want 0)", name, pongs, own)
		}
	}

	// Disconnect notice: raw2 (on A) leaves; every remaining member hears it.
	raw2.close()
	testkit.Eventually(ctx, t, "the disconnect notice", func() bool {
		return len(atPC.ConnUpdates(raw2.id)) == 2 && len(atPhone.ConnUpdates(raw2.id)) == 2
	})
	for name, cus := range map[string][]protocol.ConnectionUpdate{"PC": atPC.ConnUpdates(raw2.id), "phone": atPhone.ConnUpdates(raw2.id)} {
		if cus[0].Status != protocol.StatusConnected || cus[1].Status != protocol.StatusDisconnected || cus[1].UserID != info.UserID {
			t.Fatalf("%s heard %+v about raw2, want connected then disconnected", name, cus)
		}
	}
	raw1.wait(ctx, "raw2's disconnect", isType(protocol.TypeConnectionUpdate, map[string]string{"status": `"disconnected"`, "client_id": strconv.Quote(raw2.id)}))
	raw1.close()

	// 1,000 chord changes each way, as fast as the peers send them.
	const n = 1000
	basePhone, basePC := uint64(3), uint64(3) // seqs 1-2 were a chord and a practice message
	start := time.Now()
	s1 := peertest.StartSender(ctx, phone, n, 0)
	s2 := peertest.StartSender(ctx, pc, n, 0)
	s1.Wait(ctx, t, "phone")
	s2.Wait(ctx, t, "pc")
	testkit.Eventually(ctx, t, "1,000 chords each way", func() bool {
		return atPC.CountFrom(phone.ClientID()) >= n+1 && atPhone.CountFrom(pc.ClientID()) >= n+1
	}, describe("PC", pc, atPC), describe("phone", phone, atPhone))
	elapsed := time.Since(start)
	settle(ctx, t, pc, phone)
	peertest.CheckChords(t, "phone->PC", atPC.ChordsFrom(phone.ClientID())[1:], basePhone, n)
	peertest.CheckChords(t, "PC->phone", atPhone.ChordsFrom(pc.ClientID())[1:], basePC, n)
	for name, c := range map[string]*peer.Client{"PC": pc, "phone": phone} {
		st := c.Stats()
		if st.Reconnects != 0 || st.OutboxDropped != 0 {
			t.Errorf("%s: %d reconnects, %d outbox drops during the run", name, st.Reconnects, st.OutboxDropped)
		}
		t.Logf("%s: duplicates dropped %d", name, st.Duplicates)
	}
	if codes := atPC.ErrorCodes(); len(codes) != 0 {
		t.Errorf("PC got errors %v", codes)
	}
	if codes := atPhone.ErrorCodes(); len(codes) != 0 {
		t.Errorf("phone got errors %v", codes)
	}
	t.Logf("1,000 chord changes each way across instances A and B (relay): all arrived once and in order in %v", elapsed.Round(time.Millisecond))
}

// TestTwoInstancesP2P: the WebRTC signaling (offer, answer, candidates)
// crosses instances, the data channel opens, and 1,000 chord changes each
// way arrive exactly once and in order over it.
func TestTwoInstancesP2P(t *testing.T) {
	ctx := testkit.Context(t, 60*time.Second)
	log := testkit.Logger(t, slog.LevelWarn)
	_, a, b := twoInstances(t, false, "")

	info := createSession(ctx, t, b.url)
	pc, phone, atPC, atPhone := joinPCAndPhone(ctx, t, log, info, a, b, false)
	start := time.Now()
	testkit.Eventually(ctx, t, "the data channel to open on both sides", func() bool {
		return pc.Path() == protocol.PathP2P && phone.Path() == protocol.PathP2P
	})
	t.Logf("data channel open %v after the phone joined (signaling through A and B)", time.Since(start).Round(time.Millisecond))
	settle(ctx, t, pc, phone) // both have told their server the channel is up

	const n = 1000
	start = time.Now()
	s1 := peertest.StartSender(ctx, phone, n, 0)
	s2 := peertest.StartSender(ctx, pc, n, 0)
	s1.Wait(ctx, t, "phone")
	s2.Wait(ctx, t, "pc")
	testkit.Eventually(ctx, t, "1,000 chords each way", func() bool {
		return atPC.CountFrom(phone.ClientID()) >= n && atPhone.CountFrom(pc.ClientID()) >= n
	}, describe("PC", pc, atPC), describe("phone", phone, atPhone))
	elapsed := time.Since(start)
	settle(ctx, t, pc, phone)
	p1 := peertest.CheckChords(t, "phone->PC", atPC.ChordsFrom(phone.ClientID()), 1, n)
	p2 := peertest.CheckChords(t, "PC->phone", atPhone.ChordsFrom(pc.ClientID()), 1, n)
	// Both paths race: each chord arrives over the data channel and over the
	// relay, and whichever comes first is delivered.
	if pc.Stats().P2PCopies < n || phone.Stats().P2PCopies < n {
		t.Fatalf("copies over the data channel: PC %d, phone %d; want %d each (first by path: phone->PC %v, PC->phone %v)",
			pc.Stats().P2PCopies, phone.Stats().P2PCopies, n, p1, p2)
	}
	t.Logf("1,000 chord changes each way over both paths: all once and in order in %v (first by path: phone->PC %v, PC->phone %v); duplicates dropped PC %d phone %d",
		elapsed.Round(time.Millisecond), p1, p2, pc.Stats().Duplicates, phone.Stats().Duplicates)

	// The servers stored what went direct: a newcomer on either instance sees
	// the last chord of the session.
	for _, in := range []*instance{a, b} {
		tok := pairPhone(ctx, t, newPairing(ctx, t, in.url, info)).Token
		rc := dialRaw(ctx, t, in.url, info.SessionID, tok, "")
		st := decodeState(t, rc.wait(ctx, "session_state", isType(protocol.TypeSessionState, nil)))
		if st.Chord != peertest.ChordFor(n) {
			t.Fatalf("newcomer on %s: chord %q, want %q", in.name, st.Chord, peertest.ChordFor(n))
		}
		rc.close()
	}
}
