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

// SessionToken is a member's way into a session: its token, the client id
// minted into it (its cid claim; removing the device revokes it) and the
// WebSocket URL to present it at.
type SessionToken struct {
	SessionID string    `json:"session_id"`
	UserID    int64     `json:"user_id"`
	Role      string    `json:"role"`
	ClientID  string    `json:"client_id"`
	Token     string    `json:"token"`
	WSURL     string    `json:"ws_url"`
	ExpiresAt time.Time `json:"expires_at"`
}

// PairingOffer is a session's one live pairing: a short link (the QR code's
// content, http://host/p/<code>, single use) and a 6-digit code to type
// instead, single use together with it, until PairingExpiresAt.
type PairingOffer struct {
	PairingURL       string    `json:"pairing_url"`
	PairingCode      string    `json:"pairing_code"`
	PairingPIN       string    `json:"pairing_pin"`
	PairingExpiresAt time.Time `json:"pairing_expires_at"`
	// PairingQR is a data: URL of a PNG of the QR code with one pixel per
	// module (quiet zone included): draw it scaled by a whole number with
	// image-rendering: pixelated. PairingQRModules is its width in modules.
	PairingQR        string `json:"pairing_qr"`
	PairingQRModules int    `json:"pairing_qr_modules"`
}

// SessionResponse is the answer (201) of POST /api/sessions: the PC's
// SessionToken and the session's first PairingOffer.
type SessionResponse struct {
	SessionToken
	PairingOffer
}

// PairRequest is the body of POST /api/pair: one of Code (the short code of
// the QR link) or PIN (the 6-digit code). PreviousToken, when it is a valid,
// unrevoked phone token of the same session, keeps the device's client id
// (the same phone pairing again). Name describes the device for the PC's
// list (at most 40 characters kept; the User-Agent's platform and browser
// when empty). PairingToken is the older clients' pairing JWT: refused with
// CodePairingInvalid (scan again).
type PairRequest struct {
	Code          string `json:"code,omitempty"`
	PIN           string `json:"pin,omitempty"`
	PairingToken  string `json:"pairing_token,omitempty"`
	PreviousToken string `json:"previous_token,omitempty"`
	Name          string `json:"name,omitempty"`
}

// PairResponse is the answer (200) of POST /api/pair: the phone's
// SessionToken, with a client id of its own.
type PairResponse = SessionToken

// PairingResponse is the answer (201) of POST /api/sessions/{id}/pairing: a
// fresh PairingOffer for the session, which ends the one before it.
type PairingResponse struct {
	SessionID string `json:"session_id"`
	PairingOffer
}

// PairingStatus is the answer (200) of GET /api/sessions/{id}/pairing:
// whether the session's pairing is still live (not used, expired or
// replaced), and whether its 6-digit code still is (false once it was
// burned by wrong guesses; the QR link may still work).
type PairingStatus struct {
	Live      bool      `json:"live"`
	ExpiresAt time.Time `json:"pairing_expires_at,omitzero"`
	PINLive   bool      `json:"pin_live"`
}

// Device is a device paired with a session (a phone), as the PC lists it.
type Device struct {
	ClientID string    `json:"client_id"`
	Role     string    `json:"role"`
	Name     string    `json:"name"`
	PairedAt time.Time `json:"paired_at"`
}

// DevicesResponse is the answer (200) of GET /api/sessions/{id}/devices:
// the devices paired with the session, oldest first. DELETE
// /api/sessions/{id}/devices/{client_id} removes one (204; 404
// CodeDeviceNotFound when none was paired, revoked all the same).
type DevicesResponse struct {
	Devices []Device `json:"devices"`
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
	CodeInvalidToken     Code = "invalid_token"      // 401: a bad or expired token
	CodePairingToken     Code = "pairing_token"      // 401: a pairing token (issued by older versions) where a session token is needed: pair with the PC's code
	CodeAPIKeyRequired   Code = "api_key_required"   // 401: creating a session needs the server's API key
	CodeWrongSession     Code = "wrong_session"      // 403: the token is for another session
	CodeClientIDMismatch Code = "client_id_mismatch" // 403: client_id is not the one the token is bound to (leave it out)
	CodeOriginNotAllowed Code = "origin_not_allowed" // 403: the WebSocket's Origin is not allowed
	CodeForbidden        Code = "forbidden"          // 403: the caller may not do this (user_id without an API key, a phone asking for a pairing link)
	CodeSessionNotFound  Code = "session_not_found"  // 404: the session is unknown or expired
	CodeNotFound         Code = "not_found"          // 404: no such path
	CodeMethodNotAllowed Code = "method_not_allowed" // 405: no such method on this path
	CodeInvalidClientID  Code = "invalid_client_id"  // 400: client_id is not 4-64 characters of A-Z a-z 0-9 _ -
	CodePairingUsed      Code = "pairing_used"       // 410: the pairing code was used already (single use; the PC shows a new one)
	CodePairingInvalid   Code = "pairing_invalid"    // 401: no live pairing has this code (mistyped, replaced, or an older version's link)
	CodePairingExpired   Code = "pairing_expired"    // 401: the pairing code expired (the PC shows a new one)
	CodePairingBurned    Code = "pairing_burned"     // 410: the 6-digit code was retired after too many wrong guesses on the server
	CodeTooManyAttempts  Code = "too_many_attempts"  // 429: too many wrong pairing codes from this address, or 6-digit codes on the server (Retry-After)
	CodeTooManyDevices   Code = "too_many_devices"   // 409: the session has its maximum of paired devices (remove one on the PC)
	CodeRevoked          Code = "revoked"            // 401: the PC removed this device: its tokens no longer work (pair again)
	CodeDeviceNotFound   Code = "device_not_found"   // 404: no such device is paired with the session (revoked all the same)
	CodeFull             Code = "full"               // 503: the instance is at its session or connection bound
	CodeDraining         Code = "draining"           // 503: the instance is shutting down; try another
	CodeHostNotAllowed   Code = "host_not_allowed"   // 421: the Host does not name this server (its address, its name, or its public URL)
)
