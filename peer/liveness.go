package peer

import "time"

// Is another member's client running? The pure logic of the probe over the
// relay (protocol/doc.go, "Liveness"), the same as the browser's
// (web/static/liveness.js): protocol/testdata/liveness.json holds it as
// vectors both run. A member is probed only while no data channel can tell
// (its link is not up, or either side has P2P off): a probe {"n":N} every
// probeInterval, answered at once by the member's client ({"ack":N}).

// Verdicts of a member's liveness (PeerLiveness.Verdict).
const (
	// LiveNotProbed: the data channel's heartbeat tells (the link's state).
	LiveNotProbed = ""
	// LiveUnknown: never answered and never had a channel up: it may be a
	// client of the original protocol, which does not answer; not judged.
	LiveUnknown = "unknown"
	// LiveOK: no probe outstanding for an interval.
	LiveOK = "live"
	// LiveLate: a probe outstanding for an interval or more.
	LiveLate = "late"
	// LiveSilent: a probe outstanding for two intervals or more: the
	// member's client is not responding (asleep, frozen, its network gone).
	LiveSilent = "silent"
)

const (
	// probeEvery is the probe interval per member while at most two are probed.
	probeEvery = 250 * time.Millisecond
	// probeBudget is the probes per second one client sends in all: with
	// more members probed, each is probed less often.
	probeBudget = 8
	// answerGap: a client answers one member at most once per answerGap.
	answerGap = 50 * time.Millisecond
	// maxOutstanding bounds the probes remembered per member while unanswered.
	maxOutstanding = 16
)

// probeInterval is the interval between probes to each member when probed
// members are probed.
func probeInterval(probed int) time.Duration {
	return max(probeEvery, time.Duration((int64(probed)*int64(time.Second)+probeBudget-1)/probeBudget))
}

// liveness is what this client knows of one other member's answers (and
// owes it). Its times are monotonic offsets; c.mu guards it.
type liveness struct {
	next       uint64
	sent       []probeSent // outstanding, oldest first
	probing    bool
	lastSent   time.Duration
	known      bool // it answered once, or had a channel up
	highestIn  uint64
	answered   bool
	lastAnswer time.Duration
}

type probeSent struct {
	n uint64
	t time.Duration
}

func newLiveness() *liveness { return &liveness{next: 1} }

// due reports whether a probe is due at t.
func (x *liveness) due(t, interval time.Duration) bool {
	return !x.probing || t-x.lastSent >= interval
}

// send records a probe sent at t and returns its n.
func (x *liveness) send(t time.Duration) uint64 {
	n := x.next
	x.next++
	if len(x.sent) < maxOutstanding {
		x.sent = append(x.sent, probeSent{n, t})
	}
	x.probing, x.lastSent = true, t
	return n
}

// answer takes the member's answer (the highest n it got): everything up
// to it is answered.
func (x *liveness) answer(ack uint64) bool {
	if ack < 1 || ack >= x.next {
		return false
	}
	i := 0
	for i < len(x.sent) && x.sent[i].n <= ack {
		i++
	}
	x.sent = append(x.sent[:0], x.sent[i:]...)
	x.known = true
	return true
}

// stop ends probing (a data channel tells again).
func (x *liveness) stop() {
	x.sent = x.sent[:0]
	x.probing = false
}

// verdict at t.
func (x *liveness) verdict(t, interval time.Duration) string {
	switch {
	case !x.probing:
		return LiveNotProbed
	case !x.known:
		return LiveUnknown
	case len(x.sent) == 0:
		return LiveOK
	}
	a := t - x.sent[0].t
	switch {
	case a >= 2*interval:
		return LiveSilent
	case a >= interval:
		return LiveLate
	}
	return LiveOK
}

// asked takes the member's probe n at t and returns the ack to answer with
// (the highest n it asked), or 0: at most one answer per answerGap (its
// next probe is answered).
func (x *liveness) asked(n uint64, t time.Duration) uint64 {
	if n < 1 {
		return 0
	}
	x.highestIn = max(x.highestIn, n)
	if x.answered && t-x.lastAnswer < answerGap {
		return 0
	}
	x.answered, x.lastAnswer = true, t
	return x.highestIn
}
