package signaling

import "errors"

// Sentinel errors of the signaling package.
var (
	// ErrSessionNotFound: the session id is unknown or its session expired.
	ErrSessionNotFound = errors.New("signaling: session not found")
	// ErrBadSequence: a client's seq skipped ahead of the next expected one.
	ErrBadSequence = errors.New("signaling: sequence number skips ahead")
	// ErrTooManySenders: the session already remembers the sequence numbers
	// of the most client ids it may (MaxSeqClients, 64 by default) and none
	// of them may be forgotten: an entry is forgotten only when its client id
	// is not present in the session and sent nothing for SeqRetention (10
	// minutes by default), oldest first. The new sender's message is refused;
	// nobody else's count is touched. Both brokers apply the same rule.
	ErrTooManySenders = errors.New("signaling: too many senders in this session")
	// ErrSessionFull: the session has as many members of that role as it
	// may (Limits.MaxMembers, Limits.PCSlots).
	ErrSessionFull = errors.New("signaling: no free member slot for this role")
	// ErrUnavailable: the broker's backing service (Redis) cannot be reached;
	// retry later.
	ErrUnavailable = errors.New("signaling: broker unavailable")
	// ErrBrokerClosed: the broker was closed.
	ErrBrokerClosed = errors.New("signaling: broker closed")
	// ErrPairingNotFound: no live pairing has that code (or the session has none).
	ErrPairingNotFound = errors.New("signaling: pairing not found")
	// ErrPairingExpired: the pairing's expiry has passed.
	ErrPairingExpired = errors.New("signaling: pairing expired")
	// ErrPairingUsed: the pairing was taken already (single use).
	ErrPairingUsed = errors.New("signaling: pairing already used")
	// ErrPINTaken: another live pairing holds the same 6-digit code; draw another.
	ErrPINTaken = errors.New("signaling: pairing PIN in use")
	// ErrTooManyDevices: the session has its maximum of paired devices.
	ErrTooManyDevices = errors.New("signaling: too many paired devices")
	// ErrInvalidConfig wraps every configuration error: of Config.Validate,
	// MemoryConfig.Validate, RedisConfig.Validate, and of the constructors
	// that call them (New, NewMemoryBroker, NewRedisBroker, NewTokens).
	ErrInvalidConfig = errors.New("signaling: invalid config")
)
