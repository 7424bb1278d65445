package main

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// liteSession is a phone and a PC of the relay paths, both light clients.
type liteSession struct {
	phone, pc *liteConn
	tr        *track
	n         atomic.Uint64
	mu        sync.Mutex // one writer on the phone's socket
}

func (s *liteSession) send(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.phone.sendChord(); err != nil {
		return err
	}
	s.n.Add(1)
	return nil
}
func (s *liteSession) sent() uint64  { return s.n.Load() }
func (s *liteSession) track() *track { return s.tr }
func (s *liteSession) close() {
	s.phone.close()
	s.pc.close()
}

// server describes where a path's clients connect and how to observe the server.
type server struct {
	api       string // base URL for the HTTP API (session creation, pairing)
	phoneBase string // base URL the phone dials
	pcBase    string // base URL the PC dials
	// probe reads the server's memory (after GC), CPU time and RSS; nil when
	// the server is not observable (--url).
	probe func(ctx context.Context) (goMem, time.Duration, error)
	scope string // "server" or "process (server+clients)"
	// pid is the server's process (0: this one, -1: unknown).
	pid int
	// loaded, when not nil, is called once every session is set up.
	loaded func(ctx context.Context)
}

// setupConcurrency bounds the sessions being set up at once.
const setupConcurrency = 32

// runRelay measures a relay path with light clients: create+pair each
// session over the API, join the PC on pcBase and the phone on phoneBase,
// drive chord changes phone → PC and measure.
func runRelay(ctx context.Context, opt *options, name string, srv server) (*PathResult, error) {
	r := &PathResult{Name: name, Sessions: opt.Sessions, Scope: srv.scope}
	api := newAPIClient(srv.api)
	var before goMem
	if srv.probe != nil {
		before, _, _ = srv.probe(ctx)
	}
	sess := make([]*liteSession, opt.Sessions)
	setups := make([]time.Duration, opt.Sessions)
	errs := make(chan error, opt.Sessions)
	sem := make(chan struct{}, setupConcurrency)
	var wg sync.WaitGroup
	var ready atomic.Int64
	stopProg := func() {}
	if opt.Sessions > 100 && !opt.Quiet {
		tr := &traffic{name: name + " setup", start: time.Now()}
		stopProg = progressSetup(ctx, tr, &ready, opt.Sessions)
	}
	// Readers start as soon as a session is set up: they answer the server's
	// pings, which a long setup of thousands of sessions would otherwise miss.
	tr := &traffic{name: name}
	setupStart := time.Now()
	for i := range opt.Sessions {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			t0 := time.Now()
			sctx, cancel := context.WithTimeout(ctx, 60*time.Second)
			defer cancel()
			p, err := api.createPairing(sctx)
			if err != nil {
				errs <- fmt.Errorf("session %d: %w", i, err)
				return
			}
			pc, err := dialLite(sctx, srv.pcBase, p.SessionID, p.PCToken)
			if err != nil {
				errs <- fmt.Errorf("session %d pc: %w", i, err)
				return
			}
			phone, err := dialLite(sctx, srv.phoneBase, p.SessionID, p.PhoneToken)
			if err != nil {
				pc.conn.Close()
				errs <- fmt.Errorf("session %d phone: %w", i, err)
				return
			}
			setups[i] = time.Since(t0)
			s := &liteSession{phone: phone, pc: pc, tr: newTrack(opt.Rate <= 0)}
			go s.pc.readLoop(s.tr, &tr.recv)
			go s.phone.readLoop(nil, nil)
			sess[i] = s
			ready.Add(1)
		}()
	}
	wg.Wait()
	stopProg()
	api.hc.CloseIdleConnections()
	r.SetupSeconds = time.Since(setupStart).Seconds()
	close(errs)
	var firstErr error
	nerr := 0
	for err := range errs {
		nerr++
		if firstErr == nil {
			firstErr = err
		}
	}
	var live []benchSession
	var liveLite []*liteSession
	for _, s := range sess {
		if s != nil {
			live = append(live, s)
			liveLite = append(liveLite, s)
		}
	}
	defer func() {
		var cw sync.WaitGroup
		sem := make(chan struct{}, 256)
		for _, s := range liveLite {
			cw.Add(1)
			sem <- struct{}{}
			go func() { defer cw.Done(); defer func() { <-sem }(); s.close() }()
		}
		cw.Wait()
	}()
	if nerr > 0 {
		r.SetupFailures = nerr
		r.Err = firstErr.Error()
		if len(live) == 0 {
			return r, firstErr
		}
	}
	r.Setup = summarize(nonZero(setups))
	var cpu0 time.Duration
	if srv.probe != nil {
		after, cpu, err := srv.probe(ctx)
		if err == nil {
			r.RSS, cpu0 = after.RSS, cpu
			// Per connection only where connections outweigh the noise of a GC.
			if len(live) >= 50 {
				conns := float64(2 * len(live))
				r.Connections = 2 * len(live)
				r.MemPerConn = (float64(after.live()) - float64(before.live())) / conns
				r.RSSPerConn = (float64(after.RSS) - float64(before.RSS)) / conns
			}
		}
	}
	if srv.loaded != nil {
		srv.loaded(ctx)
	}
	stop := progress(ctx, tr, opt.Quiet)
	t0, w0 := time.Now(), runQueueWait(srv.pid)
	wall := drive(ctx, opt, live, tr)
	drain(live, 5*time.Second+4*opt.FarRTT)
	elapsed := time.Since(t0)
	r.noteContention(srv.pid, w0, elapsed)
	stop()
	if srv.probe != nil {
		m, cpu, err := srv.probe(ctx)
		if err == nil {
			r.CPUPercent = 100 * (cpu - cpu0).Seconds() / elapsed.Seconds()
			r.RSS = max(r.RSS, m.RSS)
		}
	}
	collect(r, live, wall)
	for _, s := range liveLite {
		for _, c := range []*liteConn{s.phone, s.pc} {
			if err := c.ended(); err != nil {
				r.Disconnects++
				if r.DisconnectErr == "" {
					r.DisconnectErr = err.Error()
				}
			}
		}
	}
	return r, nil
}

func nonZero(ds []time.Duration) []time.Duration {
	out := ds[:0:0]
	for _, d := range ds {
		if d > 0 {
			out = append(out, d)
		}
	}
	return out
}

// progressSetup prints how many sessions are set up, every second.
func progressSetup(ctx context.Context, t *traffic, ready *atomic.Int64, total int) func() {
	return everySecond(ctx, func() string {
		return fmt.Sprintf("[%s] %5.1fs %d/%d sessions joined", t.name, time.Since(t.start).Seconds(), ready.Load(), total)
	})
}
