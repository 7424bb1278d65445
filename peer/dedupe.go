package peer

import (
	"slices"
	"time"

	"github.com/virtutune/link/protocol"
)

// Delivery is one message handed to the application.
type Delivery struct {
	// Msg is the message. A practice_start or practice_end that came over a
	// data channel is delivered as the practice_update the server would have made.
	Msg *protocol.Message
	// Path is the path that brought it first: "p2p" or "relay".
	Path string
	// At is when this client received it.
	At time.Time
	// Latency is the message's one-way latency from its sender's clock (its
	// at) to At, with the sender's clock offset measured over the data
	// channel; 0 when it cannot be told (no at, or no clock offset yet).
	Latency time.Duration
}

// Receive rules shared with link.js's Inbox (protocol/testdata/delivery.json
// holds the cases both are tested against; protocol/doc.go states them).
const (
	// DefaultReorderWindow bounds the messages held back per sender while an
	// earlier one is missing.
	DefaultReorderWindow = 1024
	// maxDeparted bounds the senders that left the session whose counts are
	// kept (each page load is a new sender).
	maxDeparted = 32
)

// pending is a message held back until the ones before it arrive.
type pending struct {
	msg  *protocol.Message
	path string
	at   time.Time
}

// sender is the receive state of one sender's application messages.
type sender struct {
	known  bool   // last is meaningful
	last   uint64 // highest seq delivered
	held   map[uint64]pending
	gaps   int    // held messages with a gap (see jump)
	leftAt uint64 // the order in which it left the session (0: present)
}

// prevSeq is the seq m follows: Seq-1, or Seq-1-Gap when its sender gave up
// the Gap seqs before it (dropped from its full outbox).
func prevSeq(m *protocol.Message) uint64 { return m.Seq - 1 - min(m.Gap, m.Seq-1) }

// dedupe delivers each (from, seq) once, in seq order, whichever path brings
// it first. A pure type: no I/O, no clock, not safe for concurrent use; the
// Client's mutex guards it.
//
// Nothing is released by a timer: every message of a sender arrives in the
// end (both paths carry it, the sender resends what is not confirmed, a
// reconnect resumes), so a gap always fills, however late — a Redis outage
// delays relayed copies by many seconds — and skipping it would turn that
// delay into a loss (the soak test measured it).
type dedupe struct {
	window   int
	senders  map[string]*sender
	dropped  uint64 // duplicates dropped
	overrun  uint64 // arrivals refused because the reorder window was full
	leaves   uint64 // senders that left so far (orders them)
	departed int    // senders kept that left
}

func newDedupe(window int) *dedupe {
	return &dedupe{window: window, senders: make(map[string]*sender)}
}

// accept takes one application message from sender m.From, arrived at at
// by path, and appends what may now be delivered, in order, to out.
//
//   - seq == last+1 is delivered, with whatever held messages follow it;
//   - seq <= last, or a seq already held, is a duplicate: dropped;
//   - seq > last+1 is held back, up to window messages per sender; beyond
//     that the arrival is dropped (overrun): both paths carry every message
//     and the sender resends what is not acknowledged, so it comes again;
//   - unless it carries a gap that reaches back to last (seq-1-gap <= last):
//     its sender gave up the seqs between (dropped from its full outbox),
//     so what is held of them is delivered, in order, then it. A held
//     message with such a gap is released alike once last reaches
//     seq-1-gap.
//
// Where a sender's count starts comes from the server: each member's
// last_seq in the session_state snapshot and in a newcomer's connected
// notice (baseline). Until then a data channel message is held back (the
// server's word may still be on its way, and an earlier message of the same
// sender on the relay); a relayed one, which the server sends in session
// order after that word, starts the count itself (both paths race, so it
// always comes).
func (d *dedupe) accept(m *protocol.Message, path string, at time.Time, out []Delivery) []Delivery {
	s := d.sender(m.From)
	d.back(s)
	if !s.known {
		if path == protocol.PathP2P && m.Seq > 1 {
			d.hold(s, m, path, at)
			return out
		}
		s.known, s.last = true, m.Seq-1
		d.dropHeldUpTo(s, s.last)
	}
	switch {
	case m.Seq <= s.last:
		d.dropped++
		return out
	case m.Seq > s.last+1 && prevSeq(m) > s.last:
		d.hold(s, m, path, at)
		return out
	case m.Seq > s.last+1:
		out = s.drainBelow(m.Seq, out) // m's gap reaches back to last
	}
	out = append(out, Delivery{Msg: m, Path: path, At: at})
	s.last = m.Seq
	return s.release(out)
}

func (d *dedupe) hold(s *sender, m *protocol.Message, path string, at time.Time) {
	switch {
	case s.held[m.Seq].msg != nil:
		d.dropped++
	case len(s.held) >= d.window:
		d.overrun++
	default:
		s.held[m.Seq] = pending{msg: m, path: path, at: at}
		if m.Gap > 0 {
			s.gaps++
		}
	}
}

// unhold removes held message q and returns it.
func (s *sender) unhold(q uint64) pending {
	p := s.held[q]
	delete(s.held, q)
	if p.msg != nil && p.msg.Gap > 0 {
		s.gaps--
	}
	return p
}

func (d *dedupe) dropHeldUpTo(s *sender, last uint64) {
	for q := range s.held {
		if q <= last {
			s.unhold(q)
			d.dropped++
		}
	}
}

// release appends the held messages that may now be delivered, in order:
// the one that follows the last delivered, or one whose gap reaches back to
// it (after what is held below it).
func (s *sender) release(out []Delivery) []Delivery {
	for {
		q := s.last + 1
		if _, ok := s.held[q]; !ok {
			if q = s.jump(); q == 0 {
				return out
			}
			out = s.drainBelow(q, out)
		}
		p := s.unhold(q)
		s.last = q
		out = append(out, Delivery{Msg: p.msg, Path: p.path, At: p.at})
	}
}

// jump returns the lowest held seq whose gap reaches back to the last
// delivered one (0 if none).
func (s *sender) jump() uint64 {
	if s.gaps == 0 {
		return 0
	}
	var best uint64
	for q, p := range s.held {
		if p.msg.Gap > 0 && prevSeq(p.msg) <= s.last && (best == 0 || q < best) {
			best = q
		}
	}
	return best
}

// drainBelow appends, in seq order, the held messages below seq (all after
// the last delivered one), for a message at seq whose gap reaches back to
// it: its sender gave up the seqs between them.
func (s *sender) drainBelow(seq uint64, out []Delivery) []Delivery {
	var qs []uint64
	for q := range s.held {
		if q < seq {
			qs = append(qs, q)
		}
	}
	slices.Sort(qs)
	for _, q := range qs {
		p := s.unhold(q)
		s.last = q
		out = append(out, Delivery{Msg: p.msg, Path: p.path, At: p.at})
	}
	return out
}

func (d *dedupe) sender(id string) *sender {
	s := d.senders[id]
	if s == nil {
		s = &sender{held: make(map[uint64]pending)}
		d.senders[id] = s
	}
	return s
}

// baseline tells where id's count starts (its last seq as the server knows
// it) if nothing is known of it yet, and appends to out what that releases.
func (d *dedupe) baseline(id string, last uint64, out []Delivery) []Delivery {
	s := d.sender(id)
	d.back(s)
	if s.known {
		return out
	}
	s.known, s.last = true, last
	d.dropHeldUpTo(s, last)
	return s.release(out)
}

// leave notes that id left the session. Its count is kept, and what is
// held of it: a member announced gone (its connection died and did not come
// back within the server's grace) may still come back with the same id and
// resend what it had not confirmed, and its count must drop what arrived
// before. At most maxDeparted senders that left are kept: beyond that the
// one that left first is forgotten (what it held is dropped).
func (d *dedupe) leave(id string) {
	s := d.senders[id]
	if s == nil || s.leftAt != 0 {
		return
	}
	d.leaves++
	s.leftAt = d.leaves
	d.departed++
	if d.departed <= maxDeparted {
		return
	}
	var oldest string
	for sid, x := range d.senders {
		if x.leftAt != 0 && (oldest == "" || x.leftAt < d.senders[oldest].leftAt) {
			oldest = sid
		}
	}
	d.dropped += uint64(len(d.senders[oldest].held))
	delete(d.senders, oldest)
	d.departed--
}

// back notes that s is in the session again (it sent, or the server gave its count).
func (d *dedupe) back(s *sender) {
	if s.leftAt != 0 {
		s.leftAt = 0
		d.departed--
	}
}

// held counts the messages waiting for a gap to fill (or a baseline).
func (d *dedupe) heldCount() int {
	n := 0
	for _, s := range d.senders {
		n += len(s.held)
	}
	return n
}

// rebase forgets every sender: a fresh snapshot replaced the history.
func (d *dedupe) rebase() {
	clear(d.senders)
	d.departed = 0
}

// lastSeq returns the highest seq delivered from id (0 if none).
func (d *dedupe) lastSeq(id string) uint64 {
	if s := d.senders[id]; s != nil {
		return s.last
	}
	return 0
}

// seen returns resume's seen: for each of present (the other members still
// in the session) whose count is known and above 0, its last delivered seq;
// at most n of them, the smallest ids first. A sender that left sends no
// more, and what it sent is replayed by offset anyway.
func (d *dedupe) seen(present []string, n int) map[string]uint64 {
	ids := slices.Clone(present)
	slices.Sort(ids)
	m := make(map[string]uint64)
	for _, id := range ids {
		if len(m) >= n {
			break
		}
		if s := d.senders[id]; s != nil && s.known && s.last > 0 {
			m[id] = s.last
		}
	}
	return m
}
