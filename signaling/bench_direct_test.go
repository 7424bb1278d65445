package signaling_test

import (
	"encoding/json"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/virtutune/link/protocol"
	"github.com/virtutune/link/signaling"
)

// BenchmarkDirectCopy measures what the server spends on a chord change
// that also went over a data channel: the phone sends it with direct:[pc]
// after the PC declared the phone's channel up (p2p_state up), as the
// clients did before both paths raced, and as old clients still may. The
// server stores it (state, history) and — since both paths race — relays it
// to the PC too; the PC drains what arrives in a goroutine. "plain" is the
// same chord without direct or p2p_state, for reference.
//
// Open loop, in batches of 64 chords followed by a ping whose pong proves
// the server processed them. Reported per chord: wall time, allocations,
// the process's CPU time (cpu-ns/op: server and both clients, all in this
// process) and the copies the PC received (relayed/op).
func BenchmarkDirectCopy(b *testing.B) {
	for _, mode := range []string{"direct", "plain"} {
		b.Run(mode, func(b *testing.B) {
			ts := newServer(b, func(c *signaling.Config) { c.Limits.Rate = 1e9; c.Limits.Burst = 1 << 30; c.Limits.SendQueue = 1 << 16 })
			s := ts.createSession(b)
			ph := ts.pair(b, s)
			pc, _ := ts.join(b, s.SessionID, s.Token)
			phone, _ := ts.join(b, s.SessionID, ph.Token)
			pc.expect(protocol.TypeConnectionUpdate) // the phone's arrival
			if mode == "direct" {
				pc.send(protocol.TypeP2PState, protocol.P2PState{Peer: phone.ID, Up: true})
				pc.sync()
			}
			var got atomic.Int64
			done := make(chan struct{})
			go func() {
				defer close(done)
				_ = pc.conn.SetReadDeadline(time.Time{})
				for {
					_, r, err := pc.conn.NextReader()
					if err != nil {
						return
					}
					var buf [512]byte
					for {
						if _, err := r.Read(buf[:]); err != nil {
							break
						}
					}
					got.Add(1)
				}
			}()
			m := &protocol.Message{Type: protocol.TypeChordChange, Data: json.RawMessage(`{"chord":"Am"}`)}
			if mode == "direct" {
				m.Direct = []string{pc.ID}
			}
			out := make([]byte, 0, 256)
			var seq uint64
			flush := func() {
				ts := strconv.FormatUint(seq, 10)
				phone.sendRaw(`{"type":"ping","data":{"timestamp":` + ts + `}}`)
				for {
					r := phone.next()
					if r.Type == protocol.TypePong {
						return
					}
				}
			}
			cpu0 := cpuNow()
			b.ReportAllocs()
			for b.Loop() {
				seq++
				out = phone.writeSeq(m, seq, out)
				if seq%64 == 0 {
					flush()
				}
			}
			flush()
			b.StopTimer()
			cpu := cpuNow() - cpu0
			b.ReportMetric(float64(cpu.Nanoseconds())/float64(seq), "cpu-ns/op")
			// what reached the PC so far (copies still in flight are few)
			b.ReportMetric(float64(got.Load())/float64(seq), "relayed/op")
			pc.conn.Close()
			<-done
		})
	}
}

// cpuNow is this process's user+system CPU time.
func cpuNow() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
