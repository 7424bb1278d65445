package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"
)

// One WebSocket of a load client, and dialling it for each kind of server:
// the project (its protocol's join) and Centrifugo (connect and subscribe).

// loadConn is one WebSocket of a load client; writes are serialised (the
// receiver's reader answers Centrifugo's protocol pings).
type loadConn struct {
	conn *websocket.Conn
	wmu  sync.Mutex
	buf  []byte
	wsEnd
}

func (c *loadConn) write(b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.conn.WriteMessage(websocket.TextMessage, b)
}

func (c *loadConn) close() {
	c.wmu.Lock()
	_ = c.conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
	c.wmu.Unlock()
	_ = c.conn.Close()
	<-c.done
}

var loadDialer = &websocket.Dialer{HandshakeTimeout: 30 * time.Second, ReadBufferSize: 1024, WriteBufferSize: 1024}

func dialWS(ctx context.Context, u string, hdr http.Header) (*loadConn, error) {
	conn, resp, err := loadDialer.DialContext(ctx, u, hdr)
	if err != nil {
		if resp != nil {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
			return nil, fmt.Errorf("dial: %w (HTTP %d %s)", err, resp.StatusCode, bytes.TrimSpace(b))
		}
		return nil, fmt.Errorf("dial: %w", err)
	}
	return &loadConn{conn: conn, buf: make([]byte, 0, 256), wsEnd: newWSEnd()}, nil
}

// readUntil reads frames (before the reader goroutine runs) until ok says
// one is the awaited one, answering Centrifugo's pings meanwhile.
func (c *loadConn) readUntil(ctx context.Context, ok func([]byte) bool) ([]byte, error) {
	deadline := time.Now().Add(30 * time.Second)
	if d, has := ctx.Deadline(); has && d.Before(deadline) {
		deadline = d
	}
	_ = c.conn.SetReadDeadline(deadline)
	defer func() { _ = c.conn.SetReadDeadline(time.Time{}) }()
	for {
		_, b, err := c.conn.ReadMessage()
		if err != nil {
			return nil, err
		}
		for _, line := range bytes.Split(b, []byte("\n")) {
			if len(line) == 0 {
				continue
			}
			if bytes.Equal(line, cfPing) {
				_ = c.write(cfPing)
				continue
			}
			if ok(line) {
				return line, nil
			}
		}
	}
}

// dialProject joins a project session and waits for its session_state (the
// client id is the one the server binds to the token).
func dialProject(ctx context.Context, base, sid, token string) (*loadConn, error) {
	u := wsBase(base) + "/ws/guitar/" + sid + "/"
	c, err := dialWS(ctx, u, http.Header{"Authorization": {"Bearer " + token}})
	if err != nil {
		return nil, err
	}
	if _, err := c.readUntil(ctx, func(b []byte) bool {
		return bytes.HasPrefix(b, []byte(`{"type":"session_state"`))
	}); err != nil {
		_ = c.conn.Close()
		return nil, fmt.Errorf("waiting for session_state: %w", err)
	}
	return c, nil
}

// cfPing is Centrifugo's protocol ping (and the client's pong).
var cfPing = []byte("{}")

// dialCentrifugo connects to a Centrifugo node's JSON WebSocket endpoint
// with a token for user, and subscribes to channel unless it is empty.
func dialCentrifugo(ctx context.Context, base, secret, user, channel string) (*loadConn, error) {
	c, err := dialWS(ctx, wsBase(base)+"/connection/websocket", nil)
	if err != nil {
		return nil, err
	}
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": user, "exp": time.Now().Add(12 * time.Hour).Unix()}).SignedString([]byte(secret))
	if err != nil {
		return nil, err
	}
	reply := func(id int) func([]byte) bool {
		p := []byte(`"id":` + strconv.Itoa(id) + `,`)
		return func(b []byte) bool { return bytes.Contains(b, p) }
	}
	if err := c.write([]byte(`{"id":1,"connect":{"token":"` + tok + `","name":"vtbench"}}`)); err != nil {
		return nil, err
	}
	b, err := c.readUntil(ctx, reply(1))
	if err == nil && bytes.Contains(b, []byte(`"error"`)) {
		err = fmt.Errorf("connect: %s", b)
	}
	if err == nil && channel != "" {
		if err = c.write([]byte(`{"id":2,"subscribe":{"channel":"` + channel + `"}}`)); err == nil {
			b, err = c.readUntil(ctx, reply(2))
			if err == nil && bytes.Contains(b, []byte(`"error"`)) {
				err = fmt.Errorf("subscribe: %s", b)
			}
		}
	}
	if err != nil {
		_ = c.conn.Close()
		return nil, err
	}
	return c, nil
}
