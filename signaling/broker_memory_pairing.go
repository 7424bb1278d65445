package signaling

import (
	"context"
	"sort"
	"time"

	"github.com/virtutune/link/protocol"
)

// The MemoryBroker's pairings, counters, devices and revocations live under
// its pairing lock (pmu), apart from the sessions' locks; no method holds pmu
// while it calls anything else (the persistent store is written after).

type memCounter struct {
	n   int64
	exp time.Time // zero: no expiry
}

// memPairings is the pairing state of a MemoryBroker.
type memPairings struct {
	byKey   map[string]string    // "c:"+CodeKey or "p:"+PINKey -> session id ("" once used)
	keyExp  map[string]time.Time // when each byKey entry is forgotten
	current map[string]Pairing   // session id -> its live pairing
	counts  map[string]*memCounter
	devices map[string]map[string]protocol.Device // session id -> client id -> device
	revoked map[string]map[string]bool            // session id -> revoked client ids
}

func newMemPairings() memPairings {
	return memPairings{
		byKey: make(map[string]string), keyExp: make(map[string]time.Time),
		current: make(map[string]Pairing), counts: make(map[string]*memCounter),
		devices: make(map[string]map[string]protocol.Device), revoked: make(map[string]map[string]bool),
	}
}

func pairKey(kind PairKind, key string) string {
	if kind == PairByPIN {
		return "p:" + key
	}
	return "c:" + key
}

// sweep forgets expired keys and counters, and the state of sessions that
// are gone (alive reports whether a session id still exists).
func (m *memPairings) sweep(now time.Time, alive func(string) bool) {
	for k, exp := range m.keyExp {
		if now.After(exp) {
			delete(m.keyExp, k)
			delete(m.byKey, k)
		}
	}
	for sid, p := range m.current {
		if now.After(p.ExpiresAt.Add(pairingTombstone)) {
			delete(m.current, sid)
		}
	}
	for k, c := range m.counts {
		if !c.exp.IsZero() && now.After(c.exp) {
			delete(m.counts, k)
		}
	}
	for sid := range m.devices {
		if !alive(sid) {
			delete(m.devices, sid)
		}
	}
	for sid := range m.revoked {
		if !alive(sid) {
			delete(m.revoked, sid)
		}
	}
}

// PutPairing implements Store.
func (b *MemoryBroker) PutPairing(ctx context.Context, p Pairing) error {
	if _, err := b.session(p.SessionID); err != nil {
		return err
	}
	now := b.now()
	b.pmu.Lock()
	pk := pairKey(PairByPIN, p.PINKey)
	if _, ok := b.pair.byKey[pk]; ok && now.Before(b.pair.keyExp[pk]) {
		b.pmu.Unlock()
		return ErrPINTaken
	}
	if old, ok := b.pair.current[p.SessionID]; ok {
		for _, k := range []string{pairKey(PairByCode, old.CodeKey), pairKey(PairByPIN, old.PINKey)} {
			delete(b.pair.byKey, k)
			delete(b.pair.keyExp, k)
		}
	}
	forget := p.ExpiresAt.Add(pairingTombstone)
	for _, k := range []string{pairKey(PairByCode, p.CodeKey), pk} {
		b.pair.byKey[k] = p.SessionID
		b.pair.keyExp[k] = forget
	}
	b.pair.current[p.SessionID] = p
	b.pmu.Unlock()
	return b.persist(ctx, p.SessionID)
}

// TakePairing implements Store.
func (b *MemoryBroker) TakePairing(ctx context.Context, kind PairKind, key string, now time.Time) (Pairing, error) {
	if err := b.open(); err != nil {
		return Pairing{}, err
	}
	k := pairKey(kind, key)
	b.pmu.Lock()
	sid, ok := b.pair.byKey[k]
	if !ok || !now.Before(b.pair.keyExp[k]) {
		b.pmu.Unlock()
		return Pairing{}, ErrPairingNotFound
	}
	if sid == "" {
		b.pmu.Unlock()
		return Pairing{}, ErrPairingUsed
	}
	p, ok := b.pair.current[sid]
	if !ok || (pairKey(PairByCode, p.CodeKey) != k && pairKey(PairByPIN, p.PINKey) != k) {
		delete(b.pair.byKey, k)
		delete(b.pair.keyExp, k)
		b.pmu.Unlock()
		return Pairing{}, ErrPairingNotFound
	}
	if now.UnixMilli() >= p.ExpiresMS {
		b.pmu.Unlock()
		return Pairing{}, ErrPairingExpired
	}
	delete(b.pair.current, sid)
	for _, kk := range []string{pairKey(PairByCode, p.CodeKey), pairKey(PairByPIN, p.PINKey)} {
		b.pair.byKey[kk] = "" // a tombstone until the keys are forgotten
	}
	b.pmu.Unlock()
	if err := b.persist(ctx, sid); err != nil {
		return Pairing{}, err
	}
	return p, nil
}

// CurrentPairing implements Store.
func (b *MemoryBroker) CurrentPairing(_ context.Context, sid string) (Pairing, error) {
	if err := b.open(); err != nil {
		return Pairing{}, err
	}
	b.pmu.Lock()
	defer b.pmu.Unlock()
	p, ok := b.pair.current[sid]
	if !ok {
		return Pairing{}, ErrPairingNotFound
	}
	return p, nil
}

// Count implements Store.
func (b *MemoryBroker) Count(_ context.Context, key string, delta int64, window time.Duration) (int64, error) {
	if err := b.open(); err != nil {
		return 0, err
	}
	now := b.now()
	b.pmu.Lock()
	defer b.pmu.Unlock()
	c := b.pair.counts[key]
	if c != nil && !c.exp.IsZero() && !now.Before(c.exp) {
		c = nil
	}
	if c == nil {
		if delta == 0 {
			return 0, nil
		}
		c = &memCounter{}
		if window > 0 {
			c.exp = now.Add(window)
		}
		b.pair.counts[key] = c
	}
	c.n += delta
	return c.n, nil
}

// AddDevice implements Store.
func (b *MemoryBroker) AddDevice(ctx context.Context, sid string, d protocol.Device, limit int) error {
	if _, err := b.session(sid); err != nil {
		return err
	}
	b.pmu.Lock()
	ds := b.pair.devices[sid]
	if ds == nil {
		ds = make(map[string]protocol.Device)
		b.pair.devices[sid] = ds
	}
	if _, ok := ds[d.ClientID]; !ok && len(ds) >= limit {
		b.pmu.Unlock()
		return ErrTooManyDevices
	}
	ds[d.ClientID] = d
	b.pmu.Unlock()
	return b.persist(ctx, sid)
}

// Devices implements Store.
func (b *MemoryBroker) Devices(_ context.Context, sid string) ([]protocol.Device, error) {
	if _, err := b.session(sid); err != nil {
		return nil, err
	}
	b.pmu.Lock()
	out := make([]protocol.Device, 0, len(b.pair.devices[sid]))
	for _, d := range b.pair.devices[sid] {
		out = append(out, d)
	}
	b.pmu.Unlock()
	sortDevices(out)
	return out, nil
}

func sortDevices(ds []protocol.Device) {
	sort.Slice(ds, func(i, j int) bool {
		if !ds[i].PairedAt.Equal(ds[j].PairedAt) {
			return ds[i].PairedAt.Before(ds[j].PairedAt)
		}
		return ds[i].ClientID < ds[j].ClientID
	})
}

// RemoveDevice implements Store.
func (b *MemoryBroker) RemoveDevice(ctx context.Context, sid, cid string) (bool, error) {
	if _, err := b.session(sid); err != nil {
		return false, err
	}
	b.pmu.Lock()
	_, known := b.pair.devices[sid][cid]
	delete(b.pair.devices[sid], cid)
	rv := b.pair.revoked[sid]
	if rv == nil {
		rv = make(map[string]bool)
		b.pair.revoked[sid] = rv
	}
	rv[cid] = true
	b.pmu.Unlock()
	return known, b.persist(ctx, sid)
}

// Revoked implements Store.
func (b *MemoryBroker) Revoked(_ context.Context, sid, cid string) (bool, error) {
	if err := b.open(); err != nil {
		return false, err
	}
	b.pmu.Lock()
	defer b.pmu.Unlock()
	return b.pair.revoked[sid][cid], nil
}

// open reports ErrBrokerClosed once the broker is closed.
func (b *MemoryBroker) open() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return ErrBrokerClosed
	}
	return nil
}
