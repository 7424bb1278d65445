package impaired

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/virtutune/link/peer"
	"github.com/virtutune/link/protocol"
	"github.com/virtutune/link/signaling"
	"github.com/virtutune/link/web"
)

// EnvNode marks a process started by the Lab as one of its nodes (a server or
// a peer running inside one host of the emulated LAN).
const EnvNode = "VT_IMPAIRED_NODE"

// MaybeNode runs this process as a node of a Lab and exits when EnvNode is
// set; otherwise it returns at once. Call it first thing in main (or in an
// init function of a test package), so that the Lab can start this very
// executable as its nodes.
func MaybeNode() {
	if os.Getenv(EnvNode) != "1" {
		return
	}
	os.Exit(NodeMain(os.Args[1:]))
}

// event is one line a node prints on its standard output.
type event struct {
	Ev string `json:"ev"`
	// T is when it happened, in nanoseconds since the epoch (CLOCK_REALTIME,
	// which every namespace of the machine shares).
	T int64 `json:"t"`

	// ready (server), session (pc), joined, link, recv, sent, done, stats, error
	URL        string  `json:"url,omitempty"`
	ClientID   string  `json:"client_id,omitempty"`
	Kind       string  `json:"kind,omitempty"` // link: "p2p" or "relay"
	Peer       string  `json:"peer,omitempty"`
	Up         bool    `json:"up,omitempty"`
	State      string  `json:"state,omitempty"` // link: the data channel link's state
	Reason     string  `json:"reason,omitempty"`
	Generation uint32  `json:"gen,omitempty"`
	Type       string  `json:"type,omitempty"` // recv: the message type
	From       string  `json:"from,omitempty"`
	Seq        uint64  `json:"seq,omitempty"`
	AtMillis   float64 `json:"at_ms,omitempty"` // recv: the sender's stamp
	Path       string  `json:"path,omitempty"`
	Count      int     `json:"count,omitempty"`
	Dur        int64   `json:"dur,omitempty"` // stall: how long (ns)
	Err        string  `json:"err,omitempty"`

	Stats *peer.Stats `json:"stats,omitempty"`
}

// command is one line a node reads on its standard input.
type command struct {
	Cmd string `json:"cmd"` // send (once per node), stop (the sending), stats
	// send: Count chords, one every Interval (nanoseconds).
	Count    int           `json:"count,omitempty"`
	Interval time.Duration `json:"interval,omitempty"`
}

// chords are the chords a phone node plays, in turn.
var chords = []string{"C", "G", "Am", "F", "D", "E", "Em", "A"}

// NodeMain runs one node with its arguments and returns its exit code:
//
//	-role server -addr IP:PORT -public-url URL    the signaling server (memory broker)
//	-role pc -server URL                           creates a session and joins it as the PC
//	-role phone -pair PAIRING-URL                  pairs and joins as the phone
//
// A node prints events as JSON lines on stdout, logs on stderr, reads
// commands as JSON lines on stdin, and ends (closing its client or server
// cleanly) at the end of stdin or on SIGTERM.
func NodeMain(args []string) int {
	fs := flag.NewFlagSet("node", flag.ContinueOnError)
	role := fs.String("role", "", "server, pc or phone")
	addr := fs.String("addr", "", "server: listen address")
	publicURL := fs.String("public-url", "", "server: base URL of pairing links")
	server := fs.String("server", "", "pc: the server's base URL")
	pair := fs.String("pair", "", "phone: the pairing URL")
	debug := fs.Bool("debug", false, "debug logs (pion's included)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	level := slog.LevelInfo
	if *debug {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	out := &emitter{w: bufio.NewWriter(os.Stdout)}
	cmds := readCommands(os.Stdin)
	stallCtx, stopStalls := context.WithCancel(context.Background())
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		watchStalls(stallCtx, *role, func(s Stall) {
			out.emit(event{Ev: "stall", T: s.From.UnixNano(), Dur: int64(s.To.Sub(s.From))})
		})
	}()
	defer func() { stopStalls(); <-watched }()

	var err error
	switch *role {
	case "server":
		err = runServer(ctx, log, out, cmds, *addr, *publicURL)
	case protocol.RolePC, protocol.RolePhone:
		err = runPeer(ctx, log, out, cmds, *role, *server, *pair)
	default:
		err = fmt.Errorf("unknown role %q", *role)
	}
	if err != nil {
		out.emit(event{Ev: "error", Err: err.Error()})
		fmt.Fprintln(os.Stderr, "node:", err)
		return 1
	}
	return 0
}

// emitter writes events as JSON lines, one at a time.
type emitter struct {
	mu sync.Mutex
	w  *bufio.Writer
}

func (e *emitter) emit(ev event) {
	if ev.T == 0 {
		ev.T = time.Now().UnixNano()
	}
	b, _ := json.Marshal(ev)
	e.mu.Lock()
	defer e.mu.Unlock()
	_, _ = e.w.Write(append(b, '\n'))
	_ = e.w.Flush()
}

// readCommands decodes stdin's lines; the channel closes at the end of stdin.
func readCommands(r io.Reader) <-chan command {
	ch := make(chan command)
	go func() { // ends at the end of stdin (the process ends meanwhile, too)
		defer close(ch)
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			var c command
			if json.Unmarshal(sc.Bytes(), &c) == nil {
				ch <- c
			}
		}
	}()
	return ch
}

func runServer(ctx context.Context, log *slog.Logger, out *emitter, cmds <-chan command, addr, publicURL string) error {
	srv, err := signaling.New(signaling.Config{
		Secret:    []byte("impaired-lab-secret-0123456789abcdef-0123"),
		Logger:    log,
		Static:    web.Handler(),
		PublicURL: publicURL,
	})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()
	out.emit(event{Ev: "ready", URL: "http://" + ln.Addr().String()})
	for done := false; !done; {
		select {
		case <-ctx.Done():
			done = true
		case _, ok := <-cmds:
			done = !ok
		case err := <-served:
			return err
		}
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = hs.Shutdown(sctx)
	return srv.Close()
}

func runPeer(ctx context.Context, log *slog.Logger, out *emitter, cmds <-chan command, role, server, pair string) error {
	cfg := peer.Config{Role: role, Logger: log}
	dialCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	switch {
	case role == protocol.RolePC && server != "":
		info, err := peer.CreateSession(dialCtx, server, "")
		if err != nil {
			return err
		}
		cfg.SessionID, cfg.Token, cfg.WSURL, cfg.ServerURL = info.SessionID, info.Token, info.WSURL, info.ServerURL
		out.emit(event{Ev: "session", URL: info.PairingURL})
	case role == protocol.RolePhone && pair != "":
		info, err := peer.Pair(dialCtx, pair)
		if err != nil {
			return err
		}
		cfg.SessionID, cfg.Token, cfg.ServerURL = info.SessionID, info.Token, info.ServerURL
	default:
		return errors.New("a pc needs -server, a phone -pair")
	}
	c, err := peer.Dial(dialCtx, cfg)
	if err != nil {
		return err
	}
	defer c.Close()
	out.emit(event{Ev: "joined", ClientID: c.ClientID()})

	var wg sync.WaitGroup
	defer wg.Wait()
	loopCtx, stopLoops := context.WithCancel(ctx)
	defer stopLoops()
	wg.Go(func() { watch(loopCtx, c, out) })

	playCtx, stopPlay := context.WithCancel(loopCtx)
	defer stopPlay()
	playing := false
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-c.Done():
			return fmt.Errorf("client ended: %w", c.Err())
		case cmd, ok := <-cmds:
			if !ok {
				return nil
			}
			switch cmd.Cmd {
			case "send":
				if playing { // the seqs of play's report assume one stream
					out.emit(event{Ev: "error", Err: "send: a node plays once"})
					continue
				}
				playing = true
				wg.Go(func() { play(playCtx, c, out, cmd.Count, cmd.Interval) })
			case "stop":
				stopPlay()
			case "stats":
				st := c.Stats()
				out.emit(event{Ev: "stats", Stats: &st})
			}
		}
	}
}

// play sends count chords, one every interval, on a fixed schedule (a late
// tick does not shift the next ones), and reports each; then, or when ctx
// ends (the stop command), it reports how many it sent.
func play(ctx context.Context, c *peer.Client, out *emitter, count int, interval time.Duration) {
	interval = max(interval, time.Millisecond)
	start := time.Now()
	t := time.NewTimer(0)
	defer t.Stop()
	sent := 0
	defer func() { out.emit(event{Ev: "done", Count: sent}) }()
	for i := range count {
		if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
			t.Reset(d)
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
		if ctx.Err() != nil {
			return
		}
		now := time.Now()
		if err := c.SendChord(ctx, chords[i%len(chords)]); err != nil {
			out.emit(event{Ev: "error", Err: "send: " + err.Error()})
			return
		}
		sent++
		// The client's seq of its i-th application message is i+1: a node
		// sends nothing else (one send command per node).
		out.emit(event{Ev: "sent", T: now.UnixNano(), Seq: uint64(i + 1)})
	}
}

// watch reports the client's link events and application deliveries.
func watch(ctx context.Context, c *peer.Client, out *emitter) {
	for {
		select {
		case <-ctx.Done():
			return
		case ev := <-c.Events():
			e := event{Ev: "link", T: ev.At.UnixNano(), Kind: ev.Kind.String(), Peer: ev.Peer, Up: ev.Up,
				Reason: ev.Reason, Generation: ev.Generation}
			if ev.Kind == peer.EventP2P {
				e.State = ev.State.String()
			}
			out.emit(e)
		case d := <-c.Deliveries():
			now := time.Now()
			m := d.Msg
			if m.Type != protocol.TypeChordChange {
				continue
			}
			out.emit(event{Ev: "recv", T: now.UnixNano(), Type: string(m.Type), From: m.From, Seq: m.Seq,
				AtMillis: m.At, Path: d.Path})
		}
	}
}
