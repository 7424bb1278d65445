package netem

import "encoding/binary"

// Proto is the transport protocol a Rule matches.
type Proto int

// Protocols of a Rule. AnyProto matches every frame (ARP and IPv6 neighbour
// discovery included); UDP and TCP match IPv4 and IPv6 packets carrying them.
const (
	AnyProto Proto = iota
	UDP
	TCP
)

func (p Proto) String() string {
	switch p {
	case AnyProto:
		return "any"
	case UDP:
		return "udp"
	case TCP:
		return "tcp"
	}
	return "unknown"
}

const (
	ethHeader     = 14
	etherTypeIPv4 = 0x0800
	etherTypeIPv6 = 0x86dd
	ipProtoTCP    = 6
	ipProtoUDP    = 17
)

// frameProto returns the transport protocol of an Ethernet frame: UDP, TCP,
// or AnyProto for everything else (ARP, ICMP, a truncated header).
func frameProto(f []byte) Proto {
	if len(f) < ethHeader {
		return AnyProto
	}
	p := f[ethHeader:]
	var next byte
	switch binary.BigEndian.Uint16(f[12:14]) {
	case etherTypeIPv4:
		if len(p) < 20 || p[0]>>4 != 4 {
			return AnyProto
		}
		next = p[9]
	case etherTypeIPv6:
		if len(p) < 40 || p[0]>>4 != 6 {
			return AnyProto
		}
		next, p = p[6], p[40:]
		// Skip the extension headers that may precede the transport header:
		// hop-by-hop (0), routing (43), fragment (44), destination options (60).
		for range 8 {
			if next != 0 && next != 43 && next != 44 && next != 60 {
				break
			}
			if len(p) < 8 {
				return AnyProto
			}
			size := 8
			if next != 44 {
				size = (int(p[1]) + 1) * 8
			}
			if len(p) < size {
				return AnyProto
			}
			next, p = p[0], p[size:]
		}
	default:
		return AnyProto
	}
	switch next {
	case ipProtoUDP:
		return UDP
	case ipProtoTCP:
		return TCP
	}
	return AnyProto
}

// groupAddressed reports whether a frame goes to a broadcast or multicast MAC
// address (the low bit of the first octet), which a switch floods.
func groupAddressed(f []byte) bool { return len(f) >= 6 && f[0]&1 == 1 }
