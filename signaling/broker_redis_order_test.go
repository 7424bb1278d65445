package signaling

import (
	"fmt"
	"slices"
	"testing"
)

// TestOffsetOrder runs the rules of offsetOrder step by step: what each step
// releases, and what offer answers.
func TestOffsetOrder(t *testing.T) {
	type step struct {
		op           string // "offer", "start" or "skip" (skipTo)
		off          uint64
		gap, skipped bool     // offer's answers
		released     []uint64 // what the step released, in order
	}
	offer := func(off uint64, gap bool, rel ...uint64) step {
		return step{op: "offer", off: off, gap: gap, released: rel}
	}
	cases := []struct {
		name   string
		window int
		steps  []step
		// after the last step
		next uint64
		held int
	}{
		{name: "in order", window: 4, steps: []step{
			{op: "start", off: 0},
			offer(1, false, 1),
			offer(2, false, 2),
		}, next: 3},
		{name: "nothing before start; start releases what follows its offset", window: 4, steps: []step{
			offer(3, false),
			offer(1, false),
			{op: "start", off: 0, released: []uint64{1}},
			offer(2, false, 2, 3),
		}, next: 4},
		{name: "start drops what it covers", window: 4, steps: []step{
			offer(1, false), offer(2, false), offer(3, false),
			{op: "start", off: 2, released: []uint64{3}},
			offer(2, false),
		}, next: 4},
		{name: "an early arrival opens a gap until it is filled", window: 4, steps: []step{
			{op: "start", off: 1},
			offer(4, true),
			offer(2, true, 2),
			offer(3, false, 3, 4),
		}, next: 5},
		{name: "echoes and duplicates are ignored, and report no gap", window: 4, steps: []step{
			{op: "start", off: 0},
			offer(1, false, 1),
			offer(1, false),
			offer(3, true),
			offer(3, true),
			offer(1, false), // an old one reports no gap even while one is open
			offer(2, false, 2, 3),
			offer(3, false),
		}, next: 4},
		{name: "more than window held back gives the gap up", window: 4, steps: []step{
			{op: "start", off: 1},
			offer(3, true), offer(4, true), offer(5, true), offer(6, true),
			{op: "offer", off: 7, skipped: true, released: []uint64{3, 4, 5, 6, 7}},
			offer(2, false), // given up: ignored when it comes after all
		}, next: 8},
		{name: "skipTo gives up a gap; below the last it does nothing", window: 4, steps: []step{
			{op: "start", off: 0},
			offer(3, true), offer(5, true),
			{op: "skip", off: 2, released: []uint64{3}},
			{op: "skip", off: 1},
			{op: "skip", off: 4, released: []uint64{5}},
		}, next: 6},
		{name: "held before start, a gap, an echo, then a gap never filled", window: 4, steps: []step{
			offer(3, false),
			{op: "start", off: 1},
			offer(4, true),
			offer(2, false, 2, 3, 4),
			offer(2, false),
			offer(6, true), offer(7, true), offer(8, true), offer(9, true), // 5 never comes
			{op: "offer", off: 10, skipped: true, released: []uint64{6, 7, 8, 9, 10}},
		}, next: 11},
		{name: "held stays held while a gap is open", window: 8, steps: []step{
			{op: "start", off: 10},
			offer(13, true), offer(12, true),
		}, next: 11, held: 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var got []uint64
			o := newOffsetOrder(tc.window, func(p *Publication) { got = append(got, p.Off) })
			for i, s := range tc.steps {
				got = nil
				where := fmt.Sprintf("step %d (%s %d)", i, s.op, s.off)
				switch s.op {
				case "offer":
					gap, skipped := o.offer(&Publication{Off: s.off})
					if gap != s.gap || skipped != s.skipped {
						t.Fatalf("%s: gap %v skipped %v, want %v %v", where, gap, skipped, s.gap, s.skipped)
					}
				case "start":
					o.start(s.off)
				case "skip":
					o.skipTo(s.off)
				}
				if !slices.Equal(got, s.released) {
					t.Fatalf("%s: released %v, want %v", where, got, s.released)
				}
			}
			if o.next() != tc.next || o.held() != tc.held {
				t.Fatalf("next %d held %d, want %d %d", o.next(), o.held(), tc.next, tc.held)
			}
			for off := uint64(1); off < tc.next; off++ {
				if !o.seen(off) {
					t.Errorf("seen(%d) false below next %d", off, tc.next)
				}
			}
			if o.seen(tc.next) {
				t.Errorf("seen(%d) true at next", tc.next)
			}
		})
	}
}
