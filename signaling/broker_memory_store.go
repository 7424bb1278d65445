package signaling

import (
	"context"
	"sort"
	"time"

	"github.com/virtutune/link/protocol"
)

// The MemoryBroker's Store: sessions, single-use keys and presence (who is
// in a session). Each takes the broker-wide lock or one session's, never
// both at once (see MemoryBroker's lock order).

// CreateSession implements Store. With a store, it returns once the
// session is written.
func (b *MemoryBroker) CreateSession(ctx context.Context, info SessionInfo) error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return ErrBrokerClosed
	}
	b.sessions[info.ID] = newMemSession(info)
	b.mu.Unlock()
	return b.persist(ctx, info.ID)
}

func newMemSession(info SessionInfo) *memSession {
	return &memSession{
		info:    info,
		seqs:    make(map[string]*seqEntry),
		subs:    make(map[uint64]Handler),
		members: make(map[string]protocol.Member),
	}
}

// Session implements Store.
func (b *MemoryBroker) Session(_ context.Context, id string) (SessionInfo, error) {
	s, err := b.session(id)
	if err != nil {
		return SessionInfo{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.info, nil
}

// ExtendSession implements Store.
func (b *MemoryBroker) ExtendSession(_ context.Context, id string, at time.Time) error {
	s, err := b.session(id)
	if err != nil {
		return err
	}
	s.mu.Lock()
	if at.After(s.info.ExpiresAt) {
		s.info.ExpiresAt = at
		s.dirty = true // written at the next checkpoint
	}
	s.mu.Unlock()
	return nil
}

// UseOnce implements Store.
func (b *MemoryBroker) UseOnce(_ context.Context, key string, ttl time.Duration) (bool, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return false, ErrBrokerClosed
	}
	now := b.now()
	if exp, ok := b.used[key]; ok && now.Before(exp) {
		return false, nil
	}
	b.used[key] = now.Add(ttl)
	return true, nil
}

// Join implements Store.
func (b *MemoryBroker) Join(_ context.Context, sid string, m protocol.Member) error {
	s, err := b.session(sid)
	if err != nil {
		return err
	}
	if m.Instance == "" {
		m.Instance = b.cfg.Instance
	}
	s.mu.Lock()
	s.members[m.ClientID] = m
	s.mu.Unlock()
	return nil
}

// Admit implements Store.
func (b *MemoryBroker) Admit(_ context.Context, sid string, m protocol.Member, limit int) error {
	s, err := b.session(sid)
	if err != nil {
		return err
	}
	if m.Instance == "" {
		m.Instance = b.cfg.Instance
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.members[m.ClientID]; !ok {
		n := 0
		for _, o := range s.members {
			if o.Role == m.Role {
				n++
			}
		}
		if n >= limit {
			return ErrSessionFull
		}
	}
	s.members[m.ClientID] = m
	return nil
}

// Leave implements Store.
func (b *MemoryBroker) Leave(_ context.Context, sid string, m protocol.Member) (bool, error) {
	s, err := b.session(sid)
	if err != nil {
		return false, err
	}
	if m.Instance == "" {
		m.Instance = b.cfg.Instance
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	cur, ok := s.members[m.ClientID]
	if !ok || cur.Instance != m.Instance || !cur.Since.Equal(m.Since) {
		return false, nil
	}
	delete(s.members, m.ClientID)
	return true, nil
}

// Members implements Store.
func (b *MemoryBroker) Members(_ context.Context, sid string) ([]protocol.Member, error) {
	s, err := b.session(sid)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	out := make([]protocol.Member, 0, len(s.members))
	for _, m := range s.members {
		out = append(out, m)
	}
	s.mu.Unlock()
	sortMembers(out)
	return out, nil
}

func sortMembers(ms []protocol.Member) {
	sort.Slice(ms, func(i, j int) bool {
		if !ms[i].Since.Equal(ms[j].Since) {
			return ms[i].Since.Before(ms[j].Since)
		}
		return ms[i].ClientID < ms[j].ClientID
	})
}
