package peer_test

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/virtutune/link/internal/peertest"
	"github.com/virtutune/link/internal/testkit"
	"github.com/virtutune/link/peer"
	"github.com/virtutune/link/protocol"
	"github.com/virtutune/link/signaling"
)

var testSecret = []byte("0123456789abcdef0123456789abcdef-peer-test")

// chordFor is the chord a sender sends as its message seq.
func chordFor(seq uint64) string { return peertest.ChordFor(int(seq)) }

// env is a signaling server on loopback.
type env struct {
	t   testing.TB
	srv *signaling.Server
	hs  *httptest.Server
	url string
	log *slog.Logger
}

// newEnv starts the server; its logs and the clients' go to t.Logf
// (warnings and above; everything with VIRTUTUNE_TEST_DEBUG set). mod, if
// given, changes the server's configuration.
func newEnv(t testing.TB, mod ...func(*signaling.Config)) *env {
	t.Helper()
	e := &env{t: t, log: testkit.Logger(t, slog.LevelWarn)}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.url = "http://" + ln.Addr().String()
	cfg := signaling.Config{
		Secret:    testSecret,
		Logger:    e.log.With("side", "server"),
		PublicURL: e.url,
		Limits:    signaling.Limits{Rate: 1e6, Burst: 1e6, SignalRate: 1e4, SignalBurst: 1e4, SendQueue: 8192},
	}
	for _, m := range mod {
		m(&cfg)
	}
	e.srv, e.hs = serveOn(t, ln, cfg)
	return e
}

// begin starts a test of peers: its context, ended after d, and a server
// (newEnv, with mod). At the test's end, after its deferred calls, the
// server closes, the context ends, and no goroutine may be left.
func begin(t testing.TB, d time.Duration, mod ...func(*signaling.Config)) (context.Context, *env) {
	t.Helper()
	t.Cleanup(func() { goleak.VerifyNone(t) })
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	e := newEnv(t, mod...)
	t.Cleanup(e.close)
	return ctx, e
}

// serveOn serves a signaling server with cfg on ln.
func serveOn(t testing.TB, ln net.Listener, cfg signaling.Config) (*signaling.Server, *httptest.Server) {
	t.Helper()
	srv, err := signaling.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewUnstartedServer(srv.Handler())
	hs.Listener.Close()
	hs.Listener = ln
	hs.Start()
	return srv, hs
}

// close stops the server.
func (e *env) close() {
	stopServer(e.srv, e.hs)
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
}

// stopServer closes a server that serveOn started.
func stopServer(srv *signaling.Server, hs *httptest.Server) {
	_ = srv.Close()
	hs.CloseClientConnections()
	hs.Close()
}

// config is a client config for tests (peertest.Config) for this server.
func (e *env) config(role string, mod func(*peer.Config)) peer.Config {
	cfg := peertest.Config(e.log, role)
	cfg.ServerURL = e.url
	if mod != nil {
		mod(&cfg)
	}
	return cfg
}

// pair creates a session, pairs a phone with its link and dials both clients.
func (e *env) pair(ctx context.Context, pcMod, phoneMod func(*peer.Config)) (sid string, pc, phone *peer.Client) {
	t := e.t
	t.Helper()
	pcCfg, phCfg := e.pairConfigs(ctx, pcMod, phoneMod)
	pc = e.dial(ctx, pcCfg)
	phone, err := peer.Dial(ctx, phCfg)
	if err != nil {
		pc.Close()
		t.Fatal(err)
	}
	return pcCfg.SessionID, pc, phone
}

// pairConfigs creates a session and pairs a phone with its link: the
// configurations of its PC and of the phone (its client id the one bound to
// its token).
func (e *env) pairConfigs(ctx context.Context, pcMod, phoneMod func(*peer.Config)) (pcCfg, phCfg peer.Config) {
	t := e.t
	t.Helper()
	info, err := peer.CreateSession(ctx, e.url, "")
	if err != nil {
		t.Fatal(err)
	}
	ph, err := peer.Pair(ctx, info.PairingURL)
	if err != nil {
		t.Fatal(err)
	}
	if ph.Role != protocol.RolePhone || ph.SessionID != info.SessionID {
		t.Fatalf("pair: got role %q session %q", ph.Role, ph.SessionID)
	}
	pcCfg = e.config(protocol.RolePC, pcMod)
	pcCfg.SessionID, pcCfg.Token = info.SessionID, info.Token
	phCfg = e.config(protocol.RolePhone, phoneMod)
	phCfg.ServerURL, phCfg.WSURL, phCfg.Token, phCfg.ClientID = "", ph.WSURL, ph.Token, ph.ClientID
	return pcCfg, phCfg
}

// dial dials a client with cfg; it fails the test if it cannot.
func (e *env) dial(ctx context.Context, cfg peer.Config) *peer.Client {
	e.t.Helper()
	c, err := peer.Dial(ctx, cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

// collector is what a client received from one sender (a peertest.Recorder
// until ctx ends or the client is closed).
type collector struct {
	*peertest.Recorder
	from string
	done <-chan struct{}
}

func collect(ctx context.Context, c *peer.Client, from string) *collector {
	r := peertest.Record(ctx, c)
	return &collector{Recorder: r, from: from, done: r.Done()}
}

// snapshot returns the chord changes received from the sender so far.
func (col *collector) snapshot() []peer.Delivery { return col.ChordsFrom(col.from) }

func (col *collector) len() int { return col.CountFrom(col.from) }

// count returns how many of the sender's chord changes satisfy f.
func (col *collector) count(f func(peer.Delivery) bool) int { return col.CountFromIf(col.from, f) }

// checkExact asserts that the deliveries are seq 1..n, in order, each with
// the chord sent as that seq.
func checkExact(t testing.TB, name string, ds []peer.Delivery, n int) {
	t.Helper()
	peertest.CheckChords(t, name, ds, 1, n)
}

// duo is a session's PC and phone (env.pair), each recording the chords of
// the other.
type duo struct {
	sid           string
	pc, phone     *peer.Client
	atPC, atPhone *collector
	stopRecv      context.CancelFunc
}

// pairRecording is env.pair, with each side recording the other's chords
// until the test's cleanup, which closes both clients.
func (e *env) pairRecording(ctx context.Context, pcMod, phoneMod func(*peer.Config)) *duo {
	sid, pc, phone := e.pair(ctx, pcMod, phoneMod)
	rctx, stop := context.WithCancel(ctx)
	d := &duo{sid: sid, pc: pc, phone: phone, stopRecv: stop,
		atPC: collect(rctx, pc, phone.ClientID()), atPhone: collect(rctx, phone, pc.ClientID())}
	e.t.Cleanup(d.close)
	return d
}

// close stops the recording and closes both clients.
func (d *duo) close() {
	d.stopRecv()
	<-d.atPC.done
	<-d.atPhone.done
	d.phone.Close()
	d.pc.Close()
}

// flush flushes both clients' WebSockets: whatever was in flight before has
// arrived.
func (d *duo) flush(ctx context.Context, t testing.TB) {
	t.Helper()
	for _, c := range []*peer.Client{d.pc, d.phone} {
		if err := c.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

// sendBoth starts sending n chords each way (phone to PC: s1; PC to phone:
// s2), one every pace; stop stops both and waits for them (call it, or
// defer it, before the clients close).
func (d *duo) sendBoth(ctx context.Context, n int, pace time.Duration) (s1, s2 *peertest.Sender, stop func()) {
	s1, s2 = peertest.StartSender(ctx, d.phone, n, pace), peertest.StartSender(ctx, d.pc, n, pace)
	return s1, s2, func() {
		s1.Stop()
		s2.Stop()
		<-s1.Done()
		<-s2.Done()
	}
}

// finish waits for both senders to end (stop them first if they would not),
// fails on their errors, waits until each side has what the other sent,
// flushes both and checks that each got exactly that, once and in order.
func (d *duo) finish(ctx context.Context, t testing.TB, s1, s2 *peertest.Sender) {
	t.Helper()
	<-s1.Done()
	<-s2.Done()
	if s1.Err() != nil || s2.Err() != nil {
		t.Fatal(s1.Err(), s2.Err())
	}
	waitFor(ctx, t, "every chord", func() bool { return d.atPC.len() >= s1.Count() && d.atPhone.len() >= s2.Count() })
	d.flush(ctx, t)
	checkExact(t, "phone->pc", d.atPC.snapshot(), s1.Count())
	checkExact(t, "pc->phone", d.atPhone.snapshot(), s2.Count())
}

// waitFor waits until cond holds, failing the test when ctx is done first.
var waitFor = testkit.Eventually

// waitP2P waits until both clients have an open data channel to each other,
// and until the server has taken note of it.
func waitP2P(ctx context.Context, t testing.TB, a, b *peer.Client) {
	t.Helper()
	waitFor(ctx, t, "data channel open on both sides", func() bool {
		return a.Path() == protocol.PathP2P && b.Path() == protocol.PathP2P
	})
	for _, c := range []*peer.Client{a, b} {
		if err := c.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// Scenario 1: two Go peers and a real server; the data channel opens and
// 1,000 chord changes each way arrive exactly once, in order, by whichever
// path brings each first.
func TestP2PThousandEachWay(t *testing.T) {
	ctx, e := begin(t, 30*time.Second)
	d := e.pairRecording(ctx, nil, nil)
	sid, pc, phone, atPC := d.sid, d.pc, d.phone, d.atPC

	waitP2P(ctx, t, pc, phone)
	const n = 1000
	s1, s2, stop := d.sendBoth(ctx, n, 0)
	defer stop()
	// what is left in flight (relay copies) must be dropped, not delivered
	d.finish(ctx, t, s1, s2)
	for _, c := range []*peer.Client{pc, phone} {
		if u := c.Stats().Unconfirmed; u != 0 {
			t.Fatalf("%d messages still unconfirmed after Flush", u)
		}
	}
	for name, col := range map[string]*collector{"phone->pc": atPC, "pc->phone": d.atPhone} {
		// both paths race: which copy wins depends on the machine (on a
		// loaded loopback the relay often does); each is delivered once
		t.Logf("%s: %d of %d first by p2p", name, col.count(func(d peer.Delivery) bool { return d.Path == protocol.PathP2P }), n)
	}

	// the server stored what went direct: its state shows the last chord
	if err := phone.SendChord(ctx, "Em"); err != nil {
		t.Fatal(err)
	}
	waitFor(ctx, t, "the last chord", func() bool { return atPC.len() == n+1 })
	if err := phone.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	st, err := e.srv.Broker().State(ctx, sid)
	if err != nil {
		t.Fatal(err)
	}
	if st.Chord != "Em" || st.ChordFrom != phone.ClientID() {
		t.Fatalf("server state: chord %q from %q, want Em from %s", st.Chord, st.ChordFrom, phone.ClientID())
	}
	if rtt := pc.RTT(protocol.PathRelay); rtt <= 0 {
		t.Errorf("no relay RTT measured")
	}
	t.Logf("p2p rtt pc=%v phone=%v; relay rtt pc=%v; duplicates dropped pc=%d phone=%d",
		pc.RTT(protocol.PathP2P), phone.RTT(protocol.PathP2P), pc.RTT(protocol.PathRelay),
		pc.Stats().Duplicates, phone.Stats().Duplicates)
}

// Scenario 2: the direct path breaks mid-stream. Every chord still arrives
// exactly once and in order, by relay meanwhile; then a new generation of the
// direct path opens and carries the chords again.
func TestDirectPathBreaksAndComesBack(t *testing.T) {
	ctx, e := begin(t, 30*time.Second)
	d := e.pairRecording(ctx, nil, nil)
	pc, phone, atPC, atPhone := d.pc, d.phone, d.atPC, d.atPhone
	waitP2P(ctx, t, pc, phone)
	gen0 := pc.Links()[0].Generation

	s1, s2, stop := d.sendBoth(ctx, 1<<30, time.Millisecond)
	defer stop()
	waitFor(ctx, t, "100 chords over p2p", func() bool { return atPC.len() >= 100 && atPhone.len() >= 100 })

	// the phone (answering side) loses its peer connection
	if !phone.BreakDirect(pc.ClientID()) {
		t.Fatal("no peer connection to break")
	}
	waitFor(ctx, t, "relay deliveries after the break", func() bool {
		return atPC.count(func(d peer.Delivery) bool { return d.Path == protocol.PathRelay }) > 0 &&
			atPhone.count(func(d peer.Delivery) bool { return d.Path == protocol.PathRelay }) > 0
	})
	waitFor(ctx, t, "a new generation of the direct path", func() bool {
		ls := pc.Links()
		return len(ls) == 1 && ls[0].Up && ls[0].Generation > gen0 && phone.PathTo(pc.ClientID()) == protocol.PathP2P
	})
	d.flush(ctx, t)
	// chords sent from now on go direct again
	mark := map[*collector]int{atPC: atPC.len(), atPhone: atPhone.len()}
	waitFor(ctx, t, "p2p deliveries after the direct path came back", func() bool {
		for col, m := range mark {
			ds := col.snapshot()
			p2p := 0
			for _, d := range ds[m:] {
				if d.Path == protocol.PathP2P {
					p2p++
				}
			}
			if p2p < 50 {
				return false
			}
		}
		return true
	})
	stop()
	d.finish(ctx, t, s1, s2)
	relayed := atPC.count(func(d peer.Delivery) bool { return d.Path == protocol.PathRelay })
	t.Logf("phone->pc %d chords (%d by relay), pc->phone %d chords; generation %d -> %d; duplicates dropped pc=%d phone=%d",
		s1.Count(), relayed, s2.Count(), gen0, pc.Links()[0].Generation, pc.Stats().Duplicates, phone.Stats().Duplicates)
}

// Scenario 3: the phone's WebSocket is cut while the data channel is up.
// Chords keep arriving over p2p both ways; the phone reconnects, resumes and
// is a member again; nothing is lost or duplicated.
func TestWebSocketCutWhileP2PUp(t *testing.T) {
	ctx, e := begin(t, 30*time.Second)
	d := e.pairRecording(ctx, nil, func(c *peer.Config) {
		// a slow first reconnect, so that the WebSocket is down for a while
		c.BackoffMin, c.BackoffMax = 400*time.Millisecond, time.Second
	})
	sid, pc, phone, atPC, atPhone := d.sid, d.pc, d.phone, d.atPC, d.atPhone
	waitP2P(ctx, t, pc, phone)

	s1, s2, stop := d.sendBoth(ctx, 1<<30, time.Millisecond)
	defer stop()
	waitFor(ctx, t, "100 chords over p2p", func() bool { return atPC.len() >= 100 && atPhone.len() >= 100 })

	if !phone.CutWebSocket() {
		t.Fatal("no WebSocket to cut")
	}
	waitFor(ctx, t, "the phone to notice", func() bool { return phone.State() == peer.StateReconnecting })
	before := map[*collector]int{atPC: atPC.len(), atPhone: atPhone.len()}
	waitFor(ctx, t, "chords over p2p while the WebSocket is down", func() bool {
		return atPC.len() >= before[atPC]+20 && atPhone.len() >= before[atPhone]+20
	})
	if phone.State() != peer.StateReconnecting {
		t.Fatalf("the phone reconnected before 20 chords went direct; state %v", phone.State())
	}
	if phone.Path() != protocol.PathP2P && phone.PathTo(pc.ClientID()) != protocol.PathP2P {
		t.Fatalf("the data channel went down with the WebSocket")
	}

	waitFor(ctx, t, "the phone back", func() bool {
		if phone.State() != peer.StateConnected || phone.Stats().Reconnects < 1 {
			return false
		}
		for _, m := range pc.Members() {
			if m.ClientID == phone.ClientID() {
				return true
			}
		}
		return false
	})
	members, err := e.srv.Broker().Members(ctx, sid)
	if err != nil {
		t.Fatal(err)
	}
	present := false
	for _, m := range members {
		present = present || m.ClientID == phone.ClientID()
	}
	if !present {
		t.Fatalf("the server does not list the phone after its reconnect: %+v", members)
	}

	stop()
	d.finish(ctx, t, s1, s2)
	// the server holds everything the phone sent while its WebSocket was down
	st, err := e.srv.Broker().State(ctx, sid)
	if err != nil {
		t.Fatal(err)
	}
	last, err := e.srv.Broker().LastSeq(ctx, sid, phone.ClientID())
	if err != nil {
		t.Fatal(err)
	}
	if last != uint64(s1.Count()) {
		t.Fatalf("server holds the phone's messages up to seq %d, want %d", last, s1.Count())
	}
	t.Logf("phone->pc %d, pc->phone %d chords; state chord %q; phone reconnects %d, duplicates dropped pc=%d phone=%d",
		s1.Count(), s2.Count(), st.Chord, phone.Stats().Reconnects, pc.Stats().Duplicates, phone.Stats().Duplicates)
}

// Scenario 4: the phone disables P2P; everything goes by relay, and the
// probe over the relay says each side answers.
func TestDisableP2PUsesRelay(t *testing.T) {
	ctx, e := begin(t, 30*time.Second)
	d := e.pairRecording(ctx, nil, func(c *peer.Config) { c.DisableP2P = true })

	const n = 300
	s1, s2, stop := d.sendBoth(ctx, n, 0)
	defer stop()
	d.finish(ctx, t, s1, s2)
	for name, col := range map[string]*collector{"phone->pc": d.atPC, "pc->phone": d.atPhone} {
		if p2p := col.count(func(d peer.Delivery) bool { return d.Path != protocol.PathRelay }); p2p != 0 {
			t.Fatalf("%s: %d deliveries not by relay with P2P disabled", name, p2p)
		}
	}
	if d.pc.Path() != protocol.PathRelay || d.phone.Path() != protocol.PathRelay {
		t.Fatalf("paths: pc %s, phone %s; want relay", d.pc.Path(), d.phone.Path())
	}
	// with P2P off the probe over the relay is the only word on the other
	// member: each says the other answers
	waitFor(ctx, t, "each shown answering by the other", func() bool {
		return verdictOf(d.pc, d.phone.ClientID()) == peer.LiveOK && verdictOf(d.phone, d.pc.ClientID()) == peer.LiveOK
	})
	if l := d.pc.Status().Liveness; len(l) != 1 || l[0].Role != protocol.RolePhone {
		t.Fatalf("the PC's liveness: %+v; want the phone's alone", l)
	}
	d.phone.Close()
	waitFor(ctx, t, "the phone gone from the PC's liveness", func() bool { return verdictOf(d.pc, d.phone.ClientID()) == "-" })
}
