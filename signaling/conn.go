package signaling

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/virtutune/link/protocol"
)

var errFull = errors.New("signaling: instance at its session or connection bound")

// client is one WebSocket connection: exactly one reader goroutine (serve).
// Deliveries write its frames themselves when nothing is queued; otherwise
// a flusher goroutine runs while frames wait (see outbox). Pings and the
// token's expiry share one timer; kill starts the goroutine that sends the close
// frame and closes the socket.
type client struct {
	s    *Server
	room *room
	conn *websocket.Conn

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
	// tokenCID is the client id minted into the client's token (cid claim),
	// "" for tokens without one: removing that device closes the connection.
	tokenCID string

	out    *outbox       // bounded: Limits.SendQueue frames
	done   chan struct{} // closed by kill: the connection is closing
	closed chan struct{} // closed once the close frame went out and the socket is closed
	tmu    sync.Mutex    // guards the timer
	// timer fires for the next ping (every Limits.PingInterval) or the
	// token's expiry, whichever comes first: one timer per connection.
	timer *time.Timer
	ended bool // the timer is stopped for good

	closeOnce sync.Once
	closeCode int
	closeText string
	replaced  atomic.Bool
	// peerClosed is set when the client sent a close frame: it left on
	// purpose, so its departure is announced at once.
	peerClosed atomic.Bool

	lastSeq atomic.Uint64 // highest seq accepted from this client id

	// Guarded by room.mu:
	joining bool
	pending []*Publication
	minOff  uint64 // deliveries at or below it are already in the snapshot
	joinOff uint64 // the snapshot's offset at join (resume replays up to it)

	// The connection's token buckets, held by value (four objects fewer
	// per connection for the collector to mark).
	rate        bucket
	errRate     bucket // transient errors sent (see sendError)
	signalRate  bucket // signaling messages (rtc_*) of this member
	latencyRate bucket // latency_report messages of this member
	floods      int

	// The counters of the hot path, resolved once per connection.
	mChordIn, mChordOut prometheus.Counter
}

// Subprotocols of the WebSocket. A browser cannot set Authorization on a
// WebSocket, so it offers its token as a subprotocol, wsTokenPrefix+token,
// beside wsProtocol; the server answers with wsProtocol only (the token is
// never echoed), and the token stays out of the URL, and so out of every
// proxy's access log. ?token= still works for old clients.
const (
	wsProtocol    = "virtutune.v1"
	wsTokenPrefix = "virtutune.token."
)

// bearer returns the request's token: Authorization: Bearer, else a
// wsTokenPrefix subprotocol, else ?token=.
func bearer(r *http.Request) string {
	if h := r.Header.Get("Authorization"); len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		return strings.TrimSpace(h[7:])
	}
	for _, p := range websocket.Subprotocols(r) {
		if tok, ok := strings.CutPrefix(p, wsTokenPrefix); ok {
			return tok
		}
	}
	return r.URL.Query().Get("token")
}

func (s *Server) handleWS(w http.ResponseWriter, r *http.Request) {
	refuse := func(status int, code protocol.Code, msg string) {
		s.metrics.refusals.WithLabelValues(http.StatusText(status)).Inc()
		httpError(w, status, code, msg)
	}
	if s.isDraining() {
		refuse(http.StatusServiceUnavailable, protocol.CodeDraining, "Server is shutting down, reconnect")
		return
	}
	sid := chi.URLParam(r, "session_id")
	tok := bearer(r)
	if tok == "" {
		refuse(http.StatusUnauthorized, protocol.CodeTokenRequired, "A token is required (Authorization: Bearer or ?token=)")
		return
	}
	claims, err := s.tokens.Parse(tok)
	if err != nil {
		s.log.Debug("token refused", "err", err)
		refuse(http.StatusUnauthorized, protocol.CodeInvalidToken, "Invalid or expired token")
		return
	}
	if claims.Type == tokenPairing {
		refuse(http.StatusUnauthorized, protocol.CodePairingToken, "A pairing token is not a session token: pair with the code the PC shows")
		return
	}
	if claims.SessionID != sid {
		refuse(http.StatusForbidden, protocol.CodeWrongSession, "This token is for another session")
		return
	}
	if !s.checkOrigin(r) {
		refuse(http.StatusForbidden, protocol.CodeOriginNotAllowed, "Origin not allowed")
		return
	}
	if !validSessionID(sid) {
		refuse(http.StatusNotFound, protocol.CodeSessionNotFound, "Session not found")
		return
	}
	if _, err := s.broker.Session(r.Context(), sid); err != nil {
		if errors.Is(err, ErrSessionNotFound) {
			refuse(http.StatusNotFound, protocol.CodeSessionNotFound, "Session not found or expired")
			return
		}
		refuse(http.StatusServiceUnavailable, protocol.CodeUnavailable, "Sessions are unavailable, try again")
		return
	}
	if claims.ClientID != "" {
		if rev, err := s.broker.Revoked(r.Context(), sid, claims.ClientID); err != nil {
			refuse(http.StatusServiceUnavailable, protocol.CodeUnavailable, "Sessions are unavailable, try again")
			return
		} else if rev {
			refuse(http.StatusUnauthorized, protocol.CodeRevoked, "This device was removed from the session by the PC: pair it again")
			return
		}
	}
	// The client id is the token's (see boundClientID): a client_id in the
	// query may only repeat it.
	cid := s.boundClientID(claims)
	if q := r.URL.Query().Get("client_id"); q != "" && q != cid {
		if !protocol.ValidClientID(q) {
			refuse(http.StatusBadRequest, protocol.CodeInvalidClientID, "client_id must be 4-64 characters of A-Z a-z 0-9 _ -")
			return
		}
		refuse(http.StatusForbidden, protocol.CodeClientIDMismatch, "This token is bound to another client id: leave client_id out and use the one connection_update gives")
		return
	}
	uid, _ := claims.UserID()

	addr := s.clientAddr(r)
	if !s.limiter.openWS(addr) {
		s.metrics.addrLimited.WithLabelValues("websockets").Inc()
		s.metrics.refusals.WithLabelValues(http.StatusText(http.StatusTooManyRequests)).Inc()
		tooMany(w, 5*time.Second, protocol.CodeRateLimited, "Too many connections open from this address")
		return
	}
	rm, err := s.hub.acquire(r.Context(), sid)
	if err != nil {
		s.limiter.closeWS(addr)
		refuse(http.StatusServiceUnavailable, protocol.CodeFull, "This server is full, try again later")
		return
	}
	conn, err := s.upgrader.Upgrade(w, r, nil)
	if err != nil {
		s.hub.release(rm)
		s.limiter.closeWS(addr)
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
		tokenCID: claims.ClientID,
		noP2P:    r.URL.Query().Get("p2p") == "0",
		done:     make(chan struct{}), closed: make(chan struct{}),
	}
	now := time.Now()
	c.rate.init(s.cfg.Limits.Rate, float64(s.cfg.Limits.Burst), now)
	c.errRate.init(5, 20, now) // transient errors: a burst of 20, then 5 per second
	c.signalRate.init(s.cfg.Limits.SignalRate, float64(s.cfg.Limits.SignalBurst), now)
	c.latencyRate.init(s.cfg.Limits.LatencyRate, float64(s.cfg.Limits.LatencyBurst), now)
	c.out = newOutbox(conn.NetConn(), s.cfg.Limits.SendQueue, s.cfg.Limits.WriteWait,
		func(error) { c.kill(protocol.CloseNormal, "") })
	c.mChordIn = s.metrics.message(protocol.TypeChordChange, "in", "ws")
	c.mChordOut = s.metrics.message(protocol.TypeChordChange, "out", protocol.PathRelay)
	if !s.track() {
		_ = conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(protocol.CloseGoingAway, "server shutting down"), time.Now().Add(time.Second))
		conn.Close()
		s.hub.release(rm)
		s.limiter.closeWS(addr)
		return
	}
	s.metrics.conns.Inc()
	s.metrics.connsTotal.Inc()
	go func() {
		defer s.conns.Done()
		defer s.metrics.conns.Dec()
		defer s.limiter.closeWS(addr)
		defer s.hub.release(rm)
		c.serve()
	}()
}

// serve runs the connection: join, read until the end, leave.
func (c *client) serve() {
	c.startTimer()
	defer func() {
		c.kill(protocol.CloseNormal, "")
		<-c.closed
		c.tmu.Lock()
		c.ended = true
		c.timer.Stop()
		c.tmu.Unlock()
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

// enqueue hands b (one JSON message) to the connection without blocking:
// written at once when nothing is queued and the socket takes it, else queued
// for the writer. A full queue closes the client as a slow consumer (4000) so
// that nobody else waits for it. b is not copied: encodings are shared.
func (c *client) enqueue(b []byte) {
	ok, err := c.out.push(b)
	switch {
	case err != nil:
		c.kill(protocol.CloseNormal, "") // the connection failed
	case !ok:
		c.s.metrics.queueDrops.Inc()
		c.kill(protocol.CloseSlowConsumer, "send queue full")
	}
}

func (c *client) enqueueMsg(m *protocol.Message) { c.enqueue(protocol.Encode(m)) }

// logger returns the server's logger with the connection's attributes,
// built when something is logged rather than kept per connection.
func (c *client) logger() *slog.Logger {
	return c.s.log.With("session", c.sid, "client", c.id, "role", c.role)
}

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

// kill closes the connection with code: a goroutine sends what is queued
// (unless the client is too slow for it), then the close frame, and closes
// the socket, which ends the reader. The first call wins.
func (c *client) kill(code int, text string) {
	c.closeOnce.Do(func() {
		c.closeCode, c.closeText = code, text
		close(c.done)
		go func() {
			defer close(c.closed)
			c.out.close(websocket.FormatCloseMessage(code, text), code == protocol.CloseSlowConsumer, time.Second)
			_ = c.conn.Close()
		}()
	})
}

// startTimer arms the connection's timer: a ping every
// Limits.PingInterval until the token expires, then the close with 4102.
func (c *client) startTimer() {
	c.tmu.Lock()
	defer c.tmu.Unlock()
	c.timer = time.AfterFunc(c.nextTick(), c.tick)
}

// nextTick is how long until the next ping or the token's expiry.
func (c *client) nextTick() time.Duration {
	return min(c.s.cfg.Limits.PingInterval, time.Until(c.tokenExp))
}

// tick is the timer's function: the token's expiry, or a ping.
func (c *client) tick() {
	select {
	case <-c.done:
		return
	default:
	}
	if !time.Now().Before(c.tokenExp) {
		c.kill(protocol.CloseTokenExpired, "token expired")
		return
	}
	if err := c.out.pushControl(opPing, nil); err != nil {
		c.kill(protocol.CloseNormal, "")
		return
	}
	c.tmu.Lock()
	if !c.ended {
		c.timer.Reset(c.nextTick())
	}
	c.tmu.Unlock()
}

// readPump is the connection's only reader; it returns when the connection ends.
func (c *client) readPump(ctx context.Context) {
	lim := c.s.cfg.Limits
	c.conn.SetReadLimit(lim.MaxMessageSize)
	_ = c.conn.SetReadDeadline(time.Now().Add(lim.PongWait))
	c.conn.SetPongHandler(func(string) error {
		return c.conn.SetReadDeadline(time.Now().Add(lim.PongWait))
	})
	// The server writes its frames itself (outbox): gorilla must not answer
	// a ping or a close frame on its own. A pong joins the outgoing frames;
	// the close frame is the writer's, once the reader has ended.
	c.conn.SetPingHandler(func(data string) error {
		if err := c.out.pushControl(opPong, []byte(data)); err != nil {
			c.kill(protocol.CloseNormal, "")
		}
		return nil
	})
	c.conn.SetCloseHandler(func(int, string) error { return nil })
	// The read deadline moves with every message, but only every refresh:
	// resetting the runtime timer per message costs more than the message.
	refresh := min(time.Second, lim.PongWait/16)
	last := time.Now()
	for {
		mt, r, err := c.conn.NextReader()
		var bp *[]byte
		var b []byte
		if err == nil {
			bp = readPool.Get().(*[]byte)
			b, err = readAll(r, (*bp)[:0])
		}
		if err != nil {
			if bp != nil {
				putRead(bp, b)
			}
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
		now := time.Now()
		if now.Sub(last) >= refresh {
			_ = c.conn.SetReadDeadline(now.Add(lim.PongWait))
			last = now
		}
		if !c.consume(ctx, mt, b, now) {
			putRead(bp, b)
			return
		}
		putRead(bp, b)
	}
}

// readPool lends the reader a buffer for one message (Decode copies what it
// keeps, so the buffer goes back as soon as the message is handled).
var readPool = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

func putRead(bp *[]byte, b []byte) {
	if cap(b) > 8<<10 {
		return // a large SDP: let it go
	}
	*bp = b[:0]
	readPool.Put(bp)
}

// readAll reads r to its end into dst.
func readAll(r io.Reader, dst []byte) ([]byte, error) {
	for {
		if len(dst) == cap(dst) {
			dst = append(dst, 0)[:len(dst)]
		}
		n, err := r.Read(dst[len(dst):cap(dst)])
		dst = dst[:len(dst)+n]
		if err == io.EOF {
			return dst, nil
		}
		if err != nil {
			return dst, err
		}
	}
}

// consume applies the rate limit to one message read at now and handles
// it; it reports false when the connection is to end. b is reused once it
// returns.
func (c *client) consume(ctx context.Context, mt int, b []byte, now time.Time) bool {
	lim := c.s.cfg.Limits
	select {
	case <-c.done:
		return false
	default:
	}
	if !c.rate.take(now) {
		c.floods++
		if c.floods >= lim.FloodClose {
			c.kill(protocol.ClosePolicy, "rate limit exceeded")
			return false
		}
		if c.floods == 1 || c.floods%50 == 0 {
			c.sendError(protocol.Errorf(protocol.CodeRateLimited, "Too many messages: at most %g per second", lim.Rate))
		}
		return true
	}
	c.floods = 0
	if mt != websocket.TextMessage {
		c.sendError(protocol.Errorf(protocol.CodeBinaryFrame, "Only text frames with JSON messages are accepted"))
		return true
	}
	c.handle(ctx, b)
	return true
}
