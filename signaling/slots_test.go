package signaling_test

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/virtutune/link/internal/testkit"
	"github.com/virtutune/link/protocol"
	"github.com/virtutune/link/signaling"
	"github.com/virtutune/link/signaling/redistest"
)

// The PC can always get back in: phones fill every slot they may, live or
// dropped without a close frame (held for the grace), and the PC still
// joins; a phone held for the grace is never kept out by its own ghost.
func TestPCSlotReserved(t *testing.T) {
	ts := newServer(t, func(c *signaling.Config) { c.Limits.DisconnectGrace = 5 * time.Second })
	s := ts.createSession(t) // MaxMembers 8, PCSlots 2: six phones
	var phones []*wsClient
	var toks []string
	for i := 0; i < 8; i++ {
		tok := ts.memberToken(t, s, "phone")
		conn, _, err := ts.dialRaw(t, s.SessionID, tok, nil, "")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		c := &wsClient{t: t, conn: conn}
		m, err := c.read(5 * time.Second)
		if err != nil {
			if !websocket.IsCloseError(err, protocol.CloseSessionFull) {
				t.Fatalf("phone %d: %v", i, err)
			}
			continue
		}
		var cu protocol.ConnectionUpdate
		mustUnmarshal(t, m.Data, &cu)
		c.ID = cu.ClientID
		c.expect(protocol.TypeSessionState)
		phones = append(phones, c)
		toks = append(toks, tok)
	}
	if len(phones) != 6 {
		t.Fatalf("%d of 8 phones admitted, want the 6 phone slots", len(phones))
	}
	// Half of them drop without a close frame: ghosts held for the grace.
	for _, p := range phones[:3] {
		p.conn.UnderlyingConn().Close()
	}
	// The PC joins, and so does a second PC (the two PC slots).
	pc, _ := ts.join(t, s.SessionID, s.Token)
	pc.sync()
	pc2, _ := ts.join(t, s.SessionID, ts.memberToken(t, s, "pc"))
	pc2.sync()
	// A ghost's own holder comes back at once.
	back, _ := ts.rejoin(t, s.SessionID, toks[0], phones[0].ID)
	back.sync()
}

// With Redis the cap is atomic across instances: 40 phones joining at once
// through two instances sharing one Redis get exactly the phones' slots.
func TestMemberCapAtomicAcrossInstances(t *testing.T) {
	rs := redistest.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var servers []*testServer
	for i := 0; i < 2; i++ {
		b, err := signaling.NewRedisBroker(ctx, signaling.RedisConfig{URL: rs.URL(), Logger: testkit.Logger(t, slog.LevelWarn)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = b.Close() })
		servers = append(servers, newServer(t, func(c *signaling.Config) {
			c.Broker = b
			c.Limits.UpgradesPerMinute, c.Limits.MaxWSPerAddr = 1e9, 1e9
		}))
	}
	s := servers[0].createSession(t)
	const n = 40
	toks := make([]string, n)
	for i := range toks {
		toks[i] = servers[0].memberToken(t, s, "phone")
	}
	var wg sync.WaitGroup
	results := make(chan bool, n) // true: admitted
	start := make(chan struct{})
	for i := 0; i < n; i++ {
		ts := servers[i%2]
		wg.Add(1)
		go func(tok string) {
			defer wg.Done()
			<-start
			d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
			conn, _, err := d.Dial(ts.wsURL(s.SessionID)+"?token="+tok, nil)
			if err != nil {
				results <- false
				return
			}
			t.Cleanup(func() { conn.Close() })
			_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, b, err := conn.ReadMessage()
			if err != nil {
				results <- false // closed 4103
				return
			}
			m, perr := protocol.Decode(b)
			results <- perr == nil && m.Type == protocol.TypeConnectionUpdate
		}(toks[i])
	}
	close(start)
	wg.Wait()
	close(results)
	admitted := 0
	for ok := range results {
		if ok {
			admitted++
		}
	}
	if admitted != 6 {
		t.Fatalf("%d of %d simultaneous phones admitted, want exactly the 6 phone slots", admitted, n)
	}
	// The PC still gets in, on either instance.
	pc, _ := servers[1].join(t, s.SessionID, s.Token)
	pc.sync()
}
