package signaling

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/virtutune/link/protocol"
)

// BenchmarkHubFanOut measures one publication delivered by a room to its
// local members (the sender skipped), encoding included, queues drained.
func BenchmarkHubFanOut(b *testing.B) {
	for _, n := range []int{2, 4, 8} {
		b.Run(fmt.Sprintf("members=%d", n), func(b *testing.B) {
			s, err := New(Config{Secret: []byte("0123456789abcdef0123456789abcdef-bench"), Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			ready := make(chan struct{})
			close(ready)
			r := &room{id: "benchroom", hub: s.hub, ready: ready, clients: make(map[string]*client)}
			var cs []*client
			for i := range n {
				c := &client{s: s, room: r, id: fmt.Sprintf("member-%d", i), out: newOutbox(nil, 256, time.Second, nil),
					mChordOut: s.metrics.message(protocol.TypeChordChange, "out", protocol.PathRelay), done: make(chan struct{})}
				c.out.busy = true // no socket: frames stay queued for the loop below
				r.put(c)
				cs = append(cs, c)
			}
			p := &Publication{Type: protocol.TypeChordChange, Data: json.RawMessage(`{"chord":"Am"}`), From: cs[0].id,
				Skip: cs[0].id, Chord: "Am", At: 1718000000123.5}
			b.ReportAllocs()
			for b.Loop() {
				p.Seq++
				p.Off++
				r.deliver(p)
				for _, c := range cs[1:] {
					c.out.mu.Lock()
					if len(c.out.q) != 1 {
						b.Fatalf("%d queued", len(c.out.q))
					}
					c.out.q = c.out.q[:0]
					c.out.mu.Unlock()
				}
			}
		})
	}
}
