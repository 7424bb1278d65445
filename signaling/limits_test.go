package signaling_test

import (
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/virtutune/link/protocol"
	"github.com/virtutune/link/signaling"
)

// waitClose reads until the connection closes and checks the close code.
func waitClose(t *testing.T, c *wsClient, code int) {
	t.Helper()
	for {
		_, err := c.read(10 * time.Second)
		if err == nil {
			continue
		}
		if !websocket.IsCloseError(err, code) {
			t.Fatalf("closed with %v, want %d", err, code)
		}
		return
	}
}

// The member bound: one more of a full role is closed with 4103.
func TestMembersPerSessionBound(t *testing.T) {
	ts := newServer(t, func(c *signaling.Config) { c.Limits.MaxMembers, c.Limits.PCSlots = 4, 1 })
	s := ts.createSession(t)
	for i := 0; i < 3; i++ {
		c, _ := ts.join(t, s.SessionID, ts.memberToken(t, s, "phone"))
		c.sync()
	}
	conn, _, err := ts.dialRaw(t, s.SessionID, ts.memberToken(t, s, "phone"), nil, "")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	waitClose(t, &wsClient{t: t, conn: conn}, protocol.CloseSessionFull)
}

// Sessions and connections per instance: beyond either bound the upgrade is
// refused with 503 and a JSON body.
func TestInstanceBounds(t *testing.T) {
	ts := newServer(t, func(c *signaling.Config) { c.Limits.MaxSessions, c.Limits.MaxConns = 2, 3 })
	a, b, c := ts.createSession(t), ts.createSession(t), ts.createSession(t)
	ca, _ := ts.join(t, a.SessionID, a.Token)
	cb, _ := ts.join(t, b.SessionID, b.Token)
	_, resp, err := ts.dialRaw(t, c.SessionID, c.Token, nil, "")
	if err == nil {
		t.Fatal("a third session was accepted")
	}
	assertRefusal(t, resp, http.StatusServiceUnavailable)
	ca2, _ := ts.join(t, a.SessionID, ts.memberToken(t, a, "phone")) // third connection, existing session
	_, resp, err = ts.dialRaw(t, b.SessionID, b.Token, nil, "")
	if err == nil {
		t.Fatal("a fourth connection was accepted")
	}
	assertRefusal(t, resp, http.StatusServiceUnavailable)
	// a connection that leaves frees its place
	cb.conn.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		conn, _, err := ts.dialRaw(t, c.SessionID, c.Token, nil, "")
		if err == nil {
			conn.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("place not freed")
		}
		time.Sleep(20 * time.Millisecond) // polling with a deadline
	}
	ca.expect(protocol.TypeConnectionUpdate) // ca2 arrived
	ca.sync()
	ca2.sync()
}

// Signaling messages per session are bounded; beyond, rate_limited.
func TestSignalingRateBound(t *testing.T) {
	ts := newServer(t, func(c *signaling.Config) { c.Limits.SignalRate, c.Limits.SignalBurst = 1, 5 })
	_, pc, phone := pcAndPhone(t, ts)
	m := protocol.MustMarshal(protocol.TypeRTCRestart, protocol.RTCRestart{Reason: "test"})
	m.To = phone.ID
	limited := 0
	for i := 0; i < 8; i++ {
		pc.sendRaw(string(protocol.Encode(m)))
	}
	for _, got := range pc.untilPong() {
		if e := errData(t, got); e.Code == protocol.CodeRateLimited {
			limited++
		}
	}
	if limited < 2 || limited > 3 {
		t.Fatalf("rate_limited %d times, want 3 (8 sent, burst 5)", limited)
	}
	delivered := 0
	phone.send(protocol.TypePing, map[string]any{})
	for phone.next().Type != protocol.TypePong {
		delivered++
	}
	if delivered+limited != 8 {
		t.Fatalf("delivered %d + limited %d != 8", delivered, limited)
	}
}

// A connection whose token expires is closed with 4102 (terminal).
func TestTokenLifetime(t *testing.T) {
	ts := newServer(t, nil)
	s := ts.createSession(t)
	tok, _, err := ts.Tokens().Sign(s.UserID, s.SessionID, "pc", "", 1500*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := ts.join(t, s.SessionID, tok)
	waitClose(t, c, protocol.CloseTokenExpired)
	if !protocol.CloseIsTerminal(protocol.CloseTokenExpired) {
		t.Fatal("4102 must be terminal")
	}
}

// Pings and the token's expiry share one timer: a connection gets its
// pings every PingInterval while its token is valid, and then 4102.
func TestPingsThenTokenExpiry(t *testing.T) {
	ts := newServer(t, func(c *signaling.Config) {
		c.Limits.PingInterval, c.Limits.PongWait = 200*time.Millisecond, time.Second
	})
	s := ts.createSession(t)
	tok, _, err := ts.Tokens().Sign(s.UserID, s.SessionID, "pc", "", 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := ts.join(t, s.SessionID, tok)
	var pings atomic.Int32
	c.conn.SetPingHandler(func(data string) error {
		pings.Add(1)
		return c.conn.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(time.Second))
	})
	waitClose(t, c, protocol.CloseTokenExpired)
	// 2-3 s (the expiry is in whole seconds) at one per 200 ms: 10 or more;
	// a loaded machine may delay some.
	if n := pings.Load(); n < 3 {
		t.Fatalf("%d pings before the token expired, want 10 or more", n)
	}
}

// A pairing expires exactly: once its expiry has passed, neither code works.
func TestPairingExpiresExactly(t *testing.T) {
	ts := newServer(t, func(c *signaling.Config) { c.PairingTTL = time.Second })
	s := ts.createSession(t)
	// Wait for the wall clock to pass the expiry (a timer, bounded by the 1 s TTL).
	<-time.After(time.Until(s.PairingExpiresAt) + time.Millisecond)
	for _, body := range []map[string]string{{"pin": s.PairingPIN}, {"code": s.PairingCode}} {
		code, raw := ts.pairRaw(t, body)
		if code != http.StatusUnauthorized || !strings.Contains(string(raw), "pairing_expired") {
			t.Fatalf("%v just after its expiry: %d %s, want 401 pairing_expired", body, code, raw)
		}
	}
}
