package peer_test

import (
	"context"
	"log/slog"
	"net"
	"net/http/httptest"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/virtutune/link/peer"
	"github.com/virtutune/link/protocol"
	"github.com/virtutune/link/signaling"
)

// TestResendWhatTheServerDidNotTake: the server processes messages it does
// not take (here: over its rate limit, dropped with rate_limited; with Redis
// down: delivered on one instance only, answered unavailable). The client
// learns it from the last_seq of its next pong and resends them from its
// outbox without a reconnect: every chord arrives exactly once, in order.
func TestResendWhatTheServerDidNotTake(t *testing.T) {
	defer goleak.VerifyNone(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + ln.Addr().String()
	srv, err := signaling.New(signaling.Config{
		Secret: testSecret, PublicURL: url, Logger: slog.New(slog.DiscardHandler),
		Limits: signaling.Limits{Rate: 200, Burst: 20, FloodClose: 1 << 20},
	})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewUnstartedServer(srv.Handler())
	hs.Listener.Close()
	hs.Listener = ln
	hs.Start()
	defer func() { _ = srv.Close(); hs.CloseClientConnections(); hs.Close() }()

	info, err := peer.CreateSession(ctx, url, "")
	if err != nil {
		t.Fatal(err)
	}
	ph, err := peer.Pair(ctx, info.PairingURL)
	if err != nil {
		t.Fatal(err)
	}
	cfg := func(role, token string) peer.Config {
		return peer.Config{ServerURL: url, SessionID: info.SessionID, Token: token, Role: role,
			DisableP2P: true, PingInterval: 50 * time.Millisecond, BackoffMin: 20 * time.Millisecond, BackoffMax: 100 * time.Millisecond}
	}
	pc, err := peer.Dial(ctx, cfg(protocol.RolePC, info.Token))
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	phone, err := peer.Dial(ctx, cfg(protocol.RolePhone, ph.Token))
	if err != nil {
		t.Fatal(err)
	}
	defer phone.Close()
	rctx, stop := context.WithCancel(ctx)
	defer stop()
	atPC := collect(rctx, pc, phone.ClientID())
	atPhone := collect(rctx, phone, pc.ClientID()) // drains the phone's rate_limited errors

	const n = 300 // far over the burst of 20: most are dropped at first
	for i := 1; i <= n; i++ {
		if err := phone.SendChord(ctx, chordFor(uint64(i))); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(ctx, t, "every chord at the PC", func() bool { return atPC.len() >= n })
	waitFor(ctx, t, "the server to hold every chord", func() bool {
		fctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		return phone.Flush(fctx) == nil && phone.Stats().Unconfirmed == 0
	})
	if err := pc.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	checkExact(t, "phone->PC", atPC.snapshot(), n)
	if r := phone.Stats().Reconnects; r != 0 {
		t.Fatalf("the phone reconnected %d times; the resend must not need a reconnect", r)
	}
	stop()
	<-atPC.done
	<-atPhone.done
}
