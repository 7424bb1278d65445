package test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/virtutune/link/internal/testkit"
	"github.com/virtutune/link/protocol"
)

// rawClient speaks the original protocol over a plain WebSocket, as the
// seed's clients and browsers do: token in the query, no seq, no resume.
type rawClient struct {
	t    testing.TB
	conn *websocket.Conn
	id   string

	mu   sync.Mutex
	msgs []*protocol.Message
	err  error
	done chan struct{}
}

// dialRaw opens the session's WebSocket at base (http://host:port) with
// token in the query; origin, when not empty, is sent as the Origin header.
func dialRaw(ctx context.Context, t testing.TB, base, sid, token, origin string) *rawClient {
	t.Helper()
	u := "ws" + strings.TrimPrefix(base, "http") + "/ws/guitar/" + sid + "/?token=" + url.QueryEscape(token)
	hdr := http.Header{}
	if origin != "" {
		hdr.Set("Origin", origin)
	}
	return dialRawWith(ctx, t, &websocket.Dialer{HandshakeTimeout: 5 * time.Second}, u, hdr)
}

// dialRawWith opens the WebSocket at u (ws:// or wss://) with d and hdr, and
// waits for the member's own connection_update; the client is closed at t's
// cleanup.
func dialRawWith(ctx context.Context, t testing.TB, d *websocket.Dialer, u string, hdr http.Header) *rawClient {
	t.Helper()
	conn, resp, err := d.DialContext(ctx, u, hdr)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("raw dial %s: HTTP %d: %v", u, status, err)
	}
	rc := &rawClient{t: t, conn: conn, done: make(chan struct{})}
	go rc.read()
	t.Cleanup(rc.close)
	first := rc.wait(ctx, "own connection_update", func(m *protocol.Message) bool { return true })
	var cu protocol.ConnectionUpdate
	if first.Type != protocol.TypeConnectionUpdate || json.Unmarshal(first.Data, &cu) != nil || cu.Status != protocol.StatusConnected {
		t.Fatalf("raw client at %s: first message is %s %s, want its own connection_update", u, first.Type, first.Data)
	}
	rc.id = cu.ClientID
	return rc
}

func (rc *rawClient) read() {
	defer close(rc.done)
	for {
		_, b, err := rc.conn.ReadMessage()
		if err != nil {
			rc.mu.Lock()
			rc.err = err
			rc.mu.Unlock()
			return
		}
		m, perr := protocol.Decode(b)
		if perr != nil {
			rc.t.Errorf("raw client: undecodable message from the server: %q", b)
			continue
		}
		rc.mu.Lock()
		rc.msgs = append(rc.msgs, m)
		rc.mu.Unlock()
	}
}

// send writes one JSON text frame.
func (rc *rawClient) send(s string) {
	rc.t.Helper()
	_ = rc.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if err := rc.conn.WriteMessage(websocket.TextMessage, []byte(s)); err != nil {
		rc.t.Fatalf("raw client write: %v", err)
	}
}

// all returns what the client received so far.
func (rc *rawClient) all() []*protocol.Message {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]*protocol.Message(nil), rc.msgs...)
}

// wait returns the first message received (so far or later) for which f holds.
func (rc *rawClient) wait(ctx context.Context, what string, f func(*protocol.Message) bool) *protocol.Message {
	rc.t.Helper()
	var found *protocol.Message
	testkit.Eventually(ctx, rc.t, "raw client: "+what, func() bool {
		for _, m := range rc.all() {
			if f(m) {
				found = m
				return true
			}
		}
		rc.mu.Lock()
		err := rc.err
		rc.mu.Unlock()
		if err != nil {
			rc.t.Fatalf("raw client: connection ended waiting for %s: %v", what, err)
		}
		return false
	})
	return found
}

// close says goodbye with 1000 and waits for the reader.
func (rc *rawClient) close() {
	_ = rc.conn.WriteControl(websocket.CloseMessage,
		websocket.FormatCloseMessage(websocket.CloseNormalClosure, "bye"), time.Now().Add(time.Second))
	select {
	case <-rc.done:
	case <-time.After(2 * time.Second):
	}
	_ = rc.conn.Close()
	<-rc.done
}

// isType returns a predicate for messages of type typ whose data holds
// every key/value of want (compared as JSON text).
func isType(typ protocol.Type, want map[string]string) func(*protocol.Message) bool {
	return func(m *protocol.Message) bool {
		if m.Type != typ {
			return false
		}
		var data map[string]json.RawMessage
		if json.Unmarshal(m.Data, &data) != nil {
			return false
		}
		for k, v := range want {
			if string(data[k]) != v {
				return false
			}
		}
		return true
	}
}
