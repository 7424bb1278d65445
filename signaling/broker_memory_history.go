package signaling

import (
	"bytes"
	"context"
	"time"

	"github.com/virtutune/link/protocol"
)

// appendHistory adds p to the session's history, first dropping what is
// beyond HistorySize or older than HistoryTTL. Called with s.mu held.
func (s *memSession) appendHistory(p *Publication, now time.Time, cfg MemoryConfig) {
	h := &s.history
	for h.n > 0 && (h.n >= cfg.HistorySize || now.UnixNano()-h.at(0).t > int64(cfg.HistoryTTL)) {
		s.trimmed = h.dropOldest().off
	}
	h.push(newHistEntry(p, now), cfg.HistorySize)
}

// histEntry is one publication of a session's history, kept flat in the
// session's ring rather than as a *Publication: its wire encoding (the bytes
// the receivers got, the only allocation a message adds to the live heap,
// one without pointers; Data is a slice of it) and the fields the wire does
// not carry. The strings are the publisher's (a client id, a constant type),
// not copies. So a retained message costs the garbage collector one
// pointer-free object instead of a Publication, its data and its time.
type histEntry struct {
	wire           []byte
	dataLo, dataHi uint32
	data           []byte // only when Data is not found in wire
	typ            protocol.Type
	from, to, skip string
	chord          string
	practice       *protocol.Practice
	seq, gap, off  uint64
	at             float64
	t              int64 // when published, ns since the epoch
}

func newHistEntry(p *Publication, now time.Time) histEntry {
	e := histEntry{wire: p.Wire, typ: p.Type, from: p.From, to: p.To, skip: p.Skip, chord: p.Chord,
		practice: p.Practice, seq: p.Seq, gap: p.Gap, off: p.Off, at: p.At, t: now.UnixNano()}
	// Append copies Data verbatim right after the type: keep its place.
	if i := bytes.Index(p.Wire, []byte(`,"data":`)); i >= 0 && bytes.HasPrefix(p.Wire[i+8:], p.Data) {
		e.dataLo, e.dataHi = uint32(i+8), uint32(i+8+len(p.Data))
	} else {
		e.data = p.Data // (never with the broker's own encoding)
	}
	return e
}

// publication rebuilds the Publication of e.
func (e *histEntry) publication(instance string) *Publication {
	p := &Publication{Type: e.typ, From: e.from, Seq: e.seq, Gap: e.gap, Off: e.off, To: e.to, At: e.at,
		Chord: e.chord, Practice: e.practice, Skip: e.skip, Instance: instance, Wire: e.wire, Data: e.data}
	if e.dataHi > e.dataLo {
		p.Data = e.wire[e.dataLo:e.dataHi:e.dataHi]
	}
	return p
}

// histRing is a session's history, oldest first: a ring that grows by
// doubling up to the history's size and is then reused in place.
type histRing struct {
	ents []histEntry
	head int // index of the oldest
	n    int
}

func (h *histRing) at(i int) *histEntry { return &h.ents[(h.head+i)%len(h.ents)] }

func (h *histRing) dropOldest() histEntry {
	e := h.ents[h.head]
	h.ents[h.head] = histEntry{}
	h.head = (h.head + 1) % len(h.ents)
	h.n--
	return e
}

func (h *histRing) push(e histEntry, size int) {
	if h.n == len(h.ents) {
		grown := make([]histEntry, min(size, max(8, 2*len(h.ents))))
		for i := range h.n {
			grown[i] = *h.at(i)
		}
		h.ents, h.head = grown, 0
	}
	h.ents[(h.head+h.n)%len(h.ents)] = e
	h.n++
}

// internType returns the package's constant for a known type, so that a
// publication kept in history does not keep the decoder's copy alive.
func internType(t protocol.Type) protocol.Type {
	for _, k := range []protocol.Type{protocol.TypeChordChange, protocol.TypePracticeUpdate, protocol.TypeConnectionUpdate} {
		if t == k {
			return k
		}
	}
	return t
}

// History implements Broker.
func (b *MemoryBroker) History(_ context.Context, sid string, since uint64) (HistoryResult, error) {
	s, err := b.session(sid)
	if err != nil {
		return HistoryResult{}, err
	}
	now := b.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	res := HistoryResult{Offset: s.state.Offset, Complete: since >= s.trimmed}
	for i := range s.history.n {
		e := s.history.at(i)
		if e.off <= since {
			continue
		}
		if now.UnixNano()-e.t > int64(b.cfg.HistoryTTL) {
			res.Complete = false
			continue
		}
		res.Pubs = append(res.Pubs, e.publication(b.cfg.Instance))
	}
	return res, nil
}
