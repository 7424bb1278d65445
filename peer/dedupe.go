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
	// unknownHold: data channel messages of a sender whose count is unknown
	// wait this long for the server's word (or a relayed copy) before the
	// count starts at the lowest of them.
	unknownHold = 2 * time.Second
	// gapWait: a gap that no path and no resend filled this long after the
	// oldest message held behind it arrived never will be (the message is
	// gone everywhere): the held messages are delivered and the gap counted.
	gapWait = 10 * time.Second
)

// pending is a message held back until the ones before it arrive.
type pending struct {
	msg  *protocol.Message
	path string
	at   time.Time
}

// sender is the receive state of one sender's application messages.
type sender struct {
	known bool   // last is meaningful
	last  uint64 // highest seq delivered
	held  map[uint64]pending
}

// dedupe delivers each (from, seq) once, in seq order, whichever path brings
// it first. A pure type: no I/O, no clock of its own (expire is called with
// the time), not safe for concurrent use; the Client's mutex guards it.
type dedupe struct {
	window  int
	senders map[string]*sender
	dropped uint64 // duplicates dropped
	overrun uint64 // arrivals refused because the reorder window was full
	skipped uint64 // seqs given up on by expire (gone everywhere)
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
//     and the sender resends what is not acknowledged, so it comes again.
//
// Where a sender's count starts comes from the server: each member's
// last_seq in the session_state snapshot and in a newcomer's connected
// notice (baseline). Until then a data channel message is held back (the
// server's word may still be on its way, and an earlier message of the same
// sender on the relay); a relayed one, which the server sends in session
// order after that word, starts the count itself. expire starts it at the
// lowest held seq after unknownHold.
func (d *dedupe) accept(m *protocol.Message, path string, at time.Time, out []Delivery) []Delivery {
	s := d.sender(m.From)
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
	case m.Seq > s.last+1:
		d.hold(s, m, path, at)
		return out
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
	}
}

func (d *dedupe) dropHeldUpTo(s *sender, last uint64) {
	for q := range s.held {
		if q <= last {
			delete(s.held, q)
			d.dropped++
		}
	}
}

// release appends the held messages that now follow the last delivered one.
func (s *sender) release(out []Delivery) []Delivery {
	for {
		p, ok := s.held[s.last+1]
		if !ok {
			return out
		}
		delete(s.held, s.last+1)
		s.last++
		out = append(out, Delivery{Msg: p.msg, Path: p.path, At: p.at})
	}
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
	if s.known {
		return out
	}
	s.known, s.last = true, last
	d.dropHeldUpTo(s, last)
	return s.release(out)
}

// expire appends, in order, what waited too long at now: the held messages
// of a sender whose count is still unknown unknownHold after the oldest
// arrived (the count starts below the lowest), and those behind a gap that
// nothing filled within gapWait (the missing seqs are counted in skipped).
// Senders are taken in id order.
func (d *dedupe) expire(now time.Time, out []Delivery) []Delivery {
	var ids []string
	for id, s := range d.senders {
		if len(s.held) > 0 {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	for _, id := range ids {
		s := d.senders[id]
		oldest, low := now, uint64(0)
		for q, p := range s.held {
			if p.at.Before(oldest) {
				oldest = p.at
			}
			if low == 0 || q < low {
				low = q
			}
		}
		switch {
		case !s.known && now.Sub(oldest) >= unknownHold:
			out = d.baseline(id, low-1, out)
		case s.known && now.Sub(oldest) >= gapWait:
			seqs := make([]uint64, 0, len(s.held))
			for q := range s.held {
				seqs = append(seqs, q)
			}
			slices.Sort(seqs)
			for _, q := range seqs {
				d.skipped += q - s.last - 1
				p := s.held[q]
				delete(s.held, q)
				s.last = q
				out = append(out, Delivery{Msg: p.msg, Path: p.path, At: p.at})
			}
		}
	}
	return out
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
func (d *dedupe) rebase() { clear(d.senders) }

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
