package peer

import (
	"time"

	"github.com/pion/webrtc/v4"
	"github.com/virtutune/link/protocol"
)

// Setting up a generation of the direct path: the offer, the answer, the
// trickled candidates and the answerer's request for a new attempt, over the
// WebSocket; pion's callbacks that say how the attempt went, and its channel
// opening (channelOpen).

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
