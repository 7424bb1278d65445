package main

import (
	"context"
	"fmt"
	"net/url"
	"sync/atomic"
	"time"

	"github.com/virtutune/link/peer"
	"github.com/virtutune/link/protocol"
)

// peerSession is a phone and a PC of the p2p path: two Go peers (package
// peer) with a data channel between them.
type peerSession struct {
	phone, pc *peer.Client
	tr        *track
	n         atomic.Uint64
	cancel    context.CancelFunc
	recvDone  chan struct{}
}

func (s *peerSession) send(ctx context.Context) error {
	k := s.n.Load() + 1
	if err := s.phone.SendChord(ctx, chords[k%uint64(len(chords))]); err != nil {
		return err
	}
	s.n.Store(k)
	return nil
}
func (s *peerSession) sent() uint64  { return s.n.Load() }
func (s *peerSession) track() *track { return s.tr }
func (s *peerSession) close() {
	s.cancel()
	_ = s.phone.Close()
	_ = s.pc.Close()
	<-s.recvDone
}

// recvLoop hands the PC's chord changes to the track.
func (s *peerSession) recvLoop(ctx context.Context, recv *atomic.Uint64) {
	defer close(s.recvDone)
	for {
		d, err := s.pc.Recv(ctx)
		if err != nil {
			return
		}
		if d.Msg.Type != protocol.TypeChordChange {
			continue
		}
		s.tr.add(d.Msg.Seq, sinceMillis(d.At, d.Msg.At), d.Path)
		recv.Add(1)
	}
}

// waitP2P waits for the data channel of c to peer to be open.
func waitP2P(ctx context.Context, c *peer.Client) error {
	if c.Path() == protocol.PathP2P {
		return nil
	}
	for {
		select {
		case e := <-c.Events():
			if e.Kind == peer.EventP2P && e.Up {
				return nil
			}
		case <-ctx.Done():
			return fmt.Errorf("data channel not open: %w", ctx.Err())
		case <-c.Done():
			return fmt.Errorf("client ended: %w", c.Err())
		}
	}
}

// setupPeers creates a session over the API at srv.api, dials the PC (on
// srv.pcBase) and, after pairing, the phone (on srv.phoneBase), and waits
// until both see their data channel open.
func setupPeers(ctx context.Context, srv server) (*peerSession, time.Duration, error) {
	t0 := time.Now()
	info, err := peer.CreateSession(ctx, srv.api, "")
	if err != nil {
		return nil, 0, err
	}
	// The pairing link names the server's public host; the bench reaches it at srv.api.
	pu, err := url.Parse(info.PairingURL)
	if err != nil {
		return nil, 0, err
	}
	au, _ := url.Parse(srv.api)
	pu.Scheme, pu.Host = au.Scheme, au.Host
	pc, err := peer.Dial(ctx, peer.Config{ServerURL: srv.pcBase, SessionID: info.SessionID, Token: info.Token,
		Role: protocol.RolePC, LoopbackOnly: true})
	if err != nil {
		return nil, 0, fmt.Errorf("pc: %w", err)
	}
	ph, err := peer.Pair(ctx, pu.String())
	if err != nil {
		_ = pc.Close()
		return nil, 0, err
	}
	phone, err := peer.Dial(ctx, peer.Config{ServerURL: srv.phoneBase, SessionID: ph.SessionID, Token: ph.Token,
		Role: protocol.RolePhone, LoopbackOnly: true})
	if err != nil {
		_ = pc.Close()
		return nil, 0, fmt.Errorf("phone: %w", err)
	}
	err = waitP2P(ctx, pc)
	if err == nil {
		err = waitP2P(ctx, phone)
	}
	if err != nil {
		_ = pc.Close()
		_ = phone.Close()
		return nil, 0, err
	}
	return &peerSession{phone: phone, pc: pc, recvDone: make(chan struct{})}, time.Since(t0), nil
}

// runP2P measures the p2p path: sessions of Go peers whose chord changes go
// over the data channel (and to the server, which does not relay them again).
// Sessions are set up one after the other, so each setup time is uncontended.
func runP2P(ctx context.Context, opt *options, name string, srv server) (*PathResult, error) {
	r := &PathResult{Name: name, Sessions: opt.Sessions, Scope: srv.scope}
	n := max(opt.Sessions, opt.Setups)
	var sess []benchSession
	var all []*peerSession
	var setups []time.Duration
	defer func() {
		for _, s := range all {
			s.close()
		}
	}()
	tr := &traffic{name: name}
	setupStart := time.Now()
	for i := range n {
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		s, d, err := setupPeers(sctx, srv)
		cancel()
		if err != nil {
			r.SetupFailures++
			r.Err = fmt.Sprintf("session %d: %v", i, err)
			continue
		}
		setups = append(setups, d)
		rctx, rcancel := context.WithCancel(ctx)
		s.cancel = rcancel
		s.tr = newTrack(opt.Rate <= 0)
		go s.recvLoop(rctx, &tr.recv)
		all = append(all, s)
		if len(sess) < opt.Sessions {
			sess = append(sess, s)
		}
	}
	r.SetupSeconds = time.Since(setupStart).Seconds()
	r.Setup = summarize(setups)
	if len(sess) == 0 {
		return r, fmt.Errorf("no p2p session could be set up: %s", r.Err)
	}
	r.Sessions = len(sess)
	var cpu0 time.Duration
	if srv.probe != nil {
		if m, cpu, err := srv.probe(ctx); err == nil {
			cpu0, r.RSS = cpu, m.RSS
		}
	}
	stop := progress(ctx, tr, opt.Quiet)
	t0, w0 := time.Now(), runQueueWait(srv.pid)
	wall := drive(ctx, opt, sess, tr)
	drain(sess, 5*time.Second+4*opt.FarRTT)
	elapsed := time.Since(t0)
	r.noteContention(srv.pid, w0, elapsed)
	stop()
	if srv.probe != nil {
		if m, cpu, err := srv.probe(ctx); err == nil {
			r.CPUPercent = 100 * (cpu - cpu0).Seconds() / elapsed.Seconds()
			r.RSS = max(r.RSS, m.RSS)
		}
	}
	collect(r, sess, wall)
	return r, nil
}
