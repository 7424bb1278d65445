package impaired

import (
	"fmt"
	"time"

	"github.com/virtutune/link/internal/netem"
)

// Fault is what happens to the network in the middle of a scenario.
type Fault int

// Faults of a Scenario.
const (
	// NoFault: the phone's link stays as Scenario.Phone says throughout.
	NoFault Fault = iota
	// UDPDeath: UDP between the phone and the PC dies silently (both ways),
	// while TCP, and so the WebSocket through the server, still flows; then
	// it returns.
	UDPDeath
	// Blackout: everything to and from the phone is dropped silently; then
	// the network returns.
	Blackout
)

func (f Fault) String() string {
	switch f {
	case NoFault:
		return "none"
	case UDPDeath:
		return "udp-death"
	case Blackout:
		return "blackout"
	}
	return "unknown"
}

// Scenario is one run: a fresh session of a phone and a PC on the emulated
// LAN, the phone playing chord changes to the PC at a steady pace, a steady
// impairment of the phone's link, and at most one fault in the middle.
type Scenario struct {
	// Name identifies the scenario ("wifi"); Title describes it for a report.
	Name, Title string
	// Phone is the impairment of the phone's link, each way, for the whole run
	// (session setup included).
	Phone netem.Impairment
	// Interval is the pause between two chords. Default 250ms (4 per second).
	Interval time.Duration
	// Before is how long the phone plays before the fault (the whole run
	// when Fault is NoFault). The fault starts half an Interval later,
	// midway between two chords.
	Before time.Duration
	// Fault happens after Before and lasts FaultFor.
	Fault    Fault
	FaultFor time.Duration
	// After is how long the phone keeps playing after the fault ends, at
	// least; it plays on, up to MaxAfter, until the PC gets chords directly
	// (p2p) again and for 2 s beyond.
	After, MaxAfter time.Duration
}

// wifi is the Wi-Fi-like link of the issue: 4 ms ± 3 ms and 2 % loss, each way.
var wifi = netem.Impairment{Delay: 4 * time.Millisecond, Jitter: 3 * time.Millisecond, Loss: 0.02}

// Timing sets the lengths of the default scenarios.
type Timing struct {
	Clean, WiFi   time.Duration // how long the phone plays in the scenarios without a fault
	Lead          time.Duration // playing before a fault
	UDPDead       time.Duration // how long UDP stays dead
	Blackouts     []time.Duration
	After         time.Duration // playing after a fault, at least
	MaxAfter      time.Duration // playing after a fault, at most, waiting for p2p again
	SkipClean     bool
	SkipWiFi      bool
	SkipUDPDeath  bool
	SkipBlackouts bool
}

// TestTiming is the timing of the project's test: a minute or two in all.
var TestTiming = Timing{
	Clean: 10 * time.Second, WiFi: 30 * time.Second, Lead: 3 * time.Second,
	UDPDead: 8 * time.Second, Blackouts: []time.Duration{3 * time.Second, 15 * time.Second},
	After: 5 * time.Second, MaxAfter: 20 * time.Second,
}

// Scenarios returns the scenarios of issue 10 with the given timing: clean
// LAN; Wi-Fi-like; UDP between phone and PC dies silently and returns; the
// phone's network gone for each blackout.
func Scenarios(t Timing) []Scenario {
	var out []Scenario
	if !t.SkipClean {
		out = append(out, Scenario{Name: "clean", Title: "clean LAN", Before: t.Clean})
	}
	if !t.SkipWiFi {
		out = append(out, Scenario{Name: "wifi", Title: "Wi-Fi-like (4 ms ± 3 ms, 2 % loss each way)", Phone: wifi, Before: t.WiFi})
	}
	if !t.SkipUDPDeath {
		out = append(out, Scenario{Name: "udp-death", Title: fmt.Sprintf("UDP phone<->PC dies silently for %v, then returns", t.UDPDead),
			Before: t.Lead, Fault: UDPDeath, FaultFor: t.UDPDead, After: t.After, MaxAfter: t.MaxAfter})
	}
	if !t.SkipBlackouts {
		for _, d := range t.Blackouts {
			out = append(out, Scenario{Name: fmt.Sprintf("blackout-%v", d), Title: fmt.Sprintf("everything to and from the phone gone for %v", d),
				Before: t.Lead, Fault: Blackout, FaultFor: d, After: t.After, MaxAfter: t.MaxAfter})
		}
	}
	return out
}

func (s Scenario) withDefaults() Scenario {
	if s.Interval == 0 {
		s.Interval = 250 * time.Millisecond
	}
	if s.Fault != NoFault && s.MaxAfter < s.After {
		s.MaxAfter = s.After
	}
	return s
}
