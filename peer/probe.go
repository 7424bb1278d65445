package peer

import (
	"encoding/json"
	"slices"
	"time"

	"github.com/virtutune/link/protocol"
)

// The liveness probe over the relay (protocol/doc.go, "Liveness";
// liveness.go is its pure logic): while no data channel can tell whether a
// member's client runs (its link is not up, or either side has P2P off),
// this client asks it through the server every probeInterval, and answers
// every member that asks it. Status reports the verdict per member.

// probeTick is how often probeLoop looks at what is due.
const probeTick = probeEvery / 2

// PeerLiveness is what this client knows of whether one other member's
// client runs.
type PeerLiveness struct {
	Peer string
	Role string
	// Verdict is LiveNotProbed ("": its data channel link is up, the
	// heartbeat tells), LiveUnknown, LiveOK, LiveLate or LiveSilent (not
	// responding).
	Verdict string
}

// probeLoop sends the probes that are due, from one goroutine.
func (c *Client) probeLoop() {
	defer c.wg.Done()
	t := time.NewTicker(probeTick)
	defer t.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case now := <-t.C:
			c.probeTickAt(now)
		}
	}
}

// needsProbeLocked reports whether member id needs probing (while the
// WebSocket is up): no data channel link to it is up (none, or P2P off on
// either side, or the link suspect, down, on its way or backing off). c.mu
// is held.
func (c *Client) needsProbeLocked(id string) bool {
	l := c.links[id]
	return l == nil || l.state != LinkUp
}

// probeTickAt sends the probes due at now and drops what is known of
// members that left.
func (c *Client) probeTickAt(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := now.Sub(c.epoch)
	for id := range c.live {
		if _, ok := c.members[id]; !ok {
			delete(c.live, id)
		}
	}
	up := c.state == StateConnected && c.conn != nil && !c.relayGone
	var due []string
	c.probed = 0
	for id := range c.members {
		if id == c.id {
			continue
		}
		x := c.liveOfLocked(id)
		if l := c.links[id]; l != nil && l.everUp {
			x.known = true // a client that answers
		}
		if !up || !c.needsProbeLocked(id) {
			x.stop()
			continue
		}
		c.probed++
		due = append(due, id)
	}
	iv := probeInterval(c.probed)
	slices.Sort(due)
	for _, id := range due {
		x := c.live[id]
		if !x.due(t, iv-probeTick/2) {
			continue
		}
		n := x.send(t)
		c.enqueueLocked(&protocol.Message{Type: protocol.TypeProbe, To: id, Data: mustJSON(protocol.Probe{N: n})})
	}
}

// liveOfLocked returns what is known of member id, made if need be. c.mu is held.
func (c *Client) liveOfLocked(id string) *liveness {
	x := c.live[id]
	if x == nil {
		x = newLiveness()
		c.live[id] = x
	}
	return x
}

// handleProbe takes a probe from the relay: a question is answered at once
// (at most once per answerGap per member), an answer is noted.
func (c *Client) handleProbe(m *protocol.Message) {
	var p protocol.Probe
	if json.Unmarshal(m.Data, &p) != nil || m.From == "" || m.From == c.id {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.members[m.From]; !ok {
		return // not (or no longer) a member: nothing to say to it
	}
	x := c.liveOfLocked(m.From)
	t := time.Since(c.epoch)
	if p.N > 0 {
		if ack := x.asked(p.N, t); ack > 0 {
			c.enqueueLocked(&protocol.Message{Type: protocol.TypeProbe, To: m.From, Data: mustJSON(protocol.Probe{Ack: ack})})
		}
	}
	if p.Ack > 0 {
		x.answer(p.Ack)
	}
}

// livenessLocked lists the verdict on every other member present. c.mu is held.
func (c *Client) livenessLocked() []PeerLiveness {
	t := time.Since(c.epoch)
	iv := probeInterval(c.probed)
	out := make([]PeerLiveness, 0, len(c.members))
	for id, m := range c.members {
		if id == c.id {
			continue
		}
		v := LiveNotProbed
		if x := c.live[id]; x != nil {
			v = x.verdict(t, iv)
		}
		out = append(out, PeerLiveness{Peer: id, Role: m.Role, Verdict: v})
	}
	slices.SortFunc(out, func(a, b PeerLiveness) int { return cmpString(a.Peer, b.Peer) })
	return out
}

// Liveness lists, for every other member present, whether its client runs
// as the probe over the relay says (see PeerLiveness).
func (c *Client) Liveness() []PeerLiveness {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.livenessLocked()
}
