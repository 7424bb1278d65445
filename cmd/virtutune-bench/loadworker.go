package main

// The load test's client worker: `virtutune-bench --load-clients` holds the
// clients of a range of sessions (a sender and a receiver each) in its own
// process, so that a run can hold more connections than one process's
// open-file limit, and the server process's CPU and memory are its own. The
// orchestrator (load.go) drives it with one JSON command per line on stdin;
// it answers one JSON line per command on stdout.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"
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
	Resent      uint64      `json:"resent,omitempty"`
	Lossy       int         `json:"lossy"`
	Hist        [][2]uint64 `json:"hist,omitempty"`
	SendSeconds float64     `json:"send_seconds"`
	Disconnects int         `json:"disconnects"`
	FirstDisc   string      `json:"first_disconnect,omitempty"`
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
func (w *worker) finish(drain time.Duration, sendSeconds float64, dup0, reord0, resent0 uint64) workerResult {
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
	var dup, reord, resent uint64
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
		resent += s.resent.Load()
		for _, c := range []*loadConn{s.phone, s.pc} {
			if err := c.ended(); err != nil {
				res.Disconnects++
				if res.FirstDisc == "" {
					res.FirstDisc = err.Error()
				}
			}
		}
	}
	res.Dup, res.Reord, res.Resent = dup-dup0, reord-reord0, resent-resent0
	res.Hist = w.h.take()
	return res
}

func (w *worker) totals() (dup, reord, resent uint64) {
	for _, s := range w.sessions {
		s.mu.Lock()
		dup += s.dup
		reord += s.reord
		s.mu.Unlock()
		resent += s.resent.Load()
	}
	return dup, reord, resent
}

// loop sends cmd.Count chord changes on the first session, each once the
// previous one arrived (or after 2 s).
func (w *worker) loop(cmd workerCmd) workerResult {
	if len(w.sessions) == 0 {
		return workerResult{Err: "no sessions"}
	}
	dup0, reord0, resent0 := w.totals()
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
	return w.finish(cmd.Drain, time.Since(t0).Seconds(), dup0, reord0, resent0)
}

// step sends cmd.Rate chord changes per second per session for cmd.Duration
// from cmd.Start, evenly spread (8 pacing goroutines walk the sessions
// round-robin), then waits up to cmd.Drain for them.
func (w *worker) step(cmd workerCmd) workerResult {
	if len(w.sessions) == 0 {
		return workerResult{Err: "no sessions"}
	}
	dup0, reord0, resent0 := w.totals()
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
	return w.finish(cmd.Drain, time.Since(start).Seconds(), dup0, reord0, resent0)
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
