package signaling

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"unsafe"

	"github.com/virtutune/link/protocol"
)

// histTestPub makes a publication of the kind i picks: a chord change whose
// wire holds its data (as Publish encodes it), a practice update, a
// connection update of the server, a publication whose data the wire does
// not hold, or a large one.
func histTestPub(rng *rand.Rand, i int) *Publication {
	var p *Publication
	switch i % 5 {
	case 0:
		chord := []string{"C", "Am7/G", "F#m7b5", "Gsus4"}[rng.IntN(4)]
		p = &Publication{Type: protocol.TypeChordChange, Data: json.RawMessage(fmt.Sprintf(`{"chord":%q,"timestamp":%d}`, chord, 1700000000000+i)),
			From: fmt.Sprintf("phone-%d", rng.IntN(3)), Seq: uint64(i + 1), Gap: uint64(rng.IntN(2) * 300), At: 1700000000123.5 + float64(i),
			Chord: chord, Skip: "phone-1"}
	case 1:
		p = &Publication{Type: protocol.TypePracticeUpdate, Data: json.RawMessage(`{"status":"started","timestamp":1700000000000}`),
			From: "pc-1", Seq: uint64(i + 1), Practice: &protocol.Practice{Status: "started", Timestamp: json.RawMessage(`1700000000000`)}}
	case 2:
		p = &Publication{Type: protocol.TypeConnectionUpdate, Data: json.RawMessage(`{"status":"connected","user_id":7}`), Skip: "pc-2"}
	case 3:
		p = &Publication{Type: protocol.Type("x_ext"), Data: json.RawMessage(`{"a":1}`), From: "f", To: "t", Practice: &protocol.Practice{}}
	default:
		p = &Publication{Type: protocol.TypeChordChange, Data: json.RawMessage(`{"chord":"` + strings.Repeat("E", 300+rng.IntN(3000)) + `"}`),
			From: "phone-0", Seq: uint64(i + 1)}
	}
	p.Off = uint64(i + 1)
	if i%5 != 3 {
		p.Wire = protocol.Encode(p.Message())
	} else {
		p.Wire = []byte(`{"type":"x_ext"}`) // (data not in the wire)
	}
	return p
}

// TestHistRing pushes publications of every kind through a session's
// history ring, dropping the oldest at random so that records wrap around
// the byte ring's end and the rings grow and shrink, and checks that each
// one reads back as it went in, in order, and that nothing read back shares
// memory with the ring (a resume's frames outlive the lock).
func TestHistRing(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var h histRing
	var want []*Publication
	var wantT []int64
	maxBuf, shrunk, wrapped := 0, false, false
	for i := range 5000 {
		p := histTestPub(rng, i)
		h.push(p, int64(1000+i))
		want, wantT = append(want, p), append(wantT, int64(1000+i))
		// Drop more than we push now and then: the history empties and
		// the byte ring shrinks.
		keep := 40
		if i/500%2 == 1 {
			keep = 3
		}
		for h.n > keep || (h.n > 0 && rng.IntN(4) == 0) {
			if off := h.dropOldest(); off != want[0].Off {
				t.Fatalf("push %d: dropOldest = %d, want %d", i, off, want[0].Off)
			}
			want, wantT = want[1:], wantT[1:]
		}
		if len(h.buf) > maxBuf {
			maxBuf = len(h.buf)
		} else if len(h.buf) < maxBuf {
			shrunk = true
		}
		if c := uint64(len(h.buf)); h.n > 1 && h.start()%c > (h.end-1)%c {
			wrapped = true // the newest records are at the ring's beginning, the oldest at its end
		}
		if used := h.end - h.start(); used > uint64(len(h.buf)) {
			t.Fatalf("push %d: %d bytes used of %d", i, used, len(h.buf))
		}
		for j := range h.n {
			got := h.pub(j, "inst")
			w := *want[j]
			w.Instance = "inst"
			if !reflect.DeepEqual(*got, w) || h.at(j).t != wantT[j] {
				t.Fatalf("push %d, record %d of %d:\n got %+v\nwant %+v", i, j, h.n, *got, w)
			}
			if len(got.Wire) > 0 {
				lo, hi := uintptr(unsafe.Pointer(&h.buf[0])), uintptr(unsafe.Pointer(&h.buf[len(h.buf)-1]))
				if w := uintptr(unsafe.Pointer(&got.Wire[0])); w >= lo && w <= hi {
					t.Fatalf("push %d: record %d's wire is the ring's memory", i, j)
				}
			}
		}
	}
	if !shrunk || !wrapped || maxBuf < 8<<10 {
		t.Fatalf("the byte ring reached %d bytes, shrunk: %v, wrapped: %v; the test wants all three", maxBuf, shrunk, wrapped)
	}
}

// A history whose size holds steady (one dropped for each one published, as
// under HistoryTTL at a steady rate) allocates nothing on the publish path.
func TestHistRingSteadyAllocs(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	pubs := make([]*Publication, 64)
	for i := range pubs {
		pubs[i] = histTestPub(rng, 5*i) // chord changes
	}
	var h histRing
	for i := range 600 {
		h.push(pubs[i%len(pubs)], int64(i))
	}
	i := 0
	if n := testing.AllocsPerRun(2000, func() {
		h.dropOldest()
		h.push(pubs[i%len(pubs)], int64(i))
		i++
	}); n != 0 {
		t.Fatalf("%.2f allocations per message in a steady history, want 0", n)
	}
}
