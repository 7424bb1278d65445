package protocol

import "fmt"

// Code is a stable, machine-readable error code carried in error.data.code.
type Code string

// Error codes. The text of the seed's three errors is kept exactly.
const (
	CodeInvalidJSON      Code = "invalid_json"      // "Invalid JSON format"
	CodeUnknownType      Code = "unknown_type"      // "Unknown message type: <type>"
	CodeChordRequired    Code = "chord_required"    // "Chord is required"
	CodeInvalidChord     Code = "invalid_chord"     // the chord does not follow the grammar
	CodeInvalidData      Code = "invalid_data"      // data is not an object or a field has the wrong type
	CodeInvalidTimestamp Code = "invalid_timestamp" // neither an RFC 3339 string nor a number of ms
	CodeServerOnly       Code = "server_only"       // a type only the server may send
	CodeInvalidTarget    Code = "invalid_target"    // signaling to nobody, to oneself or to a member not present
	CodeInvalidSignal    Code = "invalid_signal"    // malformed SDP or ICE candidate
	CodeInvalidSequence  Code = "invalid_sequence"  // seq skipped ahead, or from names another client
	CodeRateLimited      Code = "rate_limited"      // too many messages per second
	CodeTooLarge         Code = "too_large"         // a field or the message is over its size bound
	CodeBinaryFrame      Code = "binary_frame"      // only text frames carry messages
	CodeUnavailable      Code = "unavailable"       // the broker could not take the message (e.g. Redis down)
	CodeInternal         Code = "internal"          // a server fault; the connection stays open
)

// The seed's error texts, exactly.
const (
	MsgInvalidJSON   = "Invalid JSON format"
	MsgChordRequired = "Chord is required"
)

// Errorf returns a protocol error with code c and a formatted message.
func Errorf(c Code, format string, args ...any) *Error {
	return &Error{Code: c, Message: fmt.Sprintf(format, args...)}
}

// WebSocket close codes used by the server (RFC 6455 and the 4000-4999 private range).
//
// Codes 4000-4099 mean "reconnect": the client should come back (with backoff)
// and resume. Codes 4100-4199 are terminal: reconnecting with the same token will
// not help.
const (
	CloseNormal        = 1000 // the client or server finished
	CloseGoingAway     = 1001 // server shutting down: reconnect at once, to another instance
	CloseProtocolError = 1002
	CloseUnsupported   = 1003 // not used for binary frames: those get an error and stay open
	ClosePolicy        = 1008 // kept flooding after rate_limited errors
	CloseTooBig        = 1009 // a frame larger than the read limit
	CloseInternal      = 1011

	CloseSlowConsumer = 4000 // the send queue was full: reconnect and resume
	CloseReconnect    = 4001 // the server asks for a reconnect (e.g. lost its broker)

	CloseReplaced     = 4100 // the same client id connected again elsewhere
	CloseSessionEnded = 4101 // the session expired or was deleted
	CloseTokenExpired = 4102 // the token expired while connected
	CloseSessionFull  = 4103 // the session reached its member bound
	CloseRevoked      = 4104 // the PC removed this device from the session: its tokens no longer work
)

// CloseIsTerminal reports whether a client should not reconnect after code.
func CloseIsTerminal(code int) bool { return code >= 4100 && code <= 4199 }
