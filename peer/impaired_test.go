package peer_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/logging"
	"github.com/pion/transport/v5/vnet"
	"github.com/pion/webrtc/v4"

	"github.com/virtutune/link/internal/peertest"
	"github.com/virtutune/link/internal/testkit"
	"github.com/virtutune/link/peer"
	"github.com/virtutune/link/protocol"
)

// The impaired-network tests run two Go peers and a real server in one
// process. The data channel crosses a pion vnet (SettingEngine.SetNet): a
// virtual LAN that delays, loses or drops every packet between phone and PC.
// The phone's WebSocket goes through wsProxy, a TCP proxy on loopback that
// delays it, stalls it as a lost segment would, or holds every byte both
// ways (a blackout: the bytes flow again when the network returns, as TCP
// would resend them). Each test checks that nothing is lost, duplicated or
// reordered, with time bounds generous enough for a loaded machine (the
// figures themselves are logged, and measured end to end by
// virtutune-bench's impaired mode).

// impairment describes what the phone's network does.
type impairment struct {
	loss          float64       // each UDP packet, each way
	delay, jitter time.Duration // UDP: vnet's minimum delay and jitter
	wsDelay       time.Duration // the WebSocket: each chunk, each way, up to
	wsBase        time.Duration // the WebSocket: each chunk, each way, at least
	wsLoss        float64       // the WebSocket: a chunk stalls as a lost TCP segment would
}

// vlan is the virtual LAN of the data channel.
type vlan struct {
	router    *vnet.Router
	pc, phone *vnet.Net
	loss      atomic.Uint64 // probability * 1e6
	udpDead   atomic.Bool
	dropped   atomic.Int64
	passed    atomic.Int64
}

func newVLAN(t testing.TB, im impairment) *vlan {
	t.Helper()
	lf := logging.NewDefaultLoggerFactory()
	lf.DefaultLogLevel = logging.LogLevelError
	r, err := vnet.NewRouter(&vnet.RouterConfig{CIDR: "10.77.0.0/24", MinDelay: im.delay, MaxJitter: im.jitter, LoggerFactory: lf})
	if err != nil {
		t.Fatal(err)
	}
	v := &vlan{router: r}
	v.loss.Store(uint64(im.loss * 1e6))
	r.AddChunkFilter(func(vnet.Chunk) bool {
		if v.udpDead.Load() {
			v.dropped.Add(1)
			return false
		}
		if l := v.loss.Load(); l > 0 && rand.Uint64N(1e6) < l {
			v.dropped.Add(1)
			return false
		}
		v.passed.Add(1)
		return true
	})
	for _, n := range []**vnet.Net{&v.pc, &v.phone} {
		ip := "10.77.0.2"
		if n == &v.phone {
			ip = "10.77.0.3"
		}
		nn, err := vnet.NewNet(&vnet.NetConfig{StaticIPs: []string{ip}})
		if err != nil {
			t.Fatal(err)
		}
		if err := r.AddNet(nn); err != nil {
			t.Fatal(err)
		}
		*n = nn
	}
	if err := r.Start(); err != nil {
		t.Fatal(err)
	}
	return v
}

func (v *vlan) close() { _ = v.router.Stop() }

// settings puts a client's pion on this LAN, with the client's own defaults
// for everything else (SCTP, ICE timeouts).
func (v *vlan) settings(n *vnet.Net) func(*webrtc.SettingEngine) {
	return func(se *webrtc.SettingEngine) {
		se.SetNet(n)
		se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
		se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	}
}

// wsProxy is the phone's WebSocket path: a TCP proxy on loopback.
type wsProxy struct {
	ln     net.Listener
	target string
	im     impairment
	mu     sync.Mutex
	cond   *sync.Cond
	black  bool // hold every byte
	shut   bool // refuse connections (the server out of reach)
	conns  []net.Conn
	wg     sync.WaitGroup
	closed bool
}

func newWSProxy(t testing.TB, target string, im impairment) *wsProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &wsProxy{ln: ln, target: target, im: im}
	p.cond = sync.NewCond(&p.mu)
	p.wg.Add(1)
	go p.accept()
	return p
}

func (p *wsProxy) url() string { return "http://" + p.ln.Addr().String() }

func (p *wsProxy) setBlack(b bool) {
	p.mu.Lock()
	p.black = b
	p.cond.Broadcast()
	p.mu.Unlock()
}

// setShut shuts the proxy (closing every connection through it and refusing
// new ones, as a server out of reach does) or opens it again.
func (p *wsProxy) setShut(shut bool) {
	p.mu.Lock()
	p.shut = shut
	conns := p.conns
	if shut {
		p.conns = nil
	}
	p.mu.Unlock()
	if shut {
		for _, c := range conns {
			c.Close()
		}
	}
}

func (p *wsProxy) close() {
	p.mu.Lock()
	p.closed = true
	p.black = false
	for _, c := range p.conns {
		c.Close()
	}
	p.cond.Broadcast()
	p.mu.Unlock()
	p.ln.Close()
	p.wg.Wait()
}

func (p *wsProxy) accept() {
	defer p.wg.Done()
	testkit.Forward(p.ln, p.target, func(c, s net.Conn) bool {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			c.Close()
			s.Close()
			return false
		}
		if p.shut { // refused: the server is out of reach
			p.mu.Unlock()
			c.Close()
			s.Close()
			return true
		}
		p.conns = append(p.conns, c, s)
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(s, c)
		go p.pipe(c, s)
		return true
	})
}

// pipe copies src to dst chunk by chunk, in order: each chunk waits out the
// blackout, its delay (uniform up to wsDelay) and, with probability wsLoss,
// a TCP retransmission timeout (200 ms) as if its segment was lost.
func (p *wsProxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	defer dst.Close()
	defer src.Close()
	type chunk struct {
		b   []byte
		due time.Time
		eof bool
	}
	q := make(chan chunk, 1024)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ch := range q {
			if d := time.Until(ch.due); d > 0 {
				time.Sleep(d) // the pipe's own pacing, not a test's synchronisation
			}
			p.mu.Lock()
			for p.black && !p.closed {
				p.cond.Wait()
			}
			p.mu.Unlock()
			if ch.eof {
				return
			}
			if _, err := dst.Write(ch.b); err != nil {
				return
			}
		}
	}()
	var last time.Time
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			due := time.Now().Add(p.im.wsBase)
			if p.im.wsDelay > 0 {
				due = due.Add(time.Duration(rand.Int64N(int64(p.im.wsDelay))))
			}
			if p.im.wsLoss > 0 && rand.Float64() < p.im.wsLoss {
				due = due.Add(200 * time.Millisecond)
			}
			if due.Before(last) {
				due = last
			}
			last = due
			select {
			case q <- chunk{b: append([]byte(nil), buf[:n]...), due: due}:
			case <-done:
				return
			}
		}
		if err != nil {
			select {
			case q <- chunk{eof: true, due: last}:
			case <-done:
			}
			close(q)
			<-done
			return
		}
	}
}

// impaired is a session whose phone has the impaired network.
type impaired struct {
	t           testing.TB
	e           *env
	lan         *vlan
	proxy       *wsProxy
	pc, phone   *peer.Client
	atPC        *collector
	pcEvents    *peertest.EventLog
	phoneEvents *peertest.EventLog
	stopRecv    context.CancelFunc
}

func newImpaired(ctx context.Context, t testing.TB, im impairment) *impaired {
	t.Helper()
	return newImpairedWith(ctx, t, im, nil)
}

// newImpairedWith is newImpaired with more pion settings for both clients.
func newImpairedWith(ctx context.Context, t testing.TB, im impairment, more func(*webrtc.SettingEngine)) *impaired {
	t.Helper()
	h := &impaired{t: t, e: newEnv(t)}
	h.lan = newVLAN(t, im)
	h.proxy = newWSProxy(t, strings.TrimPrefix(h.e.url, "http://"), im)
	info, err := peer.CreateSession(ctx, h.e.url, "")
	if err != nil {
		t.Fatal(err)
	}
	ph, err := peer.Pair(ctx, info.PairingURL)
	if err != nil {
		t.Fatal(err)
	}
	cfg := func(role string, n *vnet.Net) peer.Config {
		set := h.lan.settings(n)
		return peer.Config{Role: role, Logger: h.e.log.With("side", role), SettingEngine: func(se *webrtc.SettingEngine) {
			set(se)
			if more != nil {
				more(se)
			}
		}}
	}
	pcCfg := cfg(protocol.RolePC, h.lan.pc)
	pcCfg.ServerURL, pcCfg.SessionID, pcCfg.Token = h.e.url, info.SessionID, info.Token
	if h.pc, err = peer.Dial(ctx, pcCfg); err != nil {
		t.Fatal(err)
	}
	phCfg := cfg(protocol.RolePhone, h.lan.phone)
	phCfg.ServerURL, phCfg.SessionID, phCfg.Token = h.proxy.url(), ph.SessionID, ph.Token
	if h.phone, err = peer.Dial(ctx, phCfg); err != nil {
		h.pc.Close()
		t.Fatal(err)
	}
	rctx, stop := context.WithCancel(ctx)
	h.stopRecv = stop
	h.atPC = collect(rctx, h.pc, h.phone.ClientID())
	h.pcEvents = peertest.LogEvents(rctx, h.pc)
	h.phoneEvents = peertest.LogEvents(rctx, h.phone)
	// drain what the phone receives
	go func() {
		for {
			if _, err := h.phone.Recv(rctx); err != nil {
				return
			}
		}
	}()
	return h
}

func (h *impaired) close() {
	h.stopRecv()
	<-h.atPC.done
	<-h.pcEvents.Done()
	<-h.phoneEvents.Done()
	h.phone.Close()
	h.pc.Close()
	h.proxy.close()
	h.lan.close()
	h.e.close()
}

// latencies returns each delivery's one-way latency (one process, one clock).
func latencies(ds []peer.Delivery) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		sent := time.UnixMicro(int64(d.Msg.At * 1000))
		out[i] = d.At.Sub(sent)
	}
	return out
}

func pct(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	c := slices.Clone(ds)
	sort.Slice(c, func(i, j int) bool { return c[i] < c[j] })
	i := int(q * float64(len(c)-1))
	return c[i]
}

func summary(ds []time.Duration) string {
	return fmt.Sprintf("p50 %v p99 %v max %v", pct(ds, 0.5).Round(10*time.Microsecond),
		pct(ds, 0.99).Round(10*time.Microsecond), pct(ds, 1).Round(10*time.Microsecond))
}

// finish stops the phone's chords, waits for every one at the PC, and
// checks that each arrived once and in order.
func (h *impaired) finish(ctx context.Context, p *peertest.Sender) []peer.Delivery {
	h.t.Helper()
	p.Stop()
	<-p.Done()
	n := p.Count()
	if err := p.Err(); err != nil {
		h.t.Fatalf("send: %v", err)
	}
	waitFor(ctx, h.t, fmt.Sprintf("all %d chords at the PC", n), func() bool { return h.atPC.len() >= n })
	if err := h.pc.Flush(ctx); err != nil {
		h.t.Fatal(err)
	}
	ds := h.atPC.snapshot()
	checkExact(h.t, "phone->PC", ds, n)
	return ds
}

// slowest describes the n slowest deliveries: latency and the path that won.
func slowest(ds []peer.Delivery, lat []time.Duration, n int) string {
	idx := make([]int, len(ds))
	for i := range idx {
		idx[i] = i
	}
	sort.Slice(idx, func(a, b int) bool { return lat[idx[a]] > lat[idx[b]] })
	var parts []string
	for _, i := range idx[:min(n, len(idx))] {
		parts = append(parts, fmt.Sprintf("%v by %s", lat[i].Round(100*time.Microsecond), ds[i].Path))
	}
	return strings.Join(parts, ", ")
}

func byPath(ds []peer.Delivery) map[string]int {
	m := map[string]int{}
	for _, d := range ds {
		m[d.Path]++
	}
	return m
}

// Wi-Fi-like: 4 ± 3 ms and 2 % loss each way on both paths. Both paths race,
// so a chord the data channel loses comes by the relay: only a chord both
// lose waits for a retransmission. Today's behaviour (the relay's copy held
// back while the channel is up, SCTP's 1 s retransmission timer) put p99 at
// 220-267 ms; the bound here is far above the target (p99 < 60 ms) and far
// below that.
func TestImpairedLossyLink(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	h := newImpaired(ctx, t, impairment{loss: 0.02, delay: time.Millisecond, jitter: 6 * time.Millisecond,
		wsDelay: 7 * time.Millisecond, wsLoss: 0.02})
	defer h.close()
	waitP2P(ctx, t, h.pc, h.phone)
	// 10 chords a second (a guitarist plays up to 4): denser would make each
	// stall of the emulated TCP hold back more chords than a player sends
	p := peertest.Play(ctx, h.phone, 100*time.Millisecond)
	waitFor(ctx, t, "300 chords sent", func() bool { return h.atPC.len() >= 300 })
	ds := h.finish(ctx, p)
	lat := latencies(ds)
	late := 0
	for _, l := range lat {
		if l > 250*time.Millisecond {
			late++
		}
	}
	t.Logf("lossy link: %d chords, %s; first by %v; the slowest %s; UDP dropped %d of %d; PC links %+v",
		len(ds), summary(lat), byPath(ds), slowest(ds, lat, 5), h.lan.dropped.Load(), h.lan.dropped.Load()+h.lan.passed.Load(), h.pc.Status())
	if late > len(ds)/100 {
		t.Fatalf("%d of %d chords later than 250 ms (%s)", late, len(ds), summary(lat))
	}
}

// UDP between phone and PC dies silently while the WebSocket flows: no chord
// waits (the relay's copy is delivered), both ends know within about half a
// second that the direct path is down and say why, and when UDP returns the
// direct path is back in well under a second. Today every chord stalled for
// 30 s and p2p came back 12.5 s after UDP did. In the long outage the silent
// connection gives up (ICE failed, here after 3 s) and the fresh attempts,
// one after the other, run into the dead path until one finds it back.
func TestImpairedUDPDiesSilently(t *testing.T) {
	for _, tc := range []struct {
		name   string
		outage int // chords sent by relay meanwhile, one per 50 ms
		ice    func(*webrtc.SettingEngine)
	}{
		{"3s", 60, nil},
		{"8s,connection-fails", 160, func(se *webrtc.SettingEngine) { se.SetICETimeouts(time.Second, 2*time.Second, 500*time.Millisecond) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			h := newImpairedWith(ctx, t, impairment{}, tc.ice)
			defer h.close()
			waitP2P(ctx, t, h.pc, h.phone)
			gen0 := h.pc.Links()[0].Generation
			p := peertest.Play(ctx, h.phone, 50*time.Millisecond)
			waitFor(ctx, t, "chords over p2p", func() bool { return h.atPC.len() >= 20 })

			died := time.Now()
			h.lan.udpDead.Store(true)
			// when each side said relay, polled (the events say it too, but a
			// poll cannot miss one)
			var pcDown, phDown time.Time
			waitFor(ctx, t, "both links down", func() bool {
				now := time.Now()
				if pcDown.IsZero() && h.pc.PathTo(h.phone.ClientID()) == protocol.PathRelay {
					pcDown = now
				}
				if phDown.IsZero() && h.phone.PathTo(h.pc.ClientID()) == protocol.PathRelay {
					phDown = now
				}
				return !pcDown.IsZero() && !phDown.IsZero()
			})
			st := h.pc.Status()
			if st.Path != protocol.PathRelay || st.Reason == "" {
				t.Fatalf("the PC's status during the outage: %+v; want relay and a reason", st)
			}
			mark := h.atPC.len()
			waitFor(ctx, t, "chords by relay during the outage", func() bool { return h.atPC.len() >= mark+tc.outage })

			back := time.Now()
			h.lan.udpDead.Store(false)
			waitFor(ctx, t, "p2p again", func() bool {
				return h.pc.PathTo(h.phone.ClientID()) == protocol.PathP2P && h.phone.PathTo(h.pc.ClientID()) == protocol.PathP2P
			})
			again := time.Since(back)
			gen1 := h.pc.Links()[0].Generation
			mark = h.atPC.len()
			waitFor(ctx, t, "chords after the return", func() bool { return h.atPC.len() >= mark+20 })
			ds := h.finish(ctx, p)
			var during []time.Duration
			lat := latencies(ds)
			for i, d := range ds {
				if s := p.SentAt(int(d.Msg.Seq)); !s.Before(died) && s.Before(back) {
					during = append(during, lat[i])
				}
			}
			t.Logf("UDP dies for %v: down known after PC %v phone %v (reason %q); chords during the outage (%d): %s; p2p again %v after UDP returned (generation %d -> %d); all %d: %s, first by %v",
				back.Sub(died).Round(100*time.Millisecond), pcDown.Sub(died).Round(time.Millisecond), phDown.Sub(died).Round(time.Millisecond), st.Reason,
				len(during), summary(during), again.Round(time.Millisecond), gen0, gen1, len(ds), summary(lat), byPath(ds))
			if m := pct(during, 1); m > 2*time.Second {
				t.Fatalf("a chord sent while UDP was dead arrived %v late", m)
			}
			if d := pcDown.Sub(died); d > 3*time.Second {
				t.Fatalf("the PC took %v to know the direct path was down", d)
			}
			if again > 8*time.Second {
				t.Fatalf("p2p came back %v after UDP did", again)
			}
		})
	}
}

// Everything to and from the phone is gone for a while (UDP and its
// WebSocket): every chord played meanwhile arrives soon after the network
// returns, and chords played after it arrive promptly. Today: ~4 s after the
// return for a 3 s blackout; chords after a 15 s one frozen ~15 s. In the
// last case the WebSocket stays stalled 5 s longer than UDP (TCP backing
// off its retransmissions, or a reconnect waiting out its backoff): the data
// channel alone must bring what was played during the blackout (resent from
// the outbox when the PC's heartbeat shows it lacks it) and what comes after.
func TestImpairedBlackout(t *testing.T) {
	for _, tc := range []struct{ udp, ws time.Duration }{
		{3 * time.Second, 3 * time.Second},
		{15 * time.Second, 15 * time.Second},
		{15 * time.Second, 20 * time.Second},
	} {
		d := tc.udp
		t.Run(fmt.Sprintf("udp=%v,ws=%v", tc.udp, tc.ws), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			h := newImpaired(ctx, t, impairment{})
			defer h.close()
			waitP2P(ctx, t, h.pc, h.phone)
			p := peertest.Play(ctx, h.phone, 100*time.Millisecond)
			waitFor(ctx, t, "chords before", func() bool { return h.atPC.len() >= 10 })

			start := time.Now()
			h.lan.udpDead.Store(true)
			h.proxy.setBlack(true)
			end := start.Add(d)
			waitFor(ctx, t, "the blackout's end", func() bool { return !time.Now().Before(end) })
			h.lan.udpDead.Store(false)
			back := time.Now()
			wsBack := start.Add(tc.ws)
			if tc.ws == tc.udp {
				h.proxy.setBlack(false)
			} else {
				go func() {
					time.Sleep(time.Until(wsBack)) // the WebSocket's own outage, not a synchronisation
					h.proxy.setBlack(false)
				}()
			}
			sentBefore := p.Count()
			waitFor(ctx, t, "chords sent during the blackout", func() bool { return h.atPC.len() >= sentBefore })
			caughtUp := time.Since(back)
			mark := h.atPC.len()
			waitFor(ctx, t, "chords after the return", func() bool { return h.atPC.len() >= mark+30 })
			waitFor(ctx, t, "the WebSocket back", func() bool { return time.Now().After(wsBack) })
			ds := h.finish(ctx, p)
			lat := latencies(ds)
			var during, after []time.Duration
			var lastDuring time.Time
			for i, dl := range ds {
				s := p.SentAt(int(dl.Msg.Seq))
				switch {
				case !s.Before(start) && s.Before(back):
					during = append(during, lat[i])
					if dl.At.After(lastDuring) {
						lastDuring = dl.At
					}
				case !s.Before(back):
					after = append(after, lat[i])
				}
			}
			p2pBack, _ := h.pcEvents.First(back, func(e peer.Event) bool { return e.Kind == peer.EventP2P && e.State == peer.LinkUp })
			t.Logf("blackout %v (WebSocket %v): the last chord played during it arrived %v after the return (all at the PC %v after); chords after the return (%d): %s; p2p up again after %v; first by %v; phone reconnects %d",
				d, tc.ws, lastDuring.Sub(back).Round(time.Millisecond), caughtUp.Round(time.Millisecond), len(after), summary(after),
				p2pBack.At.Sub(back).Round(time.Millisecond), byPath(ds), h.phone.Stats().Reconnects)
			if l := lastDuring.Sub(back); l > 4*time.Second {
				t.Fatalf("chords played during the blackout arrived up to %v after the return", l)
			}
			if m := pct(after, 0.9); m > 3*time.Second {
				t.Fatalf("chords played after the return arrived %v after they were played (p90)", m)
			}
			_ = during
		})
	}
}
