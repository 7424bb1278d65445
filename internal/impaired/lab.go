package impaired

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/virtutune/link/internal/netem"
)

const (
	// serverPort is the server's port on its host.
	serverPort = 8000
	// p2pWait bounds the wait for the first data channel before the phone
	// starts playing (the scenario then runs on the relay, and says so).
	p2pWait = 20 * time.Second
	// setupWait bounds starting a node and its session.
	setupWait = 30 * time.Second
	// drainWait bounds the wait, after the phone stopped, for the PC to get
	// every chord.
	drainWait = 45 * time.Second
	// p2pSettle is how long the phone keeps playing once the PC gets chords
	// directly again after a fault.
	p2pSettle = 2 * time.Second
)

// Config configures a Lab.
type Config struct {
	// Exe is the executable started as the nodes (it must call MaybeNode
	// first thing). Default: this process's own executable.
	Exe string
	// Logger receives the lab's progress. Default: discard.
	Logger *slog.Logger
	// NodeDebug makes the nodes log at debug level (pion's logs included).
	NodeDebug bool
}

// Lab is the emulated LAN of a guitarist's home: three hosts (server, phone,
// PC), each its own network namespace, on one switch, and the signaling
// server running in its host. Each scenario runs a fresh phone and PC.
type Lab struct {
	cfg    Config
	log    *slog.Logger
	net    *netem.Network
	Server *netem.Host
	Phone  *netem.Host
	PC     *netem.Host
	srv    *proc
	url    string

	mu       sync.Mutex
	srvStall []Stall       // the server node's stalls (from its events)
	drained  chan struct{} // closed when the server's events end
}

// NewLab builds the network and starts the server. It blocks until the
// server is ready.
func NewLab(ctx context.Context, cfg Config) (*Lab, error) {
	if cfg.Exe == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, err
		}
		cfg.Exe = exe
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	n, err := netem.New(netem.Config{Logger: cfg.Logger})
	if err != nil {
		return nil, err
	}
	l := &Lab{cfg: cfg, log: cfg.Logger, net: n}
	for _, h := range []struct {
		name string
		to   **netem.Host
	}{{"server", &l.Server}, {"phone", &l.Phone}, {"pc", &l.PC}} {
		if *h.to, err = n.AddHost(ctx, h.name); err != nil {
			_ = n.Close()
			return nil, err
		}
	}
	l.url = fmt.Sprintf("http://%s:%d", l.Server.Addr(), serverPort)
	sctx, cancel := context.WithTimeout(ctx, setupWait)
	defer cancel()
	l.srv, err = startProc(sctx, l.Server, "server", cfg.Exe,
		[]string{"-role", "server", "-addr", strings.TrimPrefix(l.url, "http://"), "-public-url", l.url})
	if err == nil {
		_, err = l.srv.next(sctx, "ready", nil)
	}
	if err != nil {
		if l.srv != nil {
			l.srv.kill()
			err = fmt.Errorf("%w\nserver log:\n%s", err, l.srv.logs)
		}
		_ = n.Close()
		return nil, err
	}
	l.drained = make(chan struct{})
	go func() { // ends with the server's stdout
		defer close(l.drained)
		for e := range l.srv.events {
			if e.Ev == "stall" {
				at := time.Unix(0, e.T)
				l.mu.Lock()
				l.srvStall = append(l.srvStall, Stall{Where: "server", From: at, To: at.Add(time.Duration(e.Dur))})
				l.mu.Unlock()
			}
		}
	}()
	l.log.Info("lab ready", "server", l.url, "phone", l.Phone.Addr(), "pc", l.PC.Addr())
	return l, nil
}

// serverStalls returns the server's stalls that ended after since.
func (l *Lab) serverStalls(since time.Time) []Stall {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []Stall
	for _, s := range l.srvStall {
		if s.To.After(since) {
			out = append(out, s)
		}
	}
	return out
}

// Network returns the lab's network (to change it by hand).
func (l *Lab) Network() *netem.Network { return l.net }

// ServerURL returns the server's base URL on the LAN.
func (l *Lab) ServerURL() string { return l.url }

// Close stops the server and removes the network.
func (l *Lab) Close() error {
	err := l.srv.stop(nil) // the drain goroutine holds the events: stop finds them closed
	<-l.drained
	return errors.Join(err, l.net.Close())
}

// NodeError is a scenario's failure with the nodes' logs.
type NodeError struct {
	Err  error
	Logs string
}

func (e *NodeError) Error() string { return e.Err.Error() + "\n" + e.Logs }
func (e *NodeError) Unwrap() error { return e.Err }

// Run runs one scenario with a fresh session, phone and PC, and returns what
// the PC got. The network is reset (perfect links, no rules) before and after.
func (l *Lab) Run(ctx context.Context, sc Scenario) (*Run, error) {
	sc = sc.withDefaults()
	l.net.Reset()
	defer l.net.Reset()
	for _, h := range []*netem.Host{l.Phone} {
		if err := h.SetImpairment(netem.BothWays, sc.Phone); err != nil {
			return nil, err
		}
	}
	r := &runner{lab: l, sc: sc, run: newRun(sc)}
	err := r.run1(ctx)
	logs := r.logs()
	if err != nil {
		return nil, &NodeError{Err: fmt.Errorf("scenario %s: %w", sc.Name, err), Logs: logs}
	}
	r.run.Logs = logs
	return r.run, nil
}

// runner is the state of one scenario run.
type runner struct {
	lab       *Lab
	sc        Scenario
	run       *Run
	phone, pc *proc
	phoneID   string
}

func (r *runner) logs() string {
	var b strings.Builder
	for _, p := range []*proc{r.pc, r.phone} {
		if p != nil {
			fmt.Fprintf(&b, "--- %s log:\n%s\n", p.name, p.logs)
		}
	}
	return b.String()
}

func (r *runner) run1(ctx context.Context) (err error) {
	l := r.lab
	defer func() {
		for _, p := range []*proc{r.phone, r.pc} {
			if p == nil {
				continue
			}
			if serr := p.stop(r.record(p)); serr != nil && err == nil {
				err = serr
			}
		}
	}()
	sctx, cancel := context.WithTimeout(ctx, setupWait)
	defer cancel()
	debug := []string{}
	if l.cfg.NodeDebug {
		debug = []string{"-debug"}
	}
	if r.pc, err = startProc(ctx, l.PC, "pc", l.cfg.Exe, append([]string{"-role", "pc", "-server", l.url}, debug...)); err != nil {
		return err
	}
	sess, err := r.pc.next(sctx, "session", nil)
	if err != nil {
		return err
	}
	if _, err = r.pc.next(sctx, "joined", r.record(r.pc)); err != nil {
		return err
	}
	if r.phone, err = startProc(ctx, l.Phone, "phone", l.cfg.Exe, append([]string{"-role", "phone", "-pair", sess.URL}, debug...)); err != nil {
		return err
	}
	joined, err := r.phone.next(sctx, "joined", r.record(r.phone))
	if err != nil {
		return err
	}
	r.phoneID = joined.ClientID

	// Wait for the data channel, both ends, before playing.
	wctx, wcancel := context.WithTimeout(ctx, p2pWait)
	defer wcancel()
	if err := r.waitP2P(wctx); err != nil {
		if ctx.Err() != nil {
			return err
		}
		r.run.Notes = append(r.run.Notes, "no data channel within "+p2pWait.String()+" of joining: the phone played on the relay")
	}
	return r.play(ctx)
}

// waitP2P waits until both nodes reported their data channel up.
func (r *runner) waitP2P(ctx context.Context) error {
	pcUp, phoneUp := r.run.p2pUp("pc"), r.run.p2pUp("phone")
	for !pcUp || !phoneUp {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case e, ok := <-r.pc.events:
			if !ok {
				return fmt.Errorf("pc ended")
			}
			r.record(r.pc)(e)
		case e, ok := <-r.phone.events:
			if !ok {
				return fmt.Errorf("phone ended")
			}
			r.record(r.phone)(e)
		}
		pcUp, phoneUp = r.run.p2pUp("pc"), r.run.p2pUp("phone")
	}
	return nil
}

// play runs the chord stream and the fault, then waits for the PC to get
// every chord.
func (r *runner) play(ctx context.Context) error {
	sc := r.sc
	maxChords := int((sc.Before+sc.FaultFor+sc.MaxAfter)/sc.Interval) + 1
	if err := r.phone.send(command{Cmd: "send", Count: maxChords, Interval: sc.Interval}); err != nil {
		return err
	}
	start := time.Now()
	r.run.Start = start
	// The switch's own stalls, and the server's (its node reports them).
	stallCtx, stopStalls := context.WithCancel(ctx)
	var swStalls []Stall
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		watchStalls(stallCtx, "switch", func(s Stall) { swStalls = append(swStalls, s) })
	}()
	defer func() {
		stopStalls()
		<-watched
		r.run.Stalls = append(r.run.Stalls, swStalls...)
		r.run.Stalls = append(r.run.Stalls, r.lab.serverStalls(start)...)
	}()
	// A fault starts midway between two chords: the chord before it is then
	// still waiting for its acknowledgement (SCTP delays a SACK up to
	// 200 ms), as it is at most moments of a stream of 4 per second, so the
	// retransmission timers run from before the fault. (A fault started just
	// as a chord leaves is the lucky case: SCTP's retries, 1, 3, 7, 15 s
	// after that chord, then fall just after a 3 s or 15 s fault ends.)
	first := sc.Before
	if sc.Fault != NoFault {
		first += sc.Interval / 2
	}
	timer := time.NewTimer(first)
	defer timer.Stop()
	const (
		leading = iota
		faulted
		after
		stopped
	)
	phase := leading
	if sc.Fault == NoFault {
		phase = after // stop when Before ends
	}
	var unblock func()
	defer func() {
		if unblock != nil {
			unblock()
		}
	}()
	var returned time.Time
	done := false
	var drain <-chan time.Time
	for !done || !r.run.complete() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case e, ok := <-r.pc.events:
			if !ok {
				return errors.New("pc ended during the scenario")
			}
			r.record(r.pc)(e)
		case e, ok := <-r.phone.events:
			if !ok {
				return errors.New("phone ended during the scenario")
			}
			if e.Ev == "done" {
				done = true
				drain = time.After(drainWait)
			}
			r.record(r.phone)(e)
		case <-drain:
			r.run.Notes = append(r.run.Notes, fmt.Sprintf("gave up waiting for the PC %v after the last chord", drainWait))
			return nil
		case <-timer.C:
			switch phase {
			case leading:
				unblock = r.fault()
				r.run.FaultAt = time.Now()
				phase = faulted
				timer.Reset(sc.FaultFor)
			case faulted:
				unblock()
				unblock = nil
				returned = time.Now()
				r.run.ReturnAt = returned
				phase = after
				timer.Reset(sc.After)
			case after:
				// Play on until the PC gets chords directly again (and a
				// little beyond), up to MaxAfter.
				again := r.run.p2pAgain()
				if sc.Fault != NoFault && again < 0 && time.Since(returned) < sc.MaxAfter {
					timer.Reset(sc.Interval)
					continue
				}
				if sc.Fault != NoFault && again >= 0 && time.Since(returned) < again+p2pSettle {
					timer.Reset(again + p2pSettle - time.Since(returned))
					continue
				}
				if err := r.phone.send(command{Cmd: "stop"}); err != nil {
					return err
				}
				phase = stopped
			}
		}
	}
	return nil
}

// fault starts the scenario's fault and returns the function that ends it.
func (r *runner) fault() func() {
	l := r.lab
	switch r.sc.Fault {
	case UDPDeath:
		return l.net.Block(netem.Rule{From: l.Phone, To: l.PC, Proto: netem.UDP})
	case Blackout:
		return l.net.Block(netem.Rule{From: l.Phone})
	}
	return func() {}
}

// record returns the function that adds one of p's events to the run.
func (r *runner) record(p *proc) func(event) {
	return func(e event) {
		at := time.Unix(0, e.T)
		switch e.Ev {
		case "link":
			r.run.Links = append(r.run.Links, LinkEvent{Node: p.name, Kind: e.Kind, Up: e.Up, State: e.State, Reason: e.Reason, At: at})
		case "sent":
			r.run.sent(e.Seq, at)
		case "recv":
			if p == r.pc && e.From == r.phoneID && r.phoneID != "" {
				r.run.received(e.Seq, at, e.Path, e.AtMillis)
			}
		case "stall":
			r.run.Stalls = append(r.run.Stalls, Stall{Where: p.name, From: at, To: at.Add(time.Duration(e.Dur))})
		case "error":
			r.run.Notes = append(r.run.Notes, p.name+": "+e.Err)
		}
	}
}

// Floor measures the emulated LAN's own one-way latency between the phone
// and the PC: n UDP round trips (an echo in the PC's host, sockets of this
// process in both hosts, through both kernels and the switch), halved. The
// links must be clean (Run resets them after each scenario). It returns the
// median and the 99th percentile.
func (l *Lab) Floor(ctx context.Context, n int) (p50, p99 time.Duration, err error) {
	echo, err := l.PC.ListenPacket(ctx, "udp4", l.PC.Addr().String()+":0")
	if err != nil {
		return 0, 0, err
	}
	defer echo.Close()
	done := make(chan struct{})
	go func() { // ends when echo closes
		defer close(done)
		buf := make([]byte, 64)
		for {
			k, from, err := echo.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = echo.WriteTo(buf[:k], from)
		}
	}()
	defer func() { _ = echo.Close(); <-done }()
	c, err := l.Phone.ListenPacket(ctx, "udp4", l.Phone.Addr().String()+":0")
	if err != nil {
		return 0, 0, err
	}
	defer c.Close()
	var ds []time.Duration
	buf := make([]byte, 64)
	for i := 0; i < n && ctx.Err() == nil; i++ {
		msg := fmt.Appendf(nil, "%d", i)
		start := time.Now()
		if _, err := c.WriteTo(msg, echo.LocalAddr()); err != nil {
			return 0, 0, err
		}
		_ = c.SetReadDeadline(start.Add(time.Second))
		for {
			k, _, err := c.ReadFrom(buf)
			if err != nil {
				break // lost (the first one may wait for ARP): not counted
			}
			if string(buf[:k]) == string(msg) {
				ds = append(ds, time.Since(start)/2)
				break
			}
		}
	}
	if len(ds) < n/2 {
		return 0, 0, fmt.Errorf("floor: %d of %d echoes came back", len(ds), n)
	}
	return quantile(ds, 0.5), quantile(ds, 0.99), nil
}
