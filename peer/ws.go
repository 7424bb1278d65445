package peer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/gorilla/websocket"
	"github.com/pion/webrtc/v4"
	"github.com/virtutune/link/protocol"
)

// connect dials the WebSocket and reads the client's own connection_update.
// It returns the connection and the last seq the server holds from this client.
func (c *Client) connect(ctx context.Context) (*websocket.Conn, uint64, error) {
	d := websocket.Dialer{
		HandshakeTimeout: DefaultHandshake,
		Proxy:            http.ProxyFromEnvironment,
		ReadBufferSize:   4096,
		WriteBufferSize:  4096,
		TLSClientConfig:  c.cfg.TLSConfig,
	}
	hdr := http.Header{}
	hdr.Set("Authorization", "Bearer "+c.cfg.Token)
	conn, resp, err := d.DialContext(ctx, c.url, hdr)
	if err != nil {
		if resp != nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			herr := httpError(resp.StatusCode, body)
			switch resp.StatusCode {
			case http.StatusUnauthorized, http.StatusForbidden, http.StatusNotFound, http.StatusGone:
				return nil, 0, fmt.Errorf("%w: %w", ErrRefused, herr)
			}
			return nil, 0, fmt.Errorf("dial: %w", herr)
		}
		return nil, 0, fmt.Errorf("dial: %w", err)
	}
	conn.SetReadLimit(protocol.MaxMessageSize * 2)
	deadline := time.Now().Add(DefaultHandshake)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	_ = conn.SetReadDeadline(deadline)
	_, data, err := conn.ReadMessage()
	if err != nil {
		conn.Close()
		return nil, 0, fmt.Errorf("handshake: %w", closeErr(err))
	}
	m, perr := protocol.Decode(data)
	if perr != nil || m.Type != protocol.TypeConnectionUpdate {
		conn.Close()
		return nil, 0, fmt.Errorf("handshake: expected connection_update first, got %.80q", data)
	}
	var cu protocol.ConnectionUpdate
	if err := json.Unmarshal(m.Data, &cu); err != nil || cu.Status != protocol.StatusConnected {
		conn.Close()
		return nil, 0, fmt.Errorf("handshake: bad connection_update %.120q", data)
	}
	if c.id == "" && protocol.ValidClientID(cu.ClientID) {
		// The first connection (Dial, before any goroutine of the client
		// runs): adopt the id the server bound to the token.
		c.id = cu.ClientID
		c.log = c.log.With("client", c.id)
	}
	if cu.ClientID != "" && cu.ClientID != c.id {
		conn.Close()
		return nil, 0, fmt.Errorf("handshake: server gave client id %q, asked for %q", cu.ClientID, c.id)
	}
	var last uint64
	if cu.LastSeq != nil {
		last = *cu.LastSeq
	}
	c.mu.Lock()
	c.offHigh = max(c.offHigh, m.Off)
	c.members[c.id] = protocol.Member{ClientID: c.id, UserID: cu.UserID, Role: c.cfg.Role, Since: time.Now()}
	c.mu.Unlock()
	return conn, last, nil
}

// closeErr turns a terminal close code into ErrTerminal.
func closeErr(err error) error {
	var ce *websocket.CloseError
	if errors.As(err, &ce) && protocol.CloseIsTerminal(ce.Code) {
		return fmt.Errorf("%w: close %d %s", ErrTerminal, ce.Code, ce.Text)
	}
	return err
}

// run owns the WebSocket: it serves one connection after the other,
// reconnecting with backoff, until the client is closed or a terminal error.
// It is the WebSocket's only reader.
func (c *Client) run(conn *websocket.Conn, last uint64) {
	defer c.wg.Done()
	for {
		err := c.serve(conn, last)
		if c.ctx.Err() != nil {
			return
		}
		var ce *websocket.CloseError
		replaced := errors.As(err, &ce) && ce.Code == protocol.CloseReplaced
		err = closeErr(err)
		c.mu.Lock()
		if c.closed {
			// Close ran between serve's return and here (it marks the
			// client closed before it cancels the context): the client
			// stays closed, and Recv reports ErrClosed, not an empty
			// delivery.
			c.mu.Unlock()
			return
		}
		c.state = StateReconnecting
		c.emitLocked(Event{Kind: EventRelay, Up: false, Reason: err.Error()})
		c.mu.Unlock()
		if errors.Is(err, ErrTerminal) {
			c.terminate(err, replaced)
			return
		}
		c.log.Info("WebSocket dropped; reconnecting", "err", err)
		for attempt := 0; ; attempt++ {
			if !c.sleep(c.backoff(attempt)) {
				return
			}
			ctx, cancel := context.WithTimeout(c.ctx, 2*DefaultHandshake)
			conn, last, err = c.connect(ctx)
			cancel()
			if err == nil {
				break
			}
			if c.ctx.Err() != nil {
				return
			}
			if errors.Is(err, ErrTerminal) || errors.Is(err, ErrRefused) {
				c.terminate(fmt.Errorf("%w: %w", ErrTerminal, err), false)
				return
			}
			c.log.Debug("reconnect failed", "attempt", attempt+1, "err", err)
		}
		c.mu.Lock()
		c.stats.Reconnects++
		c.mu.Unlock()
	}
}

// serve runs one connection: it starts the writer, reads until the
// connection fails, then stops the writer and waits for it.
func (c *Client) serve(conn *websocket.Conn, last uint64) error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		conn.Close()
		return ErrClosed
	}
	// What the writer sends first: resume (on a reconnect), our open data
	// channels, then every application message the server does not hold.
	var hello [][]byte
	if c.connected {
		present := make([]string, 0, len(c.members))
		for id := range c.members {
			if id != c.id {
				present = append(present, id)
			}
		}
		r := protocol.Resume{Since: c.offHigh, Seen: c.dd.seen(present, protocol.MaxSeen)}
		hello = append(hello, protocol.Encode(protocol.MustMarshal(protocol.TypeResume, r)))
	}
	for _, l := range c.links {
		if l.state.P2P() {
			hello = append(hello, protocol.Encode(protocol.MustMarshal(protocol.TypeP2PState, protocol.P2PState{Peer: l.peer, Up: true})))
		}
	}
	c.ob.ackServer(last)
	// The server holds seqs of this client id up to last: a client
	// restarted with the id of an earlier run (the id a token binds) counts
	// on from there.
	c.count.server(last)
	cursor := last
	for _, e := range c.ob.unconfirmed() {
		if e.seq > cursor {
			hello = append(hello, e.wire())
			cursor = e.seq
		}
	}
	// application messages queued for the previous connection are in the outbox
	kept := c.queue[:0]
	for _, it := range c.queue {
		if it.seq == 0 {
			kept = append(kept, it)
		}
	}
	c.queue = kept
	c.resendWritten = c.resendQueued // hello resends the outbox instead
	c.conn = conn
	c.connected = true
	c.state = StateConnected
	c.emitLocked(Event{Kind: EventRelay, Up: true})
	c.wg.Add(1)
	c.mu.Unlock()

	stop := make(chan struct{})
	writerDone := make(chan struct{})
	go c.writeLoop(conn, cursor, hello, stop, writerDone)
	err := c.readLoop(conn)
	close(stop)
	conn.Close()
	<-writerDone

	c.mu.Lock()
	c.conn = nil
	c.mu.Unlock()
	return err
}

// readTimeout is how long the reader waits for any message: pongs come every
// PingInterval, so three missing mean the connection is dead.
func (c *Client) readTimeout() time.Duration {
	return max(3*c.cfg.PingInterval, 3*time.Second)
}

// readLoop reads messages until the connection fails.
func (c *Client) readLoop(conn *websocket.Conn) error {
	for {
		_ = conn.SetReadDeadline(time.Now().Add(c.readTimeout()))
		typ, data, err := conn.ReadMessage()
		if err != nil {
			return err
		}
		if typ != websocket.TextMessage {
			continue
		}
		m, perr := protocol.Decode(data)
		if perr != nil {
			c.log.Warn("undecodable message from server", "err", perr)
			continue
		}
		c.handleWS(m)
	}
}

// writeLoop is the connection's only writer: hello first, then the queue in
// order, and a ping every PingInterval. On Close it sends a close frame.
func (c *Client) writeLoop(conn *websocket.Conn, cursor uint64, hello [][]byte, stop <-chan struct{}, done chan<- struct{}) {
	defer c.wg.Done()
	defer close(done)
	write := func(b []byte) bool {
		_ = conn.SetWriteDeadline(time.Now().Add(writeWait))
		if err := conn.WriteMessage(websocket.TextMessage, b); err != nil {
			c.log.Debug("WebSocket write failed", "err", err)
			conn.Close() // the reader notices and reconnects
			return false
		}
		return true
	}
	for _, b := range hello {
		if !write(b) {
			return
		}
	}
	ticker := time.NewTicker(c.cfg.PingInterval)
	defer ticker.Stop()
	for {
		c.mu.Lock()
		items := c.queue
		c.queue = nil
		c.controlN = 0
		c.mu.Unlock()
		for _, it := range items {
			switch {
			case it.resend:
				cursor = max(cursor, it.seq)
			case it.seq != 0:
				if it.seq <= cursor {
					continue
				}
				cursor = it.seq
			case it.ping != "":
				c.mu.Lock()
				c.notePingLocked(it.ping, cursor)
				c.mu.Unlock()
			}
			if !write(it.data) {
				return
			}
			if it.resend && it.batch > 0 {
				c.mu.Lock()
				c.resendWritten = max(c.resendWritten, it.batch)
				c.mu.Unlock()
			}
		}
		select {
		case <-stop:
			return
		case <-c.ctx.Done():
			_ = conn.WriteControl(websocket.CloseMessage,
				websocket.FormatCloseMessage(websocket.CloseNormalClosure, "bye"), time.Now().Add(time.Second))
			conn.Close()
			return
		case <-c.wake:
		case <-ticker.C:
			c.mu.Lock()
			b, key, _ := c.newPingLocked()
			c.notePingLocked(key, cursor)
			c.mu.Unlock()
			if !write(b) {
				return
			}
		}
	}
}

// notePingLocked records, as the writer writes ping key, the highest
// application seq written before it and the resend batches written. c.mu is held.
func (c *Client) notePingLocked(key string, cursor uint64) {
	if w := c.pings[key]; w != nil {
		w.written, w.upto, w.batch = true, cursor, c.resendWritten
	}
}

// resendEvery bounds how often a pong makes the client resend what the
// server did not take, when the previous resend made no progress (link.js:
// the same).
const resendEvery = time.Second

// resendLocked queues again every unconfirmed application message, in seq
// order, after a pong showed that the server processed messages up to upto
// but holds only those up to last: it did not take the others (its broker
// was unreachable and delivered them on its own instance only, or it
// dropped them over the rate limit, or they skipped ahead of those). The
// server ignores a copy it already holds, and receivers drop copies they
// already delivered. Pongs of pings written before this batch do not queue
// another one. c.mu is held.
func (c *Client) resendLocked(last, upto uint64) {
	items := c.ob.unconfirmed()
	if c.conn == nil || len(items) == 0 {
		return // a reconnect resends the outbox anyway
	}
	// again at once while resends make progress (the rate limit lets some
	// through each time), else at most once per resendEvery: while the
	// server cannot take them (its broker down), resending at every pong
	// only multiplies the copies it delivers on its own instance
	now := time.Now()
	if last <= c.resendFloor && now.Sub(c.lastResend) < resendEvery {
		return
	}
	c.lastResend, c.resendFloor = now, last
	c.resendQueued++
	for _, e := range items {
		c.queue = append(c.queue, qItem{seq: e.seq, data: e.wire(), resend: true, batch: c.resendQueued})
	}
	c.log.Debug("resending what the server did not take", "held", last, "written", upto, "count", len(items))
	c.wakeWriter()
}

// handleWS handles one message from the server.
func (c *Client) handleWS(m *protocol.Message) {
	now := time.Now()
	switch m.Type {
	case protocol.TypeRTCOffer, protocol.TypeRTCAnswer, protocol.TypeRTCCandidate, protocol.TypeRTCRestart:
		c.handleSignal(m)
		return
	case protocol.TypeProbe:
		c.handleProbe(m)
		return
	case protocol.TypePong:
		var p protocol.Timestamped
		_ = json.Unmarshal(m.Data, &p)
		c.mu.Lock()
		w := c.pings[string(p.Timestamp)]
		if w != nil {
			delete(c.pings, string(p.Timestamp))
			c.wsRTT.add(now.Sub(w.sent))
			close(w.done)
		}
		if p.LastSeq != nil {
			c.ob.ackServer(*p.LastSeq)
			if w != nil && w.written && *p.LastSeq < w.upto && w.batch == c.resendQueued {
				c.resendLocked(*p.LastSeq, w.upto)
			}
		}
		c.mu.Unlock()
		return
	case protocol.TypeResumed:
		c.log.Debug("resumed", "data", string(m.Data))
		return
	case protocol.TypePing:
		return
	}

	var offers []string
	var closes []*webrtc.PeerConnection
	c.deliverMu.Lock()
	defer c.deliverMu.Unlock()
	c.mu.Lock()
	c.offHigh = max(c.offHigh, m.Off)
	var ds []Delivery
	switch m.Type {
	case protocol.TypeChordChange, protocol.TypePracticeStart, protocol.TypePracticeEnd, protocol.TypePracticeUpdate:
		switch {
		case m.Seq == 0 || m.From == "":
			ds = append(ds, Delivery{Msg: m, Path: protocol.PathRelay, At: now})
		case m.From == c.id:
			if m.Seq > c.ownSeen {
				c.ownSeen = m.Seq
				ds = append(ds, Delivery{Msg: m, Path: protocol.PathRelay, At: now})
			}
		default:
			c.stats.RelayCopies++
			c.activeLocked(now)
			ds = c.stampLocked(c.dd.accept(m, protocol.PathRelay, now, ds))
		}
	case protocol.TypeConnectionUpdate:
		var cu protocol.ConnectionUpdate
		if json.Unmarshal(m.Data, &cu) == nil && cu.ClientID != "" && cu.ClientID != c.id {
			if cu.Status == protocol.StatusConnected {
				if cu.LastSeq != nil {
					ds = c.dd.baseline(cu.ClientID, *cu.LastSeq, ds)
				}
				c.members[cu.ClientID] = protocol.Member{ClientID: cu.ClientID, UserID: cu.UserID, Role: cu.Role, Since: now, NoP2P: cu.NoP2P}
				if l := c.links[cu.ClientID]; l != nil && cu.NoP2P {
					closes = append(closes, c.closeLinkLocked(l, "peer-no-p2p")...)
				}
				offers = append(offers, c.noteMemberLocked(cu.ClientID, cu.Role, cu.NoP2P)...)
			} else {
				// the member left: its link goes at once (a page must not
				// show p2p to a phone that is gone)
				delete(c.members, cu.ClientID)
				// its count stays (it may come back with the same id)
				c.dd.leave(cu.ClientID)
				if l := c.links[cu.ClientID]; l != nil {
					closes = append(closes, c.closeLinkLocked(l, "peer-left")...)
				}
			}
		}
		ds = append(ds, Delivery{Msg: m, Path: protocol.PathRelay, At: now})
	case protocol.TypeSessionState:
		var st protocol.SessionState
		if err := json.Unmarshal(m.Data, &st); err == nil {
			c.session = st
			self, hasSelf := c.members[c.id]
			c.members = make(map[string]protocol.Member, len(st.Members))
			for _, mb := range st.Members {
				c.members[mb.ClientID] = mb
				if mb.ClientID != c.id {
					ds = c.dd.baseline(mb.ClientID, mb.LastSeq, ds)
					offers = append(offers, c.noteMemberLocked(mb.ClientID, mb.Role, mb.NoP2P)...)
				}
			}
			if _, ok := c.members[c.id]; !ok && hasSelf {
				c.members[c.id] = self
			}
			for id, l := range c.links {
				if _, ok := c.members[id]; !ok {
					closes = append(closes, c.closeLinkLocked(l, "peer-left")...)
				}
			}
			first := false
			select {
			case <-c.ready:
			default:
				first = true
			}
			if first || (st.Recovered != nil && !*st.Recovered) {
				c.offHigh = max(c.offHigh, st.Offset)
			}
			c.readyOnce.Do(func() { close(c.ready) })
		}
		ds = append(ds, Delivery{Msg: m, Path: protocol.PathRelay, At: now})
	case protocol.TypeError:
		c.log.Debug("error from server", "data", string(m.Data))
		ds = append(ds, Delivery{Msg: m, Path: protocol.PathRelay, At: now})
	default:
		c.log.Debug("ignoring message", "type", m.Type)
	}
	c.mu.Unlock()
	c.deliver(ds)
	c.closePCs(closes)
	for _, id := range offers {
		c.startOfferAsync(id)
	}
	c.reportLatency(now)
}

// reportLatencyEvery is how often the client reports its measured one-way
// chord latency per path to the server (latency_report, for its metrics).
const reportLatencyEvery = 5 * time.Second

// reportLatency sends latency_report for each path with a measured one-way
// latency, at most every reportLatencyEvery.
func (c *Client) reportLatency(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn == nil || now.Sub(c.lastReport) < reportLatencyEvery {
		return
	}
	c.lastReport = now
	for _, path := range []string{protocol.PathP2P, protocol.PathRelay} {
		if d := c.chordLat[path].median(); d > 0 {
			c.enqueueLocked(protocol.MustMarshal(protocol.TypeLatency, protocol.Latency{Path: path, Micros: float64(d.Microseconds())}))
		}
	}
}

func formatMillis(ms float64) string { return strconv.FormatFloat(ms, 'f', 3, 64) }

func formatUint(v uint64) string { return strconv.FormatUint(v, 10) }
