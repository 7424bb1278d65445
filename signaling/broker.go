package signaling

import (
	"context"
	"encoding/json"
	"time"

	"github.com/virtutune/link/protocol"
)

// Bounds of a session's sequence state, shared by both brokers (see
// ErrTooManySenders).
const (
	defaultMaxSeqClients = 64
	defaultSeqRetention  = 10 * time.Minute
)

// Publication is one message on its way through a Broker: a message of the
// protocol with its identity, plus the state change it makes.
type Publication struct {
	Type protocol.Type
	// Data is the canonical JSON of the message's data.
	Data json.RawMessage
	// From is the sender's client id; empty for messages the server originates.
	From string
	// Seq is the sender's sequence number of an application message. Zero asks
	// Publish to assign the next one for From.
	Seq uint64
	// Gap is how many of From's seqs right before Seq the sender gave up
	// (protocol.Message.Gap): Publish accepts Seq once it holds every seq up
	// to Seq-1-Gap, and the receivers get the gap with the message.
	Gap uint64
	// Off is the session offset; Publish assigns it.
	Off uint64
	// To addresses a Send to one client id.
	To string
	// At is the sender's clock (ms since the epoch), passed through.
	At float64
	// Chord, when not empty, becomes the session's current chord.
	Chord string
	// Practice, when not nil, becomes the session's practice state.
	Practice *protocol.Practice
	// Skip names a client id that must not receive this publication: the
	// sender of a chord_change, or the newcomer of its own connection_update
	// (it got that first, directly).
	Skip string
	// Instance is the id of the instance that published (set by the broker).
	Instance string
	// Wire, when not nil, is Message() as clients receive it, encoded once:
	// MemoryBroker builds it when it assigns the offset (it is also what its
	// history keeps), and a delivery shares it among the receivers. Nobody
	// changes it once set.
	Wire []byte
}

// sequenced reports whether p carries a sender's sequence number that
// Publish must check: application messages from a client (a practice_start
// or practice_end reaches the broker as the practice_update made of it).
func (p *Publication) sequenced() bool {
	return p.From != "" && (p.Type == protocol.TypeChordChange || p.Type == protocol.TypePracticeUpdate)
}

// Message returns the wire message for p.
func (p *Publication) Message() *protocol.Message {
	return &protocol.Message{Type: p.Type, Data: p.Data, From: p.From, Seq: p.Seq, Gap: p.Gap, Off: p.Off, To: p.To, At: p.At}
}

// PublishResult is what Publish did.
type PublishResult struct {
	Off uint64
	Seq uint64
	// Duplicate is true when Seq was at or below the last accepted seq of From:
	// nothing was stored or delivered (a resend after a reconnect).
	Duplicate bool
	// Local is true when the broker's shared backing (Redis) could not be
	// reached: Publish then delivered p to this instance's subscribers only,
	// without an offset (Off 0), without storing it or checking its seq, and
	// returned an error wrapping ErrUnavailable. The sender should keep the
	// message and resend it once the broker is back. MemoryBroker never sets it.
	Local bool
}

// HistoryResult is the answer of History.
type HistoryResult struct {
	// Pubs holds the publications with Off > since, in offset order.
	Pubs []*Publication
	// Complete is false when history no longer reaches back to since+1.
	Complete bool
	// Offset is the session's latest offset when History read it.
	Offset uint64
}

// State is a session's current state.
type State struct {
	Chord     string
	ChordFrom string
	Practice  protocol.Practice
	// Offset is the offset of the last publication this state reflects.
	Offset uint64
	// Seqs holds, read atomically with Offset, the last accepted seq of each
	// client id the session remembers: a newcomer's snapshot gives each
	// member's, so a receiver knows where every sender's count stands.
	Seqs map[string]uint64
}

// SessionInfo is a registered session.
type SessionInfo struct {
	ID        string    `json:"id"`
	UserID    int64     `json:"user_id"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
}

// Handler receives the publications of a subscribed session. It is called
// from one goroutine per subscription, in offset order for Publish (ephemeral
// Sends are interleaved where they arrive). It must not block: the hub only
// enqueues.
type Handler func(p *Publication)

// Broker moves a session's messages between the members connected to any
// instance, and keeps each session's state and bounded history.
//
// Delivery contract: every Publish that returns without error has been given
// an offset, applied to the session's state, appended to its history and will
// be handed to every current subscriber of the session, on every instance,
// exactly once and in offset order, unless the subscriber's instance loses the
// broker meanwhile (it then resumes from History). A Send is delivered at most
// once and is not stored. Publish checks a sender's sequence: a Seq at or below
// the last accepted one of From is a Duplicate (not an error), one that skips
// ahead (beyond its Gap: a seq after Seq-1-Gap not yet accepted) is
// ErrBadSequence.
//
// Implementations: MemoryBroker (one instance) and RedisBroker (several).
// Every method is safe for concurrent use; methods that take a ctx may block
// on I/O until it is done.
type Broker interface {
	Publish(ctx context.Context, sid string, p *Publication) (PublishResult, error)
	Send(ctx context.Context, sid string, p *Publication) error
	Subscribe(ctx context.Context, sid string, h Handler) (unsubscribe func(), err error)
	History(ctx context.Context, sid string, since uint64) (HistoryResult, error)
	State(ctx context.Context, sid string) (State, error)
	// LastSeq returns the last accepted seq of client id cid (0 if none).
	LastSeq(ctx context.Context, sid, cid string) (uint64, error)
	Store
	// Ready reports whether the broker can reach its backing service.
	Ready(ctx context.Context) error
	// Close releases the broker; subscriptions end.
	Close() error
}

// Store keeps the registry of sessions, single-use pairing tokens and codes,
// paired devices and their revocations, attempt counters, and presence.
type Store interface {
	// CreateSession registers s until s.ExpiresAt.
	CreateSession(ctx context.Context, s SessionInfo) error
	// Session returns a registered, unexpired session or ErrSessionNotFound.
	Session(ctx context.Context, id string) (SessionInfo, error)
	// ExtendSession pushes a session's expiry to at (never shortens it).
	ExtendSession(ctx context.Context, id string, at time.Time) error
	// UseOnce marks key used; it returns false if it was already used. Keys are
	// forgotten after ttl.
	UseOnce(ctx context.Context, key string, ttl time.Duration) (bool, error)
	// Join records m as present in session sid. Leave removes m only if the
	// presence of m.ClientID is still m's (same instance and since): a newer
	// connection of the same client id, on any instance, stays; it reports
	// whether it removed anything. A member not refreshed by Join within the
	// broker's presence TTL disappears by itself.
	Join(ctx context.Context, sid string, m protocol.Member) error
	// Admit is Join for a member that connects: unless m.ClientID is
	// present already (its own earlier connection, live or held for the
	// disconnect grace, never keeps it out), it fails with ErrSessionFull
	// when limit members of m.Role are present. Check and insert are one
	// atomic step, on every instance.
	Admit(ctx context.Context, sid string, m protocol.Member, limit int) error
	Leave(ctx context.Context, sid string, m protocol.Member) (bool, error)
	// Members lists the members present in sid, oldest first.
	Members(ctx context.Context, sid string) ([]protocol.Member, error)

	// PutPairing makes p the one live pairing of p.SessionID until
	// p.ExpiresAt, ending the one before it (both its codes stop working).
	// It fails with ErrPINTaken when another live pairing holds p.PINKey.
	PutPairing(ctx context.Context, p Pairing) error
	// TakePairing ends and returns the live pairing whose code key (kind
	// PairByCode) or PIN key (PairByPIN) is key: at most one caller ever gets
	// a pairing. It fails with ErrPairingExpired when now is at or past its
	// ExpiresMS (exactly; the pairing is left as it is), ErrPairingUsed for
	// one taken before (until its expiry plus a minute), and
	// ErrPairingNotFound otherwise.
	TakePairing(ctx context.Context, kind PairKind, key string, now time.Time) (Pairing, error)
	// CurrentPairing returns the live pairing of session sid, or
	// ErrPairingNotFound.
	CurrentPairing(ctx context.Context, sid string) (Pairing, error)
	// Count adds delta (0: just reads) to the counter key and returns its
	// value. With window > 0 the counter ends window after its first count
	// (a fixed window); with 0 it lives as long as the store.
	Count(ctx context.Context, key string, delta int64, window time.Duration) (int64, error)
	// AddDevice records d as paired with session sid (replacing the record of
	// the same client id); ErrTooManyDevices when sid has max others.
	AddDevice(ctx context.Context, sid string, d protocol.Device, max int) error
	// Devices lists the devices paired with sid, oldest first.
	Devices(ctx context.Context, sid string) ([]protocol.Device, error)
	// RemoveDevice forgets the device cid of sid and revokes cid for the
	// session's lifetime; it reports whether such a device was paired (the
	// revocation holds either way).
	RemoveDevice(ctx context.Context, sid, cid string) (bool, error)
	// Revoked reports whether client id cid was revoked in session sid.
	Revoked(ctx context.Context, sid, cid string) (bool, error)
}
