package protocol

import "time"

// The server's HTTP API (/api/*): the bodies of its requests and answers, and
// the codes of its refusals. The server (signaling), the Go peer (peer) and
// the tests share these types; testdata/api_codes.json lists every Code for
// the browser client's tests.

// CreateSessionRequest is the optional body of POST /api/sessions. UserID may
// be named only by a caller presenting the server's API key.
type CreateSessionRequest struct {
	UserID *int64 `json:"user_id,omitempty"`
}

// SessionToken is a member's way into a session: its token and the
// WebSocket URL to present it at.
type SessionToken struct {
	SessionID string    `json:"session_id"`
	UserID    int64     `json:"user_id"`
	Role      string    `json:"role"`
	Token     string    `json:"token"`
	WSURL     string    `json:"ws_url"`
	ExpiresAt time.Time `json:"expires_at"`
}

// SessionResponse is the answer (201) of POST /api/sessions: the PC's
// SessionToken and the phone's single-use pairing link (also as a QR code, a
// PNG data URL).
type SessionResponse struct {
	SessionToken
	PairingURL       string    `json:"pairing_url"`
	PairingExpiresAt time.Time `json:"pairing_expires_at"`
	PairingQR        string    `json:"pairing_qr"`
}

// PairRequest is the body of POST /api/pair.
type PairRequest struct {
	PairingToken string `json:"pairing_token"`
}

// PairResponse is the answer (200) of POST /api/pair: the phone's SessionToken.
type PairResponse = SessionToken

// PairingResponse is the answer (201) of POST /api/sessions/{id}/pairing: a
// fresh pairing link for the session.
type PairingResponse struct {
	SessionID        string    `json:"session_id"`
	PairingURL       string    `json:"pairing_url"`
	PairingExpiresAt time.Time `json:"pairing_expires_at"`
	PairingQR        string    `json:"pairing_qr"`
}

// APIError is the JSON body of every refusal of the HTTP API and of the
// WebSocket's upgrade: a stable Code and a Message for people.
type APIError struct {
	Code    Code   `json:"code"`
	Message string `json:"error"`
}

// Error implements error: "code: message".
func (e *APIError) Error() string { return string(e.Code) + ": " + e.Message }

// Codes of the HTTP API's refusals, besides the message codes it shares
// (CodeInvalidJSON, CodeInvalidData, CodeTooLarge, CodeUnavailable,
// CodeInternal). The HTTP status goes with the code as listed.
const (
	CodeTokenRequired    Code = "token_required"     // 401: the WebSocket needs a token (Authorization: Bearer or ?token=)
	CodeInvalidToken     Code = "invalid_token"      // 401: a bad or expired token (or pairing token)
	CodePairingToken     Code = "pairing_token"      // 401: a pairing token where a session token is needed (trade it at /api/pair)
	CodeAPIKeyRequired   Code = "api_key_required"   // 401: creating a session needs the server's API key
	CodeWrongSession     Code = "wrong_session"      // 403: the token is for another session
	CodeOriginNotAllowed Code = "origin_not_allowed" // 403: the WebSocket's Origin is not allowed
	CodeForbidden        Code = "forbidden"          // 403: the caller may not do this (user_id without an API key, a phone asking for a pairing link)
	CodeSessionNotFound  Code = "session_not_found"  // 404: the session is unknown or expired
	CodeNotFound         Code = "not_found"          // 404: no such path
	CodeMethodNotAllowed Code = "method_not_allowed" // 405: no such method on this path
	CodeInvalidClientID  Code = "invalid_client_id"  // 400: client_id is not 4-64 characters of A-Z a-z 0-9 _ -
	CodePairingUsed      Code = "pairing_used"       // 410: the pairing link was used already (single use)
	CodeFull             Code = "full"               // 503: the instance is at its session or connection bound
	CodeDraining         Code = "draining"           // 503: the instance is shutting down; try another
)
