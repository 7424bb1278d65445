// Package gcpolicy sets the Go garbage collector's pace for the relay's
// server processes (cmd/virtutune-server and the servers virtutune-bench
// starts), so that the shipped server and the measured one are the same.
//
// Why: at scale the relay's live heap is mostly per-connection state (40
// small objects and a goroutine stack per WebSocket, 52 when this was
// measured: 1 M objects and 20,000 stacks at 10,000 sessions). Marking it took 320–580 ms on a 2-vCPU
// host, and under Go's default GOGC=100 a collection came 12.6 s into a
// load of 1 chord/s per session, its mark assists stalling the goroutines that
// deliver chords: p99 39–305 ms over 20 s at 9,950 sessions where the bare
// hub's was under 5 ms. With GOGC=400 the heap grows to five times its live
// size before a collection: the runway between collections is four times
// as long: p99 1.0–1.9 ms over 20 s in the same test. A
// collection still stalls delivery when it comes (46 s into that load;
// one inside a 90 s step: p99 113 ms, max 0.7 s): this makes the
// stalls rarer, it does not make them cheap. Fewer live objects did (the
// memory broker's history no longer keeps one per message: over 300 s at
// 9,950 sessions p99 6.7 ms instead of 337 ms, RESULTS.md S10). The price
// is memory: up to five times the live heap at the peak, and about 3 KiB
// more per connection after a collection (RSS per connection after setting
// up 19,900 of them 21.4–21.7 KiB against 18.7–19.1).
//
// An operator who sets GOGC (or GOMEMLIMIT, to bound the heap in a small
// container) keeps full control: Apply changes nothing then.
package gcpolicy

import (
	"os"
	"runtime/debug"
)

// Percent is the GOGC the server runs with unless GOGC is set.
const Percent = 400

// Apply sets the collector's percent to Percent unless the environment sets
// GOGC or GOMEMLIMIT, and reports the percent in effect (-1: off).
func Apply() int {
	if os.Getenv("GOGC") != "" || os.Getenv("GOMEMLIMIT") != "" {
		p := debug.SetGCPercent(100)
		debug.SetGCPercent(p)
		return p
	}
	debug.SetGCPercent(Percent)
	return Percent
}
