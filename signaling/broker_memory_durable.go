package signaling

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/virtutune/link/protocol"
)

// restartOffsetGap is added to every restored session's offset after a
// restart that did not close the store cleanly: the last checkpoint may be
// up to CheckpointInterval behind, and an offset must never be handed out
// twice (a session takes far fewer than 2^20 publications in that time).
const restartOffsetGap = 1 << 20

// OpenMemoryBroker returns a MemoryBroker that keeps what a restart must not
// lose in store (see BoltStore), and reads back what a previous process left
// there. Close writes the final checkpoint; the caller closes store after.
//
// After a clean close everything comes back exactly (state, history, each
// sender's last seq). After a crash, sessions, pairings, devices and
// revocations come back exactly, the state as of the last checkpoint, and
// the history is gone (a resume from before gets a fresh snapshot); the
// offsets continue past restartOffsetGap so that none repeats. Either way a
// sender's first seq after the restart sets its count (its resends of what
// the old process had not confirmed are accepted).
func OpenMemoryBroker(cfg MemoryConfig, store *BoltStore) (*MemoryBroker, error) {
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
		store:    store,
		ckTicker: time.NewTicker(CheckpointInterval),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	if err := b.load(); err != nil {
		b.ckTicker.Stop()
		return nil, fmt.Errorf("signaling: reading %s: %w", store.Path(), err)
	}
	go b.janitor()
	return b, nil
}

func (b *MemoryBroker) load() error {
	now := b.now()
	clean := b.store.clean
	var gone []string
	err := b.store.load(func(rec sessionRecord, rr *runtimeRecord) {
		if !now.Before(rec.Info.ExpiresAt) {
			gone = append(gone, rec.Info.ID)
			return
		}
		s := newMemSession(rec.Info)
		s.restored = true
		if rr != nil {
			s.state.Chord, s.state.ChordFrom, s.state.Offset = rr.Chord, rr.ChordFrom, rr.Offset
			if len(rr.Practice) > 0 {
				_ = json.Unmarshal(rr.Practice, &s.state.Practice)
			}
			for cid, seq := range rr.Seqs {
				s.seqs[cid] = &seqEntry{seq: seq, used: now, unsure: true}
			}
			s.trimmed = rr.Trimmed
			if clean && rr.HistoryComplete {
				for _, h := range rr.History {
					if h.Pub == nil {
						continue
					}
					p := h.Pub
					p.Type = internType(p.Type)
					p.Wire = protocol.Encode(p.Message())
					s.appendHistory(p, time.UnixMilli(h.At), b.cfg)
				}
			} else {
				s.state.Offset += restartOffsetGap
				s.trimmed = s.state.Offset
			}
		}
		b.sessions[rec.Info.ID] = s
		if p := rec.Pairing; p != nil && now.Before(p.ExpiresAt) {
			// The wrong-guess count starts again with the process.
			p.PINBase = 0
			b.pair.current[rec.Info.ID] = *p
			forget := p.ExpiresAt.Add(pairingTombstone)
			for _, k := range []string{pairKey(PairByCode, p.CodeKey), pairKey(PairByPIN, p.PINKey)} {
				b.pair.byKey[k] = rec.Info.ID
				b.pair.keyExp[k] = forget
			}
		}
		if len(rec.Devices) > 0 {
			ds := make(map[string]protocol.Device, len(rec.Devices))
			for _, d := range rec.Devices {
				ds[d.ClientID] = d
			}
			b.pair.devices[rec.Info.ID] = ds
		}
		if len(rec.Revoked) > 0 {
			rv := make(map[string]bool, len(rec.Revoked))
			for _, c := range rec.Revoked {
				rv[c] = true
			}
			b.pair.revoked[rec.Info.ID] = rv
		}
		b.pver.Store(max(b.pver.Load(), rec.V))
	})
	if err != nil {
		return err
	}
	return b.store.deleteSessions(gone)
}

// persist writes session sid's record (info, pairing, devices, revocations)
// to the store, if there is one. It holds no lock while it writes: records
// carry a version, and an older one never overwrites a newer one.
func (b *MemoryBroker) persist(_ context.Context, sid string) error {
	if b.store == nil {
		return nil
	}
	s, err := b.session(sid)
	if err != nil {
		return err
	}
	if err := b.store.putSessions([]sessionRecord{b.record(s)}, nil, false); err != nil {
		return fmt.Errorf("%w: writing the session store: %v", ErrUnavailable, err)
	}
	return nil
}

// record is the store's record of s, with a new version.
func (b *MemoryBroker) record(s *memSession) sessionRecord {
	rec := sessionRecord{V: b.pver.Add(1)}
	s.mu.Lock()
	rec.Info = s.info
	s.mu.Unlock()
	sid := rec.Info.ID
	b.pmu.Lock()
	if p, ok := b.pair.current[sid]; ok {
		rec.Pairing = &p
	}
	for _, d := range b.pair.devices[sid] {
		rec.Devices = append(rec.Devices, d)
	}
	for c := range b.pair.revoked[sid] {
		rec.Revoked = append(rec.Revoked, c)
	}
	b.pmu.Unlock()
	sortDevices(rec.Devices)
	return rec
}

// checkpointTick is the checkpoint ticker's channel (nil without a store:
// never ready).
func (b *MemoryBroker) checkpointTick() <-chan time.Time {
	if b.ckTicker == nil {
		return nil
	}
	return b.ckTicker.C
}

// checkpoint writes the runtime state of every session that changed (every
// session, with its history, when final) in one transaction, plus the
// sessions' extended expiries.
func (b *MemoryBroker) checkpoint(final bool) {
	if b.store == nil {
		return
	}
	b.mu.Lock()
	all := make([]*memSession, 0, len(b.sessions))
	for _, s := range b.sessions {
		all = append(all, s)
	}
	b.mu.Unlock()
	recs := make(map[string]runtimeRecord)
	var changed []*memSession
	for _, s := range all {
		s.mu.Lock()
		if !s.dirty && !final {
			s.mu.Unlock()
			continue
		}
		s.dirty = false
		rr := runtimeRecord{
			Chord: s.state.Chord, ChordFrom: s.state.ChordFrom, Offset: s.state.Offset,
			Seqs: make(map[string]uint64, len(s.seqs)), Trimmed: s.trimmed,
		}
		if s.state.Practice.Status != "" {
			rr.Practice, _ = json.Marshal(s.state.Practice)
		}
		for cid, e := range s.seqs {
			rr.Seqs[cid] = e.seq
		}
		if final {
			rr.HistoryComplete = true
			rr.History = make([]storedPub, s.history.n)
			for i := range s.history.n {
				p := s.history.pub(i, b.cfg.Instance)
				p.Wire = nil // rebuilt when read back
				rr.History[i] = storedPub{Pub: p, At: time.Unix(0, s.history.at(i).t).UnixMilli()}
			}
		}
		id := s.info.ID
		s.mu.Unlock()
		recs[id] = rr
		changed = append(changed, s)
	}
	infos := make([]sessionRecord, 0, len(changed))
	for _, s := range changed {
		infos = append(infos, b.record(s))
	}
	if len(recs) == 0 && !final {
		return
	}
	_ = b.store.putSessions(infos, recs, final)
}

// forget deletes gone sessions from the store.
func (b *MemoryBroker) forget(ids []string) {
	if b.store != nil {
		_ = b.store.deleteSessions(ids)
	}
}

// closeStore writes the final checkpoint (Close, after the janitor stopped).
func (b *MemoryBroker) closeStore() error {
	if b.store == nil {
		return nil
	}
	b.ckTicker.Stop()
	b.checkpoint(true)
	return nil
}

// Durable reports whether the broker keeps its sessions across a restart of
// this process (it has a store): members closed by a shutdown come back to
// the restarted process, so their departure is not announced.
func (b *MemoryBroker) Durable() bool { return b.store != nil }
