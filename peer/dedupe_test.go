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
