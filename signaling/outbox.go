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
//     not take (a partial write, EAGAIN) is left for the writer goroutine,
//     so a slow receiver never makes the deliverer wait.
//   - Otherwise the frame is queued (at most limit frames; push reports false
//     beyond, and the caller closes the client as a slow consumer) and the
//     writer goroutine is woken; it writes everything queued in one buffered
//     write (several frames, one syscall), with the write deadline, and
//     repeats until the queue is empty.
//
// Exactly one JSON message travels in each frame; only the syscall is shared.
// Connections without a raw socket (TLS served by the server itself) always
// go through the writer goroutine. Every write to the socket happens either
// under mu with busy false (a direct write) or in the writer goroutine with
// busy true, so frames never interleave.
type outbox struct {
	nc    net.Conn
	raw   syscall.RawConn // nil: no direct writes
	limit int

	mu     sync.Mutex
	q      [][]byte // queued text payloads (shared encodings, not copied)
	ctrl   []byte   // queued control frames, framed (pongs, pings)
	rest   []byte   // what a direct write left unwritten of its frame
	busy   bool     // the writer goroutine is writing outside mu
	closed bool     // no more frames: the connection is closing
	// direct write scratch, used under mu
	wp  []byte
	wn  int
	we  error
	wfn func(fd uintptr) bool

	wake chan struct{} // capacity 1: something is queued
}

const (
	opText  = 0x1
	opClose = 0x8
	opPing  = 0x9
	opPong  = 0xa
	// maxBatch bounds the bytes the writer gathers for one write.
	maxBatch = 64 << 10
)

func newOutbox(nc net.Conn, limit int) *outbox {
	o := &outbox{nc: nc, limit: limit, wake: make(chan struct{}, 1)}
	if sc, ok := nc.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			o.raw = raw
			o.wfn = func(fd uintptr) bool {
				o.wn, o.we = syscall.Write(int(fd), o.wp)
				return true // never wait for the socket: the writer goroutine does
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
	return o.raw != nil && !o.busy && len(o.q) == 0 && len(o.ctrl) == 0 && len(o.rest) == 0
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
		o.kick()
		return nil
	}
	return we
}

func (o *outbox) kick() {
	select {
	case o.wake <- struct{}{}:
	default:
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
		o.kick()
	}
	return true, nil
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
		o.kick()
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
// frames, then up to maxBatch bytes of text frames) and marks the writer
// busy. It returns nil when nothing is queued.
func (o *outbox) take() *[]byte {
	if len(o.rest) == 0 && len(o.ctrl) == 0 && len(o.q) == 0 {
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
	if len(o.q) == 0 && cap(o.q) > 64 {
		o.q = nil // a burst is over: give its backing array back
	}
	if cap(o.rest) > 4096 {
		o.rest = nil
	}
	if cap(o.ctrl) > 4096 {
		o.ctrl = nil
	}
	o.busy = true
	*bp = b
	return bp
}

// flush writes everything queued, batch by batch, with deadline for each
// write (the writer goroutine only).
func (o *outbox) flush(wait time.Duration) error {
	for {
		o.mu.Lock()
		bp := o.take()
		o.mu.Unlock()
		if bp == nil {
			return nil
		}
		_ = o.nc.SetWriteDeadline(time.Now().Add(wait))
		_, err := o.nc.Write(*bp)
		putFrame(bp, *bp)
		o.mu.Lock()
		o.busy = false
		o.mu.Unlock()
		if err != nil {
			return err
		}
	}
}

// close stops further frames. With drop the queue is forgotten (a slow
// consumer); otherwise what is queued is written first, within wait. Then
// the close frame goes out.
func (o *outbox) close(closePayload []byte, drop bool, wait time.Duration) {
	o.mu.Lock()
	o.closed = true
	if drop {
		clear(o.q)
		o.q = o.q[:0]
	}
	o.ctrl = appendFrame(o.ctrl, opClose, closePayload)
	o.mu.Unlock()
	_ = o.flush(wait)
}
