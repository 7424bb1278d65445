package signaling_test

import (
	"context"
	"encoding/json"
	"io"
	"testing"
	"time"

	"github.com/virtutune/link/protocol"
	"github.com/virtutune/link/signaling"
)

// BenchmarkMemoryBrokerPublish measures MemoryBroker.Publish of a chord
// change to a session with one (no-op) subscriber: sequence check, offset,
// state, history.
func BenchmarkMemoryBrokerPublish(b *testing.B) {
	ctx := context.Background()
	br, err := signaling.NewMemoryBroker(signaling.MemoryConfig{})
	if err != nil {
		b.Fatal(err)
	}
	defer br.Close()
	sid := "benchsession0001"
	if err := br.CreateSession(ctx, signaling.SessionInfo{ID: sid, UserID: 1, CreatedAt: time.Now(), ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
		b.Fatal(err)
	}
	unsub, err := br.Subscribe(ctx, sid, func(*signaling.Publication) {})
	if err != nil {
		b.Fatal(err)
	}
	defer unsub()
	data := json.RawMessage(`{"chord":"Am"}`)
	var seq uint64
	b.ReportAllocs()
	for b.Loop() {
		seq++
		p := &signaling.Publication{Type: protocol.TypeChordChange, Data: data, From: "phone-1", Seq: seq, Chord: "Am", Skip: "phone-1"}
		if _, err := br.Publish(ctx, sid, p); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRelay measures the whole relay path of one chord change: a real
// WebSocket client (the phone) → server (decode, validate, publish, fan-out,
// encode, write) → the other client (the PC), closed loop, one message in
// flight. Allocations are the whole process's: the server's plus the two
// clients' (the PC reads into a reused buffer; gorilla allocates a small
// reader per message on each side).
func BenchmarkRelay(b *testing.B) {
	ts := newServer(b, func(c *signaling.Config) { c.Limits.Rate = 1e9; c.Limits.Burst = 1 << 30 })
	s := ts.createSession(b)
	ph := ts.pair(b, s)
	pc, _ := ts.join(b, s.SessionID, s.Token)
	phone, _ := ts.join(b, s.SessionID, ph.Token)
	pc.expect(protocol.TypeConnectionUpdate) // the phone's arrival
	buf := make([]byte, 4096)
	out := make([]byte, 0, 256)
	m := &protocol.Message{Type: protocol.TypeChordChange, Data: json.RawMessage(`{"chord":"Am"}`)}
	_ = pc.conn.SetReadDeadline(time.Now().Add(time.Minute))
	read := func() []byte {
		_, r, err := pc.conn.NextReader()
		if err != nil {
			b.Fatal(err)
		}
		n := 0
		for {
			k, err := r.Read(buf[n:])
			n += k
			if err == io.EOF {
				return buf[:n]
			}
			if err != nil {
				b.Fatal(err)
			}
		}
	}
	var seq uint64
	var got []byte
	b.ReportAllocs()
	for b.Loop() {
		seq++
		out = phone.writeSeq(m, seq, out)
		got = read()
		if len(got) < 20 || got[9] != 'c' { // {"type":"chord_change"...
			b.Fatalf("PC got %s", got)
		}
	}
	b.StopTimer()
	// The last one must carry the last seq: nothing lost or reordered.
	last, perr := protocol.Decode(got)
	if perr != nil || last.Seq != seq {
		b.Fatalf("last message %s, want seq %d", got, seq)
	}
}
