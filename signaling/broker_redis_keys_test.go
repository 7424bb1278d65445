package signaling

import (
	"bytes"
	"errors"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/virtutune/link/internal/testkit"
	"github.com/virtutune/link/protocol"
)

// TestRedisBrokerKeysExpire: every key of a session expires when the session
// does, also the ones Publish creates after CreateSession (the seq hash and
// the stream), after a re-creation, and after ExtendSession.
func TestRedisBrokerKeysExpire(t *testing.T) {
	btNoLeaks(t)
	srv := startTestRedis(t)
	ctx := testkit.Context(t, 20*time.Second)
	b := newTestRedisBroker(t, srv, RedisConfig{})
	sid := btSession(t, ctx, b)
	if err := b.Join(ctx, sid, protocol.Member{ClientID: "x", Role: protocol.RolePhone}); err != nil {
		t.Fatal(err)
	}
	btSubscribe(t, ctx, b, sid) // the instance listens: a field of the session hash
	keys := []string{b.sessKey(sid), b.streamKey(sid), b.memberKey(sid)}
	check := func(what string, want time.Time) {
		t.Helper()
		for _, k := range keys {
			ttl, err := b.client.PTTL(ctx, k).Result() // (PEXPIRETIME needs Redis 7)
			if err != nil {
				t.Fatal(err)
			}
			if got := time.Now().Add(ttl); ttl < 0 || got.Sub(want).Abs() > 2*time.Second {
				t.Errorf("%s: %s has PTTL %v (expires about %v), want expiry at %v", what, k, ttl, got, want)
			}
		}
	}
	info, err := b.Session(ctx, sid)
	if err != nil {
		t.Fatal(err)
	}
	btPublish(t, ctx, b, sid, btChord("x", "C", 0))
	btPublish(t, ctx, b, sid, btChord("y", "D", 0)) // a second sender: new fields of the session hash
	btPublish(t, ctx, b, sid, &Publication{Type: protocol.TypeConnectionUpdate, Data: []byte(`{}`)})
	check("after publishing", info.ExpiresAt)

	later := info.ExpiresAt.Add(time.Hour)
	if err := b.ExtendSession(ctx, sid, later); err != nil {
		t.Fatal(err)
	}
	btPublish(t, ctx, b, sid, btChord("x", "E", 0))
	check("after ExtendSession", later)

	// Re-creating the id drops the senders' seqs, the stream and presence;
	// Publish creates the stream again, with the new expiry.
	again := time.Now().Add(5 * time.Minute).Truncate(time.Millisecond)
	if err := b.CreateSession(ctx, SessionInfo{ID: sid, UserID: 1, CreatedAt: time.Now(), ExpiresAt: again}); err != nil {
		t.Fatal(err)
	}
	if err := b.Join(ctx, sid, protocol.Member{ClientID: "x", Role: protocol.RolePhone}); err != nil {
		t.Fatal(err)
	}
	btPublish(t, ctx, b, sid, btChord("x", "F", 0))
	check("after re-creating", again)
}

// TestRedisBrokerSilentPubSub: a PubSub connection that goes silent without
// an error (a peer or NAT that vanished) is replaced after the health check's
// unanswered ping, and the session catches up from its stream.
func TestRedisBrokerSilentPubSub(t *testing.T) {
	btNoLeaks(t)
	srv := startTestRedis(t)
	ctx := testkit.Context(t, 20*time.Second)
	u, err := url.Parse(srv.url())
	if err != nil {
		t.Fatal(err)
	}
	px := newFreezeProxy(t, u.Host)
	a := newTestRedisBroker(t, srv, RedisConfig{})
	var b *RedisBroker
	b, err = NewRedisBroker(ctx, RedisConfig{URL: "redis://" + px.addr(), Prefix: "vttest:", Logger: testkit.Logger(t, slog.LevelDebug)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	sid := btSession(t, ctx, a)
	rb, _ := btSubscribe(t, ctx, b, sid)
	btPublish(t, ctx, a, sid, btChord("x", "C", 0))
	rb.wait(t, ctx, 1)

	// Let the subscription's first catch-up from the stream (an XRANGE, the
	// only one of this test) finish: after the freeze only the health check
	// may bring what pub/sub no longer carries.
	testkit.Eventually(ctx, t, "the first catch-up", func() bool {
		info, err := a.client.Info(ctx, "commandstats").Result()
		if err != nil || !strings.Contains(info, "cmdstat_xrange:calls=1,") {
			return false
		}
		b.repairMu.Lock()
		defer b.repairMu.Unlock()
		g := b.group(sid)
		g.mu.Lock()
		defer g.mu.Unlock()
		return len(b.repairSet) == 0 && !g.catchup
	})
	px.freeze() // B's PubSub connection stops carrying bytes, but stays open
	btPublish(t, ctx, a, sid, btChord("x", "D", 0))
	btCheckOffsets(t, rb.wait(t, ctx, 2), 1)
}

// freezeProxy forwards TCP connections to a target. After freeze, the
// connections that sent a SUBSCRIBE before carry nothing more (they stay
// open; the others and new ones work).
type freezeProxy struct {
	ln     net.Listener
	target string
	done   chan struct{}
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  []net.Conn
	gen    atomic.Int64 // connections of a generation below frozen may be frozen
	frozen atomic.Int64
}

// proxied is one proxied connection.
type proxied struct {
	gen int64
	sub atomic.Bool // sent a SUBSCRIBE
}

func newFreezeProxy(t *testing.T, target string) *freezeProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &freezeProxy{ln: ln, target: target, done: make(chan struct{})}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() {
		close(p.done)
		_ = ln.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			_ = c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

func (p *freezeProxy) addr() string { return p.ln.Addr().String() }

func (p *freezeProxy) freeze() { p.frozen.Store(p.gen.Add(1)) }

func (p *freezeProxy) accept() {
	defer p.wg.Done()
	testkit.Forward(p.ln, p.target, func(c, u net.Conn) bool {
		p.mu.Lock()
		p.conns = append(p.conns, c, u)
		p.mu.Unlock()
		pc := &proxied{gen: p.gen.Load()}
		p.wg.Add(2)
		go p.pipe(u, c, pc, true)
		go p.pipe(c, u, pc, false)
		return true
	})
}

func (p *freezeProxy) pipe(dst, src net.Conn, pc *proxied, fromClient bool) {
	defer p.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if fromClient && bytes.Contains(bytes.ToLower(buf[:n]), []byte("subscribe")) {
			pc.sub.Store(true)
		}
		if n > 0 && pc.sub.Load() && pc.gen < p.frozen.Load() {
			<-p.done // frozen: drop everything, keep the connection open
			return
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			_ = dst.Close()
			return
		}
	}
}

// TestRedisBrokerEarlierSeqLayout: a session that lived through the upgrade
// to the session-hash layout keeps its senders' seqs from the earlier
// release's seq hash ("seq:ms" per sender): a duplicate is refused, the next
// seq accepted, LastSeq and State read either place, and a sender that
// published again is moved into the session hash.
func TestRedisBrokerEarlierSeqLayout(t *testing.T) {
	btNoLeaks(t)
	srv := startTestRedis(t)
	ctx := testkit.Context(t, 20*time.Second)
	b := newTestRedisBroker(t, srv, RedisConfig{})
	sid := btSession(t, ctx, b)
	ms := strconv.FormatInt(time.Now().UnixMilli(), 10)
	if err := b.client.HSet(ctx, b.seqKey(sid), "x", "5:"+ms, "y", "9:"+ms).Err(); err != nil {
		t.Fatal(err)
	}
	if n, err := b.LastSeq(ctx, sid, "x"); err != nil || n != 5 {
		t.Fatalf("LastSeq(x) = %d, %v before x published again, want 5 from the earlier layout", n, err)
	}
	if r := btPublish(t, ctx, b, sid, btChord("x", "C", 5)); !r.Duplicate {
		t.Fatalf("seq 5 again: %+v, want a duplicate", r)
	}
	if r := btPublish(t, ctx, b, sid, btChord("x", "D", 6)); r.Duplicate || r.Seq != 6 || r.Off != 1 {
		t.Fatalf("seq 6: %+v, want published at offset 1", r)
	}
	if left, err := b.client.HExists(ctx, b.seqKey(sid), "x").Result(); err != nil || left {
		t.Fatalf("x in the earlier seq hash after it published: %v, %v; want moved", left, err)
	}
	if q, err := b.client.HGet(ctx, b.sessKey(sid), "q:x").Result(); err != nil || q != "6" {
		t.Fatalf("session hash q:x = %q, %v, want 6", q, err)
	}
	if n, err := b.LastSeq(ctx, sid, "x"); err != nil || n != 6 {
		t.Fatalf("LastSeq(x) = %d, %v, want 6", n, err)
	}
	st, err := b.State(ctx, sid)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Seqs) != 2 || st.Seqs["x"] != 6 || st.Seqs["y"] != 9 || st.Chord != "D" || st.Offset != 1 {
		t.Fatalf("State = %+v, want seqs x 6 (session hash) and y 9 (earlier layout), chord D at offset 1", st)
	}
	if _, err := b.Publish(ctx, sid, btChord("y", "E", 11)); !errors.Is(err, ErrBadSequence) {
		t.Fatalf("y skipping from 9 to 11: %v, want ErrBadSequence", err)
	}
}
