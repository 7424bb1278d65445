package protocol

import (
	"encoding/json"
	"time"
)

// Type names a message. The zero value is not a valid type.
type Type string

// The original protocol's message types (the seed's, unchanged).
const (
	TypeChordChange      Type = "chord_change"
	TypePracticeStart    Type = "practice_start"
	TypePracticeEnd      Type = "practice_end"
	TypePing             Type = "ping"
	TypePong             Type = "pong"
	TypeConnectionUpdate Type = "connection_update"
	TypePracticeUpdate   Type = "practice_update"
	TypeError            Type = "error"
)

// Extension message types added by the Go version. See doc.go for their flows.
const (
	// TypeSessionState is the snapshot the server sends a newcomer (and a client
	// whose resume could not be served from history).
	TypeSessionState Type = "session_state"
	// TypeResume asks the server for what a reconnecting client missed.
	TypeResume Type = "resume"
	// TypeResumed closes a resume: every missed message has been sent.
	TypeResumed Type = "resumed"
	// TypeRTCOffer, TypeRTCAnswer and TypeRTCCandidate carry WebRTC signaling to one member.
	TypeRTCOffer     Type = "rtc_offer"
	TypeRTCAnswer    Type = "rtc_answer"
	TypeRTCCandidate Type = "rtc_candidate"
	// TypeRTCRestart asks the offering side of a pair to restart ICE (or to
	// start over with a fresh peer connection).
	TypeRTCRestart Type = "rtc_restart"
	// TypeP2PState tells the server whether the sender's data channel from a
	// peer is open, and why not, for its metrics. The server relays every
	// message either way.
	TypeP2PState Type = "p2p_state"
	// TypeLatency reports a measured end-to-end latency for the server's metrics.
	TypeLatency Type = "latency_report"
	// TypeProbe asks one member, through the relay, whether its client runs
	// ({"n":N}), and answers such a question ({"ack":N}). A client probes a
	// member only while no data channel can tell (see doc.go, "Liveness").
	TypeProbe Type = "probe"
)

// Message is one protocol message: the seed's envelope {"type","data"} plus the
// Go version's optional extension fields. Unknown fields are ignored on decode.
//
// From, Seq and Off are stamped by the server on what it relays; a client may
// set Seq on what it sends (it must then grow by one per message) and sets From
// on what it sends over a data channel.
type Message struct {
	Type Type            `json:"type"`
	Data json.RawMessage `json:"data,omitempty"`
	// From is the client id of the sender. Absent on messages the server originates.
	From string `json:"from,omitempty"`
	// Seq is the sender's sequence number of an application message (chord_change,
	// practice_start, practice_end and the practice_update made from them): 1, 2, 3, ...
	// per client id. A receiver drops a (From, Seq) it has already delivered.
	Seq uint64 `json:"seq,omitempty"`
	// Gap is how many of the sender's seqs right before Seq it gave up: they
	// were dropped from its full outbox before this destination confirmed
	// them, and never come. The message follows seq Seq-1-Gap instead of
	// Seq-1. Zero (absent) on every message but the first one a sender sends
	// a destination after such a drop; only on application messages, below Seq.
	Gap uint64 `json:"gap,omitempty"`
	// Off is the session offset the server gave the message when it entered the
	// session's history. Resume asks for everything after an offset.
	Off uint64 `json:"off,omitempty"`
	// To addresses a signaling message to one member's client id.
	To string `json:"to,omitempty"`
	// Direct is obsolete: clients once listed here the peers they also reached
	// over a data channel so that the server would not relay the message to
	// them. It is still accepted (and validated) and ignored: both paths race.
	Direct []string `json:"direct,omitempty"`
	// At is the sender's wall clock in milliseconds since the epoch when it sent
	// the message; receivers on the same machine (tests, benchmarks) use it for
	// one-way latency. Optional.
	At float64 `json:"at,omitempty"`
}

// ChordChange is the data of chord_change.
type ChordChange struct {
	Chord string `json:"chord"`
}

// Timestamped is the data of practice_start, practice_end, ping and pong. The
// timestamp is kept as raw JSON so it is echoed exactly as it came.
type Timestamped struct {
	Timestamp json.RawMessage `json:"timestamp,omitempty"`
	// LastSeq, on a pong, is the highest sequence number the server has accepted
	// from the pinging client id, so the client can forget what it kept for resending.
	LastSeq *uint64 `json:"last_seq,omitempty"`
}

// Connection statuses of connection_update.
const (
	StatusConnected    = "connected"
	StatusDisconnected = "disconnected"
)

// Practice statuses of practice_update.
const (
	PracticeStarted = "started"
	PracticeEnded   = "ended"
)

// Roles of a member.
const (
	RolePC    = "pc"
	RolePhone = "phone"
)

// ConnectionUpdate is the data of connection_update. Status and UserID are the
// seed's; the rest are extensions.
type ConnectionUpdate struct {
	Status   string `json:"status"`
	UserID   int64  `json:"user_id"`
	ClientID string `json:"client_id,omitempty"`
	Role     string `json:"role,omitempty"`
	// LastSeq, on a "connected" notice, is the highest sequence number the
	// server holds from this client id (0 if none): the client itself resends
	// what it sent after that; the others start its count there.
	LastSeq *uint64 `json:"last_seq,omitempty"`
	// Reason says why a member left ("closed", "timeout", "replaced", "slow", ...).
	Reason string `json:"reason,omitempty"`
	// NoP2P, on a "connected" notice, says the member takes no part in data
	// channels: do not offer it one.
	NoP2P bool `json:"no_p2p,omitempty"`
}

// PracticeUpdate is the data of practice_update.
type PracticeUpdate struct {
	Status    string          `json:"status"`
	Timestamp json.RawMessage `json:"timestamp,omitempty"`
}

// Error is the data of error: the seed's message plus a stable machine code.
type Error struct {
	Message string `json:"message"`
	Code    Code   `json:"code,omitempty"`
}

// Error implements the error interface.
func (e *Error) Error() string { return string(e.Code) + ": " + e.Message }

// Member describes one connected member of a session.
type Member struct {
	ClientID string    `json:"client_id"`
	UserID   int64     `json:"user_id"`
	Role     string    `json:"role"`
	Since    time.Time `json:"since"`
	Instance string    `json:"instance,omitempty"`
	// LastSeq, in a session_state, is the member's last accepted seq as of
	// the snapshot's offset: a receiver starts that sender's count there.
	LastSeq uint64 `json:"last_seq"`
	// NoP2P marks a member that takes no part in data channels (it joined
	// with p2p=0): nobody offers it one.
	NoP2P bool `json:"no_p2p,omitempty"`
}

// Practice is the practice part of a session's state.
type Practice struct {
	Status    string          `json:"status"` // "started", "ended" or "" (never started)
	Timestamp json.RawMessage `json:"timestamp,omitempty"`
}

// SessionState is the data of session_state.
type SessionState struct {
	SessionID string   `json:"session_id"`
	Chord     string   `json:"chord,omitempty"`
	ChordFrom string   `json:"chord_from,omitempty"`
	Practice  Practice `json:"practice"`
	Members   []Member `json:"members"`
	// Offset is the session offset this snapshot reflects: messages with a
	// higher Off follow it.
	Offset uint64 `json:"offset"`
	// Recovered is present on a snapshot sent in answer to resume: false means
	// history no longer reached back far enough, so this snapshot replaces it.
	Recovered *bool `json:"recovered,omitempty"`
}

// Resume is the data of resume.
type Resume struct {
	// Since is the highest Off the client has seen over the WebSocket.
	Since uint64 `json:"since"`
	// Seen maps a peer's client id to the highest Seq delivered from it by any
	// path; the server also resends that peer's messages after it.
	Seen map[string]uint64 `json:"seen,omitempty"`
}

// Resumed is the data of resumed.
type Resumed struct {
	Recovered bool   `json:"recovered"`
	Count     int    `json:"count"`
	Offset    uint64 `json:"offset"`
}

// RTCDescription is the data of rtc_offer and rtc_answer.
type RTCDescription struct {
	SDP string `json:"sdp"`
	// Restart marks an offer that restarts ICE on an existing connection.
	Restart bool `json:"restart,omitempty"`
	// Generation numbers the peer connections between a pair: an answer or a
	// candidate of an older generation is ignored by the receiver.
	Generation uint32 `json:"generation,omitempty"`
}

// RTCCandidate is the data of rtc_candidate, in the browser's RTCIceCandidateInit
// shape. An empty Candidate means end of candidates.
type RTCCandidate struct {
	Candidate        string  `json:"candidate"`
	SDPMid           *string `json:"sdpMid,omitempty"`
	SDPMLineIndex    *uint16 `json:"sdpMLineIndex,omitempty"`
	UsernameFragment *string `json:"usernameFragment,omitempty"`
	Generation       uint32  `json:"generation,omitempty"`
}

// RTCRestart is the data of rtc_restart.
type RTCRestart struct {
	Reason string `json:"reason,omitempty"`
}

// Probe is the data of probe: exactly one of N (a question, numbered by
// the asker from 1) and Ack (the answer: the highest N received from the
// asker) is set.
type Probe struct {
	N   uint64 `json:"n,omitempty"`
	Ack uint64 `json:"ack,omitempty"`
}

// MaxProbeN bounds a probe's n and ack (2^53: a JavaScript number stays exact).
const MaxProbeN = 1 << 53

// P2PState is the data of p2p_state.
type P2PState struct {
	Peer string `json:"peer"`
	Up   bool   `json:"up"`
	// LastSeq, when Up is false, is the highest Seq delivered from Peer; the
	// server resends that peer's later messages from history.
	LastSeq uint64 `json:"last_seq,omitempty"`
	// Reason, when Up is false, says why the direct path is not there
	// ("no-candidates", "ice-failed", "closed", ...), for metrics and the UI.
	Reason string `json:"reason,omitempty"`
}

// Paths a message can take.
const (
	PathP2P   = "p2p"
	PathRelay = "relay"
)

// Latency is the data of latency_report.
type Latency struct {
	Path string `json:"path"` // "p2p" or "relay"
	// Micros is a one-way latency in microseconds (a round trip halved).
	Micros float64 `json:"us"`
}
