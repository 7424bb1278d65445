package peer_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"
	"go.uber.org/goleak"

	"github.com/virtutune/link/internal/testkit"
	"github.com/virtutune/link/peer"
	"github.com/virtutune/link/protocol"
	"github.com/virtutune/link/signaling"
)

var testSecret = []byte("0123456789abcdef0123456789abcdef-peer-test")

var chords = []string{"C", "G", "Am", "F", "D", "E", "Em", "A", "Dm7", "G/B", "Cmaj7", "Bb"}

// chordFor is the chord a sender sends as its message seq.
func chordFor(seq uint64) string { return chords[(seq-1)%uint64(len(chords))] }

type tWriter struct {
	t  testing.TB
	mu *sync.Mutex
	on *bool
}

func (w tWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if *w.on {
		w.t.Logf("%s", bytes.TrimRight(p, "\n"))
	}
	return len(p), nil
}

// env is a signaling server on loopback.
type env struct {
	t     testing.TB
	srv   *signaling.Server
	hs    *httptest.Server
	url   string
	log   *slog.Logger
	logMu sync.Mutex
	logOn bool
}

func newEnv(t testing.TB) *env {
	t.Helper()
	e := &env{t: t, logOn: true}
	level := slog.LevelWarn
	if os.Getenv("PEER_TEST_DEBUG") != "" {
		level = slog.LevelDebug
	}
	e.log = slog.New(slog.NewTextHandler(tWriter{t: t, mu: &e.logMu, on: &e.logOn}, &slog.HandlerOptions{Level: level}))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.url = "http://" + ln.Addr().String()
	srv, err := signaling.New(signaling.Config{
		Secret:    testSecret,
		Logger:    e.log.With("side", "server"),
		PublicURL: e.url,
		Limits:    signaling.Limits{Rate: 1e6, Burst: 1e6, SignalRate: 1e4, SignalBurst: 1e4, SendQueue: 8192},
	})
	if err != nil {
		t.Fatal(err)
	}
	e.srv = srv
	e.hs = httptest.NewUnstartedServer(srv.Handler())
	e.hs.Listener.Close()
	e.hs.Listener = ln
	e.hs.Start()
	return e
}

// close stops the server; logging stops so that nothing logs after the test.
func (e *env) close() {
	_ = e.srv.Close()
	e.hs.CloseClientConnections()
	e.hs.Close()
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	e.logMu.Lock()
	e.logOn = false
	e.logMu.Unlock()
}

// config is a client config for tests: loopback only, quick timers.
func (e *env) config(role string, mod func(*peer.Config)) peer.Config {
	cfg := peer.Config{
		ServerURL:      e.url,
		Role:           role,
		LoopbackOnly:   true,
		Logger:         e.log.With("side", role),
		BackoffMin:     20 * time.Millisecond,
		BackoffMax:     200 * time.Millisecond,
		PingInterval:   250 * time.Millisecond,
		ConnectTimeout: 5 * time.Second,
		SettingEngine: func(se *webrtc.SettingEngine) {
			se.SetICETimeouts(2*time.Second, 3*time.Second, 200*time.Millisecond)
		},
	}
	if mod != nil {
		mod(&cfg)
	}
	return cfg
}

// pair creates a session, pairs a phone with its link and dials both clients.
func (e *env) pair(ctx context.Context, pcMod, phoneMod func(*peer.Config)) (sid string, pc, phone *peer.Client) {
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
	pcCfg := e.config(protocol.RolePC, pcMod)
	pcCfg.SessionID, pcCfg.Token = info.SessionID, info.Token
	pc, err = peer.Dial(ctx, pcCfg)
	if err != nil {
		t.Fatal(err)
	}
	phCfg := e.config(protocol.RolePhone, phoneMod)
	phCfg.ServerURL, phCfg.WSURL, phCfg.Token = "", ph.WSURL, ph.Token
	phone, err = peer.Dial(ctx, phCfg)
	if err != nil {
		pc.Close()
		t.Fatal(err)
	}
	return info.SessionID, pc, phone
}

// collector reads a client's deliveries in a goroutine and keeps the
// application messages from one sender.
type collector struct {
	mu   sync.Mutex
	from string
	got  []peer.Delivery
	done chan struct{}
}

func collect(ctx context.Context, c *peer.Client, from string) *collector {
	col := &collector{from: from, done: make(chan struct{})}
	go func() {
		defer close(col.done)
		for {
			d, err := c.Recv(ctx)
			if err != nil {
				return
			}
			if d.Msg.Type == protocol.TypeChordChange && d.Msg.From == from {
				col.mu.Lock()
				col.got = append(col.got, d)
				col.mu.Unlock()
			}
		}
	}()
	return col
}

func (col *collector) snapshot() []peer.Delivery {
	col.mu.Lock()
	defer col.mu.Unlock()
	return append([]peer.Delivery(nil), col.got...)
}

func (col *collector) len() int {
	col.mu.Lock()
	defer col.mu.Unlock()
	return len(col.got)
}

// count returns how many deliveries satisfy f.
func (col *collector) count(f func(peer.Delivery) bool) int {
	col.mu.Lock()
	defer col.mu.Unlock()
	n := 0
	for _, d := range col.got {
		if f(d) {
			n++
		}
	}
	return n
}

// checkExact asserts that the deliveries are seq 1..n, in order, each with
// the chord sent as that seq.
func checkExact(t testing.TB, name string, ds []peer.Delivery, n int) {
	t.Helper()
	if len(ds) != n {
		t.Fatalf("%s: %d deliveries, want %d", name, len(ds), n)
	}
	for i, d := range ds {
		want := uint64(i + 1)
		if d.Msg.Seq != want {
			t.Fatalf("%s: delivery %d has seq %d, want %d (lost, duplicated or reordered)", name, i, d.Msg.Seq, want)
		}
		var cc protocol.ChordChange
		if err := json.Unmarshal(d.Msg.Data, &cc); err != nil || cc.Chord != chordFor(want) {
			t.Fatalf("%s: seq %d carries %q, want %q", name, want, cc.Chord, chordFor(want))
		}
	}
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

// sender sends chords until stop is closed or max is reached, pausing pace
// between them; it returns how many it sent.
type sender struct {
	n    int
	done chan struct{}
	err  error
}

func startSender(ctx context.Context, c *peer.Client, max int, pace time.Duration, stop <-chan struct{}) *sender {
	s := &sender{done: make(chan struct{})}
	go func() {
		defer close(s.done)
		var tick *time.Ticker
		if pace > 0 {
			tick = time.NewTicker(pace)
			defer tick.Stop()
		}
		for s.n < max {
			if tick != nil {
				select {
				case <-tick.C:
				case <-stop:
					return
				case <-ctx.Done():
					return
				}
			}
			if err := c.SendChord(ctx, chordFor(uint64(s.n+1))); err != nil {
				s.err = err
				return
			}
			s.n++
		}
	}()
	return s
}

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// Scenario 1: two Go peers and a real server; the data channel opens and
// 1,000 chord changes each way arrive exactly once, in order, by whichever
// path brings each first.
func TestP2PThousandEachWay(t *testing.T) {
	defer goleak.VerifyNone(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e := newEnv(t)
	defer e.close()
	sid, pc, phone := e.pair(ctx, nil, nil)
	defer pc.Close()
	defer phone.Close()
	rctx, stopRecv := context.WithCancel(ctx)
	defer stopRecv()
	atPC := collect(rctx, pc, phone.ClientID())
	atPhone := collect(rctx, phone, pc.ClientID())

	waitP2P(ctx, t, pc, phone)
	const n = 1000
	s1 := startSender(ctx, phone, n, 0, nil)
	s2 := startSender(ctx, pc, n, 0, nil)
	<-s1.done
	<-s2.done
	if s1.err != nil || s2.err != nil {
		t.Fatal(s1.err, s2.err)
	}
	waitFor(ctx, t, "1000 chords each way", func() bool { return atPC.len() >= n && atPhone.len() >= n })
	// what is left in flight (relay copies) must be dropped, not delivered
	for _, c := range []*peer.Client{pc, phone} {
		if err := c.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []*peer.Client{pc, phone} {
		if u := c.Stats().Unconfirmed; u != 0 {
			t.Fatalf("%d messages still unconfirmed after Flush", u)
		}
	}
	for name, col := range map[string]*collector{"phone->pc": atPC, "pc->phone": atPhone} {
		ds := col.snapshot()
		checkExact(t, name, ds, n)
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
	stopRecv()
	<-atPC.done
	<-atPhone.done
}

// Scenario 2: the direct path breaks mid-stream. Every chord still arrives
// exactly once and in order, by relay meanwhile; then a new generation of the
// direct path opens and carries the chords again.
func TestDirectPathBreaksAndComesBack(t *testing.T) {
	defer goleak.VerifyNone(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e := newEnv(t)
	defer e.close()
	_, pc, phone := e.pair(ctx, nil, nil)
	defer pc.Close()
	defer phone.Close()
	rctx, stopRecv := context.WithCancel(ctx)
	defer stopRecv()
	atPC := collect(rctx, pc, phone.ClientID())
	atPhone := collect(rctx, phone, pc.ClientID())
	waitP2P(ctx, t, pc, phone)
	gen0 := pc.Links()[0].Generation

	stop := make(chan struct{})
	s1 := startSender(ctx, phone, 1<<30, time.Millisecond, stop)
	s2 := startSender(ctx, pc, 1<<30, time.Millisecond, stop)
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		<-s1.done
		<-s2.done
	}()
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
	for _, c := range []*peer.Client{pc, phone} {
		if err := c.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
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
	close(stop)
	<-s1.done
	<-s2.done
	if s1.err != nil || s2.err != nil {
		t.Fatal(s1.err, s2.err)
	}
	waitFor(ctx, t, "every chord", func() bool { return atPC.len() >= s1.n && atPhone.len() >= s2.n })
	for _, c := range []*peer.Client{pc, phone} {
		if err := c.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	checkExact(t, "phone->pc", atPC.snapshot(), s1.n)
	checkExact(t, "pc->phone", atPhone.snapshot(), s2.n)
	relayed := atPC.count(func(d peer.Delivery) bool { return d.Path == protocol.PathRelay })
	t.Logf("phone->pc %d chords (%d by relay), pc->phone %d chords; generation %d -> %d; duplicates dropped pc=%d phone=%d",
		s1.n, relayed, s2.n, gen0, pc.Links()[0].Generation, pc.Stats().Duplicates, phone.Stats().Duplicates)
	stopRecv()
	<-atPC.done
	<-atPhone.done
}

// Scenario 3: the phone's WebSocket is cut while the data channel is up.
// Chords keep arriving over p2p both ways; the phone reconnects, resumes and
// is a member again; nothing is lost or duplicated.
func TestWebSocketCutWhileP2PUp(t *testing.T) {
	defer goleak.VerifyNone(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e := newEnv(t)
	defer e.close()
	sid, pc, phone := e.pair(ctx, nil, func(c *peer.Config) {
		// a slow first reconnect, so that the WebSocket is down for a while
		c.BackoffMin, c.BackoffMax = 400*time.Millisecond, time.Second
	})
	defer pc.Close()
	defer phone.Close()
	rctx, stopRecv := context.WithCancel(ctx)
	defer stopRecv()
	atPC := collect(rctx, pc, phone.ClientID())
	atPhone := collect(rctx, phone, pc.ClientID())
	waitP2P(ctx, t, pc, phone)

	stop := make(chan struct{})
	s1 := startSender(ctx, phone, 1<<30, time.Millisecond, stop)
	s2 := startSender(ctx, pc, 1<<30, time.Millisecond, stop)
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		<-s1.done
		<-s2.done
	}()
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

	close(stop)
	<-s1.done
	<-s2.done
	if s1.err != nil || s2.err != nil {
		t.Fatal(s1.err, s2.err)
	}
	waitFor(ctx, t, "every chord", func() bool { return atPC.len() >= s1.n && atPhone.len() >= s2.n })
	for _, c := range []*peer.Client{pc, phone} {
		if err := c.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	checkExact(t, "phone->pc", atPC.snapshot(), s1.n)
	checkExact(t, "pc->phone", atPhone.snapshot(), s2.n)
	// the server holds everything the phone sent while its WebSocket was down
	st, err := e.srv.Broker().State(ctx, sid)
	if err != nil {
		t.Fatal(err)
	}
	last, err := e.srv.Broker().LastSeq(ctx, sid, phone.ClientID())
	if err != nil {
		t.Fatal(err)
	}
	if last != uint64(s1.n) {
		t.Fatalf("server holds the phone's messages up to seq %d, want %d", last, s1.n)
	}
	t.Logf("phone->pc %d, pc->phone %d chords; state chord %q; phone reconnects %d, duplicates dropped pc=%d phone=%d",
		s1.n, s2.n, st.Chord, phone.Stats().Reconnects, pc.Stats().Duplicates, phone.Stats().Duplicates)
	stopRecv()
	<-atPC.done
	<-atPhone.done
}

// Scenario 4: the phone disables P2P; everything goes by relay.
func TestDisableP2PUsesRelay(t *testing.T) {
	defer goleak.VerifyNone(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e := newEnv(t)
	defer e.close()
	_, pc, phone := e.pair(ctx, nil, func(c *peer.Config) { c.DisableP2P = true })
	defer pc.Close()
	defer phone.Close()
	rctx, stopRecv := context.WithCancel(ctx)
	defer stopRecv()
	atPC := collect(rctx, pc, phone.ClientID())
	atPhone := collect(rctx, phone, pc.ClientID())

	const n = 300
	s1 := startSender(ctx, phone, n, 0, nil)
	s2 := startSender(ctx, pc, n, 0, nil)
	<-s1.done
	<-s2.done
	if s1.err != nil || s2.err != nil {
		t.Fatal(s1.err, s2.err)
	}
	waitFor(ctx, t, "every chord", func() bool { return atPC.len() >= n && atPhone.len() >= n })
	for _, c := range []*peer.Client{pc, phone} {
		if err := c.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	for name, col := range map[string]*collector{"phone->pc": atPC, "pc->phone": atPhone} {
		checkExact(t, name, col.snapshot(), n)
		if p2p := col.count(func(d peer.Delivery) bool { return d.Path != protocol.PathRelay }); p2p != 0 {
			t.Fatalf("%s: %d deliveries not by relay with P2P disabled", name, p2p)
		}
	}
	if pc.Path() != protocol.PathRelay || phone.Path() != protocol.PathRelay {
		t.Fatalf("paths: pc %s, phone %s; want relay", pc.Path(), phone.Path())
	}
	stopRecv()
	<-atPC.done
	<-atPhone.done
}
