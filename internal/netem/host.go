package netem

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"syscall"
)

// Host is one machine of the LAN: an anonymous network namespace with lo and
// eth0 (its address on the LAN). Processes run in it through Command or
// Wrap; this process can open sockets in it with Dial and Listen.
type Host struct {
	n     *Network
	name  string
	addr  netip.Addr
	mac   net.HardwareAddr
	index int
	ns    *os.File
	port  *port
}

// Name returns the host's name (for logs and reports).
func (h *Host) Name() string { return h.name }

// Addr returns the host's IPv4 address on the LAN.
func (h *Host) Addr() netip.Addr { return h.addr }

// MAC returns the MAC address of the host's eth0.
func (h *Host) MAC() net.HardwareAddr { return h.mac }

func (h *Host) String() string { return h.name + " (" + h.addr.String() + ")" }

// SetImpairment sets what the host's link does to frames in direction d
// (BothWays, Out of the host, In to it), from the next frame on. Frames
// already delayed keep their time.
func (h *Host) SetImpairment(d Direction, im Impairment) error {
	if err := im.Validate(); err != nil {
		return err
	}
	if d != BothWays && d != Out && d != In {
		return fmt.Errorf("netem: unknown direction %d", d)
	}
	h.port.setImpairment(d, im)
	h.n.log.Debug("impairment", "host", h.name, "dir", d.String(), "imp", im.String())
	return nil
}

// Impairment returns the impairment of direction d (Out or In).
func (h *Host) Impairment(d Direction) Impairment { return h.port.impairment(d) }

// HostStats are the switch's counters of one host's frames.
type HostStats struct {
	// Sent counts the frames the host sent; Received those written to it.
	Sent, Received uint64
	// DroppedByRule, DroppedByLoss and DroppedQueueFull count the frames to
	// the host that a Rule, the random loss or a full queue dropped.
	DroppedByRule, DroppedByLoss, DroppedQueueFull uint64
}

// Stats returns the switch's counters for this host.
func (h *Host) Stats() HostStats {
	s := &h.port.stats
	return HostStats{
		Sent: s.out.load(), Received: s.in.load(),
		DroppedByRule: s.ruleDrops.load(), DroppedByLoss: s.lossDrops.load(), DroppedQueueFull: s.queueDrops.load(),
	}
}

// Command returns a command that runs name with args inside the host (through
// nsenter). Like exec.CommandContext, ctx kills it; it is also killed should
// this process die (Pdeathsig).
func (h *Host) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	h.Wrap(cmd)
	return cmd
}

// Wrap rewrites a command that has not started yet so that it runs inside
// the host: nsenter, given the namespace as an extra file, enters it and
// executes the original program with its arguments, environment and files.
// It is meant for commands that another library builds (chromedp's
// ModifyCmdFunc).
func (h *Host) Wrap(cmd *exec.Cmd) {
	if cmd.Err != nil {
		return // the program was not found; Start reports it
	}
	fd := 3 + len(cmd.ExtraFiles)
	cmd.ExtraFiles = append(cmd.ExtraFiles, h.ns)
	args := append([]string{h.n.nsenter, fmt.Sprintf("--net=/proc/self/fd/%d", fd), "--", cmd.Path}, cmd.Args[1:]...)
	cmd.Path = h.n.nsenter
	cmd.Args = args
}

// Dial connects to address from inside the host (the socket belongs to the
// host's namespace for its whole life). address must hold an IP address, not
// a name.
func (h *Host) Dial(ctx context.Context, network, address string) (net.Conn, error) {
	var c net.Conn
	err := inNamespace(h.ns, func() error {
		var d net.Dialer
		var err error
		c, err = d.DialContext(ctx, network, address)
		return err
	})
	return c, err
}

// Listen opens a listener inside the host; connections it accepts belong to
// the host's namespace.
func (h *Host) Listen(ctx context.Context, network, address string) (net.Listener, error) {
	var l net.Listener
	err := inNamespace(h.ns, func() error {
		var lc net.ListenConfig
		var err error
		l, err = lc.Listen(ctx, network, address)
		return err
	})
	return l, err
}

// ListenPacket opens a packet socket (UDP) inside the host.
func (h *Host) ListenPacket(ctx context.Context, network, address string) (net.PacketConn, error) {
	var c net.PacketConn
	err := inNamespace(h.ns, func() error {
		var lc net.ListenConfig
		var err error
		c, err = lc.ListenPacket(ctx, network, address)
		return err
	})
	return c, err
}
