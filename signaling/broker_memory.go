package signaling

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/virtutune/link/protocol"
)

// MemoryConfig configures a MemoryBroker. Zero values mean the defaults;
// negative values are refused (Validate).
type MemoryConfig struct {
	// HistorySize bounds each session's history in messages (default 1024).
	HistorySize int
	// HistoryTTL drops history entries older than this (default 10 minutes).
	HistoryTTL time.Duration
	// MaxSeqClients bounds how many client ids' last sequence numbers a
	// session remembers (default 64), and SeqRetention says when one may be
	// forgotten (default 10 minutes): see ErrTooManySenders for the rule,
	// which RedisBroker shares.
	MaxSeqClients int
	SeqRetention  time.Duration
	// Instance names this instance in Member.Instance (default "local").
	Instance string
	// JanitorInterval is how often expired sessions and single-use keys are
	// swept (default 1 minute).
	JanitorInterval time.Duration
}

func (c *MemoryConfig) fill() {
	if c.HistorySize == 0 {
		c.HistorySize = 1024
	}
	if c.HistoryTTL == 0 {
		c.HistoryTTL = 10 * time.Minute
	}
	if c.MaxSeqClients == 0 {
		c.MaxSeqClients = defaultMaxSeqClients
	}
	if c.SeqRetention == 0 {
		c.SeqRetention = defaultSeqRetention
	}
	if c.Instance == "" {
		c.Instance = "local"
	}
	if c.JanitorInterval == 0 {
		c.JanitorInterval = time.Minute
	}
}

// Validate reports the first negative setting, naming it, with an error
// wrapping ErrInvalidConfig.
func (c *MemoryConfig) Validate() error {
	switch {
	case c.HistorySize < 0:
		return fmt.Errorf("%w: MemoryConfig.HistorySize must not be negative", ErrInvalidConfig)
	case c.HistoryTTL < 0:
		return fmt.Errorf("%w: MemoryConfig.HistoryTTL must not be negative", ErrInvalidConfig)
	case c.MaxSeqClients < 0:
		return fmt.Errorf("%w: MemoryConfig.MaxSeqClients must not be negative", ErrInvalidConfig)
	case c.SeqRetention < 0:
		return fmt.Errorf("%w: MemoryConfig.SeqRetention must not be negative", ErrInvalidConfig)
	case c.JanitorInterval < 0:
		return fmt.Errorf("%w: MemoryConfig.JanitorInterval must not be negative", ErrInvalidConfig)
	}
	return nil
}

// MemoryBroker is the Broker of a single instance: sessions, state, history
// and presence live in this process.
//
// Delivery: Publish and Send give the publication its place under the
// session's lock and release the lock before any Handler runs; one goroutine
// at a time (the publisher that finds nobody delivering) hands the session's
// publications to the handlers, in offset order, with no lock of the broker
// held, and carries on with whatever others queued meanwhile. So a handler
// may take its own locks (the hub's room) while another goroutine holds
// those and calls the broker, without a deadlock. A publication published
// after Unsubscribe returns never reaches that handler.
//
// Lock order: the broker-wide lock (sessions, single-use keys) is never held
// while a session's lock is taken; a session's lock is never held while a
// handler runs.
type MemoryBroker struct {
	cfg MemoryConfig
	now func() time.Time

	mu       sync.RWMutex
	sessions map[string]*memSession
	used     map[string]time.Time
	closed   bool

	// pmu guards pair (broker_memory_pairing.go); store, when set, keeps what
	// a restart must not lose (broker_memory_durable.go).
	pmu   sync.Mutex
	pair  memPairings
	store *BoltStore
	pver  atomic.Uint64 // version of the session records written to store
	// ckTicker paces the store's checkpoints (nil without a store).
	ckTicker *time.Ticker

	stop chan struct{}
	done chan struct{}
}

var _ Broker = (*MemoryBroker)(nil)

type memSession struct {
	mu      sync.Mutex
	removed bool // swept: gone even for a caller that still holds it
	info    SessionInfo
	state   State
	seqs    map[string]*seqEntry
	history histRing
	trimmed uint64 // highest offset dropped from history
	subs    map[uint64]Handler
	nextSub uint64
	members map[string]protocol.Member
	// restored: the session was read back from the store after a restart;
	// dirty: its state changed since the store's last checkpoint.
	restored bool
	dirty    bool
	// subList is the handlers of subs, replaced (never changed in place) on
	// every Subscribe and unsubscribe, so a deliverer may use it unlocked.
	subList []Handler
	// outq holds publications placed while another goroutine was
	// delivering; delivering is true while one is.
	outq       []*Publication
	delivering bool
}

type seqEntry struct {
	seq  uint64
	used time.Time
	// unsure: read back after a restart that may have lost the sender's
	// latest seqs: the sender's next seq is taken as it comes.
	unsure bool
}

// NewMemoryBroker returns a MemoryBroker and starts its janitor; Close stops
// it. It fails only when cfg does not Validate.
func NewMemoryBroker(cfg MemoryConfig) (*MemoryBroker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.fill()
	b := &MemoryBroker{
		cfg:      cfg,
		now:      time.Now,
		sessions: make(map[string]*memSession),
		used:     make(map[string]time.Time),
		pair:     newMemPairings(),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	go b.janitor()
	return b, nil
}

func (b *MemoryBroker) janitor() {
	defer close(b.done)
	t := time.NewTicker(b.cfg.JanitorInterval)
	defer t.Stop()
	for {
		select {
		case <-b.stop:
			return
		case <-t.C:
			b.sweep()
		case <-b.checkpointTick():
			b.checkpoint(false)
		}
	}
}

// sweep forgets expired sessions (those nobody subscribes to) and used keys.
//
// It never holds the broker-wide lock while it takes a session's: it lists
// the sessions, looks at each under its own lock (marking the dead ones
// removed, so that nobody who still holds one uses it), then deletes them.
func (b *MemoryBroker) sweep() {
	now := b.now()
	b.mu.Lock()
	for k, exp := range b.used {
		if now.After(exp) {
			delete(b.used, k)
		}
	}
	all := make([]*memSession, 0, len(b.sessions))
	for _, s := range b.sessions {
		all = append(all, s)
	}
	b.mu.Unlock()
	var dead []*memSession
	for _, s := range all {
		s.mu.Lock()
		if now.After(s.info.ExpiresAt) && len(s.subs) == 0 {
			s.removed = true
			dead = append(dead, s)
		}
		s.mu.Unlock()
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	var gone []string
	for _, s := range dead {
		if b.sessions[s.info.ID] == s {
			delete(b.sessions, s.info.ID)
			gone = append(gone, s.info.ID)
		}
	}
	alive := func(id string) bool { _, ok := b.sessions[id]; return ok }
	b.pmu.Lock()
	b.pair.sweep(now, alive)
	b.pmu.Unlock()
	b.forget(gone)
}

func (b *MemoryBroker) session(id string) (*memSession, error) {
	s, err := b.lockSession(id, b.now())
	if err != nil {
		return nil, err
	}
	s.mu.Unlock()
	return s, nil
}

// lockSession returns the unexpired session id with its lock held.
func (b *MemoryBroker) lockSession(id string, now time.Time) (*memSession, error) {
	b.mu.RLock()
	s, ok := b.sessions[id]
	closed := b.closed
	b.mu.RUnlock()
	if closed {
		return nil, ErrBrokerClosed
	}
	if !ok {
		return nil, ErrSessionNotFound
	}
	s.mu.Lock()
	if s.removed || now.After(s.info.ExpiresAt) {
		s.mu.Unlock()
		return nil, ErrSessionNotFound
	}
	return s, nil
}

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
		case p.Seq > last+1 && !lenient:
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

// Ready implements Broker: a MemoryBroker is ready until closed.
func (b *MemoryBroker) Ready(context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return ErrBrokerClosed
	}
	return nil
}

// Close implements Broker. It stops the janitor and waits for it.
func (b *MemoryBroker) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	b.mu.Unlock()
	close(b.stop)
	<-b.done
	return b.closeStore()
}
