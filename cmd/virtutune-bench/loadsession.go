package main

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/virtutune/link/protocol"
)

// One session of a load worker: its sender's chords and its receiver's
// count of what arrived (lost, duplicated, reordered, the latencies).

// loadSession is one sender (the phone) and one receiver (the PC).
type loadSession struct {
	w           *worker
	idx         int
	phone, pc   *loadConn
	channel     string // centrifugo
	seq         uint64 // the sender's; one goroutine sends at a time
	cmdID       uint64
	sentN       atomic.Uint64
	mu          sync.Mutex
	seen        []uint64 // bitmap by seq
	maxSeq      uint64
	unique, dup uint64
	reord       uint64
	base        uint64 // seqs at or below it belong to earlier steps
	stepRecv    uint64
	notify      chan uint64
	// The project's sender resends as its clients do (package protocol's
	// doc: a client learns what the server took from the last_seq of its
	// pong and resends the rest): a publish the server could not complete
	// (error unavailable: Redis timed out or was unreachable) is not in the
	// session, so the server refuses the next seqs as skipping ahead
	// (invalid_sequence) until the missing ones come. On either error the
	// phone's reader pings, and stores the pong's last_seq+1 in resendFrom;
	// the next send first resends from it (the chords' own at, so their
	// latency counts the wait), at most len(sentAt) back, declaring a gap
	// beyond. Without it one failed publish under overload lost every later
	// chord of its session, and every later step of the search failed for
	// it.
	resendFrom atomic.Uint64
	sentAt     [64]float64 // at of seq q in sentAt[q%64]; the sending goroutine's
	resent     atomic.Uint64
}

func (w *worker) dialSession(ctx context.Context, cmd workerCmd, api *apiClient, i int) (*loadSession, error) {
	s := &loadSession{w: w, idx: i, notify: make(chan uint64, 1)}
	var err error
	switch cmd.Target {
	case "project":
		p, err := api.createPairing(ctx)
		if err != nil {
			return nil, err
		}
		if s.pc, err = dialProject(ctx, cmd.PCBase, p.SessionID, p.PCToken); err != nil {
			return nil, fmt.Errorf("pc: %w", err)
		}
		if s.phone, err = dialProject(ctx, cmd.PhoneBase, p.SessionID, p.PhoneToken); err != nil {
			_ = s.pc.conn.Close()
			return nil, fmt.Errorf("phone: %w", err)
		}
	case "hub":
		room := cmd.RunID + "-" + strconv.Itoa(i)
		if s.pc, err = dialWS(ctx, wsBase(cmd.PCBase)+"/hub/"+room, nil); err != nil {
			return nil, fmt.Errorf("pc: %w", err)
		}
		if s.phone, err = dialWS(ctx, wsBase(cmd.PhoneBase)+"/hub/"+room, nil); err != nil {
			_ = s.pc.conn.Close()
			return nil, fmt.Errorf("phone: %w", err)
		}
		for _, c := range []*loadConn{s.pc, s.phone} {
			if _, err := c.readUntil(ctx, func(b []byte) bool { return bytes.Equal(b, hubReady) }); err != nil {
				_ = s.pc.conn.Close()
				_ = s.phone.conn.Close()
				return nil, fmt.Errorf("hub pairing: %w", err)
			}
		}
	case "centrifugo":
		s.channel = "s" + cmd.RunID + "-" + strconv.Itoa(i)
		if s.pc, err = dialCentrifugo(ctx, cmd.PCBase, cmd.CFSecret, "pc"+strconv.Itoa(i), s.channel); err != nil {
			return nil, fmt.Errorf("pc: %w", err)
		}
		if s.phone, err = dialCentrifugo(ctx, cmd.PhoneBase, cmd.CFSecret, "ph"+strconv.Itoa(i), ""); err != nil {
			_ = s.pc.conn.Close()
			return nil, fmt.Errorf("phone: %w", err)
		}
		s.cmdID = 10
	default:
		return nil, fmt.Errorf("unknown target %q", cmd.Target)
	}
	return s, nil
}

// send makes the phone send its next chord change. One goroutine at a time
// per session (the pacing shard that owns it, or the closed loop).
func (s *loadSession) send() error {
	if from := s.resendFrom.Swap(0); from != 0 && from <= s.seq { // (from > seq: the server has them all)
		if err := s.resend(from); err != nil {
			return err
		}
	}
	s.seq++
	m := protocol.Message{Type: protocol.TypeChordChange, Data: chordData[s.seq%uint64(len(chords))], Seq: s.seq, At: nowMillis()}
	s.sentAt[s.seq%uint64(len(s.sentAt))] = m.At
	if err := s.write(&m); err != nil {
		return err
	}
	s.sentN.Add(1)
	return nil
}

// resend sends the chords from seq from to the last one sent again, with
// their own at; what is further back than sentAt holds is given up (a gap).
func (s *loadSession) resend(from uint64) error {
	n := uint64(len(s.sentAt))
	first, gap := from, uint64(0)
	if s.seq-from >= n {
		first = s.seq - n + 1
		gap = first - from
	}
	for q := first; q <= s.seq; q++ {
		m := protocol.Message{Type: protocol.TypeChordChange, Data: chordData[q%uint64(len(chords))], Seq: q, At: s.sentAt[q%n]}
		if q == first {
			m.Gap = gap
		}
		if err := s.write(&m); err != nil {
			return err
		}
		s.resent.Add(1)
	}
	return nil
}

// write sends m on the phone, in the target's protocol.
func (s *loadSession) write(m *protocol.Message) error {
	c := s.phone
	c.wmu.Lock()
	defer c.wmu.Unlock()
	switch s.w.target {
	case "centrifugo":
		s.cmdID++
		c.buf = append(c.buf[:0], `{"id":`...)
		c.buf = strconv.AppendUint(c.buf, s.cmdID, 10)
		c.buf = append(c.buf, `,"publish":{"channel":"`...)
		c.buf = append(c.buf, s.channel...)
		c.buf = append(c.buf, `","data":`...)
		c.buf = protocol.Append(c.buf, m)
		c.buf = append(c.buf, `}}`...)
	default:
		c.buf = protocol.Append(c.buf[:0], m)
	}
	return c.conn.WriteMessage(websocket.TextMessage, c.buf)
}

// readLoop reads c until it ends; on the receiver it records every chord
// change (seq and at picked out of the bytes, a reused buffer per connection).
func (s *loadSession) readLoop(c *loadConn, receiver bool) {
	c.readEach(c.conn, func(b []byte, now time.Time) {
		for len(b) > 0 {
			line := b
			if i := bytes.IndexByte(b, '\n'); i >= 0 {
				line, b = b[:i], b[i+1:]
			} else {
				b = nil
			}
			if len(line) == 2 && bytes.Equal(line, cfPing) {
				_ = c.write(cfPing)
				continue
			}
			if !receiver {
				if s.w.target == "project" {
					s.phoneSaw(c, line)
				}
				continue
			}
			if !bytes.Contains(line, chordPrefix) {
				continue
			}
			if q, a, ok := seqAt(line); ok {
				s.received(q, sinceMillis(now, a))
			}
		}
	})
}

// phoneSaw acts on a message the project's phone got: an error saying
// the server did not take a chord asks for a pong, and the pong's last_seq
// (the highest seq the server took from the phone) is where the next send
// resends from (see resendFrom).
func (s *loadSession) phoneSaw(c *loadConn, line []byte) {
	switch {
	case bytes.Contains(line, refusedCode) || bytes.Contains(line, unavailableCode):
		_ = c.write(pingMsg)
	case bytes.HasPrefix(line, pongPrefix):
		if q, ok := numberAfter(line, `"last_seq":`); ok {
			if v, err := strconv.ParseUint(string(q), 10, 64); err == nil {
				s.resendFrom.Store(v + 1)
			}
		}
	}
}

var (
	refusedCode     = []byte(`"code":"` + string(protocol.CodeInvalidSequence) + `"`)
	unavailableCode = []byte(`"code":"` + string(protocol.CodeUnavailable) + `"`)
	pongPrefix      = []byte(`{"type":"` + string(protocol.TypePong) + `"`)
	pingMsg         = protocol.Append(nil, &protocol.Message{Type: protocol.TypePing})
)

func (s *loadSession) received(seq uint64, lat time.Duration) {
	s.mu.Lock()
	w, bit := seq/64, uint64(1)<<(seq%64)
	for uint64(len(s.seen)) <= w {
		s.seen = append(s.seen, make([]uint64, len(s.seen)+4)...)
	}
	if s.seen[w]&bit != 0 {
		s.dup++
		s.mu.Unlock()
		return
	}
	s.seen[w] |= bit
	s.unique++
	if seq < s.maxSeq {
		s.reord++
	} else {
		s.maxSeq = seq
	}
	// The latency is recorded under the lock with the count: the step's
	// summary reads both under it, so a delivery counted in this step is
	// never timed in the next (147 samples for 148 deliveries, once).
	if seq > s.base {
		s.stepRecv++
		s.w.h.add(lat)
	}
	s.mu.Unlock()
	select {
	case <-s.notify:
	default:
	}
	select {
	case s.notify <- seq:
	default:
	}
}
