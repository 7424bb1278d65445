package netem

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/virtutune/link/internal/testkit"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// newNet builds a network of the named hosts, or skips (fails under CI=true)
// where this machine cannot.
func newNet(t *testing.T, names ...string) (*Network, []*Host) {
	t.Helper()
	if err := Check(); err != nil {
		testkit.SkipOrFail(t, "%v", err)
	}
	n, err := New(Config{Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := n.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var hosts []*Host
	for _, name := range names {
		h, err := n.AddHost(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		hosts = append(hosts, h)
	}
	return n, hosts
}

// echoTCP serves a TCP echo on h and returns its address.
func echoTCP(t *testing.T, h *Host) string {
	t.Helper()
	l, err := h.Listen(context.Background(), "tcp", h.Addr().String()+":0")
	if err != nil {
		t.Fatal(err)
	}
	serveUntilCleanup(t, l, func(wg *sync.WaitGroup) {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { defer c.Close(); _, _ = io.Copy(c, c) })
		}
	})
	return l.Addr().String()
}

// echoUDP serves a UDP echo on h and returns its address.
func echoUDP(t *testing.T, h *Host) string {
	t.Helper()
	c, err := h.ListenPacket(context.Background(), "udp4", h.Addr().String()+":0")
	if err != nil {
		t.Fatal(err)
	}
	serveUntilCleanup(t, c, func(*sync.WaitGroup) {
		buf := make([]byte, 2048)
		for {
			k, from, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = c.WriteTo(buf[:k], from)
		}
	})
	return c.LocalAddr().String()
}

// serveUntilCleanup runs loop in a goroutine (it may start more on wg) until
// t's cleanup closes sock, and waits for them all.
func serveUntilCleanup(t *testing.T, sock io.Closer, loop func(wg *sync.WaitGroup)) {
	var wg sync.WaitGroup
	t.Cleanup(func() { _ = sock.Close(); wg.Wait() })
	wg.Go(func() { loop(&wg) })
}

// udpRTT sends one datagram from h to addr and waits up to wait for its echo.
func udpRTT(t *testing.T, c net.PacketConn, addr string, wait time.Duration, tag string) (time.Duration, bool) {
	t.Helper()
	ua, err := net.ResolveUDPAddr("udp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := c.WriteTo([]byte(tag), ua); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2048)
	_ = c.SetReadDeadline(start.Add(wait))
	for {
		k, _, err := c.ReadFrom(buf)
		if err != nil {
			return 0, false
		}
		if string(buf[:k]) == tag {
			return time.Since(start), true
		}
	}
}

func TestTCPAndUDPAcrossTheSwitch(t *testing.T) {
	_, hs := newNet(t, "a", "b")
	a, b := hs[0], hs[1]
	addr := echoTCP(t, b)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := a.Dial(ctx, "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	msg := bytes.Repeat([]byte("chord "), 2000) // several full-size frames
	go func() { _, _ = c.Write(msg) }()
	got := make([]byte, len(msg))
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("TCP echo: %v", err)
	}
	if a.Stats().Sent == 0 || b.Stats().Received == 0 {
		t.Errorf("stats not counted: a %+v b %+v", a.Stats(), b.Stats())
	}

	uaddr := echoUDP(t, b)
	pc, err := a.ListenPacket(ctx, "udp4", a.Addr().String()+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if _, ok := udpRTT(t, pc, uaddr, 5*time.Second, "u1"); !ok {
		t.Fatal("no UDP echo")
	}
}

// TestNamespacesAreIsolated: a host's namespace has only lo and eth0, and
// this process's own namespace gets no interface of the network.
func TestNamespacesAreIsolated(t *testing.T) {
	before, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	_, hs := newNet(t, "a")
	after, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != len(before) {
		t.Errorf("this namespace's interfaces changed: %v -> %v", before, after)
	}
	out, err := hs[0].Command(context.Background(), "ip", "-o", "link").CombinedOutput()
	if err != nil {
		t.Fatalf("ip link in the host: %v %s", err, out)
	}
	var names []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if len(f) > 1 {
			names = append(names, strings.TrimSuffix(f[1], ":"))
		}
	}
	if strings.Join(names, ",") != "lo,eth0" {
		t.Errorf("host interfaces %v, want lo and eth0", names)
	}
}

// udpPair opens a UDP socket on b (rx) and one on a (tx), both closed at
// t's cleanup.
func udpPair(t *testing.T, a, b *Host) (rx, tx net.PacketConn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var err error
	for _, s := range []struct {
		h *Host
		c *net.PacketConn
	}{{b, &rx}, {a, &tx}} {
		if *s.c, err = s.h.ListenPacket(ctx, "udp4", s.h.Addr().String()+":0"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = (*s.c).Close() })
	}
	return rx, tx
}

func TestDelayJitterAndOrder(t *testing.T) {
	_, hs := newNet(t, "a", "b")
	a, b := hs[0], hs[1]
	if err := a.SetImpairment(Out, Impairment{Delay: 30 * time.Millisecond, Jitter: 20 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	// Order: a stream of UDP datagrams from a to b arrives in order despite
	// the jitter (the link is FIFO).
	rx, tx := udpPair(t, a, b)
	dst := rx.LocalAddr()
	const n = 200
	start := time.Now()
	for i := range n {
		if _, err := tx.WriteTo([]byte(fmt.Sprint(i)), dst); err != nil {
			t.Fatal(err)
		}
	}
	buf := make([]byte, 64)
	_ = rx.SetReadDeadline(time.Now().Add(10 * time.Second))
	var first time.Duration
	for i := range n {
		k, _, err := rx.ReadFrom(buf)
		if err != nil {
			t.Fatalf("datagram %d: %v", i, err)
		}
		if i == 0 {
			first = time.Since(start)
		}
		if got := string(buf[:k]); got != fmt.Sprint(i) {
			t.Fatalf("datagram %d arrived as the %dth: reordered", i, i)
		}
	}
	// The first datagram waited at least the smallest delay the jitter allows
	// (ARP resolution comes on top, once).
	if first < 10*time.Millisecond {
		t.Errorf("first datagram after %v, want at least 10ms", first)
	}
}

func TestLoss(t *testing.T) {
	_, hs := newNet(t, "a", "b")
	a, b := hs[0], hs[1]
	rx, tx := udpPair(t, a, b)
	// Resolve ARP before the loss starts.
	if _, ok := udpRTT(t, tx, echoUDP(t, b), 5*time.Second, "warm"); !ok {
		t.Fatal("no echo")
	}
	if err := a.SetImpairment(Out, Impairment{Loss: 0.5}); err != nil {
		t.Fatal(err)
	}
	const n = 400
	for i := range n {
		if _, err := tx.WriteTo([]byte{byte(i)}, rx.LocalAddr()); err != nil {
			t.Fatal(err)
		}
	}
	got := 0
	buf := make([]byte, 16)
	for {
		_ = rx.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		if _, _, err := rx.ReadFrom(buf); err != nil {
			break
		}
		got++
	}
	// Binomial(400, 0.5): 200 ± 10; 120..280 is 8 standard deviations.
	if got < 120 || got > 280 {
		t.Errorf("%d of %d datagrams arrived with 50%% loss", got, n)
	}
	if d := b.Stats().DroppedByLoss; d < 120 {
		t.Errorf("DroppedByLoss %d", d)
	}
}

// TestRules: UDP between two hosts dies silently while TCP flows, and comes
// back; a blackout of one host stops everything; a one-way rule.
func TestRules(t *testing.T) {
	n, hs := newNet(t, "phone", "pc", "server")
	phone, pc, server := hs[0], hs[1], hs[2]
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tcpAddr := echoTCP(t, server)
	udpPC := echoUDP(t, pc)
	udpServer := echoUDP(t, server)
	uc, err := phone.ListenPacket(ctx, "udp4", phone.Addr().String()+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	tc, err := phone.Dial(ctx, "tcp", tcpAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	tcpEcho := func(tag string, wait time.Duration) error {
		if _, err := tc.Write([]byte(tag)); err != nil {
			return err
		}
		buf := make([]byte, len(tag))
		_ = tc.SetReadDeadline(time.Now().Add(wait))
		_, err := io.ReadFull(tc, buf)
		return err
	}

	unblock := n.Block(Rule{From: phone, To: pc, Proto: UDP})
	if _, ok := udpRTT(t, uc, udpPC, 500*time.Millisecond, "x1"); ok {
		t.Error("UDP phone->pc got through a UDP rule")
	}
	if _, ok := udpRTT(t, uc, udpServer, 2*time.Second, "x2"); !ok {
		t.Error("UDP phone->server blocked by a phone<->pc rule")
	}
	if err := tcpEcho("t1", 2*time.Second); err != nil {
		t.Errorf("TCP blocked by a UDP rule: %v", err)
	}
	unblock()
	unblock()
	if _, ok := udpRTT(t, uc, udpPC, 2*time.Second, "x3"); !ok {
		t.Error("UDP phone->pc still blocked after unblock")
	}

	// Blackout of the phone: nothing in or out, and TCP resumes after it.
	unblock = n.Block(Rule{From: phone})
	if _, ok := udpRTT(t, uc, udpServer, 300*time.Millisecond, "x4"); ok {
		t.Error("UDP through a blackout")
	}
	errc := make(chan error, 1)
	go func() { errc <- tcpEcho("t2", 10*time.Second) }()
	select {
	case err := <-errc:
		t.Fatalf("TCP echo during a blackout: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	unblock()
	if err := <-errc; err != nil {
		t.Errorf("TCP after the blackout: %v", err)
	}

	// One way: the datagram reaches pc, the echo does not come back.
	unblock = n.Block(Rule{From: pc, To: phone, Proto: UDP, OneWay: true})
	before := pc.Stats().Received
	if _, ok := udpRTT(t, uc, udpPC, 300*time.Millisecond, "x5"); ok {
		t.Error("echo came back through a one-way rule")
	}
	if pc.Stats().Received == before {
		t.Error("datagram did not reach pc through a rule of the other way")
	}
	unblock()
	n.Reset()
}

func TestValidate(t *testing.T) {
	for _, im := range []Impairment{{Delay: -1}, {Jitter: -1}, {Loss: -0.1}, {Loss: 1.5}} {
		if im.Validate() == nil {
			t.Errorf("%+v accepted", im)
		}
	}
	if _, err := New(Config{QueueLimit: -1}); err == nil {
		t.Error("negative QueueLimit accepted")
	}
}

func TestClosed(t *testing.T) {
	n, _ := newNet(t, "a")
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := n.AddHost(context.Background(), "b"); !errors.Is(err, ErrClosed) {
		t.Errorf("AddHost after Close: %v", err)
	}
}

func TestFrameProto(t *testing.T) {
	eth := func(et uint16, payload ...byte) []byte {
		f := make([]byte, 14, 14+len(payload))
		f[12], f[13] = byte(et>>8), byte(et)
		return append(f, payload...)
	}
	ipv4 := func(proto byte) []byte {
		h := make([]byte, 20)
		h[0], h[9] = 0x45, proto
		return h
	}
	ipv6 := func(next byte, ext ...byte) []byte {
		h := make([]byte, 40)
		h[0], h[6] = 0x60, next
		return append(h, ext...)
	}
	hopByHop := make([]byte, 8)
	hopByHop[0] = ipProtoUDP
	for _, c := range []struct {
		name string
		f    []byte
		want Proto
	}{
		{"ipv4 udp", eth(etherTypeIPv4, ipv4(ipProtoUDP)...), UDP},
		{"ipv4 tcp", eth(etherTypeIPv4, ipv4(ipProtoTCP)...), TCP},
		{"ipv4 icmp", eth(etherTypeIPv4, ipv4(1)...), AnyProto},
		{"ipv6 udp", eth(etherTypeIPv6, ipv6(ipProtoUDP)...), UDP},
		{"ipv6 hop-by-hop udp", eth(etherTypeIPv6, ipv6(0, hopByHop...)...), UDP},
		{"ipv6 truncated ext", eth(etherTypeIPv6, ipv6(0)...), AnyProto},
		{"arp", eth(0x0806, make([]byte, 28)...), AnyProto},
		{"short", []byte{1, 2, 3}, AnyProto},
		{"ipv4 short", eth(etherTypeIPv4, 0x45), AnyProto},
	} {
		if got := frameProto(c.f); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}
