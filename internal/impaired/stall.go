package impaired

import (
	"context"
	"time"
)

// stallTick and stallLate define a stall: a ticker of stallTick that fires
// more than stallLate late means the process was not scheduled meanwhile.
const (
	stallTick = 5 * time.Millisecond
	stallLate = 20 * time.Millisecond
)

// Stall is a time one of the lab's processes was not scheduled: everything
// it had to do (forward frames, answer a heartbeat, relay a chord) waited.
type Stall struct {
	Where    string // "switch", "server", "phone" or "pc"
	From, To time.Time
}

// watchStalls reports each stall of this process until ctx ends.
func watchStalls(ctx context.Context, where string, report func(Stall)) {
	t := time.NewTicker(stallTick)
	defer t.Stop()
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			if now.Sub(last)-stallTick > stallLate {
				report(Stall{Where: where, From: last.Add(stallTick), To: now})
			}
			last = now
		}
	}
}

// disturbed reports whether a stall overlapped the chord's flight.
func (r *Run) disturbed(s Sample) bool {
	for _, st := range r.Stalls {
		if st.From.Before(s.Recv) && st.To.After(s.Sent) {
			return true
		}
	}
	return false
}
