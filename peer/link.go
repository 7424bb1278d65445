package peer

import (
	"encoding/json"
	"slices"
	"sync"
	"time"

	"github.com/pion/webrtc/v4"
	"github.com/virtutune/link/protocol"
)

// DataChannelLabel is the label of the one data channel between two members.
const DataChannelLabel = "virtutune"

// dataChannelInit is how the channel carries messages: unordered, so a lost
// packet never holds back the ones after it (the receiver's dedupe orders
// them, and the heartbeat is never stuck behind a chord), and reliable, so
// SCTP resends it at once (a fast retransmit: the heartbeat's traffic makes
// the duplicate acknowledgements) or within its retransmission timeout,
// capped at sctpRTOMax (500 ms). Measured against the alternatives on a lossy vnet
// and after a blackout by BenchmarkChannelModes (README, "How a chord
// travels"). The relay carries a copy of every application message
// meanwhile, and what a peer lacks after a channel died is resent over the
// next one from the outbox (its heartbeat says what it has). link.js opens
// the same channel.
var dataChannelInit = func() *webrtc.DataChannelInit {
	ordered := false
	return &webrtc.DataChannelInit{Ordered: &ordered}
}

// attempt is one generation of the direct path to a peer: a peer connection
// and its data channel. Its fields are guarded by Client.mu.
type attempt struct {
	gen     uint32
	pc      *webrtc.PeerConnection
	dc      *webrtc.DataChannel // set once open
	remote  bool                // remote description applied
	cands   []webrtc.ICECandidateInit
	started time.Time
	timeout time.Duration
}

// link is the direct path to one peer. Its fields are guarded by Client.mu;
// opMu serialises the pion calls of one link (offer, answer, candidates) and
// is never taken inside a pion callback, and never with Client.mu held.
//
// At most two attempts live at once: cur, whose channel opened (the link is
// up, suspect or down), and next, one under way. A link that goes down keeps
// cur (it comes back by itself when the peer is heard again) while next is
// tried beside it; whichever works first is kept.
type link struct {
	opMu    sync.Mutex
	peer    string
	role    string
	offerer bool
	state   LinkState
	since   time.Time // when state was entered
	reason  string    // why the link is not up (or was last not)
	gen     uint32    // highest generation made or seen
	cur     *attempt
	next    *attempt
	making  bool      // an offer is being made (startOffer runs)
	retryAt time.Time // when the next attempt (offerer) or request (answerer) is due
	fails   int       // attempts failed in a row (backoff exponent)
	everUp  bool
	acked   bool      // the peer's heartbeat on cur's channel said what it has
	heard   time.Time // last message from the peer over cur's channel
	pings   map[string]time.Time
	rtt     samples // round trips over the channel
	offset  offsets // the peer's clock minus ours
}

// samples keeps the last few measurements of a duration; median smooths them.
type samples struct {
	v []time.Duration
	i int
}

const sampleWindow = 16

func (s *samples) add(d time.Duration) {
	if len(s.v) < sampleWindow {
		s.v = append(s.v, d)
		return
	}
	s.v[s.i] = d
	s.i = (s.i + 1) % sampleWindow
}

// median returns the median of the samples (0 if none).
func (s *samples) median() time.Duration {
	if len(s.v) == 0 {
		return 0
	}
	c := slices.Clone(s.v)
	slices.Sort(c)
	return c[len(c)/2]
}

// offsets estimates a peer's clock offset from ping/pong exchanges: the
// offset measured by the exchange with the shortest round trip among the
// recent ones (the one least skewed by queueing).
type offsets struct {
	rtt, off []float64 // ms
	i        int
}

func (o *offsets) add(rttMS, offMS float64) {
	if len(o.rtt) < sampleWindow {
		o.rtt, o.off = append(o.rtt, rttMS), append(o.off, offMS)
		return
	}
	o.rtt[o.i], o.off[o.i] = rttMS, offMS
	o.i = (o.i + 1) % sampleWindow
}

// get returns the estimate in ms and whether there is one.
func (o *offsets) get() (float64, bool) {
	if len(o.rtt) == 0 {
		return 0, false
	}
	best := 0
	for i, r := range o.rtt {
		if r < o.rtt[best] {
			best = i
		}
	}
	return o.off[best], true
}

// setStateLocked applies event e to l (the one place a link changes state)
// and does what entering the new state means: p2p_state to the server when
// the direct path comes or goes, an Event. It reports whether e was
// possible; an impossible event (a late callback) changes nothing. c.mu is held.
func (c *Client) setStateLocked(l *link, e linkEvent, reason string) bool {
	to, err := l.state.next(e)
	if err != nil {
		c.log.Debug("link event ignored", "peer", l.peer, "err", err)
		return false
	}
	from := l.state
	if to == from {
		return true
	}
	now := time.Now()
	l.state, l.since = to, now
	if !to.P2P() && reason != "" {
		l.reason = reason
	}
	if to.P2P() {
		l.reason = ""
	}
	switch {
	case to.P2P() && !from.P2P():
		c.enqueueLocked(protocol.MustMarshal(protocol.TypeP2PState, protocol.P2PState{Peer: l.peer, Up: true}))
	case from.P2P() && !to.P2P():
		c.enqueueLocked(protocol.MustMarshal(protocol.TypeP2PState,
			protocol.P2PState{Peer: l.peer, Up: false, LastSeq: c.dd.lastSeq(l.peer), Reason: l.reason}))
	}
	gen := l.gen
	if l.cur != nil {
		gen = l.cur.gen
	}
	c.emitLocked(Event{Kind: EventP2P, Peer: l.peer, Up: to.P2P(), State: to, Reason: l.reason, Generation: gen})
	if to.P2P() != from.P2P() {
		c.log.Info("direct path "+to.String(), "peer", l.peer, "generation", gen, "reason", l.reason)
	} else {
		c.log.Debug("link "+to.String(), "peer", l.peer, "generation", gen, "reason", l.reason)
	}
	c.maybeDoneLocked()
	return true
}

// noteMemberLocked records a peer and returns it when this client should
// offer to it now. c.mu is held.
func (c *Client) noteMemberLocked(id, role string, noP2P bool) []string {
	if c.api == nil || c.closed || c.relayGone || noP2P {
		return nil // a member without data channels is never offered one
	}
	l := c.links[id]
	if l == nil {
		now := time.Now()
		l = &link{peer: id, role: role, state: LinkIdle, since: now, pings: make(map[string]time.Time)}
		c.links[id] = l
		if !protocol.Offers(c.cfg.Role, c.id, role, id) {
			l.retryAt = now.Add(noOfferWait) // the answering side asks if no offer comes
		}
	}
	if role != "" {
		l.role = role
	}
	l.offerer = protocol.Offers(c.cfg.Role, c.id, l.role, id)
	if l.offerer && l.state == LinkIdle && l.next == nil && !l.making {
		l.making = true // claimed by the offer about to start
		return []string{id}
	}
	return nil
}

// closeLinkLocked ends the link to a peer that left (or takes no part in
// data channels) at once and forgets it; it returns the peer connections to
// close (outside the lock). c.mu is held.
func (c *Client) closeLinkLocked(l *link, reason string) []*webrtc.PeerConnection {
	var pcs []*webrtc.PeerConnection
	for _, a := range []*attempt{l.cur, l.next} {
		if a != nil && a.pc != nil {
			pcs = append(pcs, a.pc)
		}
	}
	l.cur, l.next = nil, nil
	if l.state != LinkClosed {
		c.setStateLocked(l, evClose, reason)
	}
	c.ob.forget(l.peer)
	if c.links[l.peer] == l {
		delete(c.links, l.peer)
	}
	return pcs
}

// closePCs closes peer connections in goroutines of the client.
func (c *Client) closePCs(pcs []*webrtc.PeerConnection) {
	for _, pc := range pcs {
		if !c.spawn(func() { _ = pc.GracefulClose() }) {
			_ = pc.Close()
		}
	}
}

// attemptEnded: attempt a's channel closed or its connection failed (or it
// could not be made). If it was the link's channel, the link is lost (an
// attempt under way carries on); if it was the attempt under way, the link
// retries after backoff. Either way its peer connection is closed.
func (c *Client) attemptEnded(l *link, a *attempt, reason string) {
	c.mu.Lock()
	ok := c.attemptFailedLocked(l, a, reason)
	c.mu.Unlock()
	if ok {
		c.closePCs([]*webrtc.PeerConnection{a.pc})
	}
}

// attemptFailedLocked does attemptEnded's bookkeeping and reports whether a
// was one of l's attempts (a nil a: an attempt that never got one). c.mu is held.
func (c *Client) attemptFailedLocked(l *link, a *attempt, reason string) bool {
	if c.links[l.peer] != l || l.state == LinkClosed {
		return a != nil
	}
	now := time.Now()
	switch {
	case a != nil && l.cur == a:
		l.cur = nil
		c.setStateLocked(l, evLost, reason)
		if l.next != nil {
			c.setStateLocked(l, evAttempt, "")
			return true
		}
	case a == nil || l.next == a:
		l.next = nil
		if l.state == LinkConnecting {
			c.setStateLocked(l, evFail, reason)
		} else if l.cur == nil {
			return true
		}
	default:
		return true // an attempt already replaced
	}
	if !l.offerer && l.cur == nil {
		// the answering side asks for the next attempt once the backoff passed
		l.reason = reason
	}
	l.retryAt = now.Add(c.p2pBackoff(l))
	l.fails++
	return true
}

// p2pBackoff is the wait before l's next attempt. c.mu is held.
func (c *Client) p2pBackoff(l *link) time.Duration {
	lo, hi := p2pBackoffNewMin, p2pBackoffNewMax
	if l.everUp {
		lo, hi = p2pBackoffKnownMin, p2pBackoffKnownMax
	}
	hi = max(hi, lo)
	return backoffDelay(l.fails, lo, hi, randFloat())
}

func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic("peer: " + err.Error())
	}
	return b
}
