package signaling

// offsetOrder puts one session's publications back in offset order: the
// RedisBroker receives them from its own Publish, from pub/sub and from the
// stream (gap repair), in any order and some more than once, and its
// subscribers must see each offset once and in order. offsetOrder releases
// every offset after the last released one exactly once, in order, and holds
// back what arrives ahead of a missing offset until the gap is filled or
// given up (skipTo). Until start it releases nothing: the offset the
// subscription starts after is not known yet.
//
// It is a pure type, with no I/O and no lock: the redisGroup calls it under
// its delivery lock, and release runs on the caller's goroutine.
type offsetOrder struct {
	// window bounds the publications held back; one more than that gives up
	// the gap (see offer).
	window  int
	release func(*Publication)

	started bool   // last is known
	last    uint64 // the offset released last
	pending map[uint64]*Publication
}

func newOffsetOrder(window int, release func(*Publication)) offsetOrder {
	return offsetOrder{window: window, release: release, pending: make(map[uint64]*Publication)}
}

// offer releases p, and whatever it unblocks, if p's offset is the next one;
// it holds p back if it comes early, and ignores it if its offset was
// released or given up already. gap reports whether a gap is open after the
// call (something is held back behind a missing offset: read the stream). If
// holding p back makes more than window wait, the missing offsets are given
// up and skipped reports true. An ignored p reports no gap.
func (o *offsetOrder) offer(p *Publication) (gap, skipped bool) {
	if o.seen(p.Off) {
		return false, false
	}
	if !o.started || p.Off != o.last+1 {
		o.pending[p.Off] = p
		if o.started && len(o.pending) > o.window {
			o.skipTo(o.minHeld() - 1)
			skipped = true
		}
		return o.started && len(o.pending) > 0, skipped
	}
	o.release(p)
	o.last = p.Off
	o.drain()
	return len(o.pending) > 0, false
}

// start sets the offset the subscription starts after: what is held at or
// below it is dropped, what follows it is released in order.
func (o *offsetOrder) start(off uint64) {
	o.started = true
	o.skipTo(off)
}

// skipTo gives up on the offsets up to off and releases what follows in order.
func (o *offsetOrder) skipTo(off uint64) {
	if off > o.last {
		o.last = off
	}
	for h := range o.pending {
		if h <= o.last {
			delete(o.pending, h)
		}
	}
	o.drain()
}

// seen reports whether offset off was released or given up already.
func (o *offsetOrder) seen(off uint64) bool { return o.started && off <= o.last }

// next returns the first offset not released yet.
func (o *offsetOrder) next() uint64 { return o.last + 1 }

// held returns how many publications are held back.
func (o *offsetOrder) held() int { return len(o.pending) }

// minHeld returns the lowest offset held back, 0 when none is.
func (o *offsetOrder) minHeld() uint64 {
	var m uint64
	for off := range o.pending {
		if m == 0 || off < m {
			m = off
		}
	}
	return m
}

func (o *offsetOrder) drain() {
	for {
		p, ok := o.pending[o.last+1]
		if !ok {
			return
		}
		delete(o.pending, p.Off)
		o.release(p)
		o.last = p.Off
	}
}
