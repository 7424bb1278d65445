package main

// The load test's client worker: `virtutune-bench --load-clients` holds the
// clients of a range of sessions (a sender and a receiver each) in its own
// process, so that a run can hold more connections than one process's
// open-file limit, and the server process's CPU and memory are its own. The
// orchestrator (load.go) drives it with one JSON command per line on stdin;
// it answers one JSON line per command on stdout.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"

	"github.com/virtutune/link/protocol"
)

// workerCmd is one command of the orchestrator to a worker.
type workerCmd struct {
	Op string `json:"op"` // setup, loop, step, close
	// setup
	Target    string `json:"target,omitempty"` // project, hub, centrifugo
	API       string `json:"api,omitempty"`
	PhoneBase string `json:"phone_base,omitempty"`
	PCBase    string `json:"pc_base,omitempty"`
	CFSecret  string `json:"cf_secret,omitempty"`
	First     int    `json:"first,omitempty"`
	Count     int    `json:"count,omitempty"`
	RunID     string `json:"run_id,omitempty"`
	// loop: Count messages closed-loop on the first session
	// step: Rate per session for Duration, starting at Start (unix ns)
	Rate     float64       `json:"rate,omitempty"`
	Duration time.Duration `json:"duration,omitempty"`
	Start    int64         `json:"start,omitempty"`
	Drain    time.Duration `json:"drain,omitempty"`
}

// workerResult is a worker's answer.
type workerResult struct {
	Op          string      `json:"op"`
	Err         string      `json:"error,omitempty"`
	Sessions    int         `json:"sessions,omitempty"`
	SetupFailed int         `json:"setup_failed,omitempty"`
	Setup       [][2]uint64 `json:"setup,omitempty"`
	Sent        uint64      `json:"sent"`
	Delivered   uint64      `json:"delivered"`
	Dup         uint64      `json:"dup"`
	Reord       uint64      `json:"reord"`
	Lossy       int         `json:"lossy"`
	Hist        [][2]uint64 `json:"hist,omitempty"`
	SendSeconds float64     `json:"send_seconds"`
	Disconnects int         `json:"disconnects"`
	FirstDisc   string      `json:"first_disconnect,omitempty"`
}

// loadConn is one WebSocket of a load client; writes are serialised (the
// receiver's reader answers Centrifugo's protocol pings).
type loadConn struct {
	conn *websocket.Conn
	wmu  sync.Mutex
	buf  []byte
	done chan struct{}
	err  atomic.Value
}

func (c *loadConn) write(b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.conn.WriteMessage(websocket.TextMessage, b)
}

func (c *loadConn) ended() error {
	select {
	case <-c.done:
		if e, ok := c.err.Load().(error); ok {
			return e
		}
		return errors.New("connection ended")
	default:
		return nil
	}
}

func (c *loadConn) close() {
	c.wmu.Lock()
	_ = c.conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
	c.wmu.Unlock()
	_ = c.conn.Close()
	<-c.done
}

// loadSession is one sender (the phone) and one receiver (the PC).
type loadSession struct {
	w           *worker
	idx         int
	phone, pc   *loadConn
	channel     string // centrifugo
	seq         uint64 // the sender's; one goroutine sends at a time
	cmdID       uint64
	sentN       atomic.Uint64
	mu          sync.Mutex
	seen        []uint64 // bitmap by seq
	maxSeq      uint64
	unique, dup uint64
	reord       uint64
	base        uint64 // seqs at or below it belong to earlier steps
	stepRecv    uint64
	notify      chan uint64
}

// worker holds the sessions of one client process.
type worker struct {
	target   string
	sessions []*loadSession
	h        hist
}

// runWorker is --load-clients: serve the orchestrator's commands.
func runWorker(in io.Reader, out io.Writer) error {
	debug.SetGCPercent(400) // the clients are not under test
	raiseNoFile(1 << 20)
	w := &worker{}
	dec := json.NewDecoder(bufio.NewReader(in))
	enc := json.NewEncoder(out)
	for {
		var cmd workerCmd
		if err := dec.Decode(&cmd); err != nil {
			w.closeAll()
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		var res workerResult
		switch cmd.Op {
		case "setup":
			res = w.setup(cmd)
		case "loop":
			res = w.loop(cmd)
		case "step":
			res = w.step(cmd)
		case "close":
			w.closeAll()
			_ = enc.Encode(workerResult{Op: "closed"})
			return nil
		default:
			res.Err = "unknown op " + cmd.Op
		}
		res.Op = cmd.Op
		if err := enc.Encode(res); err != nil {
			return err
		}
	}
}

func (w *worker) closeAll() {
	var wg sync.WaitGroup
	sem := make(chan struct{}, 256)
	for _, s := range w.sessions {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			s.phone.close()
			s.pc.close()
		}()
	}
	wg.Wait()
	w.sessions = nil
}

var loadDialer = &websocket.Dialer{HandshakeTimeout: 30 * time.Second, ReadBufferSize: 1024, WriteBufferSize: 1024}

func (w *worker) setup(cmd workerCmd) workerResult {
	w.target = cmd.Target
	var res workerResult
	var api *apiClient
	if cmd.Target == "project" {
		api = newAPIClient(cmd.API)
		defer api.hc.CloseIdleConnections()
	}
	sess := make([]*loadSession, cmd.Count)
	var setupH hist
	var failed atomic.Int64
	var firstErr atomic.Value
	sem := make(chan struct{}, setupConcurrency)
	var wg sync.WaitGroup
	for k := range cmd.Count {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			i := cmd.First + k
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			t0 := time.Now()
			s, err := w.dialSession(ctx, cmd, api, i)
			if err != nil {
				failed.Add(1)
				firstErr.CompareAndSwap(nil, fmt.Sprintf("session %d: %v", i, err))
				return
			}
			setupH.add(time.Since(t0))
			go s.readLoop(s.pc, true)
			go s.readLoop(s.phone, false)
			sess[k] = s
		}()
	}
	wg.Wait()
	for _, s := range sess {
		if s != nil {
			w.sessions = append(w.sessions, s)
		}
	}
	res.Sessions = len(w.sessions)
	res.SetupFailed = int(failed.Load())
	res.Setup = setupH.take()
	if e, ok := firstErr.Load().(string); ok {
		res.Err = e
	}
	return res
}

func (w *worker) dialSession(ctx context.Context, cmd workerCmd, api *apiClient, i int) (*loadSession, error) {
	s := &loadSession{w: w, idx: i, notify: make(chan uint64, 1)}
	var err error
	switch cmd.Target {
	case "project":
		p, err := api.createPairing(ctx)
		if err != nil {
			return nil, err
		}
		if s.pc, err = dialProject(ctx, cmd.PCBase, p.SessionID, p.PCToken); err != nil {
			return nil, fmt.Errorf("pc: %w", err)
		}
		if s.phone, err = dialProject(ctx, cmd.PhoneBase, p.SessionID, p.PhoneToken); err != nil {
			_ = s.pc.conn.Close()
			return nil, fmt.Errorf("phone: %w", err)
		}
	case "hub":
		room := cmd.RunID + "-" + strconv.Itoa(i)
		if s.pc, err = dialWS(ctx, wsBase(cmd.PCBase)+"/hub/"+room, nil); err != nil {
			return nil, fmt.Errorf("pc: %w", err)
		}
		if s.phone, err = dialWS(ctx, wsBase(cmd.PhoneBase)+"/hub/"+room, nil); err != nil {
			_ = s.pc.conn.Close()
			return nil, fmt.Errorf("phone: %w", err)
		}
		for _, c := range []*loadConn{s.pc, s.phone} {
			if _, err := c.readUntil(ctx, func(b []byte) bool { return bytes.Equal(b, hubReady) }); err != nil {
				_ = s.pc.conn.Close()
				_ = s.phone.conn.Close()
				return nil, fmt.Errorf("hub pairing: %w", err)
			}
		}
	case "centrifugo":
		s.channel = "s" + cmd.RunID + "-" + strconv.Itoa(i)
		if s.pc, err = dialCentrifugo(ctx, cmd.PCBase, cmd.CFSecret, "pc"+strconv.Itoa(i), s.channel); err != nil {
			return nil, fmt.Errorf("pc: %w", err)
		}
		if s.phone, err = dialCentrifugo(ctx, cmd.PhoneBase, cmd.CFSecret, "ph"+strconv.Itoa(i), ""); err != nil {
			_ = s.pc.conn.Close()
			return nil, fmt.Errorf("phone: %w", err)
		}
		s.cmdID = 10
	default:
		return nil, fmt.Errorf("unknown target %q", cmd.Target)
	}
	return s, nil
}

func dialWS(ctx context.Context, u string, hdr http.Header) (*loadConn, error) {
	conn, resp, err := loadDialer.DialContext(ctx, u, hdr)
	if err != nil {
		if resp != nil {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
			return nil, fmt.Errorf("dial: %w (HTTP %d %s)", err, resp.StatusCode, bytes.TrimSpace(b))
		}
		return nil, fmt.Errorf("dial: %w", err)
	}
	return &loadConn{conn: conn, buf: make([]byte, 0, 256), done: make(chan struct{})}, nil
}

// readUntil reads frames (before the reader goroutine runs) until ok says
// one is the awaited one, answering Centrifugo's pings meanwhile.
func (c *loadConn) readUntil(ctx context.Context, ok func([]byte) bool) ([]byte, error) {
	deadline := time.Now().Add(30 * time.Second)
	if d, has := ctx.Deadline(); has && d.Before(deadline) {
		deadline = d
	}
	_ = c.conn.SetReadDeadline(deadline)
	defer func() { _ = c.conn.SetReadDeadline(time.Time{}) }()
	for {
		_, b, err := c.conn.ReadMessage()
		if err != nil {
			return nil, err
		}
		for _, line := range bytes.Split(b, []byte("\n")) {
			if len(line) == 0 {
				continue
			}
			if bytes.Equal(line, cfPing) {
				_ = c.write(cfPing)
				continue
			}
			if ok(line) {
				return line, nil
			}
		}
	}
}

// dialProject joins a project session and waits for its session_state (the
// client id is the one the server binds to the token).
func dialProject(ctx context.Context, base, sid, token string) (*loadConn, error) {
	u := wsBase(base) + "/ws/guitar/" + sid + "/"
	c, err := dialWS(ctx, u, http.Header{"Authorization": {"Bearer " + token}})
	if err != nil {
		return nil, err
	}
	if _, err := c.readUntil(ctx, func(b []byte) bool {
		return bytes.HasPrefix(b, []byte(`{"type":"session_state"`))
	}); err != nil {
		_ = c.conn.Close()
		return nil, fmt.Errorf("waiting for session_state: %w", err)
	}
	return c, nil
}

// cfPing is Centrifugo's protocol ping (and the client's pong).
var cfPing = []byte("{}")

// dialCentrifugo connects to a Centrifugo node's JSON WebSocket endpoint
// with a token for user, and subscribes to channel unless it is empty.
func dialCentrifugo(ctx context.Context, base, secret, user, channel string) (*loadConn, error) {
	c, err := dialWS(ctx, wsBase(base)+"/connection/websocket", nil)
	if err != nil {
		return nil, err
	}
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": user, "exp": time.Now().Add(12 * time.Hour).Unix()}).SignedString([]byte(secret))
	if err != nil {
		return nil, err
	}
	reply := func(id int) func([]byte) bool {
		p := []byte(`"id":` + strconv.Itoa(id) + `,`)
		return func(b []byte) bool { return bytes.Contains(b, p) }
	}
	if err := c.write([]byte(`{"id":1,"connect":{"token":"` + tok + `","name":"vtbench"}}`)); err != nil {
		return nil, err
	}
	b, err := c.readUntil(ctx, reply(1))
	if err == nil && bytes.Contains(b, []byte(`"error"`)) {
		err = fmt.Errorf("connect: %s", b)
	}
	if err == nil && channel != "" {
		if err = c.write([]byte(`{"id":2,"subscribe":{"channel":"` + channel + `"}}`)); err == nil {
			b, err = c.readUntil(ctx, reply(2))
			if err == nil && bytes.Contains(b, []byte(`"error"`)) {
				err = fmt.Errorf("subscribe: %s", b)
			}
		}
	}
	if err != nil {
		_ = c.conn.Close()
		return nil, err
	}
	return c, nil
}

// send makes the phone send its next chord change. One goroutine at a time
// per session (the pacing shard that owns it, or the closed loop).
func (s *loadSession) send() error {
	s.seq++
	m := protocol.Message{Type: protocol.TypeChordChange, Data: chordData[s.seq%uint64(len(chords))], Seq: s.seq, At: nowMillis()}
	c := s.phone
	c.wmu.Lock()
	defer c.wmu.Unlock()
	switch s.w.target {
	case "centrifugo":
		s.cmdID++
		c.buf = append(c.buf[:0], `{"id":`...)
		c.buf = strconv.AppendUint(c.buf, s.cmdID, 10)
		c.buf = append(c.buf, `,"publish":{"channel":"`...)
		c.buf = append(c.buf, s.channel...)
		c.buf = append(c.buf, `","data":`...)
		c.buf = protocol.Append(c.buf, &m)
		c.buf = append(c.buf, `}}`...)
	default:
		c.buf = protocol.Append(c.buf[:0], &m)
	}
	if err := c.conn.WriteMessage(websocket.TextMessage, c.buf); err != nil {
		return err
	}
	s.sentN.Add(1)
	return nil
}

// readLoop reads c until it ends; on the receiver it records every chord
// change (seq and at picked out of the bytes, a reused buffer per connection).
func (s *loadSession) readLoop(c *loadConn, receiver bool) {
	defer close(c.done)
	buf := make([]byte, 512)
	for {
		_, r, err := c.conn.NextReader()
		if err != nil {
			c.err.Store(err)
			return
		}
		n := 0
		for {
			if n == len(buf) {
				buf = append(buf, make([]byte, len(buf))...)
			}
			k, err := r.Read(buf[n:])
			n += k
			if err == io.EOF {
				break
			}
			if err != nil {
				c.err.Store(err)
				return
			}
		}
		now := time.Now()
		b := buf[:n]
		for len(b) > 0 {
			line := b
			if i := bytes.IndexByte(b, '\n'); i >= 0 {
				line, b = b[:i], b[i+1:]
			} else {
				b = nil
			}
			if len(line) == 2 && bytes.Equal(line, cfPing) {
				_ = c.write(cfPing)
				continue
			}
			if !receiver || !bytes.Contains(line, chordPrefix) {
				continue
			}
			seq, ok1 := numberAfter(line, `"seq":`)
			at, ok2 := numberAfter(line, `"at":`)
			if !ok1 || !ok2 {
				continue
			}
			q, _ := strconv.ParseUint(string(seq), 10, 64)
			a, _ := strconv.ParseFloat(string(at), 64)
			s.received(q, sinceMillis(now, a))
		}
	}
}

func (s *loadSession) received(seq uint64, lat time.Duration) {
	s.mu.Lock()
	w, bit := seq/64, uint64(1)<<(seq%64)
	for uint64(len(s.seen)) <= w {
		s.seen = append(s.seen, make([]uint64, len(s.seen)+4)...)
	}
	if s.seen[w]&bit != 0 {
		s.dup++
		s.mu.Unlock()
		return
	}
	s.seen[w] |= bit
	s.unique++
	if seq < s.maxSeq {
		s.reord++
	} else {
		s.maxSeq = seq
	}
	mine := seq > s.base
	if mine {
		s.stepRecv++
	}
	s.mu.Unlock()
	if mine {
		s.w.h.add(lat)
	}
	select {
	case <-s.notify:
	default:
	}
	select {
	case s.notify <- seq:
	default:
	}
}

// begin starts a measured step on every session: what was sent before it
// does not count.
func (w *worker) begin() {
	_ = w.h.take()
	for _, s := range w.sessions {
		s.mu.Lock()
		s.base = s.sentN.Load()
		s.stepRecv = 0
		s.mu.Unlock()
	}
}

// finish waits up to drain for every step message, then reports the step.
func (w *worker) finish(drain time.Duration, sendSeconds float64, dup0, reord0 uint64) workerResult {
	deadline := time.Now().Add(drain)
	for {
		all := true
		for _, s := range w.sessions {
			s.mu.Lock()
			got := s.stepRecv
			s.mu.Unlock()
			if got < s.sentN.Load()-s.base {
				all = false
				break
			}
		}
		if all || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	res := workerResult{SendSeconds: sendSeconds, Sessions: len(w.sessions)}
	var dup, reord uint64
	for _, s := range w.sessions {
		s.mu.Lock()
		sent := s.sentN.Load() - s.base
		res.Sent += sent
		res.Delivered += s.stepRecv
		if s.stepRecv < sent {
			res.Lossy++
		}
		dup += s.dup
		reord += s.reord
		s.mu.Unlock()
		for _, c := range []*loadConn{s.phone, s.pc} {
			if err := c.ended(); err != nil {
				res.Disconnects++
				if res.FirstDisc == "" {
					res.FirstDisc = err.Error()
				}
			}
		}
	}
	res.Dup, res.Reord = dup-dup0, reord-reord0
	res.Hist = w.h.take()
	return res
}

func (w *worker) totals() (dup, reord uint64) {
	for _, s := range w.sessions {
		s.mu.Lock()
		dup += s.dup
		reord += s.reord
		s.mu.Unlock()
	}
	return dup, reord
}

// loop sends cmd.Count chord changes on the first session, each once the
// previous one arrived (or after 2 s).
func (w *worker) loop(cmd workerCmd) workerResult {
	if len(w.sessions) == 0 {
		return workerResult{Err: "no sessions"}
	}
	dup0, reord0 := w.totals()
	w.begin()
	s := w.sessions[0]
	t0 := time.Now()
	for range cmd.Count {
		if err := s.send(); err != nil {
			return workerResult{Err: err.Error()}
		}
		k := s.seq
		timeout := time.NewTimer(2 * time.Second)
	wait:
		for {
			select {
			case got := <-s.notify:
				if got >= k {
					break wait
				}
			case <-timeout.C:
				break wait
			}
		}
		timeout.Stop()
	}
	return w.finish(cmd.Drain, time.Since(t0).Seconds(), dup0, reord0)
}

// step sends cmd.Rate chord changes per second per session for cmd.Duration
// from cmd.Start, evenly spread (8 pacing goroutines walk the sessions
// round-robin), then waits up to cmd.Drain for them.
func (w *worker) step(cmd workerCmd) workerResult {
	if len(w.sessions) == 0 {
		return workerResult{Err: "no sessions"}
	}
	dup0, reord0 := w.totals()
	w.begin()
	start := time.Unix(0, cmd.Start)
	end := start.Add(cmd.Duration)
	shards := min(len(w.sessions), 8)
	var wg sync.WaitGroup
	for sh := range shards {
		var mine []*loadSession
		for i := sh; i < len(w.sessions); i += shards {
			mine = append(mine, w.sessions[i])
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			interval := time.Duration(float64(time.Second) / (cmd.Rate * float64(len(mine))))
			next := start.Add(interval * time.Duration(sh) / time.Duration(shards))
			timer := time.NewTimer(time.Hour)
			defer timer.Stop()
			for n := 0; next.Before(end); n++ {
				if d := time.Until(next); d > 50*time.Microsecond {
					timer.Reset(d)
					<-timer.C
				}
				_ = mine[n%len(mine)].send()
				next = next.Add(interval)
			}
		}()
	}
	wg.Wait()
	return w.finish(cmd.Drain, time.Since(start).Seconds(), dup0, reord0)
}

// workerProc is a worker process seen from the orchestrator.
type workerProc struct {
	cmd  *childProc
	enc  *json.Encoder
	dec  *json.Decoder
	name string
}

// startWorker starts `virtutune-bench --load-clients`.
func startWorker(name string) (*workerProc, error) {
	cp, err := startProc(name, os.Args[0], []string{"--load-clients"}, nil, false)
	if err != nil {
		return nil, err
	}
	return &workerProc{cmd: cp, enc: json.NewEncoder(cp.stdin), dec: json.NewDecoder(cp.stdout), name: name}, nil
}

// do sends c and waits for the answer.
func (w *workerProc) do(c workerCmd) (workerResult, error) {
	if err := w.enc.Encode(c); err != nil {
		return workerResult{}, fmt.Errorf("%s: %w", w.name, err)
	}
	var r workerResult
	if err := w.dec.Decode(&r); err != nil {
		return r, fmt.Errorf("%s: %w", w.name, err)
	}
	if r.Err != "" && r.Sessions == 0 && c.Op != "setup" {
		return r, fmt.Errorf("%s: %s", w.name, r.Err)
	}
	return r, nil
}

func (w *workerProc) Close() {
	_, _ = w.do(workerCmd{Op: "close"})
	w.cmd.Close()
}
