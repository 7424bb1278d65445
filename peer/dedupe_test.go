package peer

import (
	"testing"
	"time"

	"github.com/virtutune/link/protocol"
)

func TestDedupe(t *testing.T) {
	msg := func(from string, seq uint64) *protocol.Message {
		return &protocol.Message{Type: protocol.TypeChordChange, From: from, Seq: seq}
	}
	tests := []struct {
		name string
		in   []uint64
		want []uint64
	}{
		{"in order", []uint64{1, 2, 3}, []uint64{1, 2, 3}},
		{"duplicates", []uint64{1, 1, 2, 1, 2, 3, 3}, []uint64{1, 2, 3}},
		{"reordered", []uint64{1, 3, 4, 2, 5}, []uint64{1, 2, 3, 4, 5}},
		{"held duplicate", []uint64{1, 3, 3, 2}, []uint64{1, 2, 3}},
		{"late joiner starts at first seen", []uint64{7, 8, 6, 9}, []uint64{7, 8, 9}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := newDedupe(16)
			var got []uint64
			for _, s := range tt.in {
				for _, dl := range d.accept(msg("a", s), protocol.PathRelay, time.Now(), nil) {
					got = append(got, dl.Msg.Seq)
				}
			}
			if len(got) != len(tt.want) {
				t.Fatalf("delivered %v, want %v", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Fatalf("delivered %v, want %v", got, tt.want)
				}
			}
		})
	}
	// the window bounds what is held back
	d := newDedupe(2)
	d.accept(msg("b", 1), protocol.PathP2P, time.Now(), nil)
	for s := uint64(3); s < 10; s++ {
		d.accept(msg("b", s), protocol.PathP2P, time.Now(), nil)
	}
	if len(d.senders["b"].held) != 2 || d.overrun != 5 {
		t.Fatalf("held %d, overrun %d; want 2 and 5", len(d.senders["b"].held), d.overrun)
	}
}

// A data channel message from a sender whose count is unknown waits for the
// server's word (snapshot or connected notice), so an earlier message still
// on the relay is not lost.
func TestDedupeBaseline(t *testing.T) {
	msg := func(seq uint64) *protocol.Message {
		return &protocol.Message{Type: protocol.TypeChordChange, From: "x", Seq: seq}
	}
	seqs := func(ds []Delivery) (out []uint64) {
		for _, d := range ds {
			out = append(out, d.Msg.Seq)
		}
		return out
	}
	now := time.Now()
	d := newDedupe(16)
	// p2p brings 6 before the snapshot says x stood at 4, and 5 comes by relay
	if got := d.accept(msg(6), protocol.PathP2P, now, nil); len(got) != 0 {
		t.Fatalf("delivered %v before the baseline", seqs(got))
	}
	if got := d.baseline("x", 4, nil); len(got) != 0 {
		t.Fatalf("baseline released %v, want nothing (5 missing)", seqs(got))
	}
	if got := seqs(d.accept(msg(5), protocol.PathRelay, now, nil)); len(got) != 2 || got[0] != 5 || got[1] != 6 {
		t.Fatalf("delivered %v, want [5 6]", got)
	}
	if got := d.accept(msg(6), protocol.PathRelay, now, nil); len(got) != 0 {
		t.Fatal("duplicate delivered")
	}
	// without any word from the server, held messages go after baselineWait
	d = newDedupe(16)
	d.accept(msg(9), protocol.PathP2P, now, nil)
	if got := seqs(d.accept(msg(10), protocol.PathP2P, now.Add(baselineWait), nil)); len(got) != 2 || got[0] != 9 {
		t.Fatalf("delivered %v, want [9 10]", got)
	}
}
