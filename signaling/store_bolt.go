package signaling

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/virtutune/link/protocol"
	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// BoltStore is the embedded persistent store of a single instance: one
// bbolt file (go.etcd.io/bbolt) under a data directory, holding what a
// restart must not lose — sessions, their pairing, paired devices and
// revocations, the sessions' state and history, and a generated token secret.
// A MemoryBroker opened on it (OpenMemoryBroker) writes sessions, pairings,
// devices and revocations through before it answers (they are rare), and
// the message path's state (offsets, last seqs, chord, practice) in a
// checkpoint every CheckpointInterval, never per message; its Close writes
// everything, history included, and marks the file clean.
//
// The file is created with mode 0600 in a directory with mode 0700: it holds
// the token secret. One process at a time: a second one fails to open it
// (each instance needs its own data directory; several instances share Redis).
// Safe for concurrent use.
type BoltStore struct {
	db    *bolt.DB
	path  string
	clean bool // the process before closed the store cleanly
}

// CheckpointInterval is how often a MemoryBroker with a store writes the
// sessions whose state changed.
const CheckpointInterval = 2 * time.Second

// BoltFile is the name of the store's file in its data directory.
const BoltFile = "virtutune.db"

var (
	bucketMeta     = []byte("meta")
	bucketSessions = []byte("sessions")
	bucketRuntime  = []byte("runtime")

	keySecret = []byte("secret")
	keyState  = []byte("state") // "clean" after a Close, "running" while open
)

// ErrStoreInUse: another process holds the data directory's store.
var ErrStoreInUse = errors.New("signaling: the data directory is in use by another process")

// OpenBoltStore opens (or creates) the store in directory dir, creating the
// directory (0700) if needed. It fails with ErrStoreInUse within a second
// when another process has it open.
func OpenBoltStore(dir string) (*BoltStore, error) {
	if dir == "" {
		return nil, fmt.Errorf("%w: empty data directory", ErrInvalidConfig)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("signaling: data directory: %w", err)
	}
	path := filepath.Join(dir, BoltFile)
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("%w: %s", ErrStoreInUse, path)
	}
	if err != nil {
		return nil, fmt.Errorf("signaling: opening %s: %w", path, err)
	}
	// An existing file keeps its mode: tighten it (it holds the secret).
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		if err := os.Chmod(path, 0o600); err != nil {
			db.Close()
			return nil, fmt.Errorf("signaling: %s is readable by others and cannot be made private: %w", path, err)
		}
	}
	s := &BoltStore{db: db, path: path}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketMeta, bucketSessions, bucketRuntime} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		m := tx.Bucket(bucketMeta)
		s.clean = string(m.Get(keyState)) == "clean"
		return m.Put(keyState, []byte("running"))
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("signaling: initialising %s: %w", path, err)
	}
	return s, nil
}

// Path is the store's file.
func (s *BoltStore) Path() string { return s.path }

// Secret returns the token secret kept in the store, generating and storing
// one (32 random bytes, hex) the first time; generated reports that.
func (s *BoltStore) Secret() (secret []byte, generated bool, err error) {
	err = s.db.Update(func(tx *bolt.Tx) error {
		m := tx.Bucket(bucketMeta)
		if v := m.Get(keySecret); len(v) >= MinSecretLen {
			secret = append([]byte(nil), v...)
			return nil
		}
		b := make([]byte, 32)
		if _, err := rand.Read(b); err != nil {
			return err
		}
		secret, generated = []byte(hex.EncodeToString(b)), true
		return m.Put(keySecret, secret)
	})
	return secret, generated, err
}

// Close closes the file. Close the MemoryBroker using the store first (its
// Close writes the final checkpoint).
func (s *BoltStore) Close() error { return s.db.Close() }

// sessionRecord is what the store keeps of a session apart from its message
// path: written through on every change. V orders concurrent writers.
type sessionRecord struct {
	V       uint64            `json:"v"`
	Info    SessionInfo       `json:"info"`
	Pairing *Pairing          `json:"pairing,omitempty"`
	Devices []protocol.Device `json:"devices,omitempty"`
	Revoked []string          `json:"revoked,omitempty"`
}

// runtimeRecord is a session's message-path state: checkpointed, and with
// its history on a clean close.
type runtimeRecord struct {
	Chord     string            `json:"chord,omitempty"`
	ChordFrom string            `json:"chord_from,omitempty"`
	Practice  json.RawMessage   `json:"practice,omitempty"`
	Offset    uint64            `json:"offset"`
	Seqs      map[string]uint64 `json:"seqs,omitempty"`
	Trimmed   uint64            `json:"trimmed,omitempty"`
	// History is written by the final checkpoint only; HistoryComplete says so.
	History         []storedPub `json:"history,omitempty"`
	HistoryComplete bool        `json:"history_complete,omitempty"`
}

type storedPub struct {
	Pub *Publication `json:"p"`
	At  int64        `json:"t"` // ms since the epoch, when it was stored
}

// putSessions writes session records (each unless a newer version is
// there) and runtime records in one transaction; final also marks the store
// clean.
func (s *BoltStore) putSessions(sess []sessionRecord, recs map[string]runtimeRecord, final bool) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketSessions)
		for _, rec := range sess {
			if old := b.Get([]byte(rec.Info.ID)); old != nil {
				var o struct {
					V uint64 `json:"v"`
				}
				if json.Unmarshal(old, &o) == nil && o.V > rec.V {
					continue
				}
			}
			raw, err := json.Marshal(rec)
			if err != nil {
				return err
			}
			if err := b.Put([]byte(rec.Info.ID), raw); err != nil {
				return err
			}
		}
		rt := tx.Bucket(bucketRuntime)
		for sid, rec := range recs {
			raw, err := json.Marshal(rec)
			if err != nil {
				return err
			}
			if err := rt.Put([]byte(sid), raw); err != nil {
				return err
			}
		}
		if final {
			return tx.Bucket(bucketMeta).Put(keyState, []byte("clean"))
		}
		return nil
	})
}

// deleteSessions forgets sessions that are gone.
func (s *BoltStore) deleteSessions(ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		for _, id := range ids {
			if err := tx.Bucket(bucketSessions).Delete([]byte(id)); err != nil {
				return err
			}
			if err := tx.Bucket(bucketRuntime).Delete([]byte(id)); err != nil {
				return err
			}
		}
		return nil
	})
}

// load calls fn for every stored session with its runtime record (nil when
// none was checkpointed).
func (s *BoltStore) load(fn func(sessionRecord, *runtimeRecord)) error {
	return s.db.View(func(tx *bolt.Tx) error {
		rt := tx.Bucket(bucketRuntime)
		return tx.Bucket(bucketSessions).ForEach(func(k, v []byte) error {
			var rec sessionRecord
			if err := json.Unmarshal(v, &rec); err != nil {
				return fmt.Errorf("session %q: %w", k, err)
			}
			var rr *runtimeRecord
			if raw := rt.Get(k); raw != nil {
				rr = &runtimeRecord{}
				if err := json.Unmarshal(raw, rr); err != nil {
					return fmt.Errorf("session %q state: %w", k, err)
				}
			}
			fn(rec, rr)
			return nil
		})
	})
}
