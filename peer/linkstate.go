package peer

import (
	"errors"
	"fmt"
	"time"
)

// LinkState is the state of the data channel link to one peer. Exactly one
// function, LinkState.next, moves a link from one state to another, and it
// refuses the transitions that cannot happen (the browser client, link.js,
// has the same states, events and rule; protocol/testdata/delivery.json
// holds the table both are tested against).
type LinkState int

// States of a link.
const (
	LinkUnknown LinkState = iota
	// LinkIdle: no attempt and none due: the answering side waits for an
	// offer (after asking for one with rtc_restart).
	LinkIdle
	// LinkConnecting: an attempt (a generation: offer, answer, ICE, DTLS,
	// SCTP) is under way and no channel is open.
	LinkConnecting
	// LinkUp: the channel is open and the peer's heartbeat arrives.
	LinkUp
	// LinkSuspect: the channel is open but nothing came from the peer for two
	// heartbeat intervals.
	LinkSuspect
	// LinkDown: the channel is open but silent for four heartbeat intervals,
	// or ICE says disconnected. Chords still go over the relay (they always
	// do); the channel comes back to up by itself if the peer is heard again,
	// and a fresh attempt is made beside it meanwhile.
	LinkDown
	// LinkBackoff: the last attempt or channel ended; the next attempt (or,
	// on the answering side, the request for one) waits for the backoff.
	LinkBackoff
	// LinkClosed: the peer left, takes no part in data channels, or the
	// client closed. Final.
	LinkClosed
)

var linkStateNames = [...]string{"unknown", "idle", "connecting", "up", "suspect", "down", "backoff", "closed"}

func (s LinkState) String() string {
	if s < 0 || int(s) >= len(linkStateNames) {
		return "unknown"
	}
	return linkStateNames[s]
}

// P2P reports whether a link in state s carries messages directly: up, or
// suspect (a late heartbeat, not yet a dead path).
func (s LinkState) P2P() bool { return s == LinkUp || s == LinkSuspect }

// parseLinkState is String's inverse (LinkUnknown for anything else).
func parseLinkState(name string) LinkState {
	for i, n := range linkStateNames {
		if n == name {
			return LinkState(i)
		}
	}
	return LinkUnknown
}

// linkEvent is what happened to a link.
type linkEvent int

const (
	evUnknown linkEvent = iota
	// evAttempt: a new generation starts (this side offered, or an offer came).
	evAttempt
	// evOpen: an attempt's data channel opened.
	evOpen
	// evQuiet: two heartbeat intervals without a word from the peer.
	evQuiet
	// evSilent: four heartbeat intervals without a word, or ICE disconnected.
	evSilent
	// evHeard: a message came from the peer over the open channel.
	evHeard
	// evLost: the open channel ended (closed, ICE failed) and no attempt runs.
	evLost
	// evFail: an attempt ended before its channel opened.
	evFail
	// evAsk: the answering side asked for a new attempt and waits for it.
	evAsk
	// evClose: the peer left or the client closed.
	evClose
)

var linkEventNames = [...]string{"unknown", "attempt", "open", "quiet", "silent", "heard", "lost", "fail", "ask", "close"}

func (e linkEvent) String() string {
	if e < 0 || int(e) >= len(linkEventNames) {
		return "unknown"
	}
	return linkEventNames[e]
}

func parseLinkEvent(name string) linkEvent {
	for i, n := range linkEventNames {
		if n == name {
			return linkEvent(i)
		}
	}
	return evUnknown
}

// errTransition: the event cannot happen in the link's state (a bug, or a
// late callback of an attempt that already ended).
var errTransition = errors.New("peer: impossible link transition")

// next returns the state after event e in state s, or errTransition.
//
//	attempt  idle, backoff, connecting -> connecting; up, suspect, down stay
//	         (a fresh generation runs beside the open channel)
//	open     connecting, up, suspect, down -> up
//	quiet    up -> suspect
//	silent   up, suspect -> down
//	heard    up, suspect, down -> up
//	lost     up, suspect, down -> backoff
//	fail     connecting -> backoff
//	ask      backoff, idle -> idle
//	close    any state but closed -> closed
func (s LinkState) next(e linkEvent) (LinkState, error) {
	bad := func() (LinkState, error) {
		return s, fmt.Errorf("%w: %s in state %s", errTransition, e, s)
	}
	switch e {
	case evAttempt:
		switch s {
		case LinkIdle, LinkBackoff, LinkConnecting:
			return LinkConnecting, nil
		case LinkUp, LinkSuspect, LinkDown:
			return s, nil
		}
	case evOpen:
		switch s {
		case LinkConnecting, LinkUp, LinkSuspect, LinkDown:
			return LinkUp, nil
		}
	case evQuiet:
		if s == LinkUp {
			return LinkSuspect, nil
		}
	case evSilent:
		if s == LinkUp || s == LinkSuspect {
			return LinkDown, nil
		}
	case evHeard:
		switch s {
		case LinkUp, LinkSuspect, LinkDown:
			return LinkUp, nil
		}
	case evLost:
		switch s {
		case LinkUp, LinkSuspect, LinkDown:
			return LinkBackoff, nil
		}
	case evFail:
		if s == LinkConnecting {
			return LinkBackoff, nil
		}
	case evAsk:
		if s == LinkBackoff || s == LinkIdle {
			return LinkIdle, nil
		}
	case evClose:
		if s != LinkClosed && s != LinkUnknown {
			return LinkClosed, nil
		}
	}
	return bad()
}

// Heartbeat thresholds, in heartbeat intervals without a word from the peer.
const (
	quietAfter  = 2 // up -> suspect
	silentAfter = 4 // -> down
)

// hbVerdict is what a silence of silent means for a link whose heartbeat
// interval is interval: evUnknown (fine), evQuiet or evSilent.
func hbVerdict(silent, interval time.Duration) linkEvent {
	switch {
	case silent >= silentAfter*interval:
		return evSilent
	case silent >= quietAfter*interval:
		return evQuiet
	}
	return evUnknown
}

// backoffDelay is the wait before retry number attempt (0-based):
// exponential from lo, capped at hi, with "equal jitter" (half fixed, half
// random; r in [0, 1) draws the random half). The same rule as link.js.
func backoffDelay(attempt int, lo, hi time.Duration, r float64) time.Duration {
	if lo <= 0 {
		return 0
	}
	c := lo
	for i := 0; i < attempt && c < hi; i++ {
		c *= 2
	}
	c = min(c, hi)
	ms := float64(c) / float64(time.Millisecond)
	return time.Duration(roundHalfUp(ms/2+r*ms/2)) * time.Millisecond
}

func roundHalfUp(x float64) int64 { return int64(x + 0.5) }
