package peer

import (
	"encoding/json"
	"sync"
	"time"

	"github.com/pion/webrtc/v4"
	"github.com/virtutune/link/protocol"
)

// DataChannelLabel is the label of the one data channel between two members.
const DataChannelLabel = "virtutune"

// link is the direct path to one peer. Its fields are guarded by Client.mu;
// opMu serialises the pion calls of one link (offer, answer, candidates) and
// is never taken inside a pion callback, and never with Client.mu held.
type link struct {
	opMu    sync.Mutex
	peer    string
	role    string
	offerer bool
	gen     uint32 // generation of pc
	pc      *webrtc.PeerConnection
	dc      *webrtc.DataChannel // set when open
	up      bool
	remote  bool // remote description applied to pc
	cands   []webrtc.ICECandidateInit
	retry   bool // a retry is scheduled (offerer)
	fails   int
	rtt     time.Duration
	pings   map[string]time.Time
}

// noteMemberLocked records a peer and returns it when this client should
// offer to it now. c.mu is held.
func (c *Client) noteMemberLocked(id, role string, noP2P bool) []string {
	if c.api == nil || c.closed || noP2P {
		return nil // a member without data channels is never offered one
	}
	l := c.links[id]
	if l == nil {
		l = &link{peer: id, role: role, pings: make(map[string]time.Time)}
		c.links[id] = l
	}
	if role != "" {
		l.role = role
	}
	l.offerer = protocol.Offers(c.cfg.Role, c.id, l.role, id)
	if l.offerer && l.pc == nil && !l.retry {
		l.retry = true // claimed by the offer about to start
		return []string{id}
	}
	return nil
}

// startOfferAsync starts a new generation to peer in a goroutine of the client.
func (c *Client) startOfferAsync(peer string) {
	if !c.spawn(func() { c.startOffer(peer) }) {
		return
	}
}

// startOffer creates a fresh peer connection (the next generation) with the
// data channel and sends the offer.
func (c *Client) startOffer(peer string) {
	c.mu.Lock()
	l := c.links[peer]
	if l == nil || c.closed {
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()

	l.opMu.Lock()
	defer l.opMu.Unlock()

	c.mu.Lock()
	_, present := c.members[peer]
	if c.closed || !present || l.pc != nil {
		l.retry = false
		c.mu.Unlock()
		return
	}
	l.gen++
	gen := l.gen
	c.mu.Unlock()

	log := c.log.With("peer", peer, "generation", gen)
	pc, err := c.api.NewPeerConnection(webrtc.Configuration{ICEServers: c.cfg.ICEServers})
	if err != nil {
		log.Warn("cannot create peer connection", "err", err)
		c.linkFailedToStart(l, "create")
		return
	}
	c.wirePC(l, pc, gen)
	ordered := true
	dc, err := pc.CreateDataChannel(DataChannelLabel, &webrtc.DataChannelInit{Ordered: &ordered})
	if err != nil {
		log.Warn("cannot create data channel", "err", err)
		c.spawn(func() { _ = pc.GracefulClose() })
		c.linkFailedToStart(l, "create")
		return
	}
	c.wireDC(l, pc, dc, gen)
	offer, err := pc.CreateOffer(nil)
	if err != nil {
		log.Warn("cannot create offer", "err", err)
		c.spawn(func() { _ = pc.GracefulClose() })
		c.linkFailedToStart(l, "create")
		return
	}
	c.mu.Lock()
	if c.closed || l.gen != gen {
		c.mu.Unlock()
		_ = pc.GracefulClose()
		return
	}
	l.pc, l.remote, l.cands, l.retry = pc, false, nil, false
	// the offer is queued before SetLocalDescription starts gathering, so it
	// precedes every candidate on the WebSocket
	c.enqueueLocked(&protocol.Message{Type: protocol.TypeRTCOffer, To: peer,
		Data: mustJSON(protocol.RTCDescription{SDP: offer.SDP, Generation: gen})})
	c.mu.Unlock()
	if err := pc.SetLocalDescription(offer); err != nil {
		log.Warn("cannot set local description", "err", err)
		c.linkDown(l, pc, "create")
		return
	}
	log.Debug("offer sent")
	c.watchConnect(l, pc)
}

// linkFailedToStart schedules a retry after a generation failed before it had
// a peer connection.
func (c *Client) linkFailedToStart(l *link, reason string) {
	c.mu.Lock()
	l.retry = false
	c.mu.Unlock()
	c.scheduleRetry(l, reason)
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
		c.noteMemberLocked(m.From, role, false)
		l = c.links[m.From]
		if l.offerer && m.Type == protocol.TypeRTCOffer {
			l.offerer = false // the other side offers: follow it
		}
		if l.retry && l.pc == nil {
			l.retry = false
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

// handleOffer answers an offer: a fresh peer connection for a new generation,
// or a renegotiation of the current one for an ICE restart.
func (c *Client) handleOffer(l *link, d protocol.RTCDescription) {
	l.opMu.Lock()
	defer l.opMu.Unlock()
	log := c.log.With("peer", l.peer, "generation", d.Generation)
	offer := webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: d.SDP}

	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	if d.Restart && l.pc != nil {
		pc := l.pc
		l.gen = d.Generation
		c.mu.Unlock()
		if err := pc.SetRemoteDescription(offer); err != nil {
			log.Warn("cannot apply restart offer", "err", err)
			return
		}
		c.answer(l, pc, d.Generation, log)
		return
	}
	old := l.pc
	if l.up {
		c.markDownLocked(l, "renegotiate")
	}
	l.gen = d.Generation
	l.pc, l.dc, l.remote, l.cands = nil, nil, false, nil
	c.mu.Unlock()
	if old != nil {
		c.spawn(func() { _ = old.GracefulClose() })
	}

	pc, err := c.api.NewPeerConnection(webrtc.Configuration{ICEServers: c.cfg.ICEServers})
	if err != nil {
		log.Warn("cannot create peer connection", "err", err)
		return
	}
	gen := d.Generation
	c.wirePC(l, pc, gen)
	pc.OnDataChannel(func(dc *webrtc.DataChannel) {
		if dc.Label() != DataChannelLabel {
			return
		}
		c.wireDC(l, pc, dc, gen)
	})
	c.mu.Lock()
	if c.closed || l.gen != gen {
		c.mu.Unlock()
		_ = pc.GracefulClose()
		return
	}
	l.pc = pc
	c.mu.Unlock()
	if err := pc.SetRemoteDescription(offer); err != nil {
		log.Warn("cannot apply offer", "err", err)
		c.linkDown(l, pc, "bad-offer")
		return
	}
	c.answer(l, pc, gen, log)
	c.watchConnect(l, pc)
}

// answer creates, sends and applies the answer, then applies the candidates
// that came before the offer was applied. opMu is held.
func (c *Client) answer(l *link, pc *webrtc.PeerConnection, gen uint32, log interface{ Warn(string, ...any) }) {
	ans, err := pc.CreateAnswer(nil)
	if err != nil {
		log.Warn("cannot create answer", "err", err)
		c.linkDown(l, pc, "bad-offer")
		return
	}
	c.mu.Lock()
	c.enqueueLocked(&protocol.Message{Type: protocol.TypeRTCAnswer, To: l.peer,
		Data: mustJSON(protocol.RTCDescription{SDP: ans.SDP, Generation: gen})})
	l.remote = true
	cands := l.cands
	l.cands = nil
	c.mu.Unlock()
	if err := pc.SetLocalDescription(ans); err != nil {
		log.Warn("cannot set local description", "err", err)
		c.linkDown(l, pc, "bad-offer")
		return
	}
	for _, ci := range cands {
		if err := pc.AddICECandidate(ci); err != nil {
			log.Warn("cannot add candidate", "err", err)
		}
	}
}

// handleAnswer applies the answer of the current generation.
func (c *Client) handleAnswer(l *link, d protocol.RTCDescription) {
	l.opMu.Lock()
	defer l.opMu.Unlock()
	c.mu.Lock()
	pc := l.pc
	if pc == nil || !l.offerer || d.Generation != l.gen || l.remote {
		c.mu.Unlock()
		c.log.Debug("ignoring stale answer", "peer", l.peer, "generation", d.Generation)
		return
	}
	c.mu.Unlock()
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: d.SDP}); err != nil {
		c.log.Warn("cannot apply answer", "peer", l.peer, "err", err)
		c.linkDown(l, pc, "bad-answer")
		return
	}
	c.mu.Lock()
	l.remote = true
	cands := l.cands
	l.cands = nil
	c.mu.Unlock()
	for _, ci := range cands {
		if err := pc.AddICECandidate(ci); err != nil {
			c.log.Debug("cannot add candidate", "peer", l.peer, "err", err)
		}
	}
}

// handleCandidate applies (or keeps until the remote description is there) a
// remote candidate of the current generation.
func (c *Client) handleCandidate(l *link, rc protocol.RTCCandidate) {
	l.opMu.Lock()
	defer l.opMu.Unlock()
	ci := webrtc.ICECandidateInit{Candidate: rc.Candidate, SDPMid: rc.SDPMid,
		SDPMLineIndex: rc.SDPMLineIndex, UsernameFragment: rc.UsernameFragment}
	c.mu.Lock()
	pc := l.pc
	if pc == nil || rc.Generation != l.gen {
		c.mu.Unlock()
		return
	}
	if !l.remote {
		if len(l.cands) < 64 {
			l.cands = append(l.cands, ci)
		}
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()
	if rc.Candidate == "" {
		return // end of candidates
	}
	if err := pc.AddICECandidate(ci); err != nil {
		c.log.Debug("cannot add candidate", "peer", l.peer, "err", err)
	}
}

// handleRestart: the answering side asks for a new connection.
func (c *Client) handleRestart(l *link, reason string) {
	c.mu.Lock()
	if !l.offerer || l.retry {
		c.mu.Unlock()
		return
	}
	pc := l.pc
	switch {
	case l.pc == nil:
		l.retry = true
		c.mu.Unlock()
		c.startOfferAsync(l.peer)
	case l.up:
		c.mu.Unlock()
		c.linkDown(l, pc, "restart:"+reason)
	default:
		c.mu.Unlock() // a generation is connecting; its own timeout covers it
	}
}

// wirePC registers the peer connection's callbacks for generation gen.
func (c *Client) wirePC(l *link, pc *webrtc.PeerConnection, gen uint32) {
	pc.OnICECandidate(func(ic *webrtc.ICECandidate) {
		var rc protocol.RTCCandidate
		if ic != nil {
			ci := ic.ToJSON()
			rc = protocol.RTCCandidate{Candidate: ci.Candidate, SDPMid: ci.SDPMid,
				SDPMLineIndex: ci.SDPMLineIndex, UsernameFragment: ci.UsernameFragment}
		}
		rc.Generation = gen
		c.mu.Lock()
		defer c.mu.Unlock()
		if l.pc != pc || c.closed {
			return
		}
		c.enqueueLocked(&protocol.Message{Type: protocol.TypeRTCCandidate, To: l.peer, Data: mustJSON(rc)})
	})
	pc.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
		c.log.Debug("peer connection state", "peer", l.peer, "generation", gen, "state", s.String())
		switch s {
		case webrtc.PeerConnectionStateFailed:
			c.linkDown(l, pc, "ice-failed")
		case webrtc.PeerConnectionStateClosed:
			c.linkDown(l, pc, "closed")
		}
	})
}

// wireDC registers the data channel's callbacks for generation gen.
func (c *Client) wireDC(l *link, pc *webrtc.PeerConnection, dc *webrtc.DataChannel, gen uint32) {
	dc.OnOpen(func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if l.pc != pc || c.closed {
			return
		}
		l.up, l.dc, l.fails = true, dc, 0
		c.enqueueLocked(protocol.MustMarshal(protocol.TypeP2PState, protocol.P2PState{Peer: l.peer, Up: true}))
		c.emitLocked(Event{Kind: EventP2P, Peer: l.peer, Up: true, Generation: gen})
		c.log.Info("data channel open", "peer", l.peer, "generation", gen)
	})
	dc.OnClose(func() { c.linkDown(l, pc, "closed") })
	dc.OnMessage(func(msg webrtc.DataChannelMessage) { c.handleDC(l, dc, gen, msg.Data) })
}

// handleDC handles one message from a data channel (on pion's read loop).
func (c *Client) handleDC(l *link, dc *webrtc.DataChannel, gen uint32, data []byte) {
	now := time.Now()
	m, perr := protocol.Decode(data)
	if perr != nil {
		c.log.Debug("undecodable data channel message", "peer", l.peer, "err", perr)
		return
	}
	switch m.Type {
	case protocol.TypePing:
		var p protocol.Timestamped
		_ = json.Unmarshal(m.Data, &p)
		pong := &protocol.Message{Type: protocol.TypePong, From: c.id,
			Data: mustJSON(protocol.Timestamped{Timestamp: p.Timestamp})}
		_ = dc.SendText(string(protocol.Encode(pong)))
		return
	case protocol.TypePong:
		var p protocol.Timestamped
		_ = json.Unmarshal(m.Data, &p)
		c.mu.Lock()
		if sent, ok := l.pings[string(p.Timestamp)]; ok {
			delete(l.pings, string(p.Timestamp))
			l.rtt = now.Sub(sent)
			c.p2pRTT = l.rtt
		}
		c.mu.Unlock()
		return
	case protocol.TypeChordChange, protocol.TypePracticeStart, protocol.TypePracticeEnd:
	default:
		c.log.Debug("ignoring data channel message", "peer", l.peer, "type", m.Type)
		return
	}
	v, perr := protocol.Validate(m)
	if perr != nil || m.From != l.peer || m.Seq == 0 {
		c.log.Debug("refusing data channel message", "peer", l.peer, "from", m.From, "err", perr)
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
	ds := c.dd.accept(m, protocol.PathP2P, now, nil)
	c.mu.Unlock()
	c.deliver(ds)
}

// pingLink sends a ping over l's data channel.
func (c *Client) pingLink(l *link) {
	c.mu.Lock()
	dc := l.dc
	if dc == nil || !l.up {
		c.mu.Unlock()
		return
	}
	raw := formatMillis(nowMillis())
	if len(l.pings) > 16 {
		clear(l.pings)
	}
	l.pings[raw] = time.Now()
	c.mu.Unlock()
	m := &protocol.Message{Type: protocol.TypePing, From: c.id, Data: json.RawMessage(`{"timestamp":` + raw + `}`)}
	_ = dc.SendText(string(protocol.Encode(m)))
}

// markDownLocked marks l's channel closed and tells the server. c.mu is held.
func (c *Client) markDownLocked(l *link, reason string) {
	wasUp := l.up
	l.up, l.dc = false, nil
	c.enqueueLocked(protocol.MustMarshal(protocol.TypeP2PState,
		protocol.P2PState{Peer: l.peer, Up: false, LastSeq: c.dd.lastSeq(l.peer), Reason: reason}))
	if wasUp {
		c.emitLocked(Event{Kind: EventP2P, Peer: l.peer, Up: false, Reason: reason, Generation: l.gen})
		c.log.Info("data channel down", "peer", l.peer, "generation", l.gen, "reason", reason)
	}
}

// linkDown ends l's peer connection pc once: it tells the server, closes pc
// and, on the offering side, retries with a new generation after backoff; the
// answering side asks for that with rtc_restart.
func (c *Client) linkDown(l *link, pc *webrtc.PeerConnection, reason string) {
	c.mu.Lock()
	if c.closed || pc == nil || l.pc != pc {
		c.mu.Unlock()
		return
	}
	if l.up || l.fails == 0 {
		c.markDownLocked(l, reason)
	}
	l.pc, l.remote, l.cands = nil, false, nil
	if !l.offerer {
		c.enqueueLocked(&protocol.Message{Type: protocol.TypeRTCRestart, To: l.peer,
			Data: mustJSON(protocol.RTCRestart{Reason: reason})})
	}
	c.mu.Unlock()
	c.spawn(func() { _ = pc.GracefulClose() })
	c.scheduleRetry(l, reason)
}

// scheduleRetry starts the next generation after backoff (offering side only).
func (c *Client) scheduleRetry(l *link, reason string) {
	c.mu.Lock()
	if !l.offerer || l.retry || c.closed {
		c.mu.Unlock()
		return
	}
	l.retry = true
	delay := c.backoff(l.fails)
	l.fails++
	c.mu.Unlock()
	c.log.Debug("retrying the direct path", "peer", l.peer, "after", delay, "reason", reason)
	c.spawn(func() {
		if !c.sleep(delay) {
			return
		}
		c.mu.Lock()
		_, present := c.members[l.peer]
		if !present || l.pc != nil {
			l.retry = false
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
		c.startOffer(l.peer)
	})
}

// watchConnect ends generation gen if its channel has not opened in time.
func (c *Client) watchConnect(l *link, pc *webrtc.PeerConnection) {
	c.spawn(func() {
		if !c.sleep(c.cfg.ConnectTimeout) {
			return
		}
		c.mu.Lock()
		stuck := l.pc == pc && !l.up
		c.mu.Unlock()
		if stuck {
			c.linkDown(l, pc, "timeout")
		}
	})
}

func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic("peer: " + err.Error())
	}
	return b
}
