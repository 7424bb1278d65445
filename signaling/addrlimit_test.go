package signaling_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/virtutune/link/internal/testkit"
	"github.com/virtutune/link/protocol"
	"github.com/virtutune/link/signaling"
)

// fromAddr returns a dialer whose connections come from local address ip (a
// loopback address other than 127.0.0.1 plays a second client).
func fromAddr(ip string) *net.Dialer {
	return &net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
}

// httpFrom returns an HTTP client whose requests come from ip.
func httpFrom(t testing.TB, ip string) *http.Client {
	tr := &http.Transport{DialContext: fromAddr(ip).DialContext}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 5 * time.Second}
}

// post POSTs body to u and returns the status, the Retry-After header and the body.
func post(t testing.TB, c *http.Client, u string, body any, hdr http.Header) (int, string, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(http.MethodPost, u, rd)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Retry-After"), b
}

// flowFrom runs a whole session from address ip: create, pair, both join,
// a chord crosses. It fails the test if anything is refused.
func flowFrom(t *testing.T, ts *testServer, ip string) {
	t.Helper()
	c := httpFrom(t, ip)
	st, _, b := post(t, c, ts.URL+"/api/sessions", nil, nil)
	if st != http.StatusCreated {
		t.Fatalf("%s: create session: %d %s", ip, st, b)
	}
	var sess protocol.SessionResponse
	mustUnmarshal(t, b, &sess)
	st, _, b = post(t, c, ts.URL+"/api/pair", protocol.PairRequest{Code: sess.PairingCode}, nil)
	if st != http.StatusOK {
		t.Fatalf("%s: pair: %d %s", ip, st, b)
	}
	var ph protocol.PairResponse
	mustUnmarshal(t, b, &ph)
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second, NetDialContext: fromAddr(ip).DialContext}
	dial := func(tok string) *wsClient {
		conn, resp, err := d.Dial(ts.wsURL(sess.SessionID)+"?token="+tok, nil)
		if err != nil {
			st := 0
			if resp != nil {
				st = resp.StatusCode
			}
			t.Fatalf("%s: dial: %v (%d)", ip, err, st)
		}
		t.Cleanup(func() { conn.Close() })
		w := &wsClient{t: t, conn: conn}
		var cu protocol.ConnectionUpdate
		mustUnmarshal(t, w.expect(protocol.TypeConnectionUpdate).Data, &cu)
		w.ID = cu.ClientID
		w.expect(protocol.TypeSessionState)
		return w
	}
	pc := dial(sess.Token)
	phone := dial(ph.Token)
	pc.expect(protocol.TypeConnectionUpdate) // the phone joined
	phone.send(protocol.TypeChordChange, map[string]string{"chord": "Am"})
	if got := chordOf(t, pc.next()); got != "Am" {
		t.Fatalf("%s: chord %q", ip, got)
	}
}

// One address creating sessions as fast as it can gets 429 with a
// Retry-After past its bound; another address creates, pairs, joins and
// plays meanwhile as if nothing happened.
func TestSessionCreationLimitedPerAddress(t *testing.T) {
	ts := newServer(t, func(c *signaling.Config) {
		c.Limits.SessionsPerMinute, c.Limits.SessionBurst = 6, 3
	})
	flooder := httpFrom(t, "127.0.0.1")
	created, limited := 0, 0
	for i := 0; i < 20; i++ {
		st, retry, b := post(t, flooder, ts.URL+"/api/sessions", nil, nil)
		switch st {
		case http.StatusCreated:
			created++
		case http.StatusTooManyRequests:
			limited++
			if n, err := strconv.Atoi(retry); err != nil || n < 1 || n > 60 {
				t.Fatalf("429 with Retry-After %q", retry)
			}
			var e struct{ Code string }
			mustUnmarshal(t, b, &e)
			if e.Code != "rate_limited" {
				t.Fatalf("429 body %s", b)
			}
		default:
			t.Fatalf("create: %d %s", st, b)
		}
	}
	// The burst, and perhaps one more refilled meanwhile (6 a minute).
	if created < 3 || created > 4 || limited != 20-created {
		t.Fatalf("created %d, limited %d of 20 (burst 3, 6 a minute)", created, limited)
	}
	flowFrom(t, ts, "127.0.0.2")
	if st, _, _ := post(t, flooder, ts.URL+"/api/sessions", nil, nil); st != http.StatusTooManyRequests {
		t.Fatalf("the flooder is back to %d", st)
	}
}

// WebSocket attempts (refused ones count too) are bounded per address.
func TestUpgradeAttemptsLimitedPerAddress(t *testing.T) {
	ts := newServer(t, func(c *signaling.Config) {
		c.Limits.UpgradesPerMinute, c.Limits.UpgradeBurst = 6, 5
	})
	sess := ts.createSession(t)
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second, NetDialContext: fromAddr("127.0.0.1").DialContext}
	statuses := map[int]int{}
	for i := 0; i < 12; i++ {
		_, resp, err := d.Dial(ts.wsURL(sess.SessionID)+"?token=bogus", nil)
		if err == nil || resp == nil {
			t.Fatalf("attempt %d: %v", i, err)
		}
		statuses[resp.StatusCode]++
		if resp.StatusCode == http.StatusTooManyRequests && resp.Header.Get("Retry-After") == "" {
			t.Fatal("429 without Retry-After")
		}
	}
	if statuses[http.StatusUnauthorized] < 5 || statuses[http.StatusUnauthorized] > 6 || statuses[http.StatusTooManyRequests] < 6 {
		t.Fatalf("statuses %v: want the burst of 5 (perhaps 6) answered 401, the rest 429", statuses)
	}
	flowFrom(t, ts, "127.0.0.2")
}

// X-Forwarded-For names the client only when the TCP peer is a trusted
// proxy: then two clients behind one proxy have a bound each; from anyone
// else the header is ignored, so it cannot buy a fresh bound.
func TestForwardedForOnlyFromTrustedProxies(t *testing.T) {
	for _, trusted := range []bool{true, false} {
		t.Run(fmt.Sprintf("trusted=%v", trusted), func(t *testing.T) {
			ts := newServer(t, func(c *signaling.Config) {
				c.Limits.SessionsPerMinute, c.Limits.SessionBurst = 1, 2
				if trusted {
					c.TrustedProxies = []string{"127.0.0.0/8"}
				}
			})
			c := httpFrom(t, "127.0.0.1")
			create := func(xff string) int {
				st, _, _ := post(t, c, ts.URL+"/api/sessions", nil, http.Header{"X-Forwarded-For": {xff}})
				return st
			}
			// Two creations each for two clients; a forged left-most hop
			// changes nothing (only the right-most untrusted hop counts).
			got := []int{create("203.0.113.7"), create("198.51.100.1, 203.0.113.7"), create("203.0.113.8"), create("203.0.113.8")}
			want := []int{201, 201, 201, 201}
			if !trusted {
				want = []int{201, 201, 429, 429}
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("statuses %v, want %v", got, want)
			}
			if trusted && create("203.0.113.7") != 429 {
				t.Fatal("a third creation of 203.0.113.7 was not limited")
			}
		})
	}
}

// startHTTP serves ts's signaling server with Server.HTTPServer (every HTTP
// phase bounded, connections per address bounded) on a loopback port.
func startHTTP(t *testing.T, srv *signaling.Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := srv.HTTPServer()
	done := make(chan struct{})
	go func() { defer close(done); _ = hs.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = hs.Shutdown(ctx)
		_ = hs.Close()
		<-done
	})
	return "http://" + ln.Addr().String()
}

// Request bodies that trickle in a byte at a time are cut off at the body
// deadline, and one address cannot hold more connections open than its
// bound: another address is served at once all the while.
func TestSlowBodiesAreCutOff(t *testing.T) {
	srv, err := signaling.New(signaling.Config{Secret: testSecret, Logger: testkit.Logger(t, slog.LevelWarn), Limits: signaling.Limits{
		HeaderTimeout: time.Second, BodyTimeout: time.Second, MaxConnsPerAddr: 10,
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	base := startHTTP(t, srv)
	host := strings.TrimPrefix(base, "http://")

	const n = 25
	type result struct {
		closedAt time.Duration
		early    bool // closed before a single byte of the body was taken
	}
	results := make(chan result, n)
	stop := make(chan struct{})
	defer close(stop)
	var wg sync.WaitGroup
	start := time.Now()
	for i := 0; i < n; i++ {
		conn, err := fromAddr("127.0.0.1").Dial("tcp", host)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _ = fmt.Fprintf(conn, "POST /api/sessions HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n", host)
			// The reader notices the server closing the connection.
			closed := make(chan struct{})
			go func() {
				defer close(closed)
				_ = conn.SetReadDeadline(time.Now().Add(20 * time.Second))
				_, _ = io.Copy(io.Discard, bufio.NewReader(conn))
			}()
			sent := 0
			tick := time.NewTicker(200 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-closed:
					results <- result{closedAt: time.Since(start), early: sent == 0}
					return
				case <-stop:
					return
				case <-tick.C:
					if _, err := conn.Write([]byte(" ")); err == nil {
						sent++
					}
				}
			}
		}()
	}
	// Meanwhile another address is served at once.
	other := httpFrom(t, "127.0.0.2")
	resp, err := other.Get(base + "/healthz")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("another address's request: %v %v", err, resp)
	}
	resp.Body.Close()
	if st, _, b := post(t, other, base+"/api/sessions", nil, nil); st != http.StatusCreated {
		t.Fatalf("another address's session: %d %s", st, b)
	}
	early := 0
	for i := 0; i < n; i++ {
		select {
		case r := <-results:
			if r.early {
				early++
			}
			// header 1 s + body 1 s, with room for a loaded machine
			if r.closedAt > 8*time.Second {
				t.Errorf("a slow body held its connection for %s", r.closedAt)
			}
		case <-time.After(15 * time.Second):
			t.Fatalf("%d of %d slow connections still open after 15 s", n-i, n)
		}
	}
	if early < n-10 {
		t.Errorf("%d connections over the per-address bound of 10 were closed at once, want at least %d", early, n-10)
	}
	wg.Wait()
}

// One address holds at most MaxWSPerAddr WebSockets open at once: one more
// is refused before the upgrade (429); another address joins meanwhile, and
// a closed one frees its slot.
func TestWebSocketsOpenLimitedPerAddress(t *testing.T) {
	ts := newServer(t, func(c *signaling.Config) { c.Limits.MaxWSPerAddr = 3 })
	var held []*wsClient
	for i := 0; i < 3; i++ {
		s := ts.createSession(t)
		c, _ := ts.join(t, s.SessionID, s.Token)
		held = append(held, c)
	}
	s := ts.createSession(t)
	_, resp, err := ts.dialRaw(t, s.SessionID, s.Token, nil, "")
	if err == nil || resp == nil || resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("a fourth WebSocket from one address: %v %+v, want 429 with Retry-After", err, resp)
	}
	flowFrom(t, ts, "127.0.0.2")
	held[0].bye()
	ctx := testkit.Context(t, 10*time.Second)
	for {
		conn, resp, err := ts.dialRaw(t, s.SessionID, s.Token, nil, "")
		if err == nil {
			conn.Close()
			break
		}
		if resp == nil || resp.StatusCode != http.StatusTooManyRequests {
			t.Fatalf("after one closed: %v %+v", err, resp)
		}
		select {
		case <-ctx.Done():
			t.Fatal("the closed WebSocket's slot was not freed")
		case <-time.After(20 * time.Millisecond):
		}
	}
}
