package signaling

import "errors"

// Sentinel errors of the signaling package.
var (
	// ErrSessionNotFound: the session id is unknown or its session expired.
	ErrSessionNotFound = errors.New("signaling: session not found")
	// ErrBadSequence: a client's seq skipped ahead of the next expected one.
	ErrBadSequence = errors.New("signaling: sequence number skips ahead")
	// ErrUnavailable: the broker's backing service (Redis) cannot be reached;
	// retry later.
	ErrUnavailable = errors.New("signaling: broker unavailable")
	// ErrBrokerClosed: the broker was closed.
	ErrBrokerClosed = errors.New("signaling: broker closed")
	// errInvalidConfig wraps every Config.Validate failure.
	errInvalidConfig = errors.New("signaling: invalid config")
)
