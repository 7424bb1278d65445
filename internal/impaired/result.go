package impaired

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// None marks a duration figure that does not apply or was never reached.
const None time.Duration = -1

// Result is the figures of one scenario run.
type Result struct {
	Name, Title string
	// Sent counts the chords the phone played; Lost those the PC never got;
	// Duplicated those it got twice; Reordered those it got after a later one.
	Sent, Delivered, Lost, Duplicated, Reordered int
	// ViaP2P and ViaRelay count the deliveries by the path that brought them first.
	ViaP2P, ViaRelay int
	// P50, P99 and Max are the latencies (send to the PC's application) of
	// every delivered chord.
	P50, P99, Max time.Duration

	// During a fault (chords sent while it lasted):
	DuringSent int
	// DuringMax is their largest latency (UDP death: the target is 500 ms).
	DuringMax time.Duration
	// DuringAfterReturn is how long after the return the last of them was
	// delivered (a blackout: the target is 1 s); negative when all arrived
	// before the return.
	DuringAfterReturn time.Duration

	// After a fault (chords sent after the return):
	AfterSent          int
	AfterP50, AfterMax time.Duration // their latency (the 15 s blackout: the target is 1 s)
	// P2PAgain is how long after the return the PC first got, directly, a
	// chord sent after the return (target 2 s); None if it never did.
	P2PAgain time.Duration
	// DownKnown is how long after the fault began a client first declared
	// its data channel down; None if none did while the fault lasted.
	DownKnown time.Duration
	// UpAgain is how long after the return the PC declared its data channel
	// up again; None if it did not (or never declared it down).
	UpAgain time.Duration

	// Stalls counts the lab's processes' stalls (Run.Stalls), StallMax the
	// longest; Disturbed the chords in flight during one. P99Undisturbed and
	// MaxUndisturbed are the latencies of the others: the network and the
	// clients without the machine's load.
	Stalls                         int
	StallMax                       time.Duration
	Disturbed                      int
	P99Undisturbed, MaxUndisturbed time.Duration

	Notes []string
}

// Result computes the figures of the run.
func (r *Run) Result() Result {
	sc := r.Scenario
	res := Result{Name: sc.Name, Title: sc.Title, Duplicated: r.Duplicated, Reordered: r.Reordered,
		DuringMax: None, DuringAfterReturn: None, AfterP50: None, AfterMax: None, P2PAgain: None, DownKnown: None, UpAgain: None,
		Stalls: len(r.Stalls), StallMax: None, Notes: slices.Clone(r.Notes)}
	for _, st := range r.Stalls {
		res.StallMax = max(res.StallMax, st.To.Sub(st.From))
	}
	var all, after, undisturbed []time.Duration
	unsent := 0
	for _, s := range r.Samples {
		if s.Sent.IsZero() {
			unsent++
			continue
		}
		res.Sent++
		if s.Recv.IsZero() {
			res.Lost++
			continue
		}
		res.Delivered++
		if s.Path == "p2p" {
			res.ViaP2P++
		} else {
			res.ViaRelay++
		}
		lat := s.Latency()
		all = append(all, lat)
		if r.disturbed(s) {
			res.Disturbed++
		} else {
			undisturbed = append(undisturbed, lat)
		}
		if sc.Fault == NoFault || r.FaultAt.IsZero() {
			continue
		}
		switch {
		case !s.Sent.Before(r.FaultAt) && (r.ReturnAt.IsZero() || s.Sent.Before(r.ReturnAt)):
			res.DuringSent++
			res.DuringMax = max(res.DuringMax, lat)
			if !r.ReturnAt.IsZero() {
				if d := s.Recv.Sub(r.ReturnAt); res.DuringAfterReturn == None || d > res.DuringAfterReturn {
					res.DuringAfterReturn = d
				}
			}
		case !r.ReturnAt.IsZero() && !s.Sent.Before(r.ReturnAt):
			res.AfterSent++
			after = append(after, lat)
		}
	}
	if unsent > 0 {
		res.Notes = append(res.Notes, fmt.Sprintf("%d chords arrived that the phone never reported sending", unsent))
	}
	res.P50, res.P99, res.Max = quantile(all, 0.5), quantile(all, 0.99), quantile(all, 1)
	res.P99Undisturbed, res.MaxUndisturbed = quantile(undisturbed, 0.99), quantile(undisturbed, 1)
	if len(after) > 0 {
		res.AfterP50, res.AfterMax = quantile(after, 0.5), quantile(after, 1)
	}
	if !r.ReturnAt.IsZero() {
		res.P2PAgain = r.p2pAgain()
	}
	if !r.ReturnAt.IsZero() {
		// The PC's first p2p event after the return that says up after one
		// that did not (a client may report several states while up).
		wasUp := false
		for _, e := range r.Links {
			if e.Node != "pc" || e.Kind != "p2p" {
				continue
			}
			if e.Up && !wasUp && !e.At.Before(r.ReturnAt) {
				res.UpAgain = e.At.Sub(r.ReturnAt)
				break
			}
			wasUp = e.Up
		}
	}
	if !r.FaultAt.IsZero() {
		end := r.ReturnAt
		for _, e := range r.Links { // the earliest, whichever client and order
			if e.Kind == "p2p" && !e.Up && !e.At.Before(r.FaultAt) && (end.IsZero() || e.At.Before(end)) {
				if d := e.At.Sub(r.FaultAt); res.DownKnown == None || d < res.DownKnown {
					res.DownKnown = d
				}
			}
		}
	}
	return res
}

// quantile returns the q-quantile of ds (nearest rank), None for none.
func quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return None
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(q*float64(len(s))+0.999999) - 1
	return s[min(max(i, 0), len(s)-1)]
}

// Check is one target of issue 10 against a figure of a run.
type Check struct {
	Figure string        // what is measured
	Value  time.Duration // the figure (None: never reached)
	Target time.Duration // the most it may be
	Met    bool
}

// Checks returns the targets of the scenario's kind with their figures:
// Wi-Fi-like p99 < 60 ms; UDP death: no chord later than 500 ms, p2p again
// within 2 s of the return; a blackout: every chord sent during it within 1 s
// of the return, and chords played after the return within 1 s of their send.
// Nothing lost, duplicated or reordered is checked apart (Clean).
func (r Result) Checks() []Check {
	mk := func(fig string, v, target time.Duration) Check {
		return Check{Figure: fig, Value: v, Target: target, Met: v != None && v <= target}
	}
	var cs []Check
	switch {
	case r.Name == "wifi":
		cs = append(cs, Check{Figure: "p99", Value: r.P99, Target: 60 * time.Millisecond, Met: r.P99 != None && r.P99 < 60*time.Millisecond},
			Check{Figure: "p99 of the chords no stall touched", Value: r.P99Undisturbed, Target: 60 * time.Millisecond,
				Met: r.P99Undisturbed != None && r.P99Undisturbed < 60*time.Millisecond})
	case strings.HasPrefix(r.Name, "udp-death"):
		cs = append(cs, mk("latest chord sent while UDP was dead", r.DuringMax, 500*time.Millisecond),
			mk("p2p again after UDP returned", r.P2PAgain, 2*time.Second))
	case strings.HasPrefix(r.Name, "blackout"):
		cs = append(cs, mk("last chord sent during it, after the return", r.DuringAfterReturn, time.Second),
			mk("chords played after the return, latest", r.AfterMax, time.Second))
	}
	return cs
}

// Clean reports whether nothing was lost, duplicated or reordered.
func (r Result) Clean() bool { return r.Lost == 0 && r.Duplicated == 0 && r.Reordered == 0 }

// FormatDuration prints a figure: µs below a millisecond, ms below 10 s, else s.
func FormatDuration(d time.Duration) string {
	switch {
	case d == None:
		return "-"
	case d < 0:
		return "-" + FormatDuration(-d)
	case d < time.Millisecond:
		return fmt.Sprintf("%dµs", d.Microseconds())
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.1fms", float64(d)/1e6)
	case d < 10*time.Second:
		return fmt.Sprintf("%dms", d.Milliseconds())
	}
	return fmt.Sprintf("%.1fs", d.Seconds())
}

// Table formats results as a text table: one line per scenario with the
// counts and latencies, then the targets.
func Table(rs []Result) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%-14s %5s %4s %4s %5s %9s %8s %8s %8s  %-28s  %s\n",
		"scenario", "sent", "lost", "dup", "reord", "p2p/relay", "p50", "p99", "max", "stalls: n, max; p99 without", "fault figures")
	for _, r := range rs {
		extra := ""
		if r.DuringSent > 0 || r.AfterSent > 0 || r.DownKnown != None {
			extra = fmt.Sprintf("during: %d sent, max %s, last %s after the return; after: %d sent, p50 %s, max %s; down known %s; up again %s; p2p again %s",
				r.DuringSent, FormatDuration(r.DuringMax), FormatDuration(r.DuringAfterReturn),
				r.AfterSent, FormatDuration(r.AfterP50), FormatDuration(r.AfterMax),
				FormatDuration(r.DownKnown), FormatDuration(r.UpAgain), FormatDuration(r.P2PAgain))
		}
		fmt.Fprintf(&b, "%-14s %5d %4d %4d %5d %4d/%-4d %8s %8s %8s  %-28s  %s\n", r.Name, r.Sent, r.Lost, r.Duplicated, r.Reordered,
			r.ViaP2P, r.ViaRelay, FormatDuration(r.P50), FormatDuration(r.P99), FormatDuration(r.Max),
			fmt.Sprintf("%d, %s; %s (%d chords)", r.Stalls, FormatDuration(r.StallMax), FormatDuration(r.P99Undisturbed), r.Delivered-r.Disturbed), extra)
	}
	b.WriteString("\ntargets (issue 10):\n")
	for _, r := range rs {
		fmt.Fprintf(&b, "  %-14s nothing lost, duplicated or reordered: %s\n", r.Name, metWord(r.Clean()))
		for _, c := range r.Checks() {
			fmt.Fprintf(&b, "  %-14s %s: %s (target %s): %s\n", r.Name, c.Figure, FormatDuration(c.Value), FormatDuration(c.Target), metWord(c.Met))
		}
		for _, n := range r.Notes {
			fmt.Fprintf(&b, "  %-14s note: %s\n", r.Name, n)
		}
	}
	return b.String()
}

func metWord(ok bool) string {
	if ok {
		return "met"
	}
	return "MISSED"
}

// Median combines the results of several runs of one scenario: each duration
// figure is the median over the runs (a run that never reached it counts as
// longer than any that did, so None wins only when most runs never reached
// it); the counts are summed, notes kept.
func Median(runs []Result) Result {
	if len(runs) == 0 {
		return Result{}
	}
	m := runs[0]
	m.Notes = nil
	med := func(get func(Result) time.Duration) time.Duration {
		ds := make([]time.Duration, 0, len(runs))
		for _, r := range runs {
			d := get(r)
			if d == None {
				d = time.Duration(1<<63 - 1)
			}
			ds = append(ds, d)
		}
		slices.Sort(ds)
		d := ds[(len(ds)-1)/2]
		if d == time.Duration(1<<63-1) {
			return None
		}
		return d
	}
	m.P50 = med(func(r Result) time.Duration { return r.P50 })
	m.P99 = med(func(r Result) time.Duration { return r.P99 })
	m.Max = med(func(r Result) time.Duration { return r.Max })
	m.DuringMax = med(func(r Result) time.Duration { return r.DuringMax })
	m.DuringAfterReturn = med(func(r Result) time.Duration { return r.DuringAfterReturn })
	m.AfterP50 = med(func(r Result) time.Duration { return r.AfterP50 })
	m.AfterMax = med(func(r Result) time.Duration { return r.AfterMax })
	m.P2PAgain = med(func(r Result) time.Duration { return r.P2PAgain })
	m.DownKnown = med(func(r Result) time.Duration { return r.DownKnown })
	m.UpAgain = med(func(r Result) time.Duration { return r.UpAgain })
	m.StallMax = med(func(r Result) time.Duration { return r.StallMax })
	m.P99Undisturbed = med(func(r Result) time.Duration { return r.P99Undisturbed })
	m.MaxUndisturbed = med(func(r Result) time.Duration { return r.MaxUndisturbed })
	m.Sent, m.Delivered, m.Lost, m.Duplicated, m.Reordered, m.ViaP2P, m.ViaRelay, m.Stalls, m.Disturbed = 0, 0, 0, 0, 0, 0, 0, 0, 0
	m.DuringSent, m.AfterSent = 0, 0
	for i, r := range runs {
		m.Sent += r.Sent
		m.Delivered += r.Delivered
		m.Lost += r.Lost
		m.Duplicated += r.Duplicated
		m.Reordered += r.Reordered
		m.ViaP2P += r.ViaP2P
		m.ViaRelay += r.ViaRelay
		m.DuringSent += r.DuringSent
		m.AfterSent += r.AfterSent
		m.Stalls += r.Stalls
		m.Disturbed += r.Disturbed
		for _, n := range r.Notes {
			m.Notes = append(m.Notes, fmt.Sprintf("run %d: %s", i+1, n))
		}
	}
	return m
}
