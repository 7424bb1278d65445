package netem

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"
)

// Defaults of Config's zero values.
const (
	// DefaultQueueLimit bounds the frames waiting (delayed) for one host.
	DefaultQueueLimit = 4096
	// maxHosts bounds the hosts of a Network (addresses .1 to .200 of the prefix).
	maxHosts = 200
	// maxFrame is the largest frame read from a TAP device (MTU 1500 plus the
	// Ethernet header, with room to spare).
	maxFrame = 2048
	// ifName is the name of every host's interface, inside its namespace.
	ifName = "eth0"
)

// Sentinel errors.
var (
	// ErrClosed is returned by the methods of a closed Network.
	ErrClosed = errors.New("netem: network closed")
	// ErrUnavailable wraps what this machine lacks (see Check).
	ErrUnavailable = errors.New("netem: not available here")
)

// Config configures a Network. Its zero value means the documented defaults.
type Config struct {
	// Prefix is the LAN's IPv4 prefix; host i (from 0) gets address i+1.
	// Default 10.99.0.0/24. The addresses exist only inside the hosts'
	// namespaces, so they cannot clash with the machine's own.
	Prefix netip.Prefix
	// Seed seeds the random draws of loss and jitter; 0 means random.
	Seed uint64
	// QueueLimit bounds the frames waiting for delivery to one host; beyond
	// it a frame is dropped (tail drop) and counted. Default 4096.
	QueueLimit int
	// Logger receives the network's logs. Default: discard.
	Logger *slog.Logger
}

// Network is an emulated Ethernet LAN: a switch running in this process, and
// hosts, each an anonymous network namespace with one TAP interface (eth0)
// plugged into the switch. All its methods are safe for concurrent use.
type Network struct {
	cfg     Config
	log     *slog.Logger
	nsenter string
	ip      string

	mu     sync.RWMutex
	hosts  []*Host
	macs   map[[6]byte]*Host
	rules  map[uint64]Rule
	nextID uint64
	closed bool

	wg sync.WaitGroup
}

// New makes an empty network. It checks that this machine can build one
// (see Check).
func New(cfg Config) (*Network, error) {
	if !cfg.Prefix.IsValid() {
		cfg.Prefix = netip.MustParsePrefix("10.99.0.0/24")
	}
	if !cfg.Prefix.Addr().Is4() || cfg.Prefix.Bits() > 24 {
		return nil, fmt.Errorf("netem: Prefix must be an IPv4 prefix of /24 or larger, not %v", cfg.Prefix)
	}
	cfg.Prefix = cfg.Prefix.Masked()
	if cfg.QueueLimit == 0 {
		cfg.QueueLimit = DefaultQueueLimit
	}
	if cfg.QueueLimit < 0 {
		return nil, fmt.Errorf("netem: QueueLimit must not be negative")
	}
	if cfg.Seed == 0 {
		cfg.Seed = rand.Uint64()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	nsenter, ip, err := tools()
	if err != nil {
		return nil, err
	}
	return &Network{
		cfg: cfg, log: cfg.Logger, nsenter: nsenter, ip: ip,
		macs:  make(map[[6]byte]*Host),
		rules: make(map[uint64]Rule),
	}, nil
}

// tools finds nsenter and ip.
func tools() (nsenter, ip string, err error) {
	if nsenter, err = lookPath("nsenter"); err != nil {
		return "", "", fmt.Errorf("%w: nsenter (util-linux) is needed: %v", ErrUnavailable, err)
	}
	if ip, err = lookPath("ip"); err != nil {
		return "", "", fmt.Errorf("%w: ip (iproute2) is needed: %v", ErrUnavailable, err)
	}
	return nsenter, ip, nil
}

func lookPath(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/bin", "/bin"} {
		p := dir + "/" + name
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", exec.ErrNotFound
}

// Check reports what this machine lacks to build a Network: Linux with
// /dev/net/tun, the right to create network namespaces (root or
// CAP_SYS_ADMIN and CAP_NET_ADMIN), nsenter (util-linux) and ip (iproute2).
// The error wraps ErrUnavailable.
func Check() error {
	if _, _, err := tools(); err != nil {
		return err
	}
	ns, tap, err := newNamespace(ifName)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	_ = tap.Close()
	return ns.Close()
}

// Prefix returns the LAN's prefix.
func (n *Network) Prefix() netip.Prefix { return n.cfg.Prefix }

// AddHost makes a host: a fresh network namespace with lo up and eth0 plugged
// into the switch, with the next address of the prefix, a default route
// through eth0 (a destination outside the LAN is simply unreachable: nothing
// leaves the network) and IPv6 link-local addressing as the kernel does it.
// The host starts with a perfect link. It blocks while `ip` configures the
// namespace.
func (n *Network) AddHost(ctx context.Context, name string) (*Host, error) {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil, ErrClosed
	}
	idx := len(n.hosts)
	if idx >= maxHosts || idx+2 >= 1<<(32-n.cfg.Prefix.Bits()) {
		n.mu.Unlock()
		return nil, fmt.Errorf("netem: no address left for host %q", name)
	}
	// Reserve the slot so that concurrent AddHost calls get distinct addresses.
	n.hosts = append(n.hosts, nil)
	n.mu.Unlock()

	addr := n.cfg.Prefix.Addr()
	for range idx + 1 {
		addr = addr.Next()
	}
	mac := net.HardwareAddr{0x02, 0x76, 0x74, byte(n.cfg.Prefix.Addr().As4()[2]), 0, byte(idx + 1)}
	h := &Host{n: n, name: name, addr: addr, mac: mac, index: idx}
	ns, tap, err := newNamespace(ifName)
	if err != nil {
		n.dropSlot(idx)
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	h.ns = ns
	h.port = newPort(h, tap, n.cfg.Seed+uint64(idx)*0x9e3779b97f4a7c15)
	script := strings.Join([]string{
		"link set lo up",
		"link set " + ifName + " address " + mac.String(),
		fmt.Sprintf("addr add %s/%d dev %s", addr, n.cfg.Prefix.Bits(), ifName),
		"link set " + ifName + " up",
		"route add default dev " + ifName,
	}, "\n") + "\n"
	cmd := h.Command(ctx, n.ip, "-batch", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		_ = tap.Close()
		_ = ns.Close()
		n.dropSlot(idx)
		return nil, fmt.Errorf("netem: configuring host %q: %v: %s", name, err, bytes.TrimSpace(out))
	}

	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		_ = tap.Close()
		_ = ns.Close()
		return nil, ErrClosed
	}
	n.hosts[idx] = h
	n.macs[[6]byte(mac)] = h
	n.wg.Add(2)
	n.mu.Unlock()
	go func() { defer n.wg.Done(); n.readLoop(h) }()
	go func() { defer n.wg.Done(); h.port.writeLoop(n.log) }()
	n.log.Debug("host up", "host", name, "addr", addr, "mac", mac)
	return h, nil
}

func (n *Network) dropSlot(idx int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if idx == len(n.hosts)-1 {
		n.hosts = n.hosts[:idx]
	}
}

// Hosts returns the network's hosts in the order they were added.
func (n *Network) Hosts() []*Host {
	n.mu.RLock()
	defer n.mu.RUnlock()
	out := make([]*Host, 0, len(n.hosts))
	for _, h := range n.hosts {
		if h != nil {
			out = append(out, h)
		}
	}
	return out
}

// Block adds a filter rule and returns the function that removes it (calling
// it more than once is harmless). Rules take effect for the next frame.
func (n *Network) Block(r Rule) (unblock func()) {
	n.mu.Lock()
	n.nextID++
	id := n.nextID
	n.rules[id] = r
	n.mu.Unlock()
	n.log.Debug("rule added", "rule", r.String())
	return func() {
		n.mu.Lock()
		_, ok := n.rules[id]
		delete(n.rules, id)
		n.mu.Unlock()
		if ok {
			n.log.Debug("rule removed", "rule", r.String())
		}
	}
}

// Unblock removes every filter rule.
func (n *Network) Unblock() {
	n.mu.Lock()
	clear(n.rules)
	n.mu.Unlock()
}

// Reset removes every rule and gives every host a perfect link again.
func (n *Network) Reset() {
	n.Unblock()
	for _, h := range n.Hosts() {
		_ = h.SetImpairment(BothWays, Impairment{})
	}
}

// Close stops the switch, removes every host's interface and lets go of the
// namespaces. A process still running in a host keeps its namespace alive,
// cut off from everything: stop them first. Close waits for the switch's
// goroutines.
func (n *Network) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	hosts := n.hosts
	n.mu.Unlock()
	var errs []error
	for _, h := range hosts {
		if h != nil {
			h.port.close()
		}
	}
	n.wg.Wait()
	for _, h := range hosts {
		if h != nil {
			errs = append(errs, h.port.tap.Close(), h.ns.Close())
		}
	}
	return errors.Join(errs...)
}

// readLoop reads the frames h sends and forwards them until the network closes.
func (n *Network) readLoop(h *Host) {
	p := h.port
	buf := make([]byte, maxFrame)
	for {
		k, err := p.tap.Read(buf)
		if err != nil {
			if !p.isClosed() {
				n.log.Warn("reading a host's interface", "host", h.name, "err", err)
			}
			return
		}
		if k < ethHeader {
			continue
		}
		p.stats.out.add(1)
		n.forward(h, bytes.Clone(buf[:k]), time.Now())
	}
}

// forward delivers a frame from src to its destinations (the host owning the
// destination MAC, or every other host for group and unknown addresses),
// applying the rules and both links' impairments on each way.
func (n *Network) forward(src *Host, f []byte, now time.Time) {
	proto := frameProto(f)
	n.mu.RLock()
	var dsts []*Host
	if dst, ok := n.macs[[6]byte(f[:6])]; ok && !groupAddressed(f) {
		if dst != src {
			dsts = append(dsts, dst)
		}
	} else {
		for _, h := range n.hosts {
			if h != nil && h != src {
				dsts = append(dsts, h)
			}
		}
	}
	type hop struct {
		dst  *Host
		drop bool
	}
	hops := make([]hop, 0, len(dsts))
	for _, dst := range dsts {
		drop := false
		for _, r := range n.rules {
			if r.matches(src, dst, proto) {
				drop = true
				break
			}
		}
		hops = append(hops, hop{dst, drop})
	}
	n.mu.RUnlock()

	out := src.port.impairment(Out)
	for _, hp := range hops {
		if hp.drop {
			hp.dst.port.stats.ruleDrops.add(1)
			continue
		}
		in := hp.dst.port.impairment(In)
		// The source's reader goroutine owns src.port.rng.
		if out.lost(src.port.rng) || in.lost(src.port.rng) {
			hp.dst.port.stats.lossDrops.add(1)
			continue
		}
		d := out.delay(src.port.rng) + in.delay(src.port.rng)
		hp.dst.port.deliver(src, f, now.Add(d), n.cfg.QueueLimit)
	}
}
