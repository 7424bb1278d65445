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
	hbWake    chan struct{} // wakes the heartbeat loop (the session became active)
	queue     []qItem
	controlN  int
	ob        *outbox
	count     counter // numbers the application messages
	offHigh   uint64  // highest off seen over the WebSocket
	// relayGone: the server ended the relay for good (terminal close or a
	// refused reconnect); open data channels carry on (see Err).
	relayGone bool
	lastApp   time.Time // last application message sent or received
	hbIdle    bool      // the heartbeat runs at the idle rate
	lastTick  time.Time // the heartbeat loop's last tick
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
	lastResend    time.Time // the last resend after a pong
	resendFloor   uint64    // what the server held then
	lastTS        float64
	wsRTT         samples
	chordLat      map[string]*samples // one-way latency of deliveries by path
	lastReport    time.Time           // last latency_report
	stats         Stats
	session       protocol.SessionState
	// the liveness probe over the relay (probe.go): per other member, from
	// epoch (the monotonic clock's origin); probed members at the last tick
	epoch  time.Time
	live   map[string]*liveness
	probed int
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
		cfg:      cfg,
		id:       cfg.ClientID,
		url:      u,
		recv:     make(chan Delivery, cfg.RecvQueue),
		events:   make(chan Event, 64),
		done:     make(chan struct{}),
		ready:    make(chan struct{}),
		wake:     make(chan struct{}, 1),
		hbWake:   make(chan struct{}, 1),
		members:  make(map[string]protocol.Member),
		links:    make(map[string]*link),
		dd:       newDedupe(cfg.ReorderWindow),
		ob:       newOutbox(cfg.Outbox),
		pings:    make(map[string]*pingWait),
		chordLat: map[string]*samples{protocol.PathP2P: {}, protocol.PathRelay: {}},
		lastApp:  time.Now(),
		epoch:    time.Now(),
		live:     make(map[string]*liveness),
	}
	c.log = cfg.Logger.With("role", cfg.Role)
	if cfg.ClientID != "" {
		c.log = c.log.With("client", cfg.ClientID)
	}
	if !cfg.DisableP2P {
		c.api = webrtc.NewAPI(webrtc.WithSettingEngine(cfg.settingEngine()))
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	conn, last, err := c.connect(ctx)
	if err != nil {
		c.cancel()
		return nil, err
	}
	c.wg.Add(3)
	go c.run(conn, last)
	go c.heartbeatLoop()
	go c.probeLoop()
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
			for _, a := range []*attempt{l.cur, l.next} {
				if a != nil && a.pc != nil {
					pcs = append(pcs, a.pc)
				}
			}
			l.cur, l.next = nil, nil
			l.state = LinkClosed
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

// Err returns why the client ended or its relay did (ErrClosed after Close,
// an error wrapping ErrTerminal after a terminal close code or a refused
// reconnect), or nil while the relay runs.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state != StateClosed {
		return nil
	}
	return c.err
}

// Done is closed when the client has ended: after Close, or once the server
// ended the relay for good (see Err) and no data channel is left.
func (c *Client) Done() <-chan struct{} { return c.done }

// terminate ends the relay for good after a terminal error (Close must still
// be called). The data channels that are open carry on, both ways, until
// they end; then the client is done. A client replaced by a newer connection
// of its own id (4100) closes them at once: the newer one takes over.
func (c *Client) terminate(err error, replaced bool) {
	c.mu.Lock()
	c.state = StateClosed
	c.relayGone = true
	if c.err == nil {
		c.err = err
	}
	var pcs []*webrtc.PeerConnection
	for _, l := range c.links {
		if replaced || l.cur == nil {
			pcs = append(pcs, c.closeLinkLocked(l, "relay-ended")...)
			continue
		}
		if l.next != nil { // it cannot finish without signaling
			pcs = append(pcs, l.next.pc)
			l.next = nil
		}
	}
	c.maybeDoneLocked()
	c.mu.Unlock()
	c.closePCs(pcs)
	c.log.Warn("connection ended for good", "err", err)
}

// maybeDoneLocked closes done once the relay ended for good and no data
// channel is left. c.mu is held.
func (c *Client) maybeDoneLocked() {
	if !c.relayGone {
		return
	}
	for _, l := range c.links {
		if l.cur != nil {
			return
		}
	}
	c.doneOnce.Do(func() { close(c.done) })
}

// ClientID returns this client's id.
func (c *Client) ClientID() string { return c.id }

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
		if err := c.Err(); err != nil {
			return Delivery{}, err
		}
		return Delivery{}, ErrClosed
	}
}

// Send sends an application message (chord_change, practice_start,
// practice_end) to every other member: over each data channel that is up
// and over the WebSocket — both paths race, the receivers keep the first
// copy. It stamps from, seq and at, and keeps the message until the server
// and every peer with a data channel confirmed it, to resend it after a
// reconnect (to the server) or when a peer's heartbeat shows it lacks it
// (over the channel). It does not wait for the network; it fails only for a
// message that is not valid, a closed client, or a client whose relay the
// server ended for good (Err) with no data channel left to carry it.
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
	now := time.Now()
	c.mu.Lock()
	if c.closed {
		err := c.err
		c.mu.Unlock()
		return err
	}
	var dcs []*webrtc.DataChannel
	for _, l := range c.links {
		if l.state.P2P() && l.cur != nil && l.cur.dc != nil {
			dcs = append(dcs, l.cur.dc)
		}
	}
	if c.relayGone && len(dcs) == 0 {
		err := c.err
		c.mu.Unlock()
		return err
	}
	seq, gap := c.count.next()
	out := &protocol.Message{Type: m.Type, Data: m.Data, From: c.id, Seq: seq, Gap: gap, At: nowMillis()}
	c.activeLocked(now)
	c.mu.Unlock()

	data := protocol.Encode(out)
	direct := false
	for _, dc := range dcs {
		if dc.BufferedAmount() > maxBuffered {
			continue // a stalled channel: the relay's copy carries it
		}
		if err := dc.SendText(string(data)); err != nil {
			c.log.Debug("data channel send failed", "err", err)
			continue
		}
		direct = true
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	if dropped := c.ob.add(out.Seq, data, now, direct); dropped != 0 {
		// at the 1st, 2nd, 4th, 8th, ... drop: a long outage while the
		// guitarist plays on drops one message per chord
		if n := c.ob.dropped; n&(n-1) == 0 {
			c.log.Warn("outbox full: dropping the oldest unconfirmed messages", "seq", dropped, "dropped", n)
		}
	}
	if c.conn != nil {
		c.queue = append(c.queue, qItem{seq: out.Seq, data: data})
		c.wakeWriter()
	}
	return nil
}

// maxBuffered is how much a data channel may hold unsent before Send leaves
// it to the relay (the channel is stalled).
const maxBuffered = 64 << 10

// activeLocked notes an application message at now; a session that was
// idle gets its fast heartbeat back at once. c.mu is held.
func (c *Client) activeLocked(now time.Time) {
	idle := now.Sub(c.lastApp) >= idleAfter
	c.lastApp = now
	if idle {
		select {
		case c.hbWake <- struct{}{}:
		default:
		}
	}
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

// backoff returns the delay before WebSocket reconnect attempt n
// (0-based): backoffDelay from BackoffMin to BackoffMax.
func (c *Client) backoff(n int) time.Duration {
	return backoffDelay(n, c.cfg.BackoffMin, c.cfg.BackoffMax, randFloat())
}

func nowMillis() float64 { return float64(time.Now().UnixMicro()) / 1000 }
