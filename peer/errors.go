package peer

import "errors"

// Sentinel errors of the peer package.
var (
	// ErrClosed: the Client was closed (by Close, or after a terminal close code).
	ErrClosed = errors.New("peer: client closed")
	// ErrTerminal: the server ended the connection with a terminal close code
	// (4100-4199: replaced, session ended, token expired, session full,
	// device removed by the PC) or refused the token on a reconnect (401,
	// also revoked: the device was removed); dial again with a new token (a
	// removed device pairs again).
	ErrTerminal = errors.New("peer: connection ended by the server for good")
	// ErrRefused: the server refused the WebSocket before the upgrade (401, 403,
	// 404); the wrapped error carries the status and the server's message.
	ErrRefused = errors.New("peer: server refused the connection")
	// ErrNotApplication: Send takes application messages only (chord_change,
	// practice_start, practice_end).
	ErrNotApplication = errors.New("peer: not an application message")
	// ErrInvalidMessage: the message fails protocol validation (e.g. a chord
	// outside the grammar); the wrapped *protocol.Error says why.
	ErrInvalidMessage = errors.New("peer: invalid message")
	// ErrBadPairingURL: the pairing URL is not http(s)://host/p/<code>.
	ErrBadPairingURL = errors.New("peer: pairing URL is not http(s)://host/p/<code>")
	// ErrInvalidConfig wraps every Config.Validate failure (and Dial's, for
	// the same reasons).
	ErrInvalidConfig = errors.New("peer: invalid config")
)
