package peer

import (
	"slices"
	"time"

	"github.com/virtutune/link/protocol"
)

// What a Client reports: its WebSocket's State, the Events it emits, its
// Stats, and Status: the members, the session's state, the path to each peer
// (LinkInfo), round trips and one-way latencies per path (stampLocked
// measures them as messages arrive).

// State is the state of a Client's WebSocket to the server.
type State int

// States of a Client.
const (
	StateUnknown      State = iota
	StateConnected          // the WebSocket is up
	StateReconnecting       // the WebSocket dropped; the client is dialling again
	StateClosed             // Close was called, or the server ended the relay for good (see Err)
)

func (s State) String() string {
	switch s {
	case StateConnected:
		return "connected"
	case StateReconnecting:
		return "reconnecting"
	case StateClosed:
		return "closed"
	}
	return "unknown"
}

// EventKind says which link an Event is about.
type EventKind int

// Kinds of Event.
const (
	EventUnknown EventKind = iota
	// EventRelay: the WebSocket to the server went up or down.
	EventRelay
	// EventP2P: the data channel to Peer opened or closed.
	EventP2P
)

func (k EventKind) String() string {
	switch k {
	case EventRelay:
		return "relay"
	case EventP2P:
		return "p2p"
	}
	return "unknown"
}

// Event is a change of a link's state.
type Event struct {
	Kind EventKind
	// Peer is the other client's id (EventP2P only).
	Peer string
	// Up: the WebSocket is connected (EventRelay); the data channel carries
	// messages, its State is up or suspect (EventP2P).
	Up bool
	// State is the link's new state (EventP2P only; every change is an event).
	State LinkState
	// Reason says why a link is not up: for EventP2P a reason code
	// ("silent", "ice-disconnected", "ice-failed", "closed", "timeout",
	// "peer-left", ...), for EventRelay the WebSocket's error.
	Reason string
	// Generation numbers the peer connections to Peer (EventP2P only).
	Generation uint32
	At         time.Time
}

// Stats are a Client's counters.
type Stats struct {
	// OutboxDropped counts application messages dropped from a full outbox
	// before the server confirmed them.
	OutboxDropped uint64
	// Duplicates counts application messages dropped as already delivered.
	Duplicates uint64
	// ReorderOverrun counts arrivals dropped because a sender's reorder window
	// was full (the other path or a resend brings them again).
	ReorderOverrun uint64
	// P2PRefused counts data channel messages refused because they lacked
	// from or seq, or failed validation (their relayed copy is delivered).
	P2PRefused uint64
	// P2PCopies and RelayCopies count the copies of other members'
	// application messages received over data channels and over the
	// WebSocket, duplicates included: both paths race, so with a data channel
	// up each message normally arrives once by each.
	P2PCopies, RelayCopies uint64
	// Reconnects counts successful WebSocket reconnects.
	Reconnects uint64
	// EventsDropped counts events dropped because nobody read Events.
	EventsDropped uint64
	// Unconfirmed is the number of application messages sent but not yet
	// confirmed by the server.
	Unconfirmed int
}

// LinkInfo describes the data channel link to one peer.
type LinkInfo struct {
	Peer    string
	Role    string
	Offerer bool
	// State is the link's state; Up is State.P2P() (up or suspect).
	State LinkState
	Up    bool
	// Reason says why the link is not up ("" when it is): a reason code
	// (see Event.Reason).
	Reason string
	// Since is when the link entered State.
	Since time.Time
	// Generation numbers the link's peer connection.
	Generation uint32
	// RTT is the median of the recent heartbeat round trips over the channel.
	RTT time.Duration
	// ClockOffset is the peer's clock minus ours, measured over the channel
	// (0 until measured); it turns the sender's at into a one-way latency.
	ClockOffset time.Duration
}

// Status is what a page or a command line shows of the client's link: the
// path chords take now and why, the smoothed latency per path, and every
// data channel link. The browser client's linkState() has the same fields.
type Status struct {
	// WS is the state of the WebSocket.
	WS State
	// Path is "p2p" while every other member is reached over a data channel
	// that is up or suspect, else "relay" (chords race over both anyway).
	Path string
	// Reason is why the path is the relay (a reason code: "disabled",
	// "no-peer", "peer-no-p2p", "connecting", "silent", "ice-failed", ...),
	// "" on p2p.
	Reason string
	// RTTP2P and RTTRelay are the medians of the recent round trips over the
	// data channel (heartbeats) and to the server (WebSocket pings); 0 if none.
	RTTP2P, RTTRelay time.Duration
	// ChordP2P and ChordRelay are the medians of the recent one-way
	// latencies of the chords and practice changes delivered by each path
	// (from the sender's clock, offset measured over the data channel); 0 if
	// none measured.
	ChordP2P, ChordRelay time.Duration
	// Links describes each data channel link.
	Links []LinkInfo
	// Liveness says, for every other member present, whether its client
	// runs as the probe over the relay tells while no data channel can
	// (PeerLiveness; "" while its link is up).
	Liveness []PeerLiveness
}

// State returns the state of the WebSocket.
func (c *Client) State() State {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state
}

// Members returns the members present in the session, this client included
// when connected, oldest first.
func (c *Client) Members() []protocol.Member {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]protocol.Member, 0, len(c.members))
	for _, m := range c.members {
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b protocol.Member) int {
		if c := a.Since.Compare(b.Since); c != 0 {
			return c
		}
		return cmpString(a.ClientID, b.ClientID)
	})
	return out
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// SessionState returns the last session_state the server sent.
func (c *Client) SessionState() protocol.SessionState {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.session
}

// Path returns "p2p" when every other member present (at least one) is
// reached over a data channel that is up or suspect, and "relay" otherwise.
func (c *Client) Path() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	p, _ := c.pathLocked()
	return p
}

// pathLocked returns the path and, on the relay, why. c.mu is held.
func (c *Client) pathLocked() (string, string) {
	if c.api == nil {
		return protocol.PathRelay, "disabled"
	}
	n := 0
	ids := make([]string, 0, len(c.members))
	for id := range c.members {
		if id != c.id {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	for _, id := range ids {
		n++
		l := c.links[id]
		switch {
		case l == nil && c.members[id].NoP2P:
			return protocol.PathRelay, "peer-no-p2p"
		case l == nil:
			return protocol.PathRelay, "connecting"
		case !l.state.P2P():
			r := l.reason
			if r == "" || l.state == LinkConnecting && !l.everUp {
				r = l.state.String()
			}
			return protocol.PathRelay, r
		}
	}
	if n == 0 {
		return protocol.PathRelay, "no-peer"
	}
	return protocol.PathP2P, ""
}

// PathTo returns the path to one peer: "p2p" while its data channel is up
// or suspect.
func (c *Client) PathTo(peer string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if l := c.links[peer]; l != nil && l.state.P2P() {
		return protocol.PathP2P
	}
	return protocol.PathRelay
}

// RTT returns the median of the recent round trips measured on path
// ("p2p": heartbeats over a data channel, the first link up; "relay": pings
// to the server over the WebSocket), 0 if none yet.
func (c *Client) RTT(path string) time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	if path == protocol.PathP2P {
		return c.p2pRTTLocked()
	}
	return c.wsRTT.median()
}

func (c *Client) p2pRTTLocked() time.Duration {
	ids := make([]string, 0, len(c.links))
	for id := range c.links {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		if l := c.links[id]; l.state.P2P() {
			return l.rtt.median()
		}
	}
	return 0
}

// Links describes the data channel link to each peer this client knows.
func (c *Client) Links() []LinkInfo {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.linksLocked()
}

func (c *Client) linksLocked() []LinkInfo {
	out := make([]LinkInfo, 0, len(c.links))
	for _, l := range c.links {
		gen := l.gen
		if l.cur != nil {
			gen = l.cur.gen
		}
		off, _ := l.offset.get()
		out = append(out, LinkInfo{Peer: l.peer, Role: l.role, Offerer: l.offerer, State: l.state, Up: l.state.P2P(),
			Reason: l.reason, Since: l.since, Generation: gen, RTT: l.rtt.median(),
			ClockOffset: time.Duration(off * float64(time.Millisecond))})
	}
	slices.SortFunc(out, func(a, b LinkInfo) int { return cmpString(a.Peer, b.Peer) })
	return out
}

// Status returns the link's state as a page shows it: path and why, the
// smoothed latencies, every data channel link. It does not block.
func (c *Client) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	p, why := c.pathLocked()
	return Status{WS: c.state, Path: p, Reason: why, RTTP2P: c.p2pRTTLocked(), RTTRelay: c.wsRTT.median(),
		ChordP2P: c.chordLat[protocol.PathP2P].median(), ChordRelay: c.chordLat[protocol.PathRelay].median(),
		Links: c.linksLocked(), Liveness: c.livenessLocked()}
}

// stampLocked sets the one-way latency of deliveries whose sender's clock
// offset is known, and keeps it per path. c.mu is held.
func (c *Client) stampLocked(ds []Delivery) []Delivery {
	for i := range ds {
		d := &ds[i]
		if d.Msg.At <= 0 {
			continue
		}
		l := c.links[d.Msg.From]
		if l == nil {
			continue
		}
		off, ok := l.offset.get()
		if !ok {
			continue
		}
		recv := float64(d.At.UnixMicro()) / 1000
		lat := time.Duration((recv - (d.Msg.At - off)) * float64(time.Millisecond))
		d.Latency = max(lat, 0)
		if s := c.chordLat[d.Path]; s != nil {
			s.add(d.Latency)
		}
	}
	return ds
}

// Stats returns the client's counters.
func (c *Client) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.stats
	s.Duplicates = c.dd.dropped
	s.ReorderOverrun = c.dd.overrun
	s.OutboxDropped = c.ob.dropped
	s.Unconfirmed = c.ob.unconfirmedCount()
	return s
}

// Events returns the channel of link state changes (buffered; events nobody
// reads in time are dropped and counted).
func (c *Client) Events() <-chan Event { return c.events }
