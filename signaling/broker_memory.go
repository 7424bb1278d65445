package signaling

import (
	"context"
	"fmt"
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
