// Package netem emulates an impaired LAN in userspace, for tests and
// benchmarks that must see what a guitarist's Wi-Fi does to the link: the
// kernels these run on have no netem qdisc and no nft or iptables, but
// /dev/net/tun works.
//
// A Network is an Ethernet switch running in this process. Each Host is an
// anonymous network namespace (unshare(CLONE_NEWNET) on a locked OS thread,
// the same kind of namespace as `unshare -n`) with lo and one TAP interface,
// eth0, whose file descriptor the switch holds: every frame a host sends is
// read by the switch, which forwards it as a switch would (to the host owning
// the destination MAC; broadcast, multicast and unknown destinations flooded
// to every other host, so ARP, IPv6 neighbour discovery and mDNS work), and
// on the way applies:
//
//   - per host and per direction (Out of the host, In to it), an Impairment:
//     delay with jitter (FIFO: no reordering) and random loss;
//   - filter Rules, changeable at run time, that drop frames silently:
//     everything to and from a host (a blackout), only UDP between two hosts
//     (a direct path that dies while the WebSocket still flows), everything
//     between two hosts, one way or both.
//
// Processes run in a host through Host.Command or Host.Wrap (nsenter with the
// namespace passed as an extra file); this process can open sockets in a
// host with Host.Dial, Host.Listen and Host.ListenPacket (the socket is
// created on a thread that entered the namespace, and stays in it).
//
// # Nothing leaves the network
//
// The package never creates an interface or a route in the caller's
// namespace: every TAP interface is created inside its host's fresh
// namespace, whose only other interface is lo, so the hosts reach each other
// and nothing else (their default route points at the emulated LAN, where
// nobody answers for another address). The namespaces are anonymous: nothing
// is named, nothing is left behind; a namespace ends when Close has let go of
// it and the last process in it has exited, and the TAP interfaces end with
// the switch's file descriptors, even when this process is killed.
//
// # Bounds
//
// At most 200 hosts per network; at most Config.QueueLimit frames (default
// 4096) waiting for their delay per receiving host, beyond which frames are
// dropped and counted (HostStats.DroppedQueueFull); frames of up to 2048
// bytes (the interfaces' MTU is 1500).
//
// # Needs
//
// Linux, /dev/net/tun, root (CAP_SYS_ADMIN and CAP_NET_ADMIN), nsenter
// (util-linux) and ip (iproute2). Check says what is missing.
//
// # Concurrency
//
// A Network and its Hosts are safe for concurrent use. The switch runs two
// goroutines per host (a reader of its interface and a writer of its delayed
// frames); Close stops them and waits. A frame with no delay is written by
// the reader at once.
//
// # Files
//
//	network.go  Network: the switch, its hosts, Block (the Rules), Check
//	host.go     Host: a namespace on the switch, its processes and sockets
//	port.go     a host's port on the switch: the delay queue, the impairments, counters
//	impair.go   Direction, Impairment, Rule; frame.go what a Rule matches in a frame
//	ns.go       the anonymous namespace and its TAP interface; tap.go opening a TAP
package netem
