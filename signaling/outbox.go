package signaling

import (
	"encoding/binary"
	"errors"
	"net"
	"sync"
	"syscall"
	"time"
)

// outbox is a connection's outgoing side: the frames queued for it and the
// one that writes them. gorilla/websocket reads the connection; the server
// writes its frames itself (server frames are unmasked: a 2-10 byte header
// and the payload), so that a delivery can write without a goroutine hop:
//
//   - When nothing is queued and nobody is writing, push writes the frame at
//     once with one non-blocking write(2) on the socket, in the delivering
//     goroutine. A socket whose buffer has room takes it whole; what it does
//     not take (a partial write, EAGAIN) is left for the flusher (below),
//     so a slow receiver never makes the deliverer wait.
//   - Otherwise the frame is queued (at most limit frames; push reports false
//     beyond, and the caller closes the client as a slow consumer) and a
//     flusher goroutine is started if none runs: it writes everything queued
//     in one buffered write (several frames, one syscall), with the write
//     deadline, repeats until the queue is empty, and ends. A connection has
//     no writer goroutine while nothing waits (a goroutine's stack is most of
//     an idle connection's memory); pings and the token's expiry are timers.
//
// Exactly one JSON message travels in each frame; only the syscall is shared.
// Connections without a raw socket (TLS served by the server itself) always
// go through the flusher. Every write to the socket happens either under mu
// with busy false (a direct write) or in the flusher with busy true, so
// frames never interleave.
type outbox struct {
	nc    net.Conn
	raw   syscall.RawConn // nil: no direct writes
	limit int

	mu sync.Mutex
	q  [][]byte // queued text payloads (shared encodings, not copied)
	// backlog holds a replay (pushBacklog): text payloads written after
	// whatever q holds, a batch at a time, at the pace the socket takes
	// them; it does not count against limit, so a replay never crowds the
	// live frames out, and its own bound is backlogLimit.
	backlog      [][]byte
	backlogLimit int
	ctrl         []byte // queued control frames, framed (pongs, pings)
	rest         []byte // what a direct write left unwritten of its frame
	busy         bool   // a flusher goroutine runs (it writes outside mu)
	closed       bool   // no more frames: the connection is closing or failed
	// flushed is closed when the running flusher ends.
	flushed chan struct{}
	// wait bounds each of the flusher's writes.
	wait time.Duration
	// onError is called (from the flusher, once) when a write fails.
	onError func(error)
	// direct write scratch, used under mu
	wp  []byte
	wn  int
	we  error
	wfn func(fd uintptr) bool
}

const (
	opText  = 0x1
	opClose = 0x8
	opPing  = 0x9
	opPong  = 0xa
	// maxBatch bounds the bytes the writer gathers for one write.
	maxBatch = 64 << 10
	// maxReplay bounds one replay (a resume's publications and its
	// resumed): more than a history holds (1,024 by default).
	maxReplay = 4096
)

// newOutbox returns the outbox of nc: at most limit queued frames, each
// flush's write bounded by wait, onError told when a write fails.
func newOutbox(nc net.Conn, limit int, wait time.Duration, onError func(error)) *outbox {
	o := &outbox{nc: nc, limit: limit, backlogLimit: maxReplay, wait: wait, onError: onError}
	if sc, ok := nc.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			o.raw = raw
			o.wfn = func(fd uintptr) bool {
				o.wn, o.we = syscall.Write(int(fd), o.wp)
				return true // never wait for the socket: the flusher does
			}
		}
	}
	return o
}

// appendFrame appends a server frame (FIN set, unmasked) of opcode op.
func appendFrame(dst []byte, op byte, payload []byte) []byte {
	n := len(payload)
	switch {
	case n < 126:
		dst = append(dst, 0x80|op, byte(n))
	case n <= 0xffff:
		dst = append(dst, 0x80|op, 126, byte(n>>8), byte(n))
	default:
		dst = append(dst, 0x80|op, 127)
		dst = binary.BigEndian.AppendUint64(dst, uint64(n))
	}
	return append(dst, payload...)
}

// framePool holds the buffers frames are built in for one write.
var framePool = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// idle reports, under mu, whether a frame may be written directly now.
func (o *outbox) idle() bool {
	return o.raw != nil && !o.busy && len(o.q) == 0 && len(o.ctrl) == 0 && len(o.rest) == 0 && len(o.backlog) == 0
}

// writeDirect writes frame with one non-blocking write under mu; what the
// socket does not take is kept in rest for the writer. It returns an error
// only when the connection failed.
func (o *outbox) writeDirect(frame []byte) error {
	o.wp = frame
	err := o.raw.Write(o.wfn)
	n, we := o.wn, o.we
	o.wp, o.we = nil, nil
	if err != nil {
		return err
	}
	if n < 0 {
		n = 0
	}
	switch {
	case we == nil && n == len(frame):
		return nil
	case we == nil, errors.Is(we, syscall.EAGAIN), errors.Is(we, syscall.EINTR):
		o.rest = append(o.rest[:0:0], frame[n:]...)
		o.startFlush()
		return nil
	}
	o.closed = true
	return we
}

// startFlush starts a flusher (under mu, when none runs).
func (o *outbox) startFlush() {
	o.busy = true
	o.flushed = make(chan struct{})
	go o.flushLoop(o.flushed)
}

// flushLoop writes what is queued, batch by batch, until nothing is.
func (o *outbox) flushLoop(done chan struct{}) {
	defer close(done)
	for {
		o.mu.Lock()
		bp := o.take()
		if bp == nil {
			o.busy = false
			o.mu.Unlock()
			return
		}
		wait := o.wait
		o.mu.Unlock()
		_ = o.nc.SetWriteDeadline(time.Now().Add(wait))
		_, err := o.nc.Write(*bp)
		putFrame(bp, *bp)
		if err != nil {
			o.mu.Lock()
			o.busy, o.closed = false, true
			o.mu.Unlock()
			if o.onError != nil {
				o.onError(err)
			}
			return
		}
	}
}

// push queues text payload b (or writes it at once, see outbox). It reports
// false when the queue is full; an error when a direct write found the
// connection failed.
func (o *outbox) push(b []byte) (bool, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return true, nil
	}
	if o.idle() {
		bp := framePool.Get().(*[]byte)
		frame := appendFrame((*bp)[:0], opText, b)
		err := o.writeDirect(frame)
		putFrame(bp, frame)
		return true, err
	}
	if len(o.q) >= o.limit {
		return false, nil
	}
	o.q = append(o.q, b)
	if !o.busy {
		o.startFlush()
	}
	return true, nil
}

// pushBacklog queues payloads to be written after everything queued now and
// later by push, as fast as the connection drains and no faster (the
// flusher's writes block on the socket): a replay of any length up to
// backlogLimit completes, however slow the receiver, without the live
// queue's bound closing it. It reports false, queuing nothing, when the
// payloads do not fit (a replay already waiting, or too long).
func (o *outbox) pushBacklog(bs [][]byte) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return true
	}
	if len(o.backlog)+len(bs) > o.backlogLimit {
		return false
	}
	o.backlog = append(o.backlog, bs...)
	if !o.busy {
		o.startFlush()
	}
	return true
}

// pushControl queues a control frame (ping, pong) ahead of queued text.
func (o *outbox) pushControl(op byte, payload []byte) error {
	if len(payload) > 125 {
		payload = payload[:125]
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return nil
	}
	if o.idle() {
		var a [2 + 125]byte
		return o.writeDirect(appendFrame(a[:0], op, payload))
	}
	if len(o.ctrl) > 16*(2+125) { // a flood of pings: answering the latest is enough
		return nil
	}
	o.ctrl = appendFrame(o.ctrl, op, payload)
	if !o.busy {
		o.startFlush()
	}
	return nil
}

func putFrame(bp *[]byte, b []byte) {
	if cap(b) > maxBatch {
		return // let a large one go
	}
	*bp = b[:0]
	framePool.Put(bp)
}

// take gathers, under mu, what is queued into one buffer (rest, control
// frames, then up to maxBatch bytes of text frames). It returns nil when
// nothing is queued.
func (o *outbox) take() *[]byte {
	if len(o.rest) == 0 && len(o.ctrl) == 0 && len(o.q) == 0 && len(o.backlog) == 0 {
		return nil
	}
	bp := framePool.Get().(*[]byte)
	b := append((*bp)[:0], o.rest...)
	b = append(b, o.ctrl...)
	o.rest, o.ctrl = o.rest[:0], o.ctrl[:0]
	n := 0
	for n < len(o.q) && (n == 0 || len(b)+len(o.q[n]) <= maxBatch) {
		b = appendFrame(b, opText, o.q[n])
		n++
	}
	rem := copy(o.q, o.q[n:])
	clear(o.q[rem:])
	o.q = o.q[:rem]
	if rem == 0 && len(o.backlog) > 0 {
		// The live frames first; then as much of the replay as one write
		// takes: the next batch waits until this one is written.
		k := 0
		for k < len(o.backlog) && (len(b) == 0 || len(b)+len(o.backlog[k]) <= maxBatch) {
			b = appendFrame(b, opText, o.backlog[k])
			k++
		}
		left := copy(o.backlog, o.backlog[k:])
		clear(o.backlog[left:])
		o.backlog = o.backlog[:left]
		if left == 0 {
			o.backlog = nil
		}
	}
	if len(o.q) == 0 && cap(o.q) > 64 {
		o.q = nil // a burst is over: give its backing array back
	}
	if cap(o.rest) > 4096 {
		o.rest = nil
	}
	if cap(o.ctrl) > 4096 {
		o.ctrl = nil
	}
	*bp = b
	return bp
}

// close stops further frames. With drop the queue is forgotten (a slow
// consumer); otherwise what is queued is written first, each write within
// wait. Then the close frame goes out. close returns once the flusher is
// done (or the connection failed).
func (o *outbox) close(closePayload []byte, drop bool, wait time.Duration) {
	o.mu.Lock()
	if o.closed { // failed, or closed already
		busy, done := o.busy, o.flushed
		o.mu.Unlock()
		if busy {
			<-done
		}
		return
	}
	o.closed = true
	o.wait = wait
	// A replay is not finished on the way out: the client resumes again.
	clear(o.backlog)
	o.backlog = nil
	if drop {
		clear(o.q)
		o.q = o.q[:0]
	}
	o.ctrl = appendFrame(o.ctrl, opClose, closePayload)
	if !o.busy {
		o.startFlush()
	}
	done := o.flushed
	o.mu.Unlock()
	<-done
}
