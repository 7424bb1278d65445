package peer

import (
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
}

// pending is a message held back until the ones before it arrive.
type pending struct {
	msg  *protocol.Message
	path string
	at   time.Time
}

// sender is the receive state of one sender's application messages.
type sender struct {
	known     bool   // last is meaningful
	last      uint64 // highest seq delivered
	held      map[uint64]pending
	heldSince time.Time // when the first message was held while !known
}

// baselineWait bounds how long data channel messages of a sender whose count
// is unknown wait for the server to say where it starts.
const baselineWait = 2 * time.Second

// dedupe delivers each (from, seq) once, in seq order, whichever path brings
// it first. Not safe for concurrent use; the Client's mutex guards it.
type dedupe struct {
	window  int
	senders map[string]*sender
	dropped uint64 // duplicates dropped
	overrun uint64 // messages refused because the reorder window was full
}

func newDedupe(window int) *dedupe {
	return &dedupe{window: window, senders: make(map[string]*sender)}
}

// accept takes one application message from sender m.From and appends what
// may now be delivered, in order, to out.
//
// Where a sender's count starts comes from the server: each member's
// last_seq in the session_state snapshot and in a newcomer's connected
// notice (baseline). Until then a data channel message is held back (the
// server's word may still be on its way, and an earlier message of the same
// sender may still be on the relay); a relayed one, which the server sends in
// session order after that word, starts the count itself. A sender whose
// count is still unknown baselineWait after its first held message starts
// at the lowest held seq.
func (d *dedupe) accept(m *protocol.Message, path string, at time.Time, out []Delivery) []Delivery {
	s := d.sender(m.From)
	if !s.known {
		if path == protocol.PathP2P && m.Seq > 1 {
			if s.heldSince.IsZero() {
				s.heldSince = at
			}
			if at.Sub(s.heldSince) < baselineWait {
				if len(s.held) < d.window {
					s.held[m.Seq] = pending{msg: m, path: path, at: at}
				} else {
					d.overrun++
				}
				return out
			}
			low := m.Seq
			for q := range s.held {
				low = min(low, q)
			}
			s.held[m.Seq] = pending{msg: m, path: path, at: at}
			return d.baseline(m.From, low-1, out)
		} else {
			s.known, s.last = true, m.Seq-1
		}
		for q := range s.held {
			if q <= s.last {
				delete(s.held, q)
			}
		}
	}
	switch {
	case m.Seq <= s.last:
		d.dropped++
		return out
	case m.Seq > s.last+1:
		if _, dup := s.held[m.Seq]; dup {
			d.dropped++
			return out
		}
		if len(s.held) >= d.window {
			d.overrun++
			return out
		}
		s.held[m.Seq] = pending{msg: m, path: path, at: at}
		return out
	}
	out = append(out, Delivery{Msg: m, Path: path, At: at})
	s.last = m.Seq
	return s.release(out)
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
	for q := range s.held {
		if q <= last {
			delete(s.held, q)
			d.dropped++
		}
	}
	return s.release(out)
}

// lastSeq returns the highest seq delivered from id (0 if none).
func (d *dedupe) lastSeq(id string) uint64 {
	if s := d.senders[id]; s != nil {
		return s.last
	}
	return 0
}

// seen returns up to n senders' last delivered seqs, for resume.
func (d *dedupe) seen(n int) map[string]uint64 {
	m := make(map[string]uint64)
	for id, s := range d.senders {
		if len(m) >= n {
			break
		}
		if s.known && s.last > 0 {
			m[id] = s.last
		}
	}
	return m
}
