package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// rawSession is a plain WebSocket client of the session, like wscat: every
// line of stdin is sent as one text frame, exactly as typed, and every frame
// that arrives is printed as it came. It speaks no protocol of its own (no
// client id, no sequence numbers, no data channel): it shows the server's
// side of the original message protocol message for message.
func rawSession(ctx context.Context, o options, in io.Reader, out io.Writer) error {
	u, err := url.Parse(strings.TrimSuffix(o.server, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") {
		return fmt.Errorf("--server %q: want http(s)://host:port", o.server)
	}
	u.Scheme = map[string]string{"http": "ws", "https": "wss"}[u.Scheme]
	u.Path = "/ws/guitar/" + o.session + "/"
	h := http.Header{"Authorization": {"Bearer " + o.token}}
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	conn, resp, err := d.DialContext(ctx, u.String(), h)
	if err != nil {
		if resp != nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
			resp.Body.Close()
			return fmt.Errorf("refused: %s %s", resp.Status, strings.TrimSpace(string(body)))
		}
		return err
	}
	// The reader and this goroutine both print: one lock keeps lines whole.
	var mu sync.Mutex
	printf := func(format string, a ...any) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(out, format, a...)
	}
	done := make(chan error, 1)
	readerExited := make(chan struct{})
	defer func() {
		conn.Close() // ends the reader
		<-readerExited
	}()
	go func() {
		defer close(readerExited)
		for {
			_, b, err := conn.ReadMessage()
			if err != nil {
				done <- err
				return
			}
			printf("< %s\n", b)
		}
	}()
	// stdin is read by a goroutine of its own (a read from a terminal cannot
	// be interrupted); it stops at EOF or, at the next line, once we return.
	lines := make(chan string)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(in)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			case <-stop:
				return
			}
		}
	}()
	for {
		select {
		case <-ctx.Done():
			_ = conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
			return nil
		case err := <-done:
			if websocket.IsCloseError(err, websocket.CloseNormalClosure) {
				return nil
			}
			return err
		case l, ok := <-lines:
			if !ok {
				// stdin ended: wait a moment for answers, then close politely
				select {
				case err := <-done:
					return err
				case <-time.After(o.linger):
				case <-ctx.Done():
				}
				_ = conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
				return nil
			}
			if strings.TrimSpace(l) == "" {
				continue
			}
			printf("> %s\n", l)
			if err := conn.WriteMessage(websocket.TextMessage, []byte(l)); err != nil {
				return err
			}
		}
	}
}
