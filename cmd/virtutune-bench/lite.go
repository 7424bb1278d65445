package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/virtutune/link/protocol"
)

// chords are the chord changes the bench cycles through.
var chords = []string{"C", "G", "Am", "F", "D", "E", "Em", "A"}

// chordData holds the canonical data of each chord change, built once.
var chordData = func() []json.RawMessage {
	out := make([]json.RawMessage, len(chords))
	for i, c := range chords {
		out[i], _ = json.Marshal(protocol.ChordChange{Chord: c})
	}
	return out
}()

// apiClient talks to a server's HTTP API over kept-alive connections.
type apiClient struct {
	base string
	hc   *http.Client
}

func newAPIClient(base string) *apiClient {
	tr := &http.Transport{MaxIdleConns: 256, MaxIdleConnsPerHost: 256, IdleConnTimeout: 30 * time.Second}
	return &apiClient{base: strings.TrimSuffix(base, "/"), hc: &http.Client{Transport: tr, Timeout: 30 * time.Second}}
}

func (a *apiClient) post(ctx context.Context, path string, body any, want int, out any) error {
	b, _ := json.Marshal(body)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.base+path, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := a.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != want {
		return fmt.Errorf("POST %s: HTTP %d: %s", path, resp.StatusCode, bytes.TrimSpace(data))
	}
	return json.Unmarshal(data, out)
}

// pairing is a session with the PC's and the phone's tokens.
type pairing struct {
	SessionID  string
	PCToken    string
	PhoneToken string
}

// createPairing creates a session (POST /api/sessions) and trades its pairing
// code for a phone token (POST /api/pair), as the PC page and the phone do.
func (a *apiClient) createPairing(ctx context.Context) (pairing, error) {
	var s protocol.SessionResponse
	if err := a.post(ctx, "/api/sessions", struct{}{}, http.StatusCreated, &s); err != nil {
		return pairing{}, err
	}
	var p protocol.PairResponse
	if err := a.post(ctx, "/api/pair", protocol.PairRequest{Code: s.PairingCode}, http.StatusOK, &p); err != nil {
		return pairing{}, err
	}
	return pairing{SessionID: s.SessionID, PCToken: s.Token, PhoneToken: p.Token}, nil
}

// wsBase turns http://host:port into ws://host:port.
func wsBase(base string) string {
	base = strings.TrimSuffix(base, "/")
	if rest, ok := strings.CutPrefix(base, "https://"); ok {
		return "wss://" + rest
	}
	return "ws://" + strings.TrimPrefix(base, "http://")
}

// liteConn is the light client of the load test: one raw gorilla WebSocket
// speaking the protocol, one reader goroutine, writes from one sender.
type liteConn struct {
	conn *websocket.Conn
	id   string
	seq  uint64
	buf  []byte
	wsEnd
}

// wsEnd is how a bench client's WebSocket ended: done is closed when its
// reader ends, err says why.
type wsEnd struct {
	done chan struct{}
	err  atomic.Value // error
}

func newWSEnd() wsEnd { return wsEnd{done: make(chan struct{})} }

// ended returns why the connection ended, if it did before close.
func (e *wsEnd) ended() error {
	select {
	case <-e.done:
		if err, ok := e.err.Load().(error); ok {
			return err
		}
		return errors.New("connection ended")
	default:
		return nil
	}
}

// readEach reads conn until it ends, handing each message and when it
// arrived to each (the bytes are one buffer per connection, reused: each
// must not keep them); then it records why it ended and closes done.
func (e *wsEnd) readEach(conn *websocket.Conn, each func(msg []byte, now time.Time)) {
	defer close(e.done)
	buf := make([]byte, 512)
	for {
		_, r, err := conn.NextReader()
		if err != nil {
			e.err.Store(err)
			return
		}
		n := 0
		for {
			if n == len(buf) {
				buf = append(buf, make([]byte, len(buf))...)
			}
			k, err := r.Read(buf[n:])
			n += k
			if err == io.EOF {
				break
			}
			if err != nil {
				e.err.Store(err)
				return
			}
		}
		each(buf[:n], time.Now())
	}
}

var liteDialer = &websocket.Dialer{HandshakeTimeout: 20 * time.Second, ReadBufferSize: 1024, WriteBufferSize: 1024}

// dialLite joins session sid at base (http://host:port) with token and waits
// for the session_state that says the server registered it. The client id
// is the one the server binds to the token (its first connection_update).
func dialLite(ctx context.Context, base, sid, token string) (*liteConn, error) {
	u := wsBase(base) + "/ws/guitar/" + sid + "/"
	hdr := http.Header{"Authorization": {"Bearer " + token}}
	conn, resp, err := liteDialer.DialContext(ctx, u, hdr)
	clientID := ""
	if err != nil {
		if resp != nil {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
			return nil, fmt.Errorf("dial: %w (HTTP %d %s)", err, resp.StatusCode, bytes.TrimSpace(b))
		}
		return nil, fmt.Errorf("dial: %w", err)
	}
	deadline := time.Now().Add(20 * time.Second)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = conn.SetReadDeadline(deadline)
	for {
		_, b, err := conn.ReadMessage()
		if err != nil {
			conn.Close()
			return nil, fmt.Errorf("waiting for session_state: %w", err)
		}
		var h struct {
			Type protocol.Type `json:"type"`
			Data struct {
				ClientID string `json:"client_id"`
			} `json:"data"`
		}
		_ = json.Unmarshal(b, &h)
		if h.Type == protocol.TypeConnectionUpdate && clientID == "" {
			clientID = h.Data.ClientID // the first one is the client's own
		}
		if h.Type == protocol.TypeSessionState {
			break
		}
	}
	_ = conn.SetReadDeadline(time.Time{})
	return &liteConn{conn: conn, id: clientID, buf: make([]byte, 0, 160), wsEnd: newWSEnd()}, nil
}

// chordPrefix starts every chord_change the server relays (Encode writes type first).
var chordPrefix = []byte(`{"type":"chord_change"`)

// readLoop reads until the connection ends, handing every chord_change to tr
// (nil: discard) with its one-way latency. It reads into one buffer per
// connection and picks seq and at out of the bytes, so that the clients of a
// 10,000-session run cost the machine little next to the server.
func (c *liteConn) readLoop(tr *track, recv *atomic.Uint64) {
	c.readEach(c.conn, func(b []byte, now time.Time) {
		if tr == nil || !bytes.HasPrefix(b, chordPrefix) {
			return
		}
		if s, a, ok := seqAt(b); ok {
			tr.add(s, sinceMillis(now, a), protocol.PathRelay)
		}
		if recv != nil {
			recv.Add(1)
		}
	})
}

// seqAt picks a relayed chord change's seq and at (ms since the epoch) out
// of its bytes.
func seqAt(b []byte) (seq uint64, atMillis float64, ok bool) {
	s, ok1 := numberAfter(b, `"seq":`)
	a, ok2 := numberAfter(b, `"at":`)
	if !ok1 || !ok2 {
		return 0, 0, false
	}
	seq, _ = strconv.ParseUint(string(s), 10, 64)
	atMillis, _ = strconv.ParseFloat(string(a), 64)
	return seq, atMillis, true
}

// numberAfter returns the JSON number that follows key in b.
func numberAfter(b []byte, key string) ([]byte, bool) {
	i := bytes.Index(b, []byte(key))
	if i < 0 {
		return nil, false
	}
	b = b[i+len(key):]
	j := 0
	for j < len(b) && (b[j] >= '0' && b[j] <= '9' || b[j] == '.' || b[j] == '-' || b[j] == 'e' || b[j] == 'E' || b[j] == '+') {
		j++
	}
	return b[:j], j > 0
}

// sendChord sends the next chord_change with seq and at.
func (c *liteConn) sendChord() error {
	c.seq++
	m := protocol.Message{Type: protocol.TypeChordChange, Data: chordData[c.seq%uint64(len(chords))], Seq: c.seq, At: nowMillis()}
	c.buf = protocol.Append(c.buf[:0], &m)
	return c.conn.WriteMessage(websocket.TextMessage, c.buf)
}

// close sends a normal close frame and closes the socket.
func (c *liteConn) close() {
	_ = c.conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""),
		time.Now().Add(time.Second))
	_ = c.conn.Close()
	<-c.done
}

func nowMillis() float64 { return float64(time.Now().UnixNano()) / 1e6 }

// sinceMillis is the time from at (ms since the epoch) to now.
func sinceMillis(now time.Time, at float64) time.Duration {
	return time.Duration(now.UnixNano() - int64(at*1e6))
}
