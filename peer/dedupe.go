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
	known bool   // last is meaningful
	last  uint64 // highest seq delivered
	held  map[uint64]pending
}

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
// The first message seen from a sender sets where its sequence starts: a
// message with seq 1 means nothing came before; otherwise the first copy to
// arrive (by either path) starts the count, as a client that joins late never
// gets what was sent before it joined.
func (d *dedupe) accept(m *protocol.Message, path string, at time.Time, out []Delivery) []Delivery {
	s := d.senders[m.From]
	if s == nil {
		s = &sender{held: make(map[uint64]pending)}
		d.senders[m.From] = s
	}
	if !s.known {
		s.known = true
		s.last = m.Seq - 1
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
