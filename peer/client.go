package peer

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/pion/webrtc/v4"
	"github.com/virtutune/link/protocol"
)

// State is the state of a Client's WebSocket to the server.
type State int

// States of a Client.
const (
	StateUnknown      State = iota
	StateConnected          // the WebSocket is up
	StateReconnecting       // the WebSocket dropped; the client is dialling again
	StateClosed             // Close was called, or the server ended the client for good
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
	Up   bool
	// Reason says why a link went down ("closed", "ice-failed", "timeout",
	// "renegotiate", or the WebSocket's error).
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
	// ReorderOverrun counts messages dropped because a sender's reorder window was full.
	ReorderOverrun uint64
	// P2PCopies and RelayCopies count the copies of other members'
	// application messages received over data channels and over the
	// WebSocket, duplicates included: both paths race, so with a data channel
	// up each message normally arrives once by each.
	P2PCopies, RelayCopies uint64
	// Reconnects counts successful WebSocket reconnects.
	Reconnects uint64
	// EventsDropped counts events dropped because nobody read Events.
	EventsDropped uint64
	// Unconfirmed is the number of application messages in the outbox: sent
	// but not yet confirmed by the server.
	Unconfirmed int
}

// LinkInfo describes the data channel link to one peer.
type LinkInfo struct {
	Peer       string
	Role       string
	Offerer    bool
	Up         bool
	Generation uint32
	RTT        time.Duration
}

// outEntry is an application message kept until the server confirms it.
type outEntry struct {
	seq  uint64
	data []byte
}

// qItem is a message waiting for the WebSocket writer. seq is not zero for
// application messages, which the writer skips when it already resent them,
// unless resend is set: a copy the server processed but did not take, queued
// again after a pong. ping is the key of a ping in Client.pings.
type qItem struct {
	seq    uint64
	data   []byte
	resend bool
	batch  uint64 // the resend batch (Client.resendQueued) of a resend
	ping   string
}

// pingWait is an outstanding WebSocket ping. When the writer writes it, it
// notes the highest application seq written before it on that connection
// (upto) and the resend batches written so far (batch): the pong then tells
// whether the server took everything up to upto.
type pingWait struct {
	sent    time.Time
	done    chan struct{}
	written bool
	upto    uint64
	batch   uint64
}

// Client is a member of a session: a WebSocket to the server and a data
// channel to each other member. All its methods are safe for concurrent use.
type Client struct {
	cfg    Config
	log    *slog.Logger
	api    *webrtc.API
	url    string
	ctx    context.Context // the client's own, cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup

	recv      chan Delivery
	events    chan Event
	done      chan struct{} // closed when the client ends
	doneOnce  sync.Once
	closeOnce sync.Once
	ready     chan struct{} // closed on the first session_state
	readyOnce sync.Once

	sendMu    sync.Mutex // serialises Send: one seq order on every path
	deliverMu sync.Mutex // serialises delivery: taken before mu, never after

	mu        sync.Mutex
	id        string
	state     State
	err       error
	closed    bool
	conn      *websocket.Conn
	connected bool // a connection was ever made
	wake      chan struct{}
	queue     []qItem
	controlN  int
	outbox    []outEntry
	lastSeq   uint64 // last seq given to an application message
	acked     uint64 // highest seq the server confirmed
	offHigh   uint64 // highest off seen over the WebSocket
	members   map[string]protocol.Member
	links     map[string]*link
	dd        *dedupe
	ownSeen   uint64 // highest own seq seen back (practice_update)
	pings     map[string]*pingWait
	// resendQueued counts the batches of resends queued after a pong showed
	// that the server did not take messages (Redis down, rate limit);
	// resendWritten the batches the writer has written.
	resendQueued  uint64
	resendWritten uint64
	lastTS        float64
	wsRTT         time.Duration
	p2pRTT        time.Duration
	stats         Stats
	session       protocol.SessionState
}

// Dial joins the session of cfg: it connects the WebSocket, reads the
// client's own connection_update and the session's state, then returns a
// Client that keeps the WebSocket up (reconnecting with backoff) and opens a
// data channel to every other member unless cfg.DisableP2P. It blocks until
// the session state arrived or ctx is done; ctx bounds the dial only, not the
// Client, which lives until Close.
func Dial(ctx context.Context, cfg Config) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	u, _ := cfg.wsURL()
	c := &Client{
		cfg:     cfg,
		id:      cfg.ClientID,
		url:     u,
		recv:    make(chan Delivery, cfg.RecvQueue),
		events:  make(chan Event, 64),
		done:    make(chan struct{}),
		ready:   make(chan struct{}),
		wake:    make(chan struct{}, 1),
		members: make(map[string]protocol.Member),
		links:   make(map[string]*link),
		dd:      newDedupe(cfg.ReorderWindow),
		pings:   make(map[string]*pingWait),
	}
	c.log = cfg.Logger.With("client", cfg.ClientID, "role", cfg.Role)
	if !cfg.DisableP2P {
		c.api = webrtc.NewAPI(webrtc.WithSettingEngine(cfg.settingEngine()))
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	conn, last, err := c.connect(ctx)
	if err != nil {
		c.cancel()
		return nil, err
	}
	c.wg.Add(2)
	go c.run(conn, last)
	go c.pingLoop()
	select {
	case <-c.ready:
		return c, nil
	case <-c.done:
		err := c.Err()
		c.Close()
		return nil, err
	case <-ctx.Done():
		c.Close()
		return nil, fmt.Errorf("dial: waiting for the session state: %w", ctx.Err())
	}
}

// Close leaves the session: it closes the WebSocket (1000) and every peer
// connection, stops every goroutine of the client and waits for them. It is
// idempotent; it blocks until the goroutines have stopped.
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.closed = true
		c.state = StateClosed
		if c.err == nil {
			c.err = ErrClosed
		}
		var pcs []*webrtc.PeerConnection
		for _, l := range c.links {
			if l.pc != nil {
				pcs = append(pcs, l.pc)
				l.pc, l.dc, l.up = nil, nil, false
			}
		}
		c.mu.Unlock()
		c.cancel()
		for _, pc := range pcs {
			_ = pc.GracefulClose()
		}
		c.wg.Wait()
		c.doneOnce.Do(func() { close(c.done) })
	})
	return nil
}

// Err returns why the client ended (ErrClosed after Close, an error wrapping
// ErrTerminal after a terminal close code), or nil while it runs.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state != StateClosed {
		return nil
	}
	return c.err
}

// Done is closed when the client has ended (see Err).
func (c *Client) Done() <-chan struct{} { return c.done }

// terminate ends the client after a terminal error; Close must still be called.
func (c *Client) terminate(err error) {
	c.mu.Lock()
	c.state = StateClosed
	if c.err == nil {
		c.err = err
	}
	c.mu.Unlock()
	c.log.Warn("connection ended for good", "err", err)
	c.cancel()
	c.doneOnce.Do(func() { close(c.done) })
}

// ClientID returns this client's id.
func (c *Client) ClientID() string { return c.id }

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

// Path returns "p2p" when every other member present (at least one) is reached
// over an open data channel, and "relay" otherwise.
func (c *Client) Path() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for id := range c.members {
		if id == c.id {
			continue
		}
		n++
		if l := c.links[id]; l == nil || !l.up {
			return protocol.PathRelay
		}
	}
	if n == 0 {
		return protocol.PathRelay
	}
	return protocol.PathP2P
}

// PathTo returns the path to one peer: "p2p" while its data channel is open.
func (c *Client) PathTo(peer string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if l := c.links[peer]; l != nil && l.up {
		return protocol.PathP2P
	}
	return protocol.PathRelay
}

// RTT returns the last round-trip time measured on path ("p2p": over a data
// channel, "relay": to the server over the WebSocket), 0 if none yet.
func (c *Client) RTT(path string) time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	if path == protocol.PathP2P {
		return c.p2pRTT
	}
	return c.wsRTT
}

// Links describes the data channel link to each peer this client knows.
func (c *Client) Links() []LinkInfo {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]LinkInfo, 0, len(c.links))
	for _, l := range c.links {
		out = append(out, LinkInfo{Peer: l.peer, Role: l.role, Offerer: l.offerer, Up: l.up, Generation: l.gen, RTT: l.rtt})
	}
	slices.SortFunc(out, func(a, b LinkInfo) int { return cmpString(a.Peer, b.Peer) })
	return out
}

// Stats returns the client's counters.
func (c *Client) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.stats
	s.Duplicates = c.dd.dropped
	s.ReorderOverrun = c.dd.overrun
	s.Unconfirmed = len(c.outbox)
	return s
}

// Events returns the channel of link state changes (buffered; events nobody
// reads in time are dropped and counted).
func (c *Client) Events() <-chan Event { return c.events }

// Deliveries returns the channel Recv reads from, for use in a select.
func (c *Client) Deliveries() <-chan Delivery { return c.recv }

// Recv returns the next delivery: an application message (chord_change,
// practice_update) once per (from, seq) and in seq order per sender, or a
// server notice (connection_update, session_state, error). It blocks until one
// is there, ctx is done or the client has ended.
func (c *Client) Recv(ctx context.Context) (Delivery, error) {
	select {
	case d := <-c.recv:
		return d, nil
	default:
	}
	select {
	case d := <-c.recv:
		return d, nil
	case <-ctx.Done():
		return Delivery{}, ctx.Err()
	case <-c.done:
		return Delivery{}, c.Err()
	}
}

// Send sends an application message (chord_change, practice_start,
// practice_end) to every other member: over each open data channel and over
// the WebSocket (with direct naming the peers reached directly). It stamps
// from, seq and at, and keeps the message until the server confirms it, to
// resend it after a reconnect. It does not wait for the network; it fails
// only for a message that is not valid or a closed client.
func (c *Client) Send(ctx context.Context, m *protocol.Message) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if !protocol.Application(m.Type) {
		return fmt.Errorf("%w: %s", ErrNotApplication, m.Type)
	}
	if _, e := protocol.Validate(m); e != nil {
		return fmt.Errorf("%w: %w", ErrInvalidMessage, e)
	}
	c.sendMu.Lock()
	defer c.sendMu.Unlock()
	c.mu.Lock()
	if c.state == StateClosed {
		err := c.err
		c.mu.Unlock()
		return err
	}
	c.lastSeq++
	out := &protocol.Message{Type: m.Type, Data: m.Data, From: c.id, Seq: c.lastSeq, At: nowMillis()}
	var dcs []*link
	for _, l := range c.links {
		if l.up && l.dc != nil {
			dcs = append(dcs, l)
		}
	}
	type target struct {
		peer string
		dc   *webrtc.DataChannel
	}
	targets := make([]target, 0, len(dcs))
	for _, l := range dcs {
		targets = append(targets, target{l.peer, l.dc})
	}
	c.mu.Unlock()

	// Both paths race: the copy for the WebSocket goes whether or not a data
	// channel took one, and the receiver keeps whichever arrives first.
	data := protocol.Encode(out)
	for _, t := range targets {
		if err := t.dc.SendText(string(data)); err != nil {
			c.log.Debug("data channel send failed", "peer", t.peer, "err", err)
		}
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.outbox) >= c.cfg.Outbox {
		c.outbox = slices.Delete(c.outbox, 0, 1)
		c.stats.OutboxDropped++
	}
	c.outbox = append(c.outbox, outEntry{seq: out.Seq, data: data})
	if c.conn != nil {
		c.queue = append(c.queue, qItem{seq: out.Seq, data: data})
		c.wakeWriter()
	}
	return nil
}

// SendChord sends chord_change {chord}. See Send.
func (c *Client) SendChord(ctx context.Context, chord string) error {
	return c.Send(ctx, protocol.MustMarshal(protocol.TypeChordChange, protocol.ChordChange{Chord: chord}))
}

// PracticeStart sends practice_start with the current time (ms since the epoch).
// See Send.
func (c *Client) PracticeStart(ctx context.Context) error {
	return c.Send(ctx, practice(protocol.TypePracticeStart))
}

// PracticeEnd sends practice_end with the current time. See Send.
func (c *Client) PracticeEnd(ctx context.Context) error {
	return c.Send(ctx, practice(protocol.TypePracticeEnd))
}

func practice(t protocol.Type) *protocol.Message {
	ts := json.RawMessage(strconv.FormatInt(time.Now().UnixMilli(), 10))
	return protocol.MustMarshal(t, protocol.Timestamped{Timestamp: ts})
}

// Flush blocks until the server has processed everything this client queued
// for the WebSocket before the call (it sends a ping after it and waits for the
// pong), or ctx is done. It fails while the WebSocket is down.
func (c *Client) Flush(ctx context.Context) error {
	c.mu.Lock()
	if c.conn == nil {
		c.mu.Unlock()
		return fmt.Errorf("flush: WebSocket is not connected")
	}
	data, key, w := c.newPingLocked()
	c.queue = append(c.queue, qItem{data: data, ping: key})
	c.wakeWriter()
	c.mu.Unlock()
	select {
	case <-w.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-c.done:
		return c.Err()
	}
}

// newPingLocked builds a ping with a unique timestamp and registers it. c.mu is held.
func (c *Client) newPingLocked() ([]byte, string, *pingWait) {
	ts := float64(time.Now().UnixMicro()) / 1000
	if ts <= c.lastTS {
		ts = c.lastTS + 0.001
	}
	c.lastTS = ts
	raw := strconv.FormatFloat(ts, 'f', 3, 64)
	w := &pingWait{sent: time.Now(), done: make(chan struct{})}
	if len(c.pings) >= 64 { // forget pings that never got a pong
		for k, p := range c.pings {
			if time.Since(p.sent) > 30*time.Second {
				delete(c.pings, k)
			}
		}
	}
	c.pings[raw] = w
	m := &protocol.Message{Type: protocol.TypePing, Data: json.RawMessage(`{"timestamp":` + raw + `}`)}
	return protocol.Encode(m), raw, w
}

// enqueueLocked queues a control message for the WebSocket; while it is down
// the message waits for the next connection. c.mu is held.
func (c *Client) enqueueLocked(m *protocol.Message) {
	if c.controlN >= DefaultControlQueue {
		for i, it := range c.queue {
			if it.seq == 0 {
				c.queue = slices.Delete(c.queue, i, i+1)
				c.controlN--
				break
			}
		}
	}
	c.queue = append(c.queue, qItem{data: protocol.Encode(m)})
	c.controlN++
	c.wakeWriter()
}

func (c *Client) wakeWriter() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// emit sends an event without blocking. c.mu may be held.
func (c *Client) emitLocked(e Event) {
	e.At = time.Now()
	select {
	case c.events <- e:
	default:
		c.stats.EventsDropped++
	}
}

// deliver hands ds to the application in order. deliverMu is held; it blocks
// while the receive queue is full (backpressure) until the client is closed.
func (c *Client) deliver(ds []Delivery) {
	for _, d := range ds {
		select {
		case c.recv <- d:
		case <-c.ctx.Done():
			return
		}
	}
}

// spawn runs f in a goroutine owned by the client, unless it is closed.
func (c *Client) spawn(f func()) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.ctx.Err() != nil {
		return false
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		f()
	}()
	return true
}

// sleep waits d or until the client is closed; it reports whether d passed.
func (c *Client) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-c.ctx.Done():
		return false
	}
}

// backoff returns the delay before attempt n (0-based): exponential from
// BackoffMin to BackoffMax, with jitter of +-25%.
func (c *Client) backoff(n int) time.Duration {
	d := c.cfg.BackoffMin
	for i := 0; i < n && d < c.cfg.BackoffMax; i++ {
		d *= 2
	}
	d = min(d, c.cfg.BackoffMax)
	if d <= 0 {
		return 0
	}
	j := time.Duration(randUint64() % uint64(d/2+1))
	return d - d/4 + j
}

func nowMillis() float64 { return float64(time.Now().UnixMicro()) / 1000 }
