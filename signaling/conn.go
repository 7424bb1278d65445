package signaling

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/gorilla/websocket"

	"github.com/virtutune/link/protocol"
)

var errFull = errors.New("signaling: instance at its session or connection bound")

// maxPending bounds the publications buffered for a member while it joins.
const maxPending = 1024

// client is one WebSocket connection: exactly one reader (serve) and one
// writer (writePump) goroutine.
type client struct {
	s    *Server
	room *room
	conn *websocket.Conn
	log  *slog.Logger

	id    string
	sid   string
	role  string
	uid   int64
	since time.Time
	// tokenExp is when the client's token expires: the connection is closed
	// with 4102 then.
	tokenExp time.Time
	// noP2P: the client joined with p2p=0 and takes no part in data channels.
	noP2P bool

	send chan []byte   // bounded: Limits.SendQueue
	done chan struct{} // closed by kill: the writer closes the connection

	closeOnce sync.Once
	closeCode int
	closeText string
	replaced  atomic.Bool
	// peerClosed is set when the client sent a close frame: it left on
	// purpose, so its departure is announced at once.
	peerClosed atomic.Bool

	lastSeq atomic.Uint64 // highest seq accepted from this client id

	// Guarded by room.mu:
	joining    bool
	pending    []*Publication
	minOff     uint64 // deliveries at or below it are already in the snapshot
	joinOff    uint64 // the snapshot's offset at join (resume replays up to it)
	dispatched uint64 // highest offset the room has handled for this client
	p2pUp      map[string]bool

	rate    *bucket
	errRate *bucket // transient errors sent (see sendError)
	floods  int
}

// origin returns scheme://host of the server as the browser sees it.
func (s *Server) checkOrigin(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true // not a browser: nothing to hijack
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return false
	}
	if strings.EqualFold(u.Host, r.Host) {
		return true
	}
	if s.cfg.PublicURL != "" && normalizeOrigin(origin) == normalizeOrigin(s.cfg.PublicURL) {
		return true
	}
	for _, o := range s.cfg.AllowedOrigins {
		if normalizeOrigin(o) == normalizeOrigin(origin) {
			return true
		}
	}
	return false
}

func bearer(r *http.Request) string {
	if h := r.Header.Get("Authorization"); len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		return strings.TrimSpace(h[7:])
	}
	return r.URL.Query().Get("token")
}

func (s *Server) handleWS(w http.ResponseWriter, r *http.Request) {
	refuse := func(status int, code, msg string) {
		s.metrics.refusals.WithLabelValues(http.StatusText(status)).Inc()
		httpError(w, status, code, msg)
	}
	if s.isDraining() {
		refuse(http.StatusServiceUnavailable, "draining", "Server is shutting down, reconnect")
		return
	}
	sid := chi.URLParam(r, "session_id")
	tok := bearer(r)
	if tok == "" {
		refuse(http.StatusUnauthorized, "token_required", "A token is required (Authorization: Bearer or ?token=)")
		return
	}
	claims, err := s.tokens.Parse(tok)
	if err != nil {
		s.log.Debug("token refused", "err", err)
		refuse(http.StatusUnauthorized, "invalid_token", "Invalid or expired token")
		return
	}
	if claims.Type == tokenPairing {
		refuse(http.StatusUnauthorized, "pairing_token", "A pairing token must be traded at /api/pair first")
		return
	}
	if claims.SessionID != sid {
		refuse(http.StatusForbidden, "wrong_session", "This token is for another session")
		return
	}
	if !s.checkOrigin(r) {
		refuse(http.StatusForbidden, "origin_not_allowed", "Origin not allowed")
		return
	}
	if !validSessionID(sid) {
		refuse(http.StatusNotFound, "session_not_found", "Session not found")
		return
	}
	if _, err := s.broker.Session(r.Context(), sid); err != nil {
		if errors.Is(err, ErrSessionNotFound) {
			refuse(http.StatusNotFound, "session_not_found", "Session not found or expired")
			return
		}
		refuse(http.StatusServiceUnavailable, "unavailable", "Sessions are unavailable, try again")
		return
	}
	cid := r.URL.Query().Get("client_id")
	if cid == "" {
		cid = randomID(9)
	} else if !protocol.ValidClientID(cid) {
		refuse(http.StatusBadRequest, "invalid_client_id", "client_id must be 4-64 characters of A-Z a-z 0-9 _ -")
		return
	}
	uid, _ := claims.UserID()

	rm, err := s.hub.acquire(r.Context(), sid)
	if err != nil {
		refuse(http.StatusServiceUnavailable, "full", "This server is full, try again later")
		return
	}
	conn, err := s.upgrader.Upgrade(w, r, nil)
	if err != nil {
		s.hub.release(rm)
		return // the upgrader answered
	}
	if n := s.cfg.Limits.SocketSendBuffer; n > 0 {
		if tc, ok := conn.NetConn().(interface{ SetWriteBuffer(int) error }); ok {
			_ = tc.SetWriteBuffer(n)
		}
	}
	c := &client{
		s: s, room: rm, conn: conn,
		id: cid, sid: sid, role: claims.Role, uid: uid, since: time.Now().UTC(), tokenExp: claims.ExpiresAt.Time,
		noP2P: r.URL.Query().Get("p2p") == "0",
		send:  make(chan []byte, s.cfg.Limits.SendQueue),
		done:  make(chan struct{}),
		p2pUp: make(map[string]bool),
		rate:  newBucket(s.cfg.Limits.Rate, float64(s.cfg.Limits.Burst)),
		// transient errors: a burst of 20, then 5 per second
		errRate: newBucket(5, 20),
	}
	c.log = s.log.With("session", sid, "client", cid, "role", claims.Role)
	if !s.track() {
		_ = conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(protocol.CloseGoingAway, "server shutting down"), time.Now().Add(time.Second))
		conn.Close()
		s.hub.release(rm)
		return
	}
	s.metrics.conns.Inc()
	s.metrics.connsTotal.Inc()
	go func() {
		defer s.conns.Done()
		defer s.metrics.conns.Dec()
		defer s.hub.release(rm)
		c.serve()
	}()
}

func (c *client) member() protocol.Member {
	return protocol.Member{ClientID: c.id, UserID: c.uid, Role: c.role, Since: c.since, Instance: c.s.cfg.Instance, NoP2P: c.noP2P}
}

// serve runs the connection: join, read until the end, leave.
func (c *client) serve() {
	writerDone := make(chan struct{})
	go func() { defer close(writerDone); c.writePump() }()
	defer func() {
		c.kill(protocol.CloseNormal, "")
		<-writerDone
		c.s.metrics.closed(c.closeCode)
	}()
	jctx, jcancel := context.WithTimeout(context.Background(), 10*time.Second)
	joined := c.join(jctx)
	jcancel()
	if !joined {
		return
	}
	s := c.s.metrics.members.WithLabelValues(c.role)
	s.Inc()
	defer s.Dec()
	defer c.leave()
	// The messages' work (publish, history, presence) is bounded by the
	// broker's own timeouts (go-redis's read and write timeouts); this context
	// ends it when the connection ends.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c.readPump(ctx)
}

// join registers the client, sends it its own connection_update first, then
// the session_state, then whatever arrived meanwhile, and announces it.
func (c *client) join(ctx context.Context) bool {
	s, rm := c.s, c.room
	members, err := s.broker.Members(ctx, c.sid)
	if err != nil {
		c.kill(protocol.CloseReconnect, "broker unavailable")
		return false
	}
	present := 0
	for _, m := range members {
		if m.ClientID != c.id {
			present++
		}
	}
	if present >= s.cfg.Limits.MaxMembers {
		c.kill(protocol.CloseSessionFull, "session full")
		return false
	}
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
	rm.clients[c.id] = c
	rm.mu.Unlock()
	// Shutdown sets draining before it closes every room's clients: a client
	// added after that sweep sees draining here.
	if s.isDraining() {
		c.kill(protocol.CloseGoingAway, "server shutting down")
	}

	if err := s.broker.Join(ctx, c.sid, c.member()); err != nil {
		c.kill(protocol.CloseReconnect, "broker unavailable")
		return false
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
	if c.dispatched < st.Offset {
		c.dispatched = st.Offset
	}
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
		c.log.Warn("announce join", "err", err)
	}
	c.log.Info("joined")
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
	if rm.clients[c.id] == c {
		delete(rm.clients, c.id)
	}
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
		c.log.Warn("leave", "err", err)
	} else if !gone {
		// A newer connection of the same client id holds its presence now
		// (it came back, here or on another instance): it is not gone.
		c.log.Info("left, but a newer connection of the same client is present: no disconnect notice")
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
		c.log.Warn("announce leave", "err", err)
	}
	c.log.Info("left", "code", c.closeCode)
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
	if p.Off != 0 {
		if p.Off <= c.minOff {
			return
		}
		if p.Off > c.dispatched {
			c.dispatched = p.Off
		}
	}
	if p.Skip == c.id || (p.To != "" && p.To != c.id) {
		return
	}
	if p.From != "" && c.p2pUp[p.From] && slices.Contains(p.Direct, c.id) {
		c.s.metrics.messages.WithLabelValues(string(p.Type), "out", protocol.PathP2P).Inc()
		return
	}
	if *enc == nil {
		*enc = protocol.Encode(p.Message())
	}
	c.s.metrics.messages.WithLabelValues(string(p.Type), "out", protocol.PathRelay).Inc()
	c.enqueue(*enc)
}

// enqueue queues b for the writer without blocking; a full queue closes the
// client as a slow consumer (4000) so that nobody else waits for it.
//
// (Writing directly from the publishing goroutine when nothing is queued was
// tried: on the 2-vCPU reference machine it made the relay's p50 slower, 41-51
// against 34-39 µs in alternating runs, so the hop to the writer goroutine stays.)
func (c *client) enqueue(b []byte) {
	select {
	case c.send <- b:
	default:
		c.s.metrics.queueDrops.Inc()
		c.kill(protocol.CloseSlowConsumer, "send queue full")
	}
}

func (c *client) enqueueMsg(m *protocol.Message) { c.enqueue(protocol.Encode(m)) }

func (c *client) sendError(e *protocol.Error) {
	c.s.metrics.errors.WithLabelValues(string(e.Code)).Inc()
	// A transient error that repeats (every message while Redis is down, or
	// after a gap in the sender's seq) would fill the client's queue with
	// copies of one fact; past a small burst they are not sent. The pong's
	// last_seq tells the client what the server took.
	if e.Code == protocol.CodeUnavailable || e.Code == protocol.CodeInvalidSequence {
		if !c.errRate.take(time.Now()) {
			c.s.metrics.errorsSuppressed.Inc()
			return
		}
	}
	c.enqueueMsg(protocol.ErrorMessage(e))
}

// kill makes the writer send a close frame with code and close the
// connection; the first call wins.
func (c *client) kill(code int, text string) {
	c.closeOnce.Do(func() {
		c.closeCode, c.closeText = code, text
		close(c.done)
	})
}

// writePump is the connection's only writer.
func (c *client) writePump() {
	lim := c.s.cfg.Limits
	ping := time.NewTicker(lim.PingInterval)
	defer ping.Stop()
	expiry := time.NewTimer(time.Until(c.tokenExp))
	defer expiry.Stop()
	defer c.conn.Close()
	for {
		select {
		case b := <-c.send:
			_ = c.conn.SetWriteDeadline(time.Now().Add(lim.WriteWait))
			if err := c.conn.WriteMessage(websocket.TextMessage, b); err != nil {
				c.kill(protocol.CloseNormal, "")
				return
			}
		case <-ping.C:
			if err := c.conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(lim.WriteWait)); err != nil {
				c.kill(protocol.CloseNormal, "")
				return
			}
		case <-expiry.C:
			c.kill(protocol.CloseTokenExpired, "token expired")
		case <-c.done:
			// Flush what is queued unless the client is too slow for it.
			if c.closeCode != protocol.CloseSlowConsumer {
				_ = c.conn.SetWriteDeadline(time.Now().Add(time.Second))
			flush:
				for {
					select {
					case b := <-c.send:
						if c.conn.WriteMessage(websocket.TextMessage, b) != nil {
							break flush
						}
					default:
						break flush
					}
				}
			}
			_ = c.conn.WriteControl(websocket.CloseMessage,
				websocket.FormatCloseMessage(c.closeCode, c.closeText), time.Now().Add(time.Second))
			return
		}
	}
}

// readPump is the connection's only reader; it returns when the connection ends.
func (c *client) readPump(ctx context.Context) {
	lim := c.s.cfg.Limits
	c.conn.SetReadLimit(lim.MaxMessageSize)
	_ = c.conn.SetReadDeadline(time.Now().Add(lim.PongWait))
	c.conn.SetPongHandler(func(string) error {
		return c.conn.SetReadDeadline(time.Now().Add(lim.PongWait))
	})
	for {
		mt, b, err := c.conn.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			switch {
			case errors.Is(err, websocket.ErrReadLimit):
				c.kill(protocol.CloseTooBig, "message too big")
			case errors.As(err, &ce) && ce.Code != websocket.CloseAbnormalClosure:
				c.peerClosed.Store(true) // the client said goodbye
				c.kill(protocol.CloseNormal, "")
			default:
				c.kill(protocol.CloseNormal, "") // the connection died (network, sleep, timeout)
			}
			return
		}
		_ = c.conn.SetReadDeadline(time.Now().Add(lim.PongWait))
		select {
		case <-c.done:
			return
		default:
		}
		if !c.rate.take(time.Now()) {
			c.floods++
			if c.floods >= lim.FloodClose {
				c.kill(protocol.ClosePolicy, "rate limit exceeded")
				return
			}
			if c.floods == 1 || c.floods%50 == 0 {
				c.sendError(protocol.Errorf(protocol.CodeRateLimited, "Too many messages: at most %g per second", lim.Rate))
			}
			continue
		}
		c.floods = 0
		if mt != websocket.TextMessage {
			c.sendError(protocol.Errorf(protocol.CodeBinaryFrame, "Only text frames with JSON messages are accepted"))
			continue
		}
		c.handle(ctx, b)
	}
}

// handle acts on one message from the client.
func (c *client) handle(ctx context.Context, b []byte) {
	m, perr := protocol.Decode(b)
	if perr != nil {
		c.sendError(perr)
		return
	}
	v, perr := protocol.Validate(m)
	if perr != nil {
		c.sendError(perr)
		return
	}
	c.s.metrics.messages.WithLabelValues(string(m.Type), "in", "ws").Inc()
	if m.From != "" && m.From != c.id {
		c.sendError(protocol.Errorf(protocol.CodeInvalidSequence, "from must be your own client id"))
		return
	}
	switch m.Type {
	case protocol.TypeChordChange:
		data, _ := json.Marshal(protocol.ChordChange{Chord: v.Chord})
		c.publishApp(ctx, m, &Publication{Type: m.Type, Data: data, Chord: v.Chord, Skip: c.id})
	case protocol.TypePracticeStart, protocol.TypePracticeEnd:
		status := protocol.PracticeStarted
		if m.Type == protocol.TypePracticeEnd {
			status = protocol.PracticeEnded
		}
		ts := v.Timestamp
		if ts == nil {
			ts, _ = json.Marshal(time.Now().UTC().Format(time.RFC3339Nano))
		}
		data, _ := json.Marshal(protocol.PracticeUpdate{Status: status, Timestamp: ts})
		c.publishApp(ctx, m, &Publication{Type: protocol.TypePracticeUpdate, Data: data,
			Practice: &protocol.Practice{Status: status, Timestamp: ts}})
	case protocol.TypePing:
		ts := v.Timestamp
		if ts == nil {
			ts, _ = json.Marshal(time.Now().UTC().Format(time.RFC3339Nano))
		}
		last := c.lastSeq.Load()
		c.enqueueMsg(protocol.MustMarshal(protocol.TypePong, protocol.Timestamped{Timestamp: ts, LastSeq: &last}))
	case protocol.TypeRTCOffer, protocol.TypeRTCAnswer, protocol.TypeRTCCandidate, protocol.TypeRTCRestart:
		c.signal(ctx, m, v)
	case protocol.TypeP2PState:
		c.p2pState(ctx, v.P2P)
	case protocol.TypeResume:
		c.resume(ctx, v.Resume)
	case protocol.TypeLatency:
		c.s.metrics.peerLatency.WithLabelValues(v.Latency.Path).Observe(v.Latency.Micros / 1e6)
	}
}

// publishApp publishes an application message with the sender's identity.
func (c *client) publishApp(ctx context.Context, m *protocol.Message, p *Publication) {
	p.From, p.Seq, p.At = c.id, m.Seq, m.At
	if len(m.Direct) > 0 {
		p.Direct = m.Direct
	}
	res, err := c.publish(ctx, p)
	switch {
	case errors.Is(err, ErrBadSequence):
		c.sendError(protocol.Errorf(protocol.CodeInvalidSequence,
			"seq %d skips ahead: the next expected is %d", m.Seq, c.lastSeq.Load()+1))
	case err != nil && res.Local:
		// Delivered on this instance only; the client keeps it and resends.
		c.sendError(protocol.Errorf(protocol.CodeUnavailable, "Delivered on this server only: the session store is unreachable; resend later"))
	case err != nil:
		c.log.Warn("publish", "err", err)
		c.sendError(protocol.Errorf(protocol.CodeUnavailable, "Message not delivered: the session store is unreachable; resend later"))
	case !res.Duplicate:
		for {
			cur := c.lastSeq.Load()
			if res.Seq <= cur || c.lastSeq.CompareAndSwap(cur, res.Seq) {
				break
			}
		}
	}
}

// signal relays a signaling message to its one target.
func (c *client) signal(ctx context.Context, m *protocol.Message, v protocol.Validated) {
	if m.To == c.id {
		c.sendError(protocol.Errorf(protocol.CodeInvalidTarget, "%s cannot be addressed to yourself", m.Type))
		return
	}
	if !c.room.signal.take(time.Now()) {
		c.sendError(protocol.Errorf(protocol.CodeRateLimited, "Too many signaling messages in this session"))
		return
	}
	if !c.room.present(ctx, m.To) {
		c.sendError(protocol.Errorf(protocol.CodeInvalidTarget, "No member %s in this session", m.To))
		return
	}
	var data any
	switch m.Type {
	case protocol.TypeRTCOffer, protocol.TypeRTCAnswer:
		data = v.Desc
	case protocol.TypeRTCCandidate:
		data = v.Candidate
	case protocol.TypeRTCRestart:
		data = v.Restart
	}
	d, _ := json.Marshal(data)
	if err := c.s.broker.Send(ctx, c.sid, &Publication{Type: m.Type, Data: d, From: c.id, To: m.To}); err != nil {
		c.sendError(protocol.Errorf(protocol.CodeUnavailable, "Signaling message not delivered: %s", errText(err)))
	}
}

// p2pState records whether the client's data channel from a peer is up; when
// it goes down the peer's messages after last_seq are replayed from history.
func (c *client) p2pState(ctx context.Context, st protocol.P2PState) {
	state := "down"
	if st.Up {
		state = "up"
	}
	c.s.metrics.p2pStates.WithLabelValues(state, reasonLabel(st.Reason)).Inc()
	rm := c.room
	rm.mu.Lock()
	was := c.p2pUp[st.Peer]
	if st.Up {
		if len(c.p2pUp) < protocol.MaxSeen {
			c.p2pUp[st.Peer] = true
		}
		rm.mu.Unlock()
		return
	}
	delete(c.p2pUp, st.Peer)
	watermark := c.dispatched
	rm.mu.Unlock()
	if !was {
		return
	}
	h, err := c.s.broker.History(ctx, c.sid, 0)
	if err != nil {
		// What the channel lost is in history the broker cannot read now:
		// ask the client to reconnect, so that its resume (with seen) fetches
		// it once the broker is back, rather than leave a gap it waits on.
		c.sendError(protocol.Errorf(protocol.CodeUnavailable, "Could not replay what the data channel lost: %s", errText(err)))
		c.kill(protocol.CloseReconnect, "replay unavailable, reconnect and resume")
		return
	}
	var replay []*Publication
	for _, p := range h.Pubs {
		if p.Off <= watermark && p.From == st.Peer && p.sequenced() && p.Seq > st.LastSeq && slices.Contains(p.Direct, c.id) {
			replay = append(replay, p)
		}
	}
	rm.mu.Lock()
	for _, p := range replay {
		c.enqueueMsg(p.Message())
	}
	rm.mu.Unlock()
}

// resume replays what a reconnecting client missed: every publication after
// since up to its join snapshot, plus each seen peer's application messages
// after the given seq. Later ones reach it live.
func (c *client) resume(ctx context.Context, r protocol.Resume) {
	h, err := c.s.broker.History(ctx, c.sid, 0)
	if err != nil {
		// The client reconnects with backoff and asks again.
		c.sendError(protocol.Errorf(protocol.CodeUnavailable, "Could not resume: %s", errText(err)))
		c.kill(protocol.CloseReconnect, "resume unavailable, reconnect and resume")
		return
	}
	rm := c.room
	rm.mu.Lock()
	defer rm.mu.Unlock()
	upto := c.joinOff
	complete := h.Complete || r.Since >= upto
	if complete && r.Since < upto {
		// History must reach back to since+1 (or to each seen peer's next seq).
		first := uint64(0)
		if len(h.Pubs) > 0 {
			first = h.Pubs[0].Off
		}
		if first > r.Since+1 {
			complete = false
		}
	}
	if !complete {
		st, _ := c.s.broker.State(ctx, c.sid)
		ms, _ := c.s.broker.Members(ctx, c.sid)
		snap := snapshot(c.sid, st, ms)
		f := false
		snap.Recovered = &f
		c.enqueueMsg(protocol.MustMarshal(protocol.TypeSessionState, snap))
		c.enqueueMsg(protocol.MustMarshal(protocol.TypeResumed, protocol.Resumed{Recovered: false, Offset: upto}))
		return
	}
	n := 0
	for _, p := range h.Pubs {
		if p.Off > upto || p.To != "" {
			continue
		}
		want := p.Off > r.Since
		if s, ok := r.Seen[p.From]; ok && p.sequenced() {
			want = p.Seq > s
		}
		if !want || p.Skip == c.id {
			continue
		}
		c.enqueueMsg(p.Message())
		n++
	}
	c.enqueueMsg(protocol.MustMarshal(protocol.TypeResumed, protocol.Resumed{Recovered: true, Count: n, Offset: upto}))
}

func errText(err error) string {
	if errors.Is(err, ErrUnavailable) {
		return "the session store is unreachable"
	}
	if errors.Is(err, ErrSessionNotFound) {
		return "the session has ended"
	}
	return "internal error"
}

// reasonLabel bounds the metric label's values.
func reasonLabel(r string) string {
	switch r {
	case "", "closed", "ice-failed", "no-candidates", "timeout", "disabled", "unsupported", "dtls-failed":
		return r
	}
	return "other"
}
