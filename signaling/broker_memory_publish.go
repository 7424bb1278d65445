package signaling

import (
	"context"
	"sync"
	"time"

	"github.com/virtutune/link/protocol"
)

// The MemoryBroker's message path: Publish (sequence numbers, offsets, the
// state, history) and Send, the delivery to a session's handlers, Subscribe,
// State and LastSeq. The history ring is broker_memory_history.go.

// Publish implements Broker.
func (b *MemoryBroker) Publish(_ context.Context, sid string, p *Publication) (PublishResult, error) {
	now := b.now()
	s, err := b.lockSession(sid, now)
	if err != nil {
		return PublishResult{}, err
	}
	if p.sequenced() {
		e := s.seqs[p.From]
		var last uint64
		if e != nil {
			last = e.seq
		}
		// After a restart the last seqs read back may be behind the
		// senders' (they were checkpointed, not written per message), and
		// their resends start after what the old process confirmed: the
		// first seq of such a sender sets its count.
		lenient := (e != nil && e.unsure) || (e == nil && s.restored)
		switch {
		case p.Seq == 0:
			p.Seq = last + 1
		case p.Seq <= last:
			s.mu.Unlock()
			return PublishResult{Seq: p.Seq, Duplicate: true}, nil
		case p.Seq-1-min(p.Gap, p.Seq-1) > last && !lenient:
			// (a gap: the sender gave up the seqs before this one; it
			// follows Seq-1-Gap)
			s.mu.Unlock()
			return PublishResult{Seq: p.Seq}, ErrBadSequence
		}
		if e == nil {
			if !s.makeSeqRoom(now, b.cfg) {
				s.mu.Unlock()
				return PublishResult{Seq: p.Seq}, ErrTooManySenders
			}
			e = &seqEntry{}
			s.seqs[p.From] = e
		}
		e.seq = p.Seq
		e.used = now
		e.unsure = false
	}
	s.dirty = true
	s.state.Offset++
	p.Off = s.state.Offset
	p.Instance = b.cfg.Instance
	p.Type = internType(p.Type)
	if p.Wire == nil {
		p.Wire = protocol.Encode(p.Message())
	}
	if p.Chord != "" {
		s.state.Chord = p.Chord
		s.state.ChordFrom = p.From
	}
	if p.Practice != nil {
		s.state.Practice = *p.Practice
	}
	s.appendHistory(p, now, b.cfg)
	res := PublishResult{Off: p.Off, Seq: p.Seq}
	s.deliverLocked(p) // unlocks s.mu
	return res, nil
}

// deliverLocked hands p to the subscribers, in place order, with s.mu
// released while the handlers run: at once when nobody is delivering, else
// queued for the goroutine that is, which carries on until the queue is
// empty. Called with s.mu held; it returns with s.mu released.
func (s *memSession) deliverLocked(p *Publication) {
	if s.delivering {
		s.outq = append(s.outq, p)
		s.mu.Unlock()
		return
	}
	s.delivering = true
	hs := s.subList
	s.mu.Unlock()
	for _, h := range hs {
		h(p)
	}
	s.mu.Lock()
	for len(s.outq) > 0 {
		batch := s.outq
		s.outq = nil
		hs = s.subList
		s.mu.Unlock()
		for _, q := range batch {
			for _, h := range hs {
				h(q)
			}
		}
		s.mu.Lock()
	}
	s.delivering = false
	s.mu.Unlock()
}

// subscribedLocked rebuilds subList after subs changed. Called with s.mu held.
func (s *memSession) subscribedLocked() {
	hs := make([]Handler, 0, len(s.subs))
	for _, h := range s.subs {
		hs = append(hs, h)
	}
	s.subList = hs
}

// makeSeqRoom makes room for one more sender's sequence number when the
// session remembers cfg.MaxSeqClients already: it forgets, oldest first, only
// the entry of a client id that is not present and sent nothing for
// cfg.SeqRetention (a member long gone). It reports false when none
// qualifies.
func (s *memSession) makeSeqRoom(now time.Time, cfg MemoryConfig) bool {
	if len(s.seqs) < cfg.MaxSeqClients {
		return true
	}
	var oldest string
	var t time.Time
	for k, e := range s.seqs {
		if _, present := s.members[k]; present || now.Sub(e.used) <= cfg.SeqRetention {
			continue
		}
		if oldest == "" || e.used.Before(t) {
			oldest, t = k, e.used
		}
	}
	if oldest == "" {
		return false
	}
	delete(s.seqs, oldest)
	return true
}

// Send implements Broker.
func (b *MemoryBroker) Send(_ context.Context, sid string, p *Publication) error {
	s, err := b.session(sid)
	if err != nil {
		return err
	}
	p.Instance = b.cfg.Instance
	s.mu.Lock()
	if s.removed {
		s.mu.Unlock()
		return ErrSessionNotFound
	}
	s.deliverLocked(p) // unlocks s.mu
	return nil
}

// Subscribe implements Broker.
func (b *MemoryBroker) Subscribe(_ context.Context, sid string, h Handler) (func(), error) {
	s, err := b.session(sid)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	if s.removed {
		s.mu.Unlock()
		return nil, ErrSessionNotFound
	}
	s.nextSub++
	id := s.nextSub
	s.subs[id] = h
	s.subscribedLocked()
	s.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			delete(s.subs, id)
			s.subscribedLocked()
			s.mu.Unlock()
		})
	}, nil
}

// State implements Broker.
func (b *MemoryBroker) State(_ context.Context, sid string) (State, error) {
	s, err := b.session(sid)
	if err != nil {
		return State{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.state
	st.Seqs = make(map[string]uint64, len(s.seqs))
	for id, e := range s.seqs {
		st.Seqs[id] = e.seq
	}
	return st, nil
}

// LastSeq implements Broker.
func (b *MemoryBroker) LastSeq(_ context.Context, sid, cid string) (uint64, error) {
	s, err := b.session(sid)
	if err != nil {
		return 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.seqs[cid]; e != nil {
		return e.seq, nil
	}
	return 0, nil
}
