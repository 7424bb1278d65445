package signaling_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/virtutune/link/protocol"
	"github.com/virtutune/link/signaling"
)

// A replay never overflows the receiver: a member that missed 300 chords
// (more than its send queue holds) resumes and gets every one of them, in
// order, then resumed — the replay goes out at the pace the connection
// drains instead of into the queue in one burst (which closed it 4000 on
// every attempt).
func TestLongResumeCompletes(t *testing.T) {
	ts := newServer(t, func(c *signaling.Config) {
		c.Limits.Rate, c.Limits.Burst = 1e6, 1e6 // the phone plays fast
		c.Limits.SendQueue = 64
		c.Limits.SocketSendBuffer = 4096 // the socket does not absorb the replay
	})
	sess, pc, phone := pcAndPhone(t, ts)
	lastOff, pcID := pcLeavesAfterC(pc, phone)
	const n = 300
	chords := []string{"G", "Am", "F", "D", "E"}
	for i := 0; i < n; i++ {
		phone.send(protocol.TypeChordChange, map[string]string{"chord": chords[i%len(chords)]})
	}
	phone.sync()
	for attempt := 0; attempt < 3; attempt++ {
		// A receiver with a small socket buffer, as a phone on Wi-Fi is.
		d := websocket.Dialer{HandshakeTimeout: 5 * time.Second, NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err == nil {
				_ = c.(*net.TCPConn).SetReadBuffer(4096)
			}
			return c, err
		}}
		conn, _, err := d.Dial(ts.wsURL(sess.SessionID)+"?token="+sess.Token+"&client_id="+pcID, nil)
		if err != nil {
			t.Fatal(err)
		}
		pc2 := &wsClient{t: t, conn: conn, ID: pcID}
		t.Cleanup(func() { conn.Close() })
		pc2.expect(protocol.TypeConnectionUpdate)
		pc2.expect(protocol.TypeSessionState)
		pc2.send(protocol.TypeResume, protocol.Resume{Since: lastOff})
		got := 0
		for {
			m := pc2.next()
			if m.Type == protocol.TypeResumed {
				var r protocol.Resumed
				mustUnmarshal(t, m.Data, &r)
				if !r.Recovered || r.Count != n {
					t.Fatalf("attempt %d: resumed %+v, want %d recovered", attempt, r, n)
				}
				break
			}
			if c := chordOf(t, m); c != chords[got%len(chords)] || m.Seq != uint64(got+2) {
				t.Fatalf("attempt %d: replayed %d is %s seq %d", attempt, got, c, m.Seq)
			}
			got++
		}
		if got != n {
			t.Fatalf("attempt %d: %d of %d replayed", attempt, got, n)
		}
		pc2.sync()
		pc2.bye()
		phone.expect(protocol.TypeConnectionUpdate) // the PC is back
		phone.expect(protocol.TypeConnectionUpdate) // and gone again
	}
}
