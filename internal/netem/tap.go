package netem

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// openTAP creates a TAP interface named name in the calling thread's network
// namespace and returns its file descriptor as a non-blocking *os.File (so
// that Read and Write go through Go's poller and Close interrupts them). The
// interface is not persistent: it disappears when the file is closed.
func openTAP(name string) (*os.File, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("netem: opening /dev/net/tun: %w", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("netem: interface name %q: %w", name, err)
	}
	// IFF_NO_PI: frames without the 4-byte packet information header. No
	// IFF_VNET_HDR: the kernel hands over complete frames, checksummed, never
	// larger than the MTU.
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("netem: TUNSETIFF %s: %w", name, err)
	}
	return os.NewFile(uintptr(fd), "tap:"+name), nil
}
