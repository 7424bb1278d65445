package peer

import (
	"encoding/json"
	"time"

	"github.com/pion/webrtc/v4"
	"github.com/virtutune/link/protocol"
)

// What goes over an open data channel: the peer's messages (handleDC), the
// heartbeat that says the path is alive and what each side has (pingLink,
// the acknowledgements), and the one goroutine that drives every link's
// timers (heartbeatLoop, tick).

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
				_ = dc.SendText(string(it.wire()))
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
			_ = dc.SendText(string(it.wire()))
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
		m = &protocol.Message{Type: protocol.TypePracticeUpdate, From: m.From, Seq: m.Seq, Gap: m.Gap, At: m.At,
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
	// Above what this run sent, the peer's word names an earlier run's seqs
	// (a restart with the same id) that went over the channel only, which
	// the server's last_seq did not count: the count goes on after them.
	c.count.peer(*last)
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
			_ = r.dc.SendText(string(it.wire()))
		}
	}
	for _, id := range offerTo {
		c.startOfferAsync(id)
	}
	return interval
}
