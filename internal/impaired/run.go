package impaired

import (
	"slices"
	"time"
)

// Sample is one chord change: when the phone sent it and when (and by which
// path) the PC's application got it. Recv is zero for a chord never delivered.
type Sample struct {
	Seq  uint64
	Sent time.Time
	Recv time.Time
	Path string
}

// Latency is Recv - Sent (0 for a chord never delivered).
func (s Sample) Latency() time.Duration {
	if s.Recv.IsZero() {
		return 0
	}
	return s.Recv.Sub(s.Sent)
}

// LinkEvent is a change of a client's link as the client reported it.
type LinkEvent struct {
	Node   string // "phone" or "pc"
	Kind   string // "p2p" or "relay"
	Up     bool
	State  string // the link's state ("up", "suspect", "down", ...), where the client says
	Reason string
	At     time.Time
}

// Run is the record of one scenario: what was sent, what arrived, the links'
// events and when the fault began and ended. Everything is on the machine's
// one wall clock. Browser tests fill one too (sent, received).
type Run struct {
	Scenario Scenario
	// Start is when the phone began playing; FaultAt and ReturnAt when the
	// fault began and ended (zero without a fault).
	Start, FaultAt, ReturnAt time.Time
	Samples                  []Sample // by seq, from 1
	// Duplicated counts chords the PC's application got more than once;
	// Reordered those it got after a later one.
	Duplicated, Reordered int
	// Unsent counts chords the PC got that the phone never reported sending.
	Unsent int
	Links  []LinkEvent
	Notes  []string
	// Stalls are the times one of the lab's processes (the switch, the
	// server, the phone, the PC) was not scheduled for more than 20 ms while
	// the phone played: a loaded machine, which no real network and no
	// real device shares.
	Stalls []Stall
	// Logs are the nodes' logs (kept for a report of a failed check).
	Logs string

	maxSeq uint64
}

// NewRun returns an empty record for scenario sc.
func NewRun(sc Scenario) *Run { return newRun(sc) }

func newRun(sc Scenario) *Run { return &Run{Scenario: sc.withDefaults()} }

// Sent records that the phone sent chord seq (from 1) at t.
func (r *Run) Sent(seq uint64, t time.Time) { r.sent(seq, t) }

// Received records that the PC's application got chord seq at t by path.
// atMillis is the sender's stamp (ms since the epoch), used when the phone's
// own report of the send is missing; 0 if unknown.
func (r *Run) Received(seq uint64, t time.Time, path string, atMillis float64) {
	r.received(seq, t, path, atMillis)
}

func (r *Run) sample(seq uint64) *Sample {
	if seq == 0 || seq > 1<<20 {
		return nil
	}
	for uint64(len(r.Samples)) < seq {
		r.Samples = append(r.Samples, Sample{Seq: uint64(len(r.Samples)) + 1})
	}
	return &r.Samples[seq-1]
}

func (r *Run) sent(seq uint64, t time.Time) {
	if s := r.sample(seq); s != nil {
		s.Sent = t
	}
}

func (r *Run) received(seq uint64, t time.Time, path string, atMillis float64) {
	s := r.sample(seq)
	if s == nil {
		return
	}
	if !s.Recv.IsZero() {
		r.Duplicated++
		return
	}
	if seq < r.maxSeq {
		r.Reordered++
	}
	r.maxSeq = max(r.maxSeq, seq)
	s.Recv, s.Path = t, path
	if s.Sent.IsZero() && atMillis > 0 {
		s.Sent = time.UnixMicro(int64(atMillis * 1000))
	}
}

// complete reports whether every chord sent so far arrived.
func (r *Run) complete() bool {
	for _, s := range r.Samples {
		if s.Recv.IsZero() {
			return false
		}
	}
	return true
}

// p2pUp reports whether node's last p2p event says up.
func (r *Run) p2pUp(node string) bool {
	for _, e := range slices.Backward(r.Links) {
		if e.Node == node && e.Kind == "p2p" {
			return e.Up
		}
	}
	return false
}

// p2pAgain is how long after the return the PC first got, by the direct
// path, a chord sent after the return; -1 if it has not (yet).
func (r *Run) p2pAgain() time.Duration {
	if r.ReturnAt.IsZero() {
		return -1
	}
	best := time.Duration(-1)
	for _, s := range r.Samples {
		if s.Path == "p2p" && !s.Sent.Before(r.ReturnAt) && !s.Recv.IsZero() {
			if d := s.Recv.Sub(r.ReturnAt); best < 0 || d < best {
				best = d
			}
		}
	}
	return best
}
