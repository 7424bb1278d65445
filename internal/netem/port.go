package netem

import (
	"container/heap"
	"log/slog"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// counter is an atomic frame counter.
type counter struct{ v atomic.Uint64 }

func (c *counter) add(n uint64) { c.v.Add(n) }
func (c *counter) load() uint64 { return c.v.Load() }

// portStats are a port's counters.
type portStats struct {
	out, in                          counter // frames from the host, frames written to it
	ruleDrops, lossDrops, queueDrops counter // frames to the host dropped
}

// port is a host's place on the switch: its TAP file, its link's
// impairments, and the queue of frames waiting to be written to it.
type port struct {
	host *Host
	tap  *os.File
	// rng draws loss and delay of the frames this host sends; only the
	// host's reader goroutine uses it.
	rng *rand.Rand

	imp sync.Mutex // guards out, in
	out Impairment
	in  Impairment

	mu     sync.Mutex // guards the fields below; held while writing to tap
	q      frameHeap
	seq    uint64
	last   map[*Host]time.Time // the latest release time per source (FIFO)
	closed bool
	wake   chan struct{}
	done   chan struct{}

	stats portStats
}

func newPort(h *Host, tap *os.File, seed uint64) *port {
	return &port{
		host: h, tap: tap,
		rng:  rand.New(rand.NewPCG(seed, seed^0x5851f42d4c957f2d)),
		last: make(map[*Host]time.Time),
		wake: make(chan struct{}, 1),
		done: make(chan struct{}),
	}
}

func (p *port) impairment(d Direction) Impairment {
	p.imp.Lock()
	defer p.imp.Unlock()
	if d == In {
		return p.in
	}
	return p.out
}

func (p *port) setImpairment(d Direction, im Impairment) {
	p.imp.Lock()
	defer p.imp.Unlock()
	if d == BothWays || d == Out {
		p.out = im
	}
	if d == BothWays || d == In {
		p.in = im
	}
}

// deliver writes frame f from src to the host at time at: at once when that
// time has come and nothing from src waits before it, else through the queue.
// A frame never overtakes an earlier one from the same source.
func (p *port) deliver(src *Host, f []byte, at time.Time, limit int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	if prev := p.last[src]; at.Before(prev) {
		at = prev
	}
	p.last[src] = at
	if len(p.q) == 0 && !at.After(time.Now()) {
		p.writeLocked(f)
		return
	}
	if len(p.q) >= limit {
		p.stats.queueDrops.add(1)
		return
	}
	p.seq++
	heap.Push(&p.q, queued{at: at, seq: p.seq, frame: f})
	if p.q[0].seq == p.seq { // a new earliest frame: the writer's timer is too late
		select {
		case p.wake <- struct{}{}:
		default:
		}
	}
}

// writeLocked writes one frame to the host. A TAP write does not block: the
// kernel takes the frame or drops it (a full backlog), as a NIC would.
func (p *port) writeLocked(f []byte) {
	if _, err := p.tap.Write(f); err == nil {
		p.stats.in.add(1)
	}
}

// writeLoop writes the queued frames when their time comes, until close.
func (p *port) writeLoop(log *slog.Logger) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		p.mu.Lock()
		wait := time.Hour
		for len(p.q) > 0 && !p.closed {
			d := time.Until(p.q[0].at)
			if d > 0 {
				wait = d
				break
			}
			e := heap.Pop(&p.q).(queued)
			p.writeLocked(e.frame)
		}
		closed := p.closed
		p.mu.Unlock()
		if closed {
			return
		}
		timer.Reset(wait)
		select {
		case <-timer.C:
		case <-p.wake:
		case <-p.done:
			log.Debug("port closed", "host", p.host.name)
			return
		}
	}
}

func (p *port) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.closed {
		p.closed = true
		close(p.done)
		p.q = nil
		// Interrupts the reader's Read; the file itself is closed by
		// Network.Close after the goroutines ended.
		_ = p.tap.SetReadDeadline(time.Now())
	}
}

func (p *port) isClosed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.closed
}

// queued is a frame waiting for its time.
type queued struct {
	at    time.Time
	seq   uint64
	frame []byte
}

// frameHeap orders queued frames by time, then by arrival.
type frameHeap []queued

func (h frameHeap) Len() int { return len(h) }
func (h frameHeap) Less(i, j int) bool {
	if h[i].at.Equal(h[j].at) {
		return h[i].seq < h[j].seq
	}
	return h[i].at.Before(h[j].at)
}
func (h frameHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *frameHeap) Push(x any)   { *h = append(*h, x.(queued)) }
func (h *frameHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = queued{}
	*h = old[:len(old)-1]
	return e
}
