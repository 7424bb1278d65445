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

// startOfferAsync starts a new generation to peer in a goroutine of the client.
func (c *Client) startOfferAsync(peer string) {
	if !c.spawn(func() { c.startOffer(peer) }) {
		c.mu.Lock()
		if l := c.links[peer]; l != nil {
			l.making = false
		}
		c.mu.Unlock()
	}
}

// startOffer creates a fresh peer connection (the next generation) with the
// data channel and sends the offer. l.making is set by the caller.
func (c *Client) startOffer(peer string) {
	c.mu.Lock()
	l := c.links[peer]
	c.mu.Unlock()
	if l == nil {
		return
	}
	l.opMu.Lock()
	defer l.opMu.Unlock()

	c.mu.Lock()
	_, present := c.members[peer]
	if c.closed || c.relayGone || !present || c.links[peer] != l || l.next != nil || l.state == LinkClosed {
		l.making = false
		c.mu.Unlock()
		return
	}
	l.gen++
	gen := l.gen
	timeout := c.cfg.ConnectTimeout
	c.mu.Unlock()

	log := c.log.With("peer", peer, "generation", gen)
	fail := func(what string, err error, pc *webrtc.PeerConnection) {
		log.Warn("cannot "+what, "err", err)
		if pc != nil {
			c.closePCs([]*webrtc.PeerConnection{pc})
		}
		c.mu.Lock()
		l.making = false
		c.attemptFailedLocked(l, nil, "create")
		c.mu.Unlock()
	}
	pc, err := c.api.NewPeerConnection(webrtc.Configuration{ICEServers: c.cfg.ICEServers})
	if err != nil {
		fail("create peer connection", err, nil)
		return
	}
	a := &attempt{gen: gen, pc: pc, started: time.Now(), timeout: timeout}
	c.wirePC(l, a)
	dc, err := pc.CreateDataChannel(DataChannelLabel, dataChannelInit())
	if err != nil {
		fail("create data channel", err, pc)
		return
	}
	c.wireDC(l, a, dc)
	offer, err := pc.CreateOffer(nil)
	if err != nil {
		fail("create offer", err, pc)
		return
	}
	c.mu.Lock()
	l.making = false
	if c.closed || l.gen != gen || c.links[peer] != l || l.state == LinkClosed {
		c.mu.Unlock()
		_ = pc.GracefulClose()
		return
	}
	l.next = a
	c.setStateLocked(l, evAttempt, "")
	// the offer is queued before SetLocalDescription starts gathering, so it
	// precedes every candidate on the WebSocket
	c.enqueueLocked(&protocol.Message{Type: protocol.TypeRTCOffer, To: peer,
		Data: mustJSON(protocol.RTCDescription{SDP: offer.SDP, Generation: gen})})
	c.mu.Unlock()
	if err := pc.SetLocalDescription(offer); err != nil {
		log.Warn("cannot set local description", "err", err)
		c.attemptEnded(l, a, "create")
		return
	}
	log.Debug("offer sent")
}

// handleSignal handles rtc_* messages from the server. It runs on the
// WebSocket reader, so signaling from one peer is handled in order.
func (c *Client) handleSignal(m *protocol.Message) {
	if c.api == nil {
		c.log.Debug("P2P disabled: ignoring signaling", "type", m.Type, "from", m.From)
		return
	}
	v, perr := protocol.Validate(&protocol.Message{Type: m.Type, Data: m.Data, To: c.id})
	if perr != nil || m.From == "" || m.From == c.id {
		c.log.Debug("ignoring bad signaling", "type", m.Type, "from", m.From, "err", perr)
		return
	}
	c.mu.Lock()
	l := c.links[m.From]
	if l == nil {
		role := ""
		if mb, ok := c.members[m.From]; ok {
			role = mb.Role
		}
		if role == "" { // an offer from a member we do not know yet
			role = protocol.RolePhone
			if c.cfg.Role == protocol.RolePhone {
				role = protocol.RolePC
			}
		}
		offers := c.noteMemberLocked(m.From, role, false)
		l = c.links[m.From]
		if l != nil && l.offerer && m.Type == protocol.TypeRTCOffer {
			l.offerer = false // the other side offers: follow it
		}
		if l != nil && len(offers) > 0 {
			l.making = false
		}
	}
	c.mu.Unlock()
	if l == nil {
		return
	}
	switch m.Type {
	case protocol.TypeRTCOffer:
		c.handleOffer(l, v.Desc)
	case protocol.TypeRTCAnswer:
		c.handleAnswer(l, v.Desc)
	case protocol.TypeRTCCandidate:
		c.handleCandidate(l, v.Candidate)
	case protocol.TypeRTCRestart:
		c.handleRestart(l, v.Restart.Reason)
	}
}

// handleOffer answers an offer: a fresh peer connection for a new
// generation (beside the current channel, which stays until the new one
// opens), or a renegotiation of the current one for an ICE restart.
func (c *Client) handleOffer(l *link, d protocol.RTCDescription) {
	l.opMu.Lock()
	defer l.opMu.Unlock()
	log := c.log.With("peer", l.peer, "generation", d.Generation)
	offer := webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: d.SDP}

	c.mu.Lock()
	if c.closed || c.links[l.peer] != l || l.state == LinkClosed {
		c.mu.Unlock()
		return
	}
	if d.Restart && l.cur != nil && d.Generation == l.cur.gen {
		a := l.cur
		c.mu.Unlock()
		if err := a.pc.SetRemoteDescription(offer); err != nil {
			log.Warn("cannot apply restart offer", "err", err)
			return
		}
		c.answer(l, a)
		return
	}
	if d.Generation < l.gen || (l.cur != nil && d.Generation == l.cur.gen) {
		c.mu.Unlock()
		log.Debug("ignoring an offer of an older generation")
		return
	}
	var old []*webrtc.PeerConnection
	if l.next != nil {
		old = append(old, l.next.pc)
		l.next = nil
	}
	l.gen = d.Generation
	timeout := c.cfg.ConnectTimeout
	c.mu.Unlock()
	c.closePCs(old)

	pc, err := c.api.NewPeerConnection(webrtc.Configuration{ICEServers: c.cfg.ICEServers})
	if err != nil {
		log.Warn("cannot create peer connection", "err", err)
		return
	}
	a := &attempt{gen: d.Generation, pc: pc, started: time.Now(), timeout: timeout}
	c.wirePC(l, a)
	pc.OnDataChannel(func(dc *webrtc.DataChannel) {
		if dc.Label() != DataChannelLabel {
			return
		}
		c.wireDC(l, a, dc)
	})
	c.mu.Lock()
	if c.closed || l.gen != a.gen || c.links[l.peer] != l || l.state == LinkClosed {
		c.mu.Unlock()
		_ = pc.GracefulClose()
		return
	}
	l.next = a
	c.setStateLocked(l, evAttempt, "")
	c.mu.Unlock()
	if err := pc.SetRemoteDescription(offer); err != nil {
		log.Warn("cannot apply offer", "err", err)
		c.attemptEnded(l, a, "bad-offer")
		return
	}
	c.answer(l, a)
}

// answer creates, sends and applies the answer, then applies the candidates
// that came before the offer was applied. opMu is held.
func (c *Client) answer(l *link, a *attempt) {
	ans, err := a.pc.CreateAnswer(nil)
	if err != nil {
		c.log.Warn("cannot create answer", "peer", l.peer, "err", err)
		c.attemptEnded(l, a, "bad-offer")
		return
	}
	c.mu.Lock()
	c.enqueueLocked(&protocol.Message{Type: protocol.TypeRTCAnswer, To: l.peer,
		Data: mustJSON(protocol.RTCDescription{SDP: ans.SDP, Generation: a.gen})})
	a.remote = true
	cands := a.cands
	a.cands = nil
	c.mu.Unlock()
	if err := a.pc.SetLocalDescription(ans); err != nil {
		c.log.Warn("cannot set local description", "peer", l.peer, "err", err)
		c.attemptEnded(l, a, "bad-offer")
		return
	}
	for _, ci := range cands {
		if err := a.pc.AddICECandidate(ci); err != nil {
			c.log.Debug("cannot add candidate", "peer", l.peer, "err", err)
		}
	}
}

// attemptOf returns the live attempt of generation gen. c.mu is held.
func (l *link) attemptOf(gen uint32) *attempt {
	for _, a := range []*attempt{l.next, l.cur} {
		if a != nil && a.gen == gen {
			return a
		}
	}
	return nil
}

// handleAnswer applies the answer of the attempt under way.
func (c *Client) handleAnswer(l *link, d protocol.RTCDescription) {
	l.opMu.Lock()
	defer l.opMu.Unlock()
	c.mu.Lock()
	a := l.attemptOf(d.Generation)
	if a == nil || !l.offerer || a.remote {
		c.mu.Unlock()
		c.log.Debug("ignoring stale answer", "peer", l.peer, "generation", d.Generation)
		return
	}
	c.mu.Unlock()
	if err := a.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: d.SDP}); err != nil {
		c.log.Warn("cannot apply answer", "peer", l.peer, "err", err)
		c.attemptEnded(l, a, "bad-answer")
		return
	}
	c.mu.Lock()
	a.remote = true
	cands := a.cands
	a.cands = nil
	c.mu.Unlock()
	for _, ci := range cands {
		if err := a.pc.AddICECandidate(ci); err != nil {
			c.log.Debug("cannot add candidate", "peer", l.peer, "err", err)
		}
	}
}

// handleCandidate applies (or keeps until the remote description is there) a
// remote candidate of a live attempt.
func (c *Client) handleCandidate(l *link, rc protocol.RTCCandidate) {
	l.opMu.Lock()
	defer l.opMu.Unlock()
	ci := webrtc.ICECandidateInit{Candidate: rc.Candidate, SDPMid: rc.SDPMid,
		SDPMLineIndex: rc.SDPMLineIndex, UsernameFragment: rc.UsernameFragment}
	c.mu.Lock()
	a := l.attemptOf(rc.Generation)
	if a == nil {
		c.mu.Unlock()
		return
	}
	if !a.remote {
		if len(a.cands) < 64 {
			a.cands = append(a.cands, ci)
		}
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()
	if rc.Candidate == "" {
		return // end of candidates
	}
	if err := a.pc.AddICECandidate(ci); err != nil {
		c.log.Debug("cannot add candidate", "peer", l.peer, "err", err)
	}
}

// handleRestart: the answering side asks for a new attempt (its view of the
// path is down, or it had no offer). One under way already covers it.
func (c *Client) handleRestart(l *link, reason string) {
	c.mu.Lock()
	if !l.offerer || l.next != nil || l.making || l.state == LinkClosed || c.relayGone {
		c.mu.Unlock()
		return
	}
	l.making = true
	c.mu.Unlock()
	c.log.Debug("peer asks for a new attempt", "peer", l.peer, "reason", reason)
	c.startOfferAsync(l.peer)
}

// wirePC registers the peer connection's callbacks for attempt a.
func (c *Client) wirePC(l *link, a *attempt) {
	pc := a.pc
	pc.OnICECandidate(func(ic *webrtc.ICECandidate) {
		var rc protocol.RTCCandidate
		if ic != nil {
			ci := ic.ToJSON()
			rc = protocol.RTCCandidate{Candidate: ci.Candidate, SDPMid: ci.SDPMid,
				SDPMLineIndex: ci.SDPMLineIndex, UsernameFragment: ci.UsernameFragment}
		}
		rc.Generation = a.gen
		c.mu.Lock()
		defer c.mu.Unlock()
		if (l.next != a && l.cur != a) || c.closed {
			return
		}
		c.enqueueLocked(&protocol.Message{Type: protocol.TypeRTCCandidate, To: l.peer, Data: mustJSON(rc)})
	})
	pc.OnICEConnectionStateChange(func(s webrtc.ICEConnectionState) {
		if s != webrtc.ICEConnectionStateDisconnected {
			return
		}
		c.mu.Lock()
		if l.cur == a && l.state.P2P() {
			c.setStateLocked(l, evSilent, "ice-disconnected")
		}
		c.mu.Unlock()
	})
	pc.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
		c.log.Debug("peer connection state", "peer", l.peer, "generation", a.gen, "state", s.String())
		switch s {
		case webrtc.PeerConnectionStateFailed:
			c.attemptEnded(l, a, "ice-failed")
		case webrtc.PeerConnectionStateClosed:
			c.attemptEnded(l, a, "closed")
		}
	})
}

// wireDC registers the data channel's callbacks for attempt a.
func (c *Client) wireDC(l *link, a *attempt, dc *webrtc.DataChannel) {
	dc.OnOpen(func() { c.channelOpen(l, a, dc) })
	dc.OnClose(func() { c.attemptEnded(l, a, "closed") })
	dc.OnMessage(func(msg webrtc.DataChannelMessage) { c.handleDC(l, a, msg.Data) })
}

// channelOpen: attempt a's channel opened. It becomes the link's channel
// (the one it replaces is closed) and the link is up.
func (c *Client) channelOpen(l *link, a *attempt, dc *webrtc.DataChannel) {
	c.mu.Lock()
	if c.closed || c.links[l.peer] != l || (l.next != a && l.cur != a) {
		c.mu.Unlock()
		c.closePCs([]*webrtc.PeerConnection{a.pc})
		return
	}
	var old []*webrtc.PeerConnection
	if l.next == a {
		if l.cur != nil {
			old = append(old, l.cur.pc)
		}
		l.cur, l.next = a, nil
	}
	a.dc = dc
	now := time.Now()
	l.heard, l.fails, l.everUp, l.acked = now, 0, true, false
	clear(l.pings)
	// keep what we send for the peer until its heartbeat says it has it
	if _, ok := c.ob.peerAck(l.peer); !ok {
		c.ob.track(l.peer, 0)
	}
	c.setStateLocked(l, evOpen, "")
	c.mu.Unlock()
	c.closePCs(old)
	c.pingLink(l) // the first heartbeat at once: it carries what we have of the peer
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

// handleDC handles one message from a data channel (on pion's read loop).
func (c *Client) handleDC(l *link, a *attempt, data []byte) {
	now := time.Now()
	m, perr := protocol.Decode(data)
	if perr != nil {
		c.log.Debug("undecodable data channel message", "peer", l.peer, "err", perr)
		return
	}
	c.mu.Lock()
	if l.cur == a {
		l.heard = now
		if l.state == LinkSuspect || l.state == LinkDown {
			c.setStateLocked(l, evHeard, "")
		}
	}
	c.mu.Unlock()
	switch m.Type {
	case protocol.TypePing:
		var p protocol.Timestamped
		_ = json.Unmarshal(m.Data, &p)
		c.mu.Lock()
		resend := c.notePeerAckLocked(l, a, p.LastSeq, now)
		last := c.dd.lastSeq(l.peer)
		dc := a.dc
		c.mu.Unlock()
		if dc != nil {
			pong := &protocol.Message{Type: protocol.TypePong, From: c.id, At: nowMillis(),
				Data: mustJSON(protocol.Timestamped{Timestamp: p.Timestamp, LastSeq: &last})}
			_ = dc.SendText(string(protocol.Encode(pong)))
			for _, it := range resend {
				_ = dc.SendText(string(it.data))
			}
		}
		return
	case protocol.TypePong:
		var p protocol.Timestamped
		_ = json.Unmarshal(m.Data, &p)
		c.mu.Lock()
		if sent, ok := l.pings[string(p.Timestamp)]; ok {
			delete(l.pings, string(p.Timestamp))
			rtt := now.Sub(sent)
			l.rtt.add(rtt)
			if m.At > 0 {
				// the peer's clock at the pong against the middle of the round trip
				mid := float64(sent.UnixMicro())/1000 + float64(rtt.Microseconds())/2000
				l.offset.add(float64(rtt.Microseconds())/1000, m.At-mid)
			}
		}
		resend := c.notePeerAckLocked(l, a, p.LastSeq, now)
		dc := a.dc
		c.mu.Unlock()
		for _, it := range resend {
			_ = dc.SendText(string(it.data))
		}
		return
	case protocol.TypeChordChange, protocol.TypePracticeStart, protocol.TypePracticeEnd:
	default:
		c.log.Debug("ignoring data channel message", "peer", l.peer, "type", m.Type)
		return
	}
	v, perr := protocol.Validate(m)
	if perr != nil || m.From != l.peer || m.Seq == 0 {
		// from and seq are required on a data channel copy: without them it
		// cannot be deduplicated against the relay's, which will bring it
		c.log.Debug("refusing data channel message", "peer", l.peer, "from", m.From, "seq", m.Seq, "err", perr)
		c.mu.Lock()
		c.stats.P2PRefused++
		c.mu.Unlock()
		return
	}
	if m.Type != protocol.TypeChordChange {
		// deliver what the server would have made of it
		st := protocol.PracticeStarted
		if m.Type == protocol.TypePracticeEnd {
			st = protocol.PracticeEnded
		}
		m = &protocol.Message{Type: protocol.TypePracticeUpdate, From: m.From, Seq: m.Seq, At: m.At,
			Data: mustJSON(protocol.PracticeUpdate{Status: st, Timestamp: v.Timestamp})}
	}
	c.deliverMu.Lock()
	defer c.deliverMu.Unlock()
	c.mu.Lock()
	c.stats.P2PCopies++
	c.lastApp = now
	ds := c.dd.accept(m, protocol.PathP2P, now, nil)
	ds = c.stampLocked(ds)
	c.mu.Unlock()
	c.deliver(ds)
}

// notePeerAckLocked takes a peer's acknowledgement (the last_seq of its
// heartbeat: the highest seq it delivered from us, by either path): the
// outbox keeps for it what it lacks, and returns what to resend to it now
// over attempt a's channel (the link's, up or not: a heartbeat came over
// it). c.mu is held.
func (c *Client) notePeerAckLocked(l *link, a *attempt, last *uint64, now time.Time) []outItem {
	if last == nil || c.links[l.peer] != l || l.cur != a || a.dc == nil {
		return nil
	}
	l.acked = true // from now on the heartbeat loop resends what it lacks, too
	if _, ok := c.ob.peerAck(l.peer); !ok {
		c.ob.track(l.peer, *last)
	} else {
		c.ob.ackPeer(l.peer, *last)
	}
	return c.ob.resend(l.peer, now)
}

// pingLink sends a heartbeat over l's channel: a ping with what we delivered
// from the peer (so it resends what we lack).
func (c *Client) pingLink(l *link) {
	c.mu.Lock()
	if l.cur == nil || l.cur.dc == nil {
		c.mu.Unlock()
		return
	}
	dc := l.cur.dc
	raw := formatMillis(nowMillis())
	if len(l.pings) > 64 {
		clear(l.pings)
	}
	l.pings[raw] = time.Now()
	last := c.dd.lastSeq(l.peer)
	c.mu.Unlock()
	m := &protocol.Message{Type: protocol.TypePing, From: c.id,
		Data: json.RawMessage(`{"timestamp":` + raw + `,"last_seq":` + formatUint(last) + `}`)}
	_ = dc.SendText(string(protocol.Encode(m)))
}

// heartbeatLoop drives every link's timers from one goroutine: the
// heartbeat over each open channel, the verdict on silence (suspect, down),
// a fresh attempt beside a down channel, attempt timeouts, retries after
// backoff, and resends a peer lacks. The
// interval is Config.Heartbeat while the session is active, heartbeatIdle
// after idleAfter without an application message.
func (c *Client) heartbeatLoop() {
	defer c.wg.Done()
	t := time.NewTimer(c.cfg.Heartbeat)
	defer t.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-t.C:
		case <-c.hbWake:
		}
		interval := c.tick(time.Now())
		t.Reset(interval)
	}
}

// tick runs the links' timers once at now and returns the interval to the
// next tick.
func (c *Client) tick(now time.Time) time.Duration {
	type resend struct {
		dc    *webrtc.DataChannel
		items []outItem
	}
	var (
		pingL   []*link
		offerTo []string
		resends []resend
		closes  []*webrtc.PeerConnection
	)
	c.mu.Lock()
	interval := c.cfg.Heartbeat
	idle := now.Sub(c.lastApp) >= idleAfter
	if idle {
		interval = max(interval, heartbeatIdle)
	}
	if c.hbIdle && !idle {
		// back from the idle rate: the peers' next words come at the fast one
		for _, l := range c.links {
			l.heard = now
		}
	}
	c.hbIdle = idle
	// judge silence by the interval the loop really kept: a late tick (a
	// loaded machine) must not make every link look silent
	kept := interval
	if !c.lastTick.IsZero() {
		kept = max(kept, now.Sub(c.lastTick))
	}
	c.lastTick = now
	present := func(id string) bool { _, ok := c.members[id]; return ok }
	for _, l := range c.links {
		if l.state == LinkClosed {
			continue
		}
		// the channel: heartbeat, silence, resends
		if l.cur != nil && l.cur.dc != nil {
			pingL = append(pingL, l)
			switch hbVerdict(now.Sub(l.heard), kept) {
			case evQuiet:
				if l.state == LinkUp {
					c.setStateLocked(l, evQuiet, "late-heartbeat")
				}
			case evSilent:
				if l.state.P2P() {
					c.setStateLocked(l, evSilent, "silent")
				}
			}
			if l.state.P2P() && l.acked {
				if items := c.ob.resend(l.peer, now); len(items) > 0 {
					resends = append(resends, resend{l.cur.dc, items})
				}
			}
		}
		// an attempt under way that did not open in time
		if a := l.next; a != nil && now.Sub(a.started) >= a.timeout {
			c.attemptFailedLocked(l, a, "timeout")
			closes = append(closes, a.pc)
		}
		// the next attempt: after backoff, or beside a channel down a while
		due := !now.Before(l.retryAt)
		switch {
		case c.relayGone || !present(l.peer) || l.next != nil || l.making:
		case l.state == LinkBackoff && due,
			l.state == LinkDown && due && now.Sub(l.since) >= restartAfter,
			l.state == LinkIdle && due:
			l.retryAt = now.Add(max(c.p2pBackoff(l), restartAfter))
			if l.offerer {
				l.making = true
				offerTo = append(offerTo, l.peer)
				break
			}
			reason := l.reason
			if reason == "" {
				reason = "no-offer"
			}
			c.enqueueLocked(&protocol.Message{Type: protocol.TypeRTCRestart, To: l.peer,
				Data: mustJSON(protocol.RTCRestart{Reason: reason})})
			if l.state == LinkBackoff {
				c.setStateLocked(l, evAsk, "")
			}
			if l.state == LinkIdle {
				l.retryAt = now.Add(noOfferWait) // asked: wait for the offer
			}
		}
	}
	c.mu.Unlock()
	c.closePCs(closes)
	for _, l := range pingL {
		c.pingLink(l)
	}
	for _, r := range resends {
		for _, it := range r.items {
			_ = r.dc.SendText(string(it.data))
		}
	}
	for _, id := range offerTo {
		c.startOfferAsync(id)
	}
	return interval
}

func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic("peer: " + err.Error())
	}
	return b
}
