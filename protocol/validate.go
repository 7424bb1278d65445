package protocol

import (
	"bytes"
	"encoding/json"
	"math"
	"strings"
	"time"
)

// Bounds of validated fields.
const (
	// MaxTimestampLen bounds an RFC 3339 timestamp string in bytes.
	MaxTimestampLen = 40
	// MaxTimestampMillis bounds a numeric timestamp (year 2286 and a bit).
	MaxTimestampMillis = 1e13
	// MaxReasonLen bounds free-text reasons.
	MaxReasonLen = 64
)

// ServerOnly reports whether only the server may send messages of type t.
func ServerOnly(t Type) bool {
	switch t {
	case TypePong, TypeConnectionUpdate, TypePracticeUpdate, TypeError, TypeSessionState, TypeResumed:
		return true
	}
	return false
}

// Known reports whether t is a message type of this protocol.
func Known(t Type) bool {
	switch t {
	case TypeChordChange, TypePracticeStart, TypePracticeEnd, TypePing, TypePong,
		TypeConnectionUpdate, TypePracticeUpdate, TypeError, TypeSessionState,
		TypeResume, TypeResumed, TypeRTCOffer, TypeRTCAnswer, TypeRTCCandidate,
		TypeRTCRestart, TypeP2PState, TypeLatency, TypeProbe:
		return true
	}
	return false
}

// Application reports whether t is an application message: one that carries a
// sequence number, enters the session's history and may travel over a data channel.
func Application(t Type) bool {
	return t == TypeChordChange || t == TypePracticeStart || t == TypePracticeEnd
}

// Signaling reports whether t is addressed to one member by To.
func Signaling(t Type) bool {
	switch t {
	case TypeRTCOffer, TypeRTCAnswer, TypeRTCCandidate, TypeRTCRestart, TypeProbe:
		return true
	}
	return false
}

// Validated is a client message after Validate, with its data decoded.
type Validated struct {
	Chord     string          // chord_change
	Timestamp json.RawMessage // practice_*, ping: as sent (nil if absent)
	Desc      RTCDescription  // rtc_offer, rtc_answer
	Candidate RTCCandidate    // rtc_candidate, normalized
	Restart   RTCRestart      // rtc_restart
	P2P       P2PState        // p2p_state
	Resume    Resume          // resume
	Latency   Latency         // latency_report
	Probe     Probe           // probe
}

// Validate checks a message a client sent (to the server or over a data
// channel) and decodes its data. It refuses unknown types ("Unknown message
// type: X"), types only the server sends, and data that breaks the rules in
// doc.go. It does not check To against the session's members; the server does.
func Validate(m *Message) (Validated, *Error) {
	var v Validated
	if !Known(m.Type) {
		return v, Errorf(CodeUnknownType, "Unknown message type: %s", truncate(string(m.Type), 64))
	}
	if ServerOnly(m.Type) {
		return v, Errorf(CodeServerOnly, "Message type %s is sent only by the server", m.Type)
	}
	if m.Gap != 0 && (!Application(m.Type) || m.Gap >= m.Seq) {
		return v, Errorf(CodeInvalidData, "gap must be below seq, on an application message")
	}
	if Signaling(m.Type) {
		if m.To == "" {
			return v, Errorf(CodeInvalidTarget, "%s needs a target client id in \"to\"", m.Type)
		}
		if !ValidClientID(m.To) {
			return v, Errorf(CodeInvalidTarget, "%s has an invalid target client id", m.Type)
		}
	}
	switch m.Type {
	case TypeChordChange:
		if c, ok := scanChord(m.Data); ok {
			v.Chord = c
			break
		}
		var d struct {
			Chord json.RawMessage `json:"chord"`
		}
		if e := decodeData(m, &d); e != nil {
			return v, e
		}
		if len(d.Chord) == 0 || isNull(d.Chord) || string(d.Chord) == `""` {
			return v, &Error{Code: CodeChordRequired, Message: MsgChordRequired}
		}
		var s string
		if err := json.Unmarshal(d.Chord, &s); err != nil {
			return v, Errorf(CodeInvalidData, "chord must be a string")
		}
		if !ValidChord(s) {
			return v, Errorf(CodeInvalidChord, "Invalid chord: %q", truncate(s, 32))
		}
		v.Chord = s
	case TypePracticeStart, TypePracticeEnd, TypePing:
		var d struct {
			Timestamp json.RawMessage `json:"timestamp"`
		}
		if e := decodeData(m, &d); e != nil {
			return v, e
		}
		if len(d.Timestamp) > 0 && !isNull(d.Timestamp) {
			if e := ValidTimestamp(d.Timestamp); e != nil {
				return v, e
			}
			v.Timestamp = d.Timestamp
		}
	case TypeRTCOffer, TypeRTCAnswer:
		if e := decodeInto(m, &v.Desc); e != nil {
			return v, e
		}
		if e := ValidSDP(v.Desc.SDP); e != nil {
			return v, e
		}
	case TypeRTCCandidate:
		if e := decodeInto(m, &v.Candidate); e != nil {
			return v, e
		}
		c, e := NormalizeCandidate(v.Candidate.Candidate)
		if e != nil {
			return v, e
		}
		v.Candidate.Candidate = c
		if v.Candidate.SDPMid != nil && len(*v.Candidate.SDPMid) > 32 {
			return v, Errorf(CodeInvalidSignal, "sdpMid is too long")
		}
		if v.Candidate.UsernameFragment != nil && len(*v.Candidate.UsernameFragment) > 256 {
			return v, Errorf(CodeInvalidSignal, "usernameFragment is too long")
		}
	case TypeRTCRestart:
		if e := decodeInto(m, &v.Restart); e != nil {
			return v, e
		}
		v.Restart.Reason = truncate(v.Restart.Reason, MaxReasonLen)
	case TypeP2PState:
		if e := decodeInto(m, &v.P2P); e != nil {
			return v, e
		}
		if !ValidClientID(v.P2P.Peer) {
			return v, Errorf(CodeInvalidTarget, "p2p_state needs a valid peer client id")
		}
		v.P2P.Reason = truncate(v.P2P.Reason, MaxReasonLen)
	case TypeResume:
		if e := decodeInto(m, &v.Resume); e != nil {
			return v, e
		}
		if len(v.Resume.Seen) > MaxSeen {
			return v, Errorf(CodeTooLarge, "resume.seen names more than %d peers", MaxSeen)
		}
		for id := range v.Resume.Seen {
			if !ValidClientID(id) {
				return v, Errorf(CodeInvalidData, "resume.seen holds an invalid client id")
			}
		}
	case TypeProbe:
		if e := decodeData(m, &v.Probe); e != nil {
			return v, e
		}
		if (v.Probe.N == 0) == (v.Probe.Ack == 0) {
			return v, Errorf(CodeInvalidData, "probe needs exactly one of n (a question) and ack (an answer)")
		}
		if v.Probe.N > MaxProbeN || v.Probe.Ack > MaxProbeN {
			return v, Errorf(CodeInvalidData, "probe.n and probe.ack must be at most 2^53")
		}
	case TypeLatency:
		if e := decodeInto(m, &v.Latency); e != nil {
			return v, e
		}
		if v.Latency.Path != PathP2P && v.Latency.Path != PathRelay {
			return v, Errorf(CodeInvalidData, "latency_report.path must be \"p2p\" or \"relay\"")
		}
		if math.IsNaN(v.Latency.Micros) || v.Latency.Micros < 0 || v.Latency.Micros > 60e6 {
			return v, Errorf(CodeInvalidData, "latency_report.us must be between 0 and 60000000")
		}
	}
	return v, nil
}

// decodeData decodes m.Data (absent means {}) into dst, answering a field of the
// wrong JSON type with CodeInvalidData.
// decodeInto decodes m's data into *dst through a value of its own, so that
// dst (a field of Validate's result) does not escape: a chord change, the
// common message, validates without allocating its Validated.
func decodeInto[T any](m *Message, dst *T) *Error {
	var x T
	if e := decodeData(m, &x); e != nil {
		return e
	}
	*dst = x
	return nil
}

func decodeData(m *Message, dst any) *Error {
	if len(m.Data) == 0 {
		return nil
	}
	if err := json.Unmarshal(m.Data, dst); err != nil {
		var te *json.UnmarshalTypeError
		if asTypeError(err, &te) && te.Field != "" {
			return Errorf(CodeInvalidData, "Invalid data for %s: %s has the wrong type", m.Type, te.Field)
		}
		return Errorf(CodeInvalidData, "Invalid data for %s", m.Type)
	}
	return nil
}

func asTypeError(err error, te **json.UnmarshalTypeError) bool {
	t, ok := err.(*json.UnmarshalTypeError)
	if ok {
		*te = t
	}
	return ok
}

// ValidTimestamp checks a timestamp as raw JSON: an RFC 3339 string or a
// number of milliseconds since the epoch (Date.now()), 0 to MaxTimestampMillis.
func ValidTimestamp(raw json.RawMessage) *Error {
	bad := Errorf(CodeInvalidTimestamp, "Invalid timestamp: expected an RFC 3339 string or milliseconds since the epoch")
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return bad
	}
	if raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil || len(s) > MaxTimestampLen {
			return bad
		}
		if _, err := time.Parse(time.RFC3339Nano, s); err != nil {
			return bad
		}
		return nil
	}
	var f float64
	if err := json.Unmarshal(raw, &f); err != nil || math.IsNaN(f) || math.IsInf(f, 0) || f < 0 || f > MaxTimestampMillis {
		return bad
	}
	return nil
}

// ValidSDP checks the outline of a session description: non-empty, at most
// MaxSDPLen bytes, starting with "v=0", no NUL bytes. pion parses the rest.
func ValidSDP(sdp string) *Error {
	if sdp == "" {
		return Errorf(CodeInvalidSignal, "SDP is required")
	}
	if len(sdp) > MaxSDPLen {
		return Errorf(CodeTooLarge, "SDP is longer than %d bytes", MaxSDPLen)
	}
	if !strings.HasPrefix(sdp, "v=0") || strings.IndexByte(sdp, 0) >= 0 {
		return Errorf(CodeInvalidSignal, "SDP is malformed: it must start with v=0")
	}
	return nil
}

// NormalizeCandidate accepts an ICE candidate in the browser's forms, with or
// without the "a=" prefix, host names included (".local" mDNS names), and
// returns it without the prefix. An empty candidate (end of candidates) is
// valid and stays empty.
func NormalizeCandidate(c string) (string, *Error) {
	c = strings.TrimSpace(c)
	c = strings.TrimPrefix(c, "a=")
	if c == "" || c == "end-of-candidates" {
		return "", nil
	}
	if len(c) > MaxCandidateLen {
		return "", Errorf(CodeTooLarge, "ICE candidate is longer than %d bytes", MaxCandidateLen)
	}
	if !strings.HasPrefix(c, "candidate:") {
		return "", Errorf(CodeInvalidSignal, "ICE candidate is malformed: it must start with candidate:")
	}
	for i := 0; i < len(c); i++ {
		if c[i] < 0x20 || c[i] == 0x7f {
			return "", Errorf(CodeInvalidSignal, "ICE candidate holds control characters")
		}
	}
	// foundation component transport priority address port "typ" type
	if len(strings.Fields(c)) < 8 {
		return "", Errorf(CodeInvalidSignal, "ICE candidate is malformed: too few fields")
	}
	return c, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	// do not cut a UTF-8 sequence in half
	for n > 0 && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n] + "…"
}
