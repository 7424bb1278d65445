package signaling

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/virtutune/link/protocol"
)

// maxPending bounds the publications buffered for a member while it joins.
const maxPending = 1024

func (c *client) member() protocol.Member {
	return protocol.Member{ClientID: c.id, UserID: c.uid, Role: c.role, Since: c.since, Instance: c.s.cfg.Instance, NoP2P: c.noP2P}
}

// join registers the client, sends it its own connection_update first, then
// the session_state, then whatever arrived meanwhile, and announces it.
func (c *client) join(ctx context.Context) bool {
	s, rm := c.s, c.room
	// Members drops the presence of instances that died; Admit then takes
	// a slot of the client's role, atomically on every instance.
	if _, err := s.broker.Members(ctx, c.sid); err != nil {
		c.kill(protocol.CloseReconnect, "broker unavailable")
		return false
	}
	lim := s.cfg.Limits
	slots := lim.MaxMembers - lim.PCSlots
	if c.role == protocol.RolePC {
		slots = lim.PCSlots
	}
	if err := s.broker.Admit(ctx, c.sid, c.member(), slots); err != nil {
		if errors.Is(err, ErrSessionFull) {
			c.kill(protocol.CloseSessionFull, "session full: no free "+c.role+" slot")
		} else {
			c.kill(protocol.CloseReconnect, "broker unavailable")
		}
		return false
	}
	giveBack := true
	defer func() {
		if giveBack {
			// Joining failed after the slot was taken: give it back.
			rm.mu.Lock()
			rm.remove(c)
			rm.mu.Unlock()
			lctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_, _ = s.broker.Leave(lctx, c.sid, c.member())
			cancel()
		}
	}()
	last, err := s.broker.LastSeq(ctx, c.sid, c.id)
	if err != nil {
		c.kill(protocol.CloseReconnect, "broker unavailable")
		return false
	}
	c.lastSeq.Store(last)
	lastCopy := last
	c.enqueueMsg(protocol.MustMarshal(protocol.TypeConnectionUpdate, protocol.ConnectionUpdate{
		Status: protocol.StatusConnected, UserID: c.uid, ClientID: c.id, Role: c.role, LastSeq: &lastCopy,
	}))

	rm.mu.Lock()
	if old := rm.clients[c.id]; old != nil {
		old.replaced.Store(true)
		old.kill(protocol.CloseReplaced, "replaced by a newer connection")
	}
	c.joining = true
	rm.put(c)
	rm.mu.Unlock()
	// Shutdown sets draining before it closes every room's clients: a client
	// added after that sweep sees draining here.
	if s.isDraining() {
		c.kill(protocol.CloseGoingAway, "server shutting down")
	}

	// A revocation written after the upgrade's check and delivered before
	// this client was in the room would have missed it: ask again now (the
	// connection then ends through the usual leave).
	if c.tokenCID != "" {
		if rev, err := s.broker.Revoked(ctx, c.sid, c.tokenCID); err == nil && rev {
			c.kill(protocol.CloseRevoked, "removed by the PC")
		}
	}
	st, err1 := s.broker.State(ctx, c.sid)
	members, err2 := s.broker.Members(ctx, c.sid)
	if err1 != nil || err2 != nil {
		c.kill(protocol.CloseReconnect, "broker unavailable")
		return false
	}
	snap := snapshot(c.sid, st, members)
	rm.mu.Lock()
	c.enqueueMsg(protocol.MustMarshal(protocol.TypeSessionState, snap))
	c.minOff, c.joinOff = st.Offset, st.Offset
	c.joining = false
	pending := c.pending
	c.pending = nil
	for _, p := range pending {
		var enc []byte
		c.offer(p, &enc)
	}
	rm.mu.Unlock()

	data, _ := json.Marshal(protocol.ConnectionUpdate{Status: protocol.StatusConnected, UserID: c.uid, ClientID: c.id, Role: c.role, LastSeq: &lastCopy, NoP2P: c.noP2P})
	if _, err := c.publish(ctx, &Publication{Type: protocol.TypeConnectionUpdate, Data: data, Skip: c.id}); err != nil {
		c.logger().Warn("announce join", "err", err)
	}
	c.logger().Info("joined")
	giveBack = false // the slot is the member's now; leave gives it back
	return true
}

func snapshot(sid string, st State, members []protocol.Member) protocol.SessionState {
	if members == nil {
		members = []protocol.Member{}
	}
	for i := range members {
		members[i].LastSeq = st.Seqs[members[i].ClientID]
	}
	return protocol.SessionState{
		SessionID: sid, Chord: st.Chord, ChordFrom: st.ChordFrom, Practice: st.Practice,
		Members: members, Offset: st.Offset,
	}
}

// leave removes the client and announces it, unless a newer connection of the
// same client id replaced it.
func (c *client) leave() {
	rm := c.room
	rm.mu.Lock()
	rm.remove(c)
	rm.mu.Unlock()
	if c.replaced.Load() {
		return
	}
	if g := c.s.cfg.Limits.DisconnectGrace; g > 0 && c.mayReturn() {
		c.s.bg.Add(1)
		go func() {
			defer c.s.bg.Done()
			t := time.NewTimer(g)
			defer t.Stop()
			select {
			case <-t.C:
			case <-c.s.stop:
				if c.s.durable() && c.closeCode == protocol.CloseGoingAway {
					// This process restarts on a store that keeps the
					// session: the member comes back to it, and the
					// others learn who is back from their own snapshots.
					return
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			outcome := "left"
			if !c.announceLeave(ctx) {
				outcome = "returned"
			}
			c.s.metrics.grace.WithLabelValues(outcome).Inc()
		}()
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = c.announceLeave(ctx)
}

// mayReturn reports whether the connection ended in a way the client comes
// back from by itself: it died without a close frame (network, sleep, ping
// timeout), or the server asked it to reconnect (1001, 4000, 4001).
func (c *client) mayReturn() bool {
	switch c.closeCode {
	case protocol.CloseGoingAway, protocol.CloseSlowConsumer, protocol.CloseReconnect:
		return true
	case protocol.CloseNormal:
		return !c.peerClosed.Load()
	}
	return false
}

// announceLeave removes the client's presence and tells the others it left;
// it reports false, and announces nothing, when a newer connection of the
// same client id (here or on another instance) holds the presence: the
// client came back. When the broker cannot be asked, the departure is
// announced all the same (to this instance's members at least).
func (c *client) announceLeave(ctx context.Context) bool {
	gone, err := c.s.broker.Leave(ctx, c.sid, c.member())
	if err != nil {
		c.logger().Warn("leave", "err", err)
	} else if !gone {
		// A newer connection of the same client id holds its presence now
		// (it came back, here or on another instance): it is not gone.
		c.logger().Info("left, but a newer connection of the same client is present: no disconnect notice")
		return false
	}
	reason := "closed"
	switch c.closeCode {
	case protocol.CloseGoingAway:
		reason = "server_shutdown"
	case protocol.CloseSlowConsumer:
		reason = "slow"
	case protocol.CloseTooBig, protocol.ClosePolicy:
		reason = "policy"
	}
	data, _ := json.Marshal(protocol.ConnectionUpdate{Status: protocol.StatusDisconnected, UserID: c.uid, ClientID: c.id, Role: c.role, Reason: reason})
	if _, err := c.publish(ctx, &Publication{Type: protocol.TypeConnectionUpdate, Data: data, Skip: c.id}); err != nil {
		c.logger().Warn("announce leave", "err", err)
	}
	c.logger().Info("left", "code", c.closeCode)
	return true
}

func (c *client) publish(ctx context.Context, p *Publication) (PublishResult, error) {
	t := time.Now()
	res, err := c.s.broker.Publish(ctx, c.sid, p)
	c.s.metrics.publishLatency.Observe(time.Since(t).Seconds())
	return res, err
}

// offer hands publication p to the client if it is for it; enc caches p's
// encoding across the room's members. Called with room.mu held.
func (c *client) offer(p *Publication, enc *[]byte) {
	if c.joining {
		if len(c.pending) >= maxPending {
			c.kill(protocol.CloseSlowConsumer, "too much arrived while joining")
			return
		}
		c.pending = append(c.pending, p)
		return
	}
	if p.Off != 0 && p.Off <= c.minOff {
		return
	}
	if p.Skip == c.id || (p.To != "" && p.To != c.id) {
		return
	}
	// Both paths race: a message that also went over a data channel is
	// relayed like any other, and the receiver keeps the copy that comes first.
	if *enc == nil {
		*enc = p.Wire
		if *enc == nil {
			*enc = protocol.Encode(p.Message())
		}
	}
	if p.Type == protocol.TypeChordChange {
		c.mChordOut.Inc()
	} else {
		c.s.metrics.message(p.Type, "out", protocol.PathRelay).Inc()
	}
	c.enqueue(*enc)
}
