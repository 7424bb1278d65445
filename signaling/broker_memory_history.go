package signaling

import (
	"bytes"
	"context"
	"encoding/binary"
	"math"
	"time"

	"github.com/virtutune/link/protocol"
)

// appendHistory adds p to the session's history, first dropping what is
// beyond HistorySize or older than HistoryTTL. Called with s.mu held.
func (s *memSession) appendHistory(p *Publication, now time.Time, cfg MemoryConfig) {
	h := &s.history
	for h.n > 0 && (h.n >= cfg.HistorySize || now.UnixNano()-h.at(0).t > int64(cfg.HistoryTTL)) {
		s.trimmed = h.dropOldest()
	}
	h.push(p, now.UnixNano())
}

// histRing is a session's history, oldest first, kept in two pointer-free
// slices so that the garbage collector marks two objects per session and
// scans none, however many messages the history holds (a history kept as
// one object per message, the receivers' wire bytes, made a collection's
// mark at 10,000 sessions proportional to every message of the last ten
// minutes, and its stall the relay's tail):
//
//   - buf, a byte ring holding one record per publication, each
//     contiguous: a record that would cross the ring's end starts at its
//     beginning, the skipped tail counted as used;
//   - idx, a ring of fixed-size entries, one per record: where it is, and
//     the offset and time that trimming and History filter on.
//
// A record is the publication's fields the index does not hold, then its
// wire bytes (what the receivers got), which hold Data: see appendRecord.
// The byte ring grows to half again what it holds when a record does not
// fit, the index by doubling (the count bound, HistorySize, and the message
// size bound the history, as before); each shrinks when a quarter of it is
// in use, so a burst's buffer does not stay. History copies what it
// returns: the ring is reused in place.
type histRing struct {
	buf  []byte
	end  uint64 // virtual position (mod len(buf)) of the free space after the newest record
	idx  []histIndex
	head int // index of the oldest in idx
	n    int
}

type histIndex struct {
	pos  uint64 // virtual position of the record in buf
	size uint32
	off  uint64
	t    int64 // when published, ns since the epoch
}

// minHistBytes is the smallest byte ring a session's first message gets.
const minHistBytes = 1 << 10

func (h *histRing) at(i int) *histIndex { return &h.idx[(h.head+i)%len(h.idx)] }

// start is the virtual position of the oldest record (end when empty).
func (h *histRing) start() uint64 {
	if h.n == 0 {
		return h.end
	}
	return h.idx[h.head].pos
}

// dropOldest removes the oldest record and returns its offset.
func (h *histRing) dropOldest() uint64 {
	e := h.idx[h.head]
	h.head = (h.head + 1) % len(h.idx)
	h.n--
	return e.off
}

// push appends p's record, published at t (ns).
func (h *histRing) push(p *Publication, t int64) {
	lo, hi, inWire := dataInWire(p)
	size := recordSize(p, lo, hi, inWire)
	if !h.fits(size) || (len(h.buf) > minHistBytes && 4*(h.end-h.start()+uint64(size)) < uint64(len(h.buf))) {
		h.resize(size)
	}
	switch {
	case h.n == len(h.idx):
		h.reindex(max(8, 2*len(h.idx)))
	case h.n > 8 && 4*h.n < len(h.idx):
		h.reindex(len(h.idx) / 2)
	}
	c := uint64(len(h.buf))
	if h.end%c+uint64(size) > c {
		h.end += c - h.end%c // (fits checked that the skipped tail is free)
	}
	at := h.end % c
	appendRecord(h.buf[at:at:at+uint64(size)], p, lo, hi, inWire)
	*h.at(h.n) = histIndex{pos: h.end, size: uint32(size), off: p.Off, t: t}
	h.n++
	h.end += uint64(size)
}

// fits reports whether a record of size bytes fits in the ring's free space
// after the last record, at its place or, if it would cross the ring's end,
// at the ring's beginning.
func (h *histRing) fits(size int) bool {
	c := uint64(len(h.buf))
	if c == 0 {
		return false
	}
	need := uint64(size)
	if h.end%c+need > c {
		need += c - h.end%c
	}
	return h.end-h.start()+need <= c
}

// reindex moves the index to a ring of size entries, oldest first.
func (h *histRing) reindex(size int) {
	idx := make([]histIndex, size)
	for i := range h.n {
		idx[i] = *h.at(i)
	}
	h.idx, h.head = idx, 0
}

// resize moves the records to a ring with room for half again what they and
// a new record of size bytes take (at least minHistBytes), packed from its
// beginning.
func (h *histRing) resize(size int) {
	used := uint64(size)
	for i := range h.n {
		used += uint64(h.at(i).size)
	}
	c := max(minHistBytes, (used+used/2+minHistBytes-1)/minHistBytes*minHistBytes)
	buf := make([]byte, c)
	var end uint64
	for i := range h.n {
		e := h.at(i)
		end += uint64(copy(buf[end:], h.record(e)))
		e.pos = end - uint64(e.size)
	}
	h.buf, h.end = buf, end
}

func (h *histRing) record(e *histIndex) []byte {
	at := e.pos % uint64(len(h.buf))
	return h.buf[at : at+uint64(e.size)]
}

// A record: seq, gap (uvarints), at (float64 bits), flags, then the
// length-prefixed fields type, from, to, skip, chord, practice status and
// timestamp (only with recPractice), data (empty with recDataInWire) and
// wire, then data's place in wire (only with recDataInWire).
const (
	recPractice = 1 << iota
	recDataInWire
)

// dataInWire returns where Data lies in Wire: Append copies it verbatim right
// after the type (always with the broker's own encoding).
func dataInWire(p *Publication) (lo, hi int, ok bool) {
	if i := bytes.Index(p.Wire, []byte(`,"data":`)); i >= 0 && bytes.HasPrefix(p.Wire[i+8:], p.Data) {
		return i + 8, i + 8 + len(p.Data), true
	}
	return 0, 0, false
}

// recordSize is the length of p's record; lo, hi and inWire are what
// dataInWire returned.
func recordSize(p *Publication, lo, hi int, inWire bool) int {
	n := uvarintLen(p.Seq) + uvarintLen(p.Gap) + 8 + 1 +
		fieldLen(len(p.Type)) + fieldLen(len(p.From)) + fieldLen(len(p.To)) + fieldLen(len(p.Skip)) +
		fieldLen(len(p.Chord)) + fieldLen(len(p.Wire))
	if p.Practice != nil {
		n += fieldLen(len(p.Practice.Status)) + fieldLen(len(p.Practice.Timestamp))
	}
	if inWire {
		n += 1 + uvarintLen(uint64(lo)) + uvarintLen(uint64(hi))
	} else {
		n += fieldLen(len(p.Data))
	}
	return n
}

func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

func fieldLen(n int) int { return uvarintLen(uint64(n)) + n }

// appendRecord appends p's record to dst, which has room for exactly
// recordSize bytes.
func appendRecord(dst []byte, p *Publication, lo, hi int, inWire bool) []byte {
	dst = binary.AppendUvarint(dst, p.Seq)
	dst = binary.AppendUvarint(dst, p.Gap)
	dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(p.At))
	var flags byte
	if p.Practice != nil {
		flags |= recPractice
	}
	if inWire {
		flags |= recDataInWire
	}
	dst = append(dst, flags)
	for _, f := range [...]string{string(p.Type), p.From, p.To, p.Skip, p.Chord} {
		dst = binary.AppendUvarint(dst, uint64(len(f)))
		dst = append(dst, f...)
	}
	if p.Practice != nil {
		dst = binary.AppendUvarint(dst, uint64(len(p.Practice.Status)))
		dst = append(dst, p.Practice.Status...)
		dst = binary.AppendUvarint(dst, uint64(len(p.Practice.Timestamp)))
		dst = append(dst, p.Practice.Timestamp...)
	}
	if !inWire {
		dst = binary.AppendUvarint(dst, uint64(len(p.Data)))
		dst = append(dst, p.Data...)
	} else {
		dst = append(dst, 0)
	}
	dst = binary.AppendUvarint(dst, uint64(len(p.Wire)))
	dst = append(dst, p.Wire...)
	if inWire {
		dst = binary.AppendUvarint(dst, uint64(lo))
		dst = binary.AppendUvarint(dst, uint64(hi))
	}
	return dst
}

// recReader reads a record appendRecord wrote (the ring's own bytes: they
// are well formed).
type recReader []byte

func (r *recReader) uvarint() uint64 {
	v, n := binary.Uvarint(*r)
	*r = (*r)[n:]
	return v
}

func (r *recReader) field() []byte {
	n := r.uvarint()
	f := (*r)[:n:n]
	*r = (*r)[n:]
	return f
}

// pub rebuilds the Publication of the i-th record, copying its bytes.
func (h *histRing) pub(i int, instance string) *Publication {
	e := h.at(i)
	r := recReader(h.record(e))
	p := &Publication{Off: e.off, Instance: instance}
	p.Seq = r.uvarint()
	p.Gap = r.uvarint()
	p.At = math.Float64frombits(binary.LittleEndian.Uint64(r))
	r = r[8:]
	flags := r[0]
	r = r[1:]
	p.Type = internType(r.field())
	p.From, p.To, p.Skip, p.Chord = string(r.field()), string(r.field()), string(r.field()), string(r.field())
	if flags&recPractice != 0 {
		p.Practice = &protocol.Practice{Status: string(r.field())}
		if ts := r.field(); len(ts) > 0 {
			p.Practice.Timestamp = bytes.Clone(ts)
		}
	}
	if d := r.field(); flags&recDataInWire == 0 && len(d) > 0 {
		p.Data = bytes.Clone(d)
	}
	if w := r.field(); len(w) > 0 {
		p.Wire = bytes.Clone(w)
	}
	if flags&recDataInWire != 0 {
		if lo, hi := r.uvarint(), r.uvarint(); hi > lo {
			p.Data = p.Wire[lo:hi:hi]
		}
	}
	return p
}

var knownTypes = []protocol.Type{protocol.TypeChordChange, protocol.TypePracticeUpdate, protocol.TypeConnectionUpdate}

// internType returns the package's constant for a known type, so that a
// publication does not keep the decoder's copy (or a record's bytes) alive;
// any other type as a string of its own.
func internType[T ~string | ~[]byte](t T) protocol.Type {
	for _, k := range knownTypes {
		if string(t) == string(k) {
			return k
		}
	}
	return protocol.Type(t)
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
		res.Pubs = append(res.Pubs, s.history.pub(i, b.cfg.Instance))
	}
	return res, nil
}
