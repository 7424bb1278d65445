package signaling_test

import (
	"testing"

	"github.com/gorilla/websocket"

	"github.com/virtutune/link/protocol"
	"github.com/virtutune/link/signaling"
)

func chordOf(t testing.TB, m *protocol.Message) string {
	t.Helper()
	if m.Type != protocol.TypeChordChange {
		t.Fatalf("got %s %s, want chord_change", m.Type, m.Data)
	}
	var cc protocol.ChordChange
	mustUnmarshal(t, m.Data, &cc)
	return cc.Chord
}

// rejoin dials again with the same client id.
func (ts *testServer) rejoin(t testing.TB, sid, token, cid string) (*wsClient, protocol.SessionState) {
	t.Helper()
	conn, _, err := ts.dialRaw(t, sid, token, nil, "client_id="+cid)
	if err != nil {
		t.Fatal(err)
	}
	c := &wsClient{t: t, conn: conn}
	t.Cleanup(func() { conn.Close() })
	var cu protocol.ConnectionUpdate
	mustUnmarshal(t, c.expect(protocol.TypeConnectionUpdate).Data, &cu)
	if cu.ClientID != cid {
		t.Fatalf("client id %s, want %s", cu.ClientID, cid)
	}
	c.ID = cid
	var snap protocol.SessionState
	mustUnmarshal(t, c.expect(protocol.TypeSessionState).Data, &snap)
	return c, snap
}

// A client that reconnects with the last offset it saw gets exactly what it
// missed, in order, then resumed.
func TestResumeAfterReconnect(t *testing.T) {
	ts := newServer(t, nil)
	sess, pc, phone := pcAndPhone(t, ts)
	phone.send(protocol.TypeChordChange, map[string]string{"chord": "C"})
	m := pc.next()
	if chordOf(t, m) != "C" {
		t.Fatal("want C")
	}
	lastOff := m.Off
	pcID := pc.ID
	pc.bye()
	// the phone learns the PC left, then keeps playing
	var cu protocol.ConnectionUpdate
	mustUnmarshal(t, phone.expect(protocol.TypeConnectionUpdate).Data, &cu)
	if cu.Status != "disconnected" {
		t.Fatalf("%+v", cu)
	}
	for _, c := range []string{"G", "Am", "F"} {
		phone.send(protocol.TypeChordChange, map[string]string{"chord": c})
	}
	phone.send(protocol.TypePracticeStart, map[string]any{"timestamp": 1718000000000})
	phone.expect(protocol.TypePracticeUpdate)

	pc2, snap := ts.rejoin(t, sess.SessionID, sess.Token, pcID)
	if snap.Chord != "F" {
		t.Fatalf("snapshot chord %q", snap.Chord)
	}
	pc2.send(protocol.TypeResume, protocol.Resume{Since: lastOff})
	var got []string
	for {
		m := pc2.next()
		if m.Type == protocol.TypeResumed {
			var r protocol.Resumed
			mustUnmarshal(t, m.Data, &r)
			if !r.Recovered || r.Count != 4 {
				t.Fatalf("resumed %+v", r)
			}
			break
		}
		switch m.Type {
		case protocol.TypeChordChange:
			got = append(got, chordOf(t, m))
		case protocol.TypePracticeUpdate:
			got = append(got, "practice")
		default:
			t.Fatalf("unexpected %s %s", m.Type, m.Data)
		}
	}
	if want := []string{"G", "Am", "F", "practice"}; len(got) != 4 || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] || got[3] != want[3] {
		t.Fatalf("replayed %v, want %v", got, want)
	}
	pc2.sync()
}

// When history no longer reaches back, resume answers with a fresh snapshot
// flagged recovered:false.
func TestResumeBeyondHistory(t *testing.T) {
	b, err := signaling.NewMemoryBroker(signaling.MemoryConfig{HistorySize: 3})
	ts := withBroker(t, b, err)
	sess, pc, phone := pcAndPhone(t, ts)
	lastOff, pcID := pcLeavesAfterC(pc, phone)
	for _, c := range []string{"G", "Am", "F", "D", "E"} {
		phone.send(protocol.TypeChordChange, map[string]string{"chord": c})
	}
	phone.sync()
	pc2, _ := ts.rejoin(t, sess.SessionID, sess.Token, pcID)
	pc2.send(protocol.TypeResume, protocol.Resume{Since: lastOff})
	var snap protocol.SessionState
	mustUnmarshal(t, pc2.expect(protocol.TypeSessionState).Data, &snap)
	if snap.Recovered == nil || *snap.Recovered || snap.Chord != "E" {
		t.Fatalf("snapshot %+v", snap)
	}
	var r protocol.Resumed
	mustUnmarshal(t, pc2.expect(protocol.TypeResumed).Data, &r)
	if r.Recovered {
		t.Fatalf("resumed %+v", r)
	}
}

// Sequence numbers: resends are ignored, skips are refused, forged senders
// are refused, and pong reports the last accepted seq.
func TestSequenceRules(t *testing.T) {
	ts := newServer(t, nil)
	_, pc, phone := pcAndPhone(t, ts)
	send := func(seq uint64, chord string, from string) {
		m := protocol.MustMarshal(protocol.TypeChordChange, protocol.ChordChange{Chord: chord})
		m.Seq, m.From = seq, from
		phone.sendRaw(string(protocol.Encode(m)))
	}
	send(1, "C", phone.ID)
	if m := pc.next(); chordOf(t, m) != "C" || m.Seq != 1 {
		t.Fatalf("got %s", protocol.Encode(m))
	}
	send(1, "C", "") // a resend: ignored, no error
	send(5, "G", "") // skips ahead
	if e := errData(t, phone.next()); e.Code != protocol.CodeInvalidSequence {
		t.Fatalf("error %+v", e)
	}
	send(2, "G", "someone-else")
	if e := errData(t, phone.next()); e.Code != protocol.CodeInvalidSequence {
		t.Fatalf("error %+v", e)
	}
	send(2, "G", "")
	if m := pc.next(); chordOf(t, m) != "G" || m.Seq != 2 {
		t.Fatalf("got %s", protocol.Encode(m))
	}
	send(0, "Am", "") // no seq: the server assigns the next
	if m := pc.next(); chordOf(t, m) != "Am" || m.Seq != 3 {
		t.Fatalf("got %s", protocol.Encode(m))
	}
	phone.send(protocol.TypePing, map[string]any{})
	var pong protocol.Timestamped
	mustUnmarshal(t, phone.expect(protocol.TypePong).Data, &pong)
	if pong.LastSeq == nil || *pong.LastSeq != 3 || len(pong.Timestamp) == 0 {
		t.Fatalf("pong %+v", pong)
	}
	pc.sync()
}

// Both paths race: a message the sender also delivered over a data channel
// (marked direct by an older client, to a receiver that declared the
// channel up) is relayed like any other, and a channel declared down has
// nothing to replay.
func TestDirectIsRelayedToo(t *testing.T) {
	ts := newServer(t, nil)
	_, pc, phone := pcAndPhone(t, ts)
	pc.send(protocol.TypeP2PState, protocol.P2PState{Peer: phone.ID, Up: true})
	pc.sync()
	direct := func(chord string) {
		m := protocol.MustMarshal(protocol.TypeChordChange, protocol.ChordChange{Chord: chord})
		m.Direct = []string{pc.ID}
		phone.sendRaw(string(protocol.Encode(m)))
	}
	direct("C")
	direct("G")
	phone.send(protocol.TypeChordChange, map[string]string{"chord": "Am"})
	for i, want := range []string{"C", "G", "Am"} {
		m := pc.next()
		if chordOf(t, m) != want || m.Seq != uint64(i+1) || len(m.Direct) != 0 {
			t.Fatalf("got %s, want %s seq %d without direct", protocol.Encode(m), want, i+1)
		}
	}
	pc.send(protocol.TypeP2PState, protocol.P2PState{Peer: phone.ID, Up: false, LastSeq: 1, Reason: "closed"})
	pc.sync() // nothing replayed
	direct("F")
	if m := pc.next(); chordOf(t, m) != "F" || m.Seq != 4 {
		t.Fatalf("got %s", protocol.Encode(m))
	}
}

// A second connection with the same client id replaces the first (4100) and
// nobody is told it left.
func TestReplacedConnection(t *testing.T) {
	ts := newServer(t, nil)
	sess, pc, phone := pcAndPhone(t, ts)
	pc2, _ := ts.rejoin(t, sess.SessionID, sess.Token, pc.ID)
	for {
		_, err := pc.read(5e9)
		if err == nil {
			continue
		}
		if !websocket.IsCloseError(err, protocol.CloseReplaced) {
			t.Fatalf("old connection closed with %v, want 4100", err)
		}
		break
	}
	// the phone hears only the new arrival
	var cu protocol.ConnectionUpdate
	mustUnmarshal(t, phone.expect(protocol.TypeConnectionUpdate).Data, &cu)
	if cu.Status != "connected" || cu.ClientID != pc.ID {
		t.Fatalf("%+v", cu)
	}
	phone.sync()
	phone.send(protocol.TypeChordChange, map[string]string{"chord": "D"})
	if chordOf(t, pc2.next()) != "D" {
		t.Fatal("want D")
	}
}

// Signaling reaches exactly its target, stamped with the sender's id.
func TestSignalingToOneMember(t *testing.T) {
	ts := newServer(t, nil)
	sess, pc, phone := pcAndPhone(t, ts)
	third, _ := ts.join(t, sess.SessionID, ts.memberToken(t, sess, "phone"))
	pc.expect(protocol.TypeConnectionUpdate)
	phone.expect(protocol.TypeConnectionUpdate)
	m := protocol.MustMarshal(protocol.TypeRTCOffer, protocol.RTCDescription{SDP: "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n", Generation: 1})
	m.To = phone.ID
	pc.sendRaw(string(protocol.Encode(m)))
	got := phone.expect(protocol.TypeRTCOffer)
	if got.From != pc.ID || got.To != phone.ID {
		t.Fatalf("got %s", protocol.Encode(got))
	}
	c := protocol.MustMarshal(protocol.TypeRTCCandidate, protocol.RTCCandidate{Candidate: "a=candidate:1 1 udp 2122260223 abc.local 5000 typ host"})
	c.To = pc.ID
	phone.sendRaw(string(protocol.Encode(c)))
	var cand protocol.RTCCandidate
	mustUnmarshal(t, pc.expect(protocol.TypeRTCCandidate).Data, &cand)
	if cand.Candidate != "candidate:1 1 udp 2122260223 abc.local 5000 typ host" {
		t.Fatalf("candidate %q", cand.Candidate)
	}
	// to oneself
	m.To = pc.ID
	pc.sendRaw(string(protocol.Encode(m)))
	if e := errData(t, pc.next()); e.Code != protocol.CodeInvalidTarget {
		t.Fatalf("%+v", e)
	}
	third.sync()
	pc.sync()
	phone.sync()
}

// Resume reaches only the member's own session: a member of B asking for
// everything since offset 0 gets B's history and nothing of A's.
func TestResumeIsolation(t *testing.T) {
	ts := newServer(t, nil)
	_, aPC, aPhone := pcAndPhone(t, ts)
	_, bPC, bPhone := pcAndPhone(t, ts)
	for _, c := range []string{"C", "G", "Am"} {
		aPhone.send(protocol.TypeChordChange, map[string]string{"chord": c})
		aPC.next()
	}
	bPhone.send(protocol.TypeChordChange, map[string]string{"chord": "E"})
	bPC.next()
	bPC.send(protocol.TypeResume, protocol.Resume{Since: 0, Seen: map[string]uint64{aPhone.ID: 0}})
	for {
		m := bPC.next()
		if m.Type == protocol.TypeResumed {
			break
		}
		if m.From == aPhone.ID || m.From == aPC.ID {
			t.Fatalf("session B's member got %s from session A", protocol.Encode(m))
		}
		if m.Type == protocol.TypeChordChange && chordOf(t, m) != "E" {
			t.Fatalf("got %s", protocol.Encode(m))
		}
	}
}
