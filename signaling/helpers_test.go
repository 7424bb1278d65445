package signaling_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/virtutune/link/internal/testkit"
	"github.com/virtutune/link/protocol"
	"github.com/virtutune/link/signaling"
	"github.com/virtutune/link/signaling/redistest"
)

var testSecret = []byte("0123456789abcdef0123456789abcdef-test")

type testServer struct {
	*signaling.Server
	HTTP *httptest.Server
	URL  string
}

// newServer starts a signaling server on loopback; cleanup closes it.
func newServer(t testing.TB, mod func(*signaling.Config)) *testServer {
	t.Helper()
	cfg := signaling.Config{Secret: testSecret, Logger: testkit.Logger(t, slog.LevelWarn)}
	if mod != nil {
		mod(&cfg)
	}
	srv, err := signaling.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	t.Cleanup(func() {
		_ = srv.Close()
		hs.Close()
	})
	return &testServer{Server: srv, HTTP: hs, URL: hs.URL}
}

// pcLeavesAfterC: the phone plays C, the PC gets it and leaves, and the
// phone is told. It returns the offset the PC saw last and its client id,
// what the PC resumes with.
func pcLeavesAfterC(pc, phone *wsClient) (lastOff uint64, pcID string) {
	pc.t.Helper()
	phone.send(protocol.TypeChordChange, map[string]string{"chord": "C"})
	lastOff = pc.next().Off
	pcID = pc.ID
	pc.bye()
	phone.expect(protocol.TypeConnectionUpdate)
	return lastOff, pcID
}

// withBroker is newServer on broker b (just made: err is what making it
// returned, and fails the test), which is closed at cleanup after the server.
func withBroker(t testing.TB, b signaling.Broker, err error) *testServer {
	t.Helper()
	return withBrokerConfig(t, b, err, nil)
}

// withBrokerConfig is withBroker with mod, when not nil, changing the
// server's config.
func withBrokerConfig(t testing.TB, b signaling.Broker, err error, mod func(*signaling.Config)) *testServer {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return newServer(t, func(c *signaling.Config) {
		c.Broker = b
		if mod != nil {
			mod(c)
		}
	})
}

// newRedisInstance is withBrokerConfig on a RedisBroker on rs (key prefix
// prefix, instance name name).
func newRedisInstance(t testing.TB, rs *redistest.Server, prefix, name string, mod func(*signaling.Config)) *testServer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	b, err := signaling.NewRedisBroker(ctx, signaling.RedisConfig{URL: rs.URL(), Prefix: prefix, Instance: name, Logger: testkit.Logger(t, slog.LevelWarn)})
	return withBrokerConfig(t, b, err, mod)
}

// memberToken mints a token of its own (its own client id) for one more
// member of session s: a client id is bound to its token, so members never
// share one.
func (ts *testServer) memberToken(t testing.TB, s protocol.SessionResponse, role string) string {
	t.Helper()
	memberSeq++
	tok, _, err := ts.Tokens().SignClient(s.UserID, s.SessionID, role, fmt.Sprintf("member-%d", memberSeq), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

var memberSeq int

func (ts *testServer) createSession(t testing.TB) protocol.SessionResponse {
	t.Helper()
	resp, err := http.Post(ts.URL+"/api/sessions", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("create session: status %d", resp.StatusCode)
	}
	var s protocol.SessionResponse
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		t.Fatal(err)
	}
	return s
}

// pair trades the pairing code of s for a phone token.
func (ts *testServer) pair(t testing.TB, s protocol.SessionResponse) protocol.PairResponse {
	t.Helper()
	code, body := ts.pairRaw(t, protocol.PairRequest{Code: s.PairingCode})
	if code != http.StatusOK {
		t.Fatalf("pair: status %d %s", code, body)
	}
	var p protocol.PairResponse
	if err := json.Unmarshal(body, &p); err != nil {
		t.Fatal(err)
	}
	return p
}

// pairRaw posts body to /api/pair and returns the status and body.
func (ts *testServer) pairRaw(t testing.TB, body any) (int, []byte) {
	t.Helper()
	b, _ := json.Marshal(body)
	req, err := http.NewRequest(http.MethodPost, ts.URL+"/api/pair", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	return doRequest(t, req)
}

// doRequest sends req and returns the status and the body.
func doRequest(t testing.TB, req *http.Request) (int, []byte) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	_, _ = buf.ReadFrom(resp.Body)
	return resp.StatusCode, buf.Bytes()
}

// pairingJWT signs a pairing token (the format before short codes), which
// the WebSocket and /api/pair must refuse.
func (ts *testServer) pairingJWT(t testing.TB, s protocol.SessionResponse) string {
	t.Helper()
	tok, _, err := ts.Tokens().Sign(s.UserID, s.SessionID, "phone", "pairing", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func (ts *testServer) wsURL(sid string) string {
	return "ws" + strings.TrimPrefix(ts.URL, "http") + "/ws/guitar/" + sid + "/"
}

// wsClient is a test WebSocket client with bounded reads.
type wsClient struct {
	t    testing.TB
	conn *websocket.Conn
	ID   string
}

// dialRaw dials and returns the response even on refusal.
func (ts *testServer) dialRaw(t testing.TB, sid, token string, h http.Header, query string) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	u := ts.wsURL(sid)
	q := url.Values{}
	if token != "" {
		q.Set("token", token)
	}
	if query != "" {
		extra, _ := url.ParseQuery(query)
		for k, vs := range extra {
			q[k] = vs
		}
	}
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	return d.Dial(u, h)
}

// join dials as a member and consumes its connection_update and session_state.
func (ts *testServer) join(t testing.TB, sid, token string) (*wsClient, protocol.SessionState) {
	t.Helper()
	conn, resp, err := ts.dialRaw(t, sid, token, nil, "")
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial: %v (status %d)", err, status)
	}
	c := &wsClient{t: t, conn: conn}
	t.Cleanup(func() { conn.Close() })
	first := c.next()
	if first.Type != protocol.TypeConnectionUpdate {
		t.Fatalf("first message is %s, want connection_update", first.Type)
	}
	var cu protocol.ConnectionUpdate
	mustUnmarshal(t, first.Data, &cu)
	if cu.Status != protocol.StatusConnected || cu.ClientID == "" {
		t.Fatalf("first connection_update = %+v", cu)
	}
	c.ID = cu.ClientID
	st := c.next()
	if st.Type != protocol.TypeSessionState {
		t.Fatalf("second message is %s, want session_state", st.Type)
	}
	var snap protocol.SessionState
	mustUnmarshal(t, st.Data, &snap)
	return c, snap
}

func mustUnmarshal(t testing.TB, b []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("unmarshal %s: %v", b, err)
	}
}

func (c *wsClient) sendRaw(s string) {
	c.t.Helper()
	_ = c.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if err := c.conn.WriteMessage(websocket.TextMessage, []byte(s)); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

func (c *wsClient) send(typ protocol.Type, data any) {
	c.t.Helper()
	m := protocol.MustMarshal(typ, data)
	c.sendRaw(string(protocol.Encode(m)))
}

// next reads the next message within 5 s.
func (c *wsClient) next() *protocol.Message {
	c.t.Helper()
	m, err := c.read(5 * time.Second)
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	return m
}

func (c *wsClient) read(d time.Duration) (*protocol.Message, error) {
	_ = c.conn.SetReadDeadline(time.Now().Add(d))
	_, b, err := c.conn.ReadMessage()
	if err != nil {
		return nil, err
	}
	m, perr := protocol.Decode(b)
	if perr != nil {
		c.t.Fatalf("server sent undecodable %q: %v", b, perr)
	}
	return m, nil
}

// nextOf skips connection_update messages of others and returns the next
// message of type typ; any other type fails the test.
func (c *wsClient) expect(typ protocol.Type) *protocol.Message {
	c.t.Helper()
	m := c.next()
	if m.Type != typ {
		c.t.Fatalf("got %s %s, want %s", m.Type, m.Data, typ)
	}
	return m
}

// sync proves that nothing else is queued for c: it pings and expects the
// pong as the very next message.
func (c *wsClient) sync() {
	c.t.Helper()
	c.send(protocol.TypePing, map[string]any{"timestamp": "sync"[:0] + "2024-01-01T00:00:00Z"})
	m := c.next()
	if m.Type != protocol.TypePong {
		c.t.Fatalf("expected nothing before pong, got %s %s", m.Type, m.Data)
	}
}

// writeSeq sends m with seq as one text frame, encoded into out (reused
// from one call to the next, as a hot loop does); it returns out.
func (c *wsClient) writeSeq(m *protocol.Message, seq uint64, out []byte) []byte {
	m.Seq = seq
	out = protocol.Append(out[:0], m)
	if err := c.conn.WriteMessage(websocket.TextMessage, out); err != nil {
		c.t.Fatal(err)
	}
	return out
}

// expectClose reads until the connection ends, skipping messages, and fails
// the test unless it ended with close code code.
func (c *wsClient) expectClose(code int) {
	c.t.Helper()
	for {
		if _, err := c.read(5 * time.Second); err != nil {
			if !websocket.IsCloseError(err, code) {
				c.t.Fatalf("closed with %v, want %d", err, code)
			}
			return
		}
	}
}

// untilPong pings and returns what c receives before the pong.
func (c *wsClient) untilPong() []*protocol.Message {
	c.t.Helper()
	c.send(protocol.TypePing, map[string]any{})
	var out []*protocol.Message
	for m := c.next(); m.Type != protocol.TypePong; m = c.next() {
		out = append(out, m)
	}
	return out
}

// pingThrough fails the test on an error c receives before the pong to its
// ping: what c sent before was taken.
func (c *wsClient) pingThrough(what string) {
	c.t.Helper()
	for _, m := range c.untilPong() {
		if m.Type == protocol.TypeError {
			c.t.Fatalf("%s was refused: %s", what, m.Data)
		}
	}
}

func errData(t testing.TB, m *protocol.Message) protocol.Error {
	t.Helper()
	if m.Type != protocol.TypeError {
		t.Fatalf("got %s %s, want error", m.Type, m.Data)
	}
	var e protocol.Error
	mustUnmarshal(t, m.Data, &e)
	return e
}

// bye closes the connection the way a client that leaves on purpose does:
// a close frame (1000), then the TCP connection.
func (c *wsClient) bye() {
	_ = c.conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "bye"), time.Now().Add(time.Second))
	c.conn.Close()
}
