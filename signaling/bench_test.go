package signaling_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/virtutune/link/protocol"
	"github.com/virtutune/link/signaling"
	"github.com/virtutune/link/signaling/redistest"
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
	benchRelay(b, ts, ts)
}

// BenchmarkRelayRedis is BenchmarkRelay across two instances sharing a real
// Redis: the PC on instance A, the phone on B, so that every chord is
// published by B's script and reaches A over pub/sub. One message in
// flight: every step of a message finds the process idle, as at low rates.
// cpu-µs/op is the process's CPU time (both instances and both clients;
// Redis is another process) per message.
func BenchmarkRelayRedis(b *testing.B) {
	rs := redistest.New(b)
	lim := func(c *signaling.Config) { c.Limits.Rate = 1e9; c.Limits.Burst = 1 << 30 }
	a, bb := newRedisInstance(b, rs, "vtbr:", "a", lim), newRedisInstance(b, rs, "vtbr:", "b", lim)
	benchRelay(b, a, bb)
}

// benchRelay sends chord changes from a phone on phoneSrv to the PC on
// pcSrv, closed loop, and reports the process's CPU time per message.
func benchRelay(b *testing.B, pcSrv, phoneSrv *testServer) {
	s := pcSrv.createSession(b)
	ph := pcSrv.pair(b, s)
	pc, _ := pcSrv.join(b, s.SessionID, s.Token)
	phone, _ := phoneSrv.join(b, s.SessionID, ph.Token)
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
	cpu0 := processCPU()
	for b.Loop() {
		seq++
		out = phone.writeSeq(m, seq, out)
		got = read()
		if len(got) < 20 || got[9] != 'c' { // {"type":"chord_change"...
			b.Fatalf("PC got %s", got)
		}
	}
	b.ReportMetric(float64((processCPU()-cpu0).Microseconds())/float64(b.N), "cpu-µs/op")
	b.StopTimer()
	// The last one must carry the last seq: nothing lost or reordered.
	last, perr := protocol.Decode(got)
	if perr != nil || last.Seq != seq {
		b.Fatalf("last message %s, want seq %d", got, seq)
	}
}

// processCPU is the process's CPU time so far (user and system).
func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkHistoryGC measures what a full history costs the garbage
// collector: 10,000 sessions that each published 600 chord changes (ten
// minutes at one a second, the default HistoryTTL), then one forced
// collection per iteration. It reports the collection's wall time
// (ns/op), the live heap objects and bytes per session the histories add,
// so the collector's mark at scale can be compared across history layouts
// (git stash the layout, run it again).
func BenchmarkHistoryGC(b *testing.B) {
	const sessions, each = 10000, 600
	ctx := context.Background()
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	br, err := signaling.NewMemoryBroker(signaling.MemoryConfig{})
	if err != nil {
		b.Fatal(err)
	}
	defer br.Close()
	now := time.Now()
	for i := range sessions {
		sid := fmt.Sprintf("benchsession%05d", i)
		if err := br.CreateSession(ctx, signaling.SessionInfo{ID: sid, UserID: int64(i + 1), CreatedAt: now, ExpiresAt: now.Add(time.Hour)}); err != nil {
			b.Fatal(err)
		}
		for seq := uint64(1); seq <= each; seq++ {
			ts := now.UnixMilli() + int64(seq)
			p := &signaling.Publication{Type: protocol.TypeChordChange, Data: json.RawMessage(fmt.Sprintf(`{"chord":"Am7","timestamp":%d}`, ts)),
				From: "phone-1a2b3c4d", Seq: seq, At: float64(ts), Chord: "Am7", Skip: "phone-1a2b3c4d"}
			if _, err := br.Publish(ctx, sid, p); err != nil {
				b.Fatal(err)
			}
		}
	}
	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)
	b.ResetTimer()
	for b.Loop() {
		runtime.GC()
	}
	b.ReportMetric(float64(after.HeapObjects-before.HeapObjects)/sessions, "objects/session")
	b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/sessions, "B/session")
	runtime.KeepAlive(br)
}
