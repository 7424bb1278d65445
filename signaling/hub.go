package signaling

import (
	"context"
	"sync"
	"time"

	"github.com/virtutune/link/protocol"
)

// hub holds this instance's rooms: one per session with a member connected
// here, each subscribed once to the broker.
type hub struct {
	s *Server

	mu    sync.Mutex
	rooms map[string]*room
	conns int
}

// room is one session's local members. The broker's handler (deliver) and
// every change to a member's delivery state run under mu, so a member sees
// the session's publications in offset order.
type room struct {
	id  string
	hub *hub

	ready chan struct{} // closed once subscribed (or failed)
	err   error
	unsub func()
	refs  int // guarded by hub.mu

	mu      sync.Mutex
	clients map[string]*client
	list    []*client // clients' values, for deliver's loop (a slice, not a map walk); replaced, never changed in place
}

// put makes c the member of its client id. Called with r.mu held.
func (r *room) put(c *client) {
	r.clients[c.id] = c
	r.relist()
}

// remove takes c out unless a newer connection replaced it. Called with
// r.mu held.
func (r *room) remove(c *client) {
	if r.clients[c.id] == c {
		delete(r.clients, c.id)
		r.relist()
	}
}

func (r *room) relist() {
	l := make([]*client, 0, len(r.clients))
	for _, c := range r.clients {
		l = append(l, c)
	}
	r.list = l
}

func newHub(s *Server) *hub {
	h := &hub{s: s, rooms: make(map[string]*room)}
	s.bg.Add(1)
	go h.heartbeat()
	return h
}

// acquire returns the room of sid, subscribing it to the broker if it is new;
// every acquire must be paired with a release. It fails with errFull when the
// instance is at its session or connection bound.
func (h *hub) acquire(ctx context.Context, sid string) (*room, error) {
	h.mu.Lock()
	r := h.rooms[sid]
	lim := h.s.cfg.Limits
	if h.conns >= lim.MaxConns || (r == nil && len(h.rooms) >= lim.MaxSessions) {
		h.mu.Unlock()
		return nil, errFull
	}
	h.conns++
	if r != nil {
		r.refs++
		h.mu.Unlock()
		<-r.ready
		if r.err != nil {
			h.release(r)
			return nil, r.err
		}
		return r, nil
	}
	r = &room{id: sid, hub: h, ready: make(chan struct{}), clients: make(map[string]*client), refs: 1}
	h.rooms[sid] = r
	h.s.metrics.sessions.Set(float64(len(h.rooms)))
	h.mu.Unlock()
	r.unsub, r.err = h.s.broker.Subscribe(ctx, sid, r.deliver)
	close(r.ready)
	if r.err != nil {
		h.release(r)
		return nil, r.err
	}
	return r, nil
}

// release drops one reference to r; the last one unsubscribes it.
func (h *hub) release(r *room) {
	h.mu.Lock()
	h.conns--
	r.refs--
	last := r.refs == 0
	if last && h.rooms[r.id] == r {
		delete(h.rooms, r.id)
	}
	h.s.metrics.sessions.Set(float64(len(h.rooms)))
	h.mu.Unlock()
	if last && r.unsub != nil {
		r.unsub()
	}
}

// closeAll closes every client with code.
func (h *hub) closeAll(code int, text string) {
	h.mu.Lock()
	rooms := make([]*room, 0, len(h.rooms))
	for _, r := range h.rooms {
		rooms = append(rooms, r)
	}
	h.mu.Unlock()
	for _, r := range rooms {
		r.mu.Lock()
		for _, c := range r.clients {
			c.kill(code, text)
		}
		r.mu.Unlock()
	}
}

// heartbeat refreshes the presence of every local member and the expiry of
// their sessions, so that presence kept with a TTL (Redis) outlives neither
// this instance nor its members.
func (h *hub) heartbeat() {
	defer h.s.bg.Done()
	t := time.NewTicker(10 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-h.s.stop:
			return
		case <-t.C:
		}
		h.mu.Lock()
		var members []struct {
			sid string
			m   protocol.Member
		}
		sids := make([]string, 0, len(h.rooms))
		for sid, r := range h.rooms {
			sids = append(sids, sid)
			r.mu.Lock()
			for _, c := range r.clients {
				members = append(members, struct {
					sid string
					m   protocol.Member
				}{sid, c.member()})
			}
			r.mu.Unlock()
		}
		h.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		for _, x := range members {
			_ = h.s.broker.Join(ctx, x.sid, x.m)
		}
		exp := time.Now().Add(h.s.cfg.SessionTTL)
		for _, sid := range sids {
			_ = h.s.broker.ExtendSession(ctx, sid, exp)
		}
		cancel()
	}
}

// deliver is the room's broker Handler: it hands p to every local member
// that should get it, encoding it once.
func (r *room) deliver(p *Publication) {
	if p.Type == typeRevoke {
		r.revoke(p)
		return
	}
	var enc []byte
	r.mu.Lock()
	for _, c := range r.list {
		c.offer(p, &enc)
	}
	r.mu.Unlock()
}

// present reports whether client id cid is a member of the room's session,
// here or on another instance.
func (r *room) present(ctx context.Context, cid string) bool {
	r.mu.Lock()
	_, ok := r.clients[cid]
	r.mu.Unlock()
	if ok {
		return true
	}
	ms, err := r.hub.s.broker.Members(ctx, r.id)
	if err != nil {
		return false
	}
	for _, m := range ms {
		if m.ClientID == cid {
			return true
		}
	}
	return false
}

// bucket is a token bucket: rate tokens per second, up to burst, held by
// value in its connection (init fills it). It is safe for concurrent use
// (a connection's errors are sent by other goroutines than its reader).
type bucket struct {
	rate, burst, tokens float64
	last                time.Time
	mu                  sync.Mutex
}

// init fills a bucket held by value (before anyone uses it).
func (b *bucket) init(rate, burst float64, now time.Time) {
	b.rate, b.burst, b.tokens, b.last = rate, burst, burst, now
}

// take takes one token; it reports false when the bucket is empty.
func (b *bucket) take(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.tokens += now.Sub(b.last).Seconds() * b.rate
	if b.tokens > b.burst {
		b.tokens = b.burst
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
