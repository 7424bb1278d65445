package netem

import (
	"fmt"
	"math/rand/v2"
	"time"
)

// Direction says which way through a host's link an Impairment applies.
type Direction int

// Directions of a host's link. A frame from host A to host B crosses A's
// link Out and B's link In; the impairments of both apply (delays add up, each
// loss is drawn on its own).
const (
	BothWays Direction = iota
	// Out is from the host into the LAN.
	Out
	// In is from the LAN to the host.
	In
)

func (d Direction) String() string {
	switch d {
	case BothWays:
		return "both ways"
	case Out:
		return "out"
	case In:
		return "in"
	}
	return "unknown"
}

// Impairment is what one direction of a host's link does to every frame. The
// zero value is a perfect link.
type Impairment struct {
	// Delay is added to every frame.
	Delay time.Duration
	// Jitter varies the delay of each frame, uniformly within ±Jitter (never
	// below zero). The link stays FIFO, as a real link's queue does: a frame
	// never overtakes one sent before it between the same two hosts, so a
	// frame drawn shorter than its predecessor's waits for it.
	Jitter time.Duration
	// Loss is the probability that a frame is dropped, from 0 to 1.
	Loss float64
}

// Validate reports an impairment that makes no sense.
func (im Impairment) Validate() error {
	switch {
	case im.Delay < 0 || im.Jitter < 0:
		return fmt.Errorf("netem: negative delay or jitter (%v ± %v)", im.Delay, im.Jitter)
	case im.Loss < 0 || im.Loss > 1 || im.Loss != im.Loss:
		return fmt.Errorf("netem: loss %v is not a probability", im.Loss)
	}
	return nil
}

func (im Impairment) String() string {
	if im == (Impairment{}) {
		return "clean"
	}
	return fmt.Sprintf("%v ± %v, %.3g%% loss", im.Delay, im.Jitter, im.Loss*100)
}

// lost draws whether a frame is lost.
func (im Impairment) lost(r *rand.Rand) bool {
	return im.Loss > 0 && r.Float64() < im.Loss
}

// delay draws a frame's delay.
func (im Impairment) delay(r *rand.Rand) time.Duration {
	d := im.Delay
	if im.Jitter > 0 {
		d += time.Duration(r.Int64N(2*int64(im.Jitter)+1)) - im.Jitter
	}
	return max(d, 0)
}

// Rule is a filter that drops frames silently: nothing tells the sender, as
// on a network where a firewall or an access point's client isolation eats
// packets.
type Rule struct {
	// From and To are the hosts whose frames are dropped; nil means any host.
	// The rule drops frames from From to To and, unless OneWay, from To to From.
	From, To *Host
	// Proto limits the rule to UDP or TCP (IPv4 and IPv6); AnyProto drops
	// every frame, ARP and neighbour discovery included.
	Proto Proto
	// OneWay limits the rule to frames from From to To.
	OneWay bool
}

func (r Rule) String() string {
	name := func(h *Host) string {
		if h == nil {
			return "any"
		}
		return h.name
	}
	arrow := "<->"
	if r.OneWay {
		arrow = "->"
	}
	return fmt.Sprintf("drop %s %s %s %s", r.Proto, name(r.From), arrow, name(r.To))
}

// matches reports whether the rule drops a frame of protocol p from src to dst.
func (r Rule) matches(src, dst *Host, p Proto) bool {
	if r.Proto != AnyProto && r.Proto != p {
		return false
	}
	is := func(want, h *Host) bool { return want == nil || want == h }
	if is(r.From, src) && is(r.To, dst) {
		return true
	}
	return !r.OneWay && is(r.From, dst) && is(r.To, src)
}
