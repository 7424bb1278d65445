package signaling_test

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"
	"go.uber.org/goleak"

	"github.com/virtutune/link/internal/testkit"
	"github.com/virtutune/link/protocol"
	"github.com/virtutune/link/signaling"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// go-redis and httptest keep pooled connections briefly after Close.
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
	)
}

// pcAndPhone creates a session and joins a PC and a paired phone.
func pcAndPhone(t *testing.T, ts *testServer) (sess protocol.SessionResponse, pc, phone *wsClient) {
	t.Helper()
	sess = ts.createSession(t)
	pc, _ = ts.join(t, sess.SessionID, sess.Token)
	// The reader starts after the join is announced: once the PC's ping is
	// answered, its connected notice is in the session's history, so the
	// phone's snapshot covers it.
	pc.sync()
	ph := ts.pair(t, sess)
	phone, _ = ts.join(t, sess.SessionID, ph.Token)
	// The PC sees the phone arrive.
	m := pc.expect(protocol.TypeConnectionUpdate)
	var cu protocol.ConnectionUpdate
	mustUnmarshal(t, m.Data, &cu)
	if cu.Status != protocol.StatusConnected || cu.ClientID != phone.ID || cu.UserID != sess.UserID {
		t.Fatalf("pc saw %+v", cu)
	}
	return sess, pc, phone
}

// Original: test_connect — connecting succeeds and the first message is the
// newcomer's own connection_update connected with its user id.
func TestConnectFirstMessageIsOwnConnectionUpdate(t *testing.T) {
	ts := newServer(t, nil)
	sess := ts.createSession(t)
	conn, _, err := ts.dialRaw(t, sess.SessionID, sess.Token, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := &wsClient{t: t, conn: conn}
	m := c.expect(protocol.TypeConnectionUpdate)
	var cu protocol.ConnectionUpdate
	mustUnmarshal(t, m.Data, &cu)
	if cu.Status != "connected" || cu.UserID != sess.UserID || cu.Role != "pc" {
		t.Fatalf("connection_update = %+v", cu)
	}
	// The seed's exact shape: data.status and data.user_id.
	var raw map[string]any
	mustUnmarshal(t, m.Data, &raw)
	if raw["status"] != "connected" || raw["user_id"] != float64(sess.UserID) {
		t.Fatalf("raw data = %v", raw)
	}
	st := c.expect(protocol.TypeSessionState)
	var snap protocol.SessionState
	mustUnmarshal(t, st.Data, &snap)
	if snap.SessionID != sess.SessionID || len(snap.Members) != 1 || snap.Members[0].ClientID != cu.ClientID {
		t.Fatalf("snapshot = %+v", snap)
	}
}

// Original: test_invalid_session — an unknown session id is refused.
func TestUnknownSessionRefused(t *testing.T) {
	ts := newServer(t, nil)
	tok, _, err := ts.Tokens().Sign(7, "nosuchsession123", "pc", "", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	_, resp, err := ts.dialRaw(t, "nosuchsession123", tok, nil, "")
	if err == nil {
		t.Fatal("dial succeeded")
	}
	assertRefusal(t, resp, http.StatusNotFound)
}

// Original: test_chord_change — reaches the other member, not the sender.
func TestChordChangeReachesOtherNotSender(t *testing.T) {
	ts := newServer(t, nil)
	_, pc, phone := pcAndPhone(t, ts)
	phone.send(protocol.TypeChordChange, map[string]string{"chord": "Am"})
	m := pc.expect(protocol.TypeChordChange)
	var cc protocol.ChordChange
	mustUnmarshal(t, m.Data, &cc)
	if cc.Chord != "Am" || m.From != phone.ID || m.Seq != 1 || m.Off == 0 {
		t.Fatalf("pc got %+v %s", cc, protocol.Encode(m))
	}
	phone.sync() // nothing came back to the sender before the pong
	pc.sync()
}

// Original: test_ping_pong — pong echoes the timestamp, to the sender alone.
func TestPingPong(t *testing.T) {
	ts := newServer(t, nil)
	_, pc, phone := pcAndPhone(t, ts)
	for _, ts := range []string{`"2024-01-01T00:00:00Z"`, `1718000000123`, `1718000000123.5`} {
		pc.sendRaw(`{"type":"ping","data":{"timestamp":` + ts + `}}`)
		m := pc.expect(protocol.TypePong)
		var d struct {
			Timestamp json.RawMessage `json:"timestamp"`
		}
		mustUnmarshal(t, m.Data, &d)
		if string(d.Timestamp) != ts {
			t.Fatalf("pong timestamp %s, want %s", d.Timestamp, ts)
		}
	}
	phone.sync()
}

// Original: test_practice_start / test_practice_end — every member, the sender
// included, gets practice_update.
func TestPracticeUpdateToEveryone(t *testing.T) {
	ts := newServer(t, nil)
	_, pc, phone := pcAndPhone(t, ts)
	for _, c := range []struct {
		typ    protocol.Type
		status string
	}{{protocol.TypePracticeStart, "started"}, {protocol.TypePracticeEnd, "ended"}} {
		phone.send(c.typ, map[string]string{"timestamp": "2024-01-01T00:00:00Z"})
		for _, who := range []*wsClient{phone, pc} {
			m := who.expect(protocol.TypePracticeUpdate)
			var pu protocol.PracticeUpdate
			mustUnmarshal(t, m.Data, &pu)
			if pu.Status != c.status || string(pu.Timestamp) != `"2024-01-01T00:00:00Z"` {
				t.Fatalf("practice_update = %+v", pu)
			}
		}
	}
}

// Original: test_invalid_json / test_unknown_message_type — an error, and the
// connection stays usable.
func TestInvalidJSONAndUnknownType(t *testing.T) {
	ts := newServer(t, nil)
	_, pc, phone := pcAndPhone(t, ts)
	phone.sendRaw(`{not json`)
	if e := errData(t, phone.next()); e.Message != "Invalid JSON format" || e.Code != protocol.CodeInvalidJSON {
		t.Fatalf("error = %+v", e)
	}
	phone.sendRaw(`{"type":"strum","data":{}}`)
	if e := errData(t, phone.next()); e.Message != "Unknown message type: strum" || e.Code != protocol.CodeUnknownType {
		t.Fatalf("error = %+v", e)
	}
	phone.sendRaw(`{"type":"chord_change","data":{}}`)
	if e := errData(t, phone.next()); e.Message != "Chord is required" {
		t.Fatalf("error = %+v", e)
	}
	// still usable
	phone.send(protocol.TypeChordChange, map[string]string{"chord": "G"})
	m := pc.expect(protocol.TypeChordChange)
	if !strings.Contains(string(m.Data), `"G"`) {
		t.Fatalf("pc got %s", m.Data)
	}
	phone.sync()
}

// Original: test_disconnect — the other member sees connection_update
// disconnected (at once when the client closes the WebSocket).
func TestDisconnectNotice(t *testing.T) {
	ts := newServer(t, nil)
	sess, pc, phone := pcAndPhone(t, ts)
	phone.bye()
	m := pc.expect(protocol.TypeConnectionUpdate)
	var cu protocol.ConnectionUpdate
	mustUnmarshal(t, m.Data, &cu)
	if cu.Status != "disconnected" || cu.UserID != sess.UserID || cu.ClientID != phone.ID {
		t.Fatalf("connection_update = %+v", cu)
	}
}

// The newcomer's snapshot carries the current chord, practice and members.
func TestSnapshotForNewcomer(t *testing.T) {
	ts := newServer(t, nil)
	sess, pc, phone := pcAndPhone(t, ts)
	phone.send(protocol.TypeChordChange, map[string]string{"chord": "F#m7"})
	pc.expect(protocol.TypeChordChange)
	phone.send(protocol.TypePracticeStart, map[string]any{"timestamp": 1718000000000})
	phone.expect(protocol.TypePracticeUpdate)
	pc.expect(protocol.TypePracticeUpdate)
	third, snap := ts.join(t, sess.SessionID, ts.memberToken(t, sess, "phone"))
	if snap.Chord != "F#m7" || snap.ChordFrom != phone.ID || snap.Practice.Status != "started" ||
		string(snap.Practice.Timestamp) != "1718000000000" || len(snap.Members) != 3 || snap.Offset == 0 {
		t.Fatalf("snapshot = %+v", snap)
	}
	third.sync()
	ctx := testkit.Context(t, 5*time.Second)
	st, err := ts.Broker().State(ctx, sess.SessionID)
	if err != nil || st.Chord != "F#m7" {
		t.Fatalf("state = %+v, %v", st, err)
	}
}

func assertRefusal(t *testing.T, resp *http.Response, status int) {
	t.Helper()
	if resp == nil {
		t.Fatalf("no HTTP response, want %d", status)
	}
	defer resp.Body.Close()
	if resp.StatusCode != status {
		t.Fatalf("status %d, want %d", resp.StatusCode, status)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("content type %q", ct)
	}
	var body protocol.APIError
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || body.Message == "" || body.Code == "" {
		t.Fatalf("body: %+v %v", body, err)
	}
}

func signWith(t *testing.T, method jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Every refusal happens before the upgrade, with a JSON body.
func TestRefusals(t *testing.T) {
	ts := newServer(t, func(c *signaling.Config) { c.AllowedOrigins = []string{"https://app.virtutune.example"} })
	a := ts.createSession(t)
	b := ts.createSession(t)
	now := time.Now()
	claims := func(mod func(jwt.MapClaims)) jwt.MapClaims {
		c := jwt.MapClaims{"sub": fmt.Sprint(a.UserID), "sid": a.SessionID, "role": "pc",
			"iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}
		if mod != nil {
			mod(c)
		}
		return c
	}
	none := signWith(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, claims(nil))
	hs512 := signWith(t, jwt.SigningMethodHS512, testSecret, claims(nil))
	cases := []struct {
		name   string
		sid    string
		token  string
		header http.Header
		status int
	}{
		{"no token", a.SessionID, "", nil, 401},
		{"garbage token", a.SessionID, "not.a.jwt", nil, 401},
		{"bad signature", a.SessionID, signWith(t, jwt.SigningMethodHS256, []byte("another-secret-another-secret-xx"), claims(nil)), nil, 401},
		{"expired", a.SessionID, signWith(t, jwt.SigningMethodHS256, testSecret, claims(func(c jwt.MapClaims) {
			c["exp"] = now.Add(-time.Hour).Unix()
		})), nil, 401},
		{"no exp", a.SessionID, signWith(t, jwt.SigningMethodHS256, testSecret, claims(func(c jwt.MapClaims) { delete(c, "exp") })), nil, 401},
		{"alg none", a.SessionID, none, nil, 401},
		{"alg HS512", a.SessionID, hs512, nil, 401},
		{"bad role", a.SessionID, signWith(t, jwt.SigningMethodHS256, testSecret, claims(func(c jwt.MapClaims) { c["role"] = "admin" })), nil, 401},
		{"bad sub", a.SessionID, signWith(t, jwt.SigningMethodHS256, testSecret, claims(func(c jwt.MapClaims) { c["sub"] = "alice" })), nil, 401},
		{"pairing token", a.SessionID, ts.pairingJWT(t, a), nil, 401},
		{"token of another session", b.SessionID, a.Token, nil, 403},
		{"bad origin", a.SessionID, a.Token, http.Header{"Origin": {"https://evil.example"}}, 403},
		{"unknown session", "unknownsession99", signWith(t, jwt.SigningMethodHS256, testSecret, claims(func(c jwt.MapClaims) {
			c["sid"] = "unknownsession99"
		})), nil, 404},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			conn, resp, err := ts.dialRaw(t, c.sid, c.token, c.header, "")
			if err == nil {
				conn.Close()
				t.Fatal("dial succeeded")
			}
			assertRefusal(t, resp, c.status)
		})
	}
	t.Run("bearer header", func(t *testing.T) {
		conn, _, err := ts.dialRaw(t, a.SessionID, "", http.Header{"Authorization": {"Bearer " + a.Token}}, "")
		if err != nil {
			t.Fatal(err)
		}
		conn.Close()
	})
	t.Run("allowed origins", func(t *testing.T) {
		for _, o := range []string{"https://app.virtutune.example", ts.URL} {
			conn, _, err := ts.dialRaw(t, a.SessionID, a.Token, http.Header{"Origin": {o}}, "")
			if err != nil {
				t.Fatalf("origin %s: %v", o, err)
			}
			conn.Close()
		}
	})
	t.Run("a minted token joins", func(t *testing.T) {
		tok := signWith(t, jwt.SigningMethodHS256, testSecret, claims(func(c jwt.MapClaims) { c["role"] = "phone" }))
		c, _ := ts.join(t, a.SessionID, tok)
		// (the connections of the subtests above may still be announcing
		// themselves: their notices may follow this member's snapshot)
		c.send(protocol.TypePing, map[string]any{})
		for m := c.next(); m.Type != protocol.TypePong; m = c.next() {
			if m.Type != protocol.TypeConnectionUpdate {
				t.Fatalf("got %s", protocol.Encode(m))
			}
		}
	})
}

// A member of one session never receives anything of another, with 50
// sessions active at once.
func TestSessionIsolation(t *testing.T) {
	ts := newServer(t, func(c *signaling.Config) {
		// 50 sessions and 100 WebSockets from one loopback address
		c.Limits.SessionsPerMinute, c.Limits.UpgradesPerMinute, c.Limits.MaxWSPerAddr = 1e9, 1e9, 1e9
	})
	const n = 50
	type pair struct {
		sess      protocol.SessionResponse
		pc, phone *wsClient
	}
	pairs := make([]pair, n)
	for i := range pairs {
		s, pc, ph := pcAndPhone(t, ts)
		pairs[i] = pair{s, pc, ph}
	}
	chords := []string{"C", "G", "Am", "F", "D", "E", "Em", "A", "Dm", "B7"}
	var wg sync.WaitGroup
	for i := range pairs {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			p := pairs[i]
			// each session sends its own sequence of chords
			for k := 0; k < 10; k++ {
				p.phone.send(protocol.TypeChordChange, map[string]string{"chord": chords[(i+k)%len(chords)]})
			}
		}(i)
	}
	wg.Wait()
	for i, p := range pairs {
		for k := 0; k < 10; k++ {
			m := p.pc.expect(protocol.TypeChordChange)
			var cc protocol.ChordChange
			mustUnmarshal(t, m.Data, &cc)
			if want := chords[(i+k)%len(chords)]; cc.Chord != want || m.From != p.phone.ID {
				t.Fatalf("session %d message %d: %s from %s, want %s from %s", i, k, cc.Chord, m.From, want, p.phone.ID)
			}
		}
		p.pc.sync()
		p.phone.sync()
	}
	// Signaling cannot cross sessions either.
	pairs[0].pc.send(protocol.TypeRTCRestart, map[string]any{})
	_ = pairs[0].pc.next()
	msg := protocol.MustMarshal(protocol.TypeRTCRestart, protocol.RTCRestart{})
	msg.To = pairs[1].phone.ID
	pairs[0].pc.sendRaw(string(protocol.Encode(msg)))
	if e := errData(t, pairs[0].pc.next()); e.Code != protocol.CodeInvalidTarget {
		t.Fatalf("error = %+v", e)
	}
	pairs[1].phone.sync()
}

// Pairing: a short link and a 6-digit code, single use together, and the
// phone's token is a session token with a client id of its own.
func TestPairing(t *testing.T) {
	ts := newServer(t, nil)
	s := ts.createSession(t)
	u, err := url.Parse(s.PairingURL)
	if err != nil || u.Path != "/p/"+s.PairingCode || len(s.PairingCode) != signaling.CodeLen || len(s.PairingURL) > 60 {
		t.Fatalf("pairing url %q (code %q): want http://host/p/<12 characters>, at most 60 in all", s.PairingURL, s.PairingCode)
	}
	if len(s.PairingPIN) != 6 || strings.Trim(s.PairingPIN, "0123456789") != "" {
		t.Fatalf("pairing pin %q", s.PairingPIN)
	}
	// One pixel per module, a 4-module quiet zone: version 5 at most (37 modules).
	if !strings.HasPrefix(s.PairingQR, "data:image/png;base64,") || s.PairingQRModules < 21+8 || s.PairingQRModules > 37+8 {
		t.Fatalf("pairing QR: %d modules, %.40q", s.PairingQRModules, s.PairingQR)
	}
	if d := time.Until(s.PairingExpiresAt); d > 300*time.Second || d < 290*time.Second {
		t.Fatalf("pairing expires in %v, want 300 s", d)
	}
	if s.ClientID == "" {
		t.Fatal("no client id for the PC")
	}
	// The PC reached the server as 127.0.0.1: the phone's link must not say so
	// when this machine has a LAN address; the PC's own ws_url keeps its host.
	if hasLANAddr() && (strings.Contains(s.PairingURL, "://127.0.0.1") || strings.Contains(s.PairingURL, "://localhost")) {
		t.Fatalf("pairing URL %q names loopback", s.PairingURL)
	}
	if !strings.HasPrefix(s.WSURL, "ws://127.0.0.1:") {
		t.Fatalf("ws_url %q", s.WSURL)
	}
	// Scanned codes arrive in any case.
	code, body := ts.pairRaw(t, map[string]string{"code": strings.ToLower(s.PairingCode)})
	if code != 200 {
		t.Fatalf("first pair: %d %s", code, body)
	}
	var ph protocol.PairResponse
	if err := json.Unmarshal(body, &ph); err != nil || ph.ClientID == "" || ph.ClientID == s.ClientID || ph.Role != "phone" {
		t.Fatalf("pair answer %s", body)
	}
	claims, err := ts.Tokens().Parse(ph.Token)
	if err != nil || claims.ClientID != ph.ClientID {
		t.Fatalf("phone token: %v, cid %q, want %q", err, claims.ClientID, ph.ClientID)
	}
	if code, _ := ts.pairRaw(t, map[string]string{"code": s.PairingCode}); code != http.StatusGone {
		t.Fatalf("second pair: %d, want 410", code)
	}
	// The 6-digit code belonged to the same pairing: it went with it.
	if code, _ := ts.pairRaw(t, map[string]string{"pin": s.PairingPIN}); code != http.StatusGone {
		t.Fatalf("the pin after the link was used: %d, want 410", code)
	}
	for _, body := range []map[string]string{{"pairing_token": ts.pairingJWT(t, s)}, {"code": s.Token}, {"pin": "12345"}} {
		if code, _ := ts.pairRaw(t, body); code != http.StatusUnauthorized {
			t.Fatalf("%v: %d, want 401", body, code)
		}
	}
	if code, _ := ts.pairRaw(t, map[string]string{}); code != http.StatusBadRequest {
		t.Fatalf("no code: %d, want 400", code)
	}
	// A fresh pairing, by the typed code this time.
	p := ts.newPairing(t, s)
	code, body = ts.pairRaw(t, map[string]string{"pin": p.PairingPIN[:3] + " " + p.PairingPIN[3:]})
	if code != 200 {
		t.Fatalf("pair by pin: %d %s", code, body)
	}
	if code, _ := ts.pairRaw(t, map[string]string{"code": p.PairingCode}); code != http.StatusGone {
		t.Fatalf("the link after the pin was used: %d, want 410", code)
	}
}

// newPairing asks for a fresh pairing of s as its PC.
func (ts *testServer) newPairing(t testing.TB, s protocol.SessionResponse) protocol.PairingResponse {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, ts.URL+"/api/sessions/"+s.SessionID+"/pairing", nil)
	req.Header.Set("Authorization", "Bearer "+s.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var p protocol.PairingResponse
	if resp.StatusCode != 201 || json.NewDecoder(resp.Body).Decode(&p) != nil {
		t.Fatalf("new pairing: status %d", resp.StatusCode)
	}
	return p
}

// The server closes every client with 1001 on shutdown.
func TestShutdownClosesWith1001(t *testing.T) {
	ts := newServer(t, nil)
	_, pc, phone := pcAndPhone(t, ts)
	done := make(chan error, 1)
	go func() { done <- ts.Close() }()
	for _, c := range []*wsClient{pc, phone} {
		c.expectClose(websocket.CloseGoingAway)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// The PC can ask for a fresh pairing link for its session; nobody else can.
func TestNewPairingLink(t *testing.T) {
	ts := newServer(t, nil)
	s := ts.createSession(t)
	other := ts.createSession(t)
	post := func(sid, token string) *http.Response {
		req, _ := http.NewRequest(http.MethodPost, ts.URL+"/api/sessions/"+sid+"/pairing", nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	ph := ts.pair(t, s)
	for _, c := range []struct {
		sid, token string
		status     int
	}{{s.SessionID, "", 401}, {s.SessionID, other.Token, 403}, {s.SessionID, ph.Token, 403}} {
		resp := post(c.sid, c.token)
		resp.Body.Close()
		if resp.StatusCode != c.status {
			t.Fatalf("%+v: status %d", c, resp.StatusCode)
		}
	}
	resp := post(s.SessionID, s.Token)
	defer resp.Body.Close()
	var p protocol.PairingResponse
	if resp.StatusCode != 201 || json.NewDecoder(resp.Body).Decode(&p) != nil || p.PairingURL == s.PairingURL {
		t.Fatalf("status %d %+v", resp.StatusCode, p)
	}
	// A newer pairing ends the older one, unused: neither of its codes works.
	newer := ts.newPairing(t, s)
	for _, body := range []map[string]string{{"code": p.PairingCode}, {"pin": p.PairingPIN}} {
		if code, body := ts.pairRaw(t, body); code != http.StatusUnauthorized {
			t.Fatalf("the older pairing's %s after a new one: %d %s, want 401", body, code, body)
		}
	}
	if code, body := ts.pairRaw(t, map[string]string{"code": newer.PairingCode}); code != 200 {
		t.Fatalf("pair with the new link: %d %s", code, body)
	}
}

func hasLANAddr() bool {
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && !ipn.IP.IsLoopback() && !ipn.IP.IsLinkLocalUnicast() {
			return true
		}
	}
	return false
}

// A member whose connection dies (no close frame: a phone asleep, a network
// blip) and that comes back within the grace period was never gone for the
// others; one that does not come back is announced after it.
func TestDisconnectGrace(t *testing.T) {
	ts := newServer(t, func(c *signaling.Config) { c.Limits.DisconnectGrace = 300 * time.Millisecond })
	sess, pc, phone := pcAndPhone(t, ts)
	// A token of the same device (its client id minted in), as a phone that
	// reloads its page has.
	phoneToken, _, err := ts.Tokens().SignClient(sess.UserID, sess.SessionID, "phone", phone.ID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	phoneID := phone.ID
	// The gauge counts a member once its join has returned, a moment after
	// the member got its session_state: wait for it.
	for start := time.Now(); ; {
		n := metricValue(t, ts.Registry(), "virtutune_members", map[string]string{"role": "phone"})
		if n == 1 {
			break
		}
		if time.Since(start) > 5*time.Second {
			t.Fatalf("%v phones joined, want 1", n)
		}
		<-time.After(5 * time.Millisecond)
	}
	phone.conn.UnderlyingConn().Close() // dies without a close frame
	// The server notices the death before the phone comes back (a phone
	// back before that replaces the connection instead: no grace period).
	deadline := time.Now().Add(10 * time.Second)
	for metricValue(t, ts.Registry(), "virtutune_members", map[string]string{"role": "phone"}) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the server never noticed the dead connection")
		}
		time.Sleep(5 * time.Millisecond) // polling a gauge with a deadline
	}
	phone2, _ := ts.rejoin(t, sess.SessionID, phoneToken, phoneID)
	// the PC hears only that the phone is connected again, never that it left
	var cu protocol.ConnectionUpdate
	mustUnmarshal(t, pc.expect(protocol.TypeConnectionUpdate).Data, &cu)
	if cu.Status != "connected" || cu.ClientID != phoneID {
		t.Fatalf("%+v", cu)
	}
	// once the grace period has run out for the dead connection: still nothing
	deadline = time.Now().Add(10 * time.Second)
	for metricValue(t, ts.Registry(), "virtutune_disconnect_grace_total", map[string]string{"outcome": "returned"}) != 1 {
		if time.Now().After(deadline) {
			t.Fatal("the grace period never ended")
		}
		time.Sleep(10 * time.Millisecond) // polling a counter with a deadline
	}
	pc.sync()
	// now it dies for good
	phone2.conn.UnderlyingConn().Close()
	start := time.Now()
	mustUnmarshal(t, pc.expect(protocol.TypeConnectionUpdate).Data, &cu)
	if cu.Status != "disconnected" || cu.ClientID != phoneID {
		t.Fatalf("%+v", cu)
	}
	if time.Since(start) < 250*time.Millisecond {
		t.Fatalf("announced after %v, before the grace period", time.Since(start))
	}
}

// A member that joins with p2p=0 is marked no_p2p for the others, in its
// connection_update and in session_state, so nobody offers it a channel.
func TestNoP2PMember(t *testing.T) {
	ts := newServer(t, nil)
	s := ts.createSession(t)
	pc, _ := ts.join(t, s.SessionID, s.Token)
	pc.sync()
	ph := ts.pair(t, s)
	conn, _, err := ts.dialRaw(t, s.SessionID, ph.Token, nil, "p2p=0")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	phone := &wsClient{t: t, conn: conn}
	phone.expect(protocol.TypeConnectionUpdate)
	var snap protocol.SessionState
	mustUnmarshal(t, phone.expect(protocol.TypeSessionState).Data, &snap)
	var cu protocol.ConnectionUpdate
	mustUnmarshal(t, pc.expect(protocol.TypeConnectionUpdate).Data, &cu)
	if !cu.NoP2P {
		t.Fatalf("connection_update %+v lacks no_p2p", cu)
	}
	third, snap3 := ts.join(t, s.SessionID, ts.memberToken(t, s, "phone"))
	third.sync()
	for _, m := range snap3.Members {
		if m.NoP2P != (m.ClientID == cu.ClientID) {
			t.Fatalf("member %+v", m)
		}
	}
}

// With an API key configured only its holders create sessions, and they may
// name the user; without one, anybody creates a session as a fresh user and
// may not name it.
func TestAPIKeyMode(t *testing.T) {
	post := func(url, key, body string) (int, protocol.SessionResponse) {
		req, _ := http.NewRequest(http.MethodPost, url+"/api/sessions", strings.NewReader(body))
		if key != "" {
			req.Header.Set("Authorization", "Bearer "+key)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var s protocol.SessionResponse
		_ = json.NewDecoder(resp.Body).Decode(&s)
		return resp.StatusCode, s
	}
	keyed := newServer(t, func(c *signaling.Config) { c.APIKey = "k3y-for-the-main-app" })
	if code, _ := post(keyed.URL, "", ""); code != http.StatusUnauthorized {
		t.Fatalf("no key: %d", code)
	}
	if code, _ := post(keyed.URL, "wrong", ""); code != http.StatusUnauthorized {
		t.Fatalf("wrong key: %d", code)
	}
	code, s := post(keyed.URL, "k3y-for-the-main-app", `{"user_id": 4242}`)
	if code != http.StatusCreated || s.UserID != 4242 {
		t.Fatalf("with key and user_id: %d %+v", code, s)
	}
	c, _ := keyed.join(t, s.SessionID, s.Token)
	c.sync()
	open := newServer(t, nil)
	if code, _ := post(open.URL, "", `{"user_id": 4242}`); code != http.StatusForbidden {
		t.Fatalf("naming a user without an API key: %d", code)
	}
	if code, s := post(open.URL, "", ""); code != http.StatusCreated || s.UserID <= 0 || s.UserID > 1<<53 {
		t.Fatalf("open mode: %d %+v", code, s)
	}
}
