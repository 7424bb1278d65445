// Command virtutune-peer is a command-line phone or PC of VirtuTune Link, for
// testing by hand: it joins a session (creating one, pairing with a pairing
// link, or with a token), sends chord changes over the data channel or the
// relay, and prints every arrival with its path and latency, and every change
// of the links.
//
// Examples:
//
//	virtutune-peer --create                      # a PC: prints the pairing link, then listens
//	virtutune-peer --pair 'http://192.168.1.5:8000/p/K7QX2M9DPA4T' --chords C,G,Am --interval 500ms
//	echo -e "C\nG\nstart\nAm\nend" | virtutune-peer --session S --token T --role phone
//	echo '{"type":"ping","data":{"timestamp":"2024-01-01T00:00:00Z"}}' | virtutune-peer --raw --session S --token T
//
// Lines read from stdin are chords, or "start" / "end" for practice. Latency is
// computed from the sender's clock (at), so it is meaningful on one machine.
//
// main.go has the flags, the session (create, pair or token), the sending
// and the printing, all through package peer; raw.go is --raw, a plain
// WebSocket client that sends each stdin line as one frame and prints every
// frame it receives.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/virtutune/link/peer"
	"github.com/virtutune/link/protocol"
)

func main() {
	os.Exit(run())
}

type options struct {
	server, apiKey, token, session, pair, role, clientID, chords string
	create, noP2P, verbose, raw, loopback                        bool
	interval, linger                                             time.Duration
	count                                                        int
}

func parseFlags(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("virtutune-peer", flag.ContinueOnError)
	fs.StringVar(&o.server, "server", envOr("VIRTUTUNE_SERVER", "http://127.0.0.1:8000"), "server base URL (env VIRTUTUNE_SERVER)")
	fs.StringVar(&o.apiKey, "api-key", os.Getenv("VIRTUTUNE_API_KEY"), "API key for --create (env VIRTUTUNE_API_KEY)")
	fs.BoolVar(&o.create, "create", false, "create a session, print its pairing link and PC token, and join it as the PC")
	fs.StringVar(&o.token, "token", os.Getenv("VIRTUTUNE_TOKEN"), "session token (with --session; env VIRTUTUNE_TOKEN)")
	fs.StringVar(&o.session, "session", "", "session id (with --token)")
	fs.StringVar(&o.pair, "pair", "", "pairing link (the QR content) to join as the phone")
	fs.StringVar(&o.role, "role", "", `"pc" or "phone" (default: pc for --create, phone for --pair, else pc)`)
	fs.StringVar(&o.clientID, "client-id", "", "client id; default: the one the server binds to the token (a different one is refused)")
	fs.BoolVar(&o.noP2P, "no-p2p", false, "never open a data channel: relay only")
	fs.BoolVar(&o.loopback, "loopback", false, "ICE on loopback only, mDNS off (two peers on one machine, for trying it out)")
	fs.StringVar(&o.chords, "chords", "", `chords to send, comma-separated ("C,G,Am"); without it, lines from stdin`)
	fs.DurationVar(&o.interval, "interval", 500*time.Millisecond, "pause between two chords of --chords")
	fs.IntVar(&o.count, "count", 0, "how many chord changes to send from --chords, cycling (default: the list once)")
	fs.DurationVar(&o.linger, "linger", 0, "after sending, keep listening this long (default: until interrupted)")
	fs.BoolVar(&o.verbose, "v", false, "debug logs (pion's included) on stderr")
	fs.BoolVar(&o.raw, "raw", false, "with --session and --token: a plain WebSocket client; each stdin line is sent as one frame, every frame received is printed")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	modes := 0
	for _, b := range []bool{o.create, o.pair != "", o.session != ""} {
		if b {
			modes++
		}
	}
	switch {
	case modes != 1:
		return o, errors.New("give exactly one of --create, --pair or --session with --token")
	case o.session != "" && o.token == "":
		return o, errors.New("--session needs --token")
	case o.raw && o.session == "":
		return o, errors.New("--raw needs --session and --token")
	case o.count < 0:
		return o, errors.New("--count must not be negative")
	}
	if o.role == "" {
		o.role = protocol.RolePC
		if o.pair != "" {
			o.role = protocol.RolePhone
		}
	}
	return o, nil
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func run() int {
	o, err := parseFlags(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "virtutune-peer:", err)
		return 2
	}
	level := slog.LevelInfo
	if o.verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if o.raw {
		if o.linger == 0 {
			o.linger = time.Second
		}
		err = rawSession(ctx, o, os.Stdin, os.Stdout)
	} else {
		err = session(ctx, o, log)
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintln(os.Stderr, "virtutune-peer:", err)
		return 1
	}
	return 0
}

func session(ctx context.Context, o options, log *slog.Logger) error {
	cfg := peer.Config{ServerURL: o.server, SessionID: o.session, Token: o.token, Role: o.role,
		ClientID: o.clientID, DisableP2P: o.noP2P, LoopbackOnly: o.loopback, Logger: log}
	dialCtx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	switch {
	case o.create:
		info, err := peer.CreateSession(dialCtx, o.server, o.apiKey)
		if err != nil {
			return err
		}
		fmt.Printf("session   %s (user %d, expires %s)\n", info.SessionID, info.UserID, info.ExpiresAt.Format(time.RFC3339))
		fmt.Printf("pairing   %s\n          (valid until %s; open it on the phone, or: virtutune-peer --pair '<link>')\n",
			info.PairingURL, info.PairingExpiresAt.Format(time.TimeOnly))
		fmt.Printf("pc token  %s\n", info.Token)
		cfg.SessionID, cfg.Token, cfg.WSURL = info.SessionID, info.Token, info.WSURL
	case o.pair != "":
		info, err := peer.Pair(dialCtx, o.pair)
		if err != nil {
			return err
		}
		fmt.Printf("paired    session %s as %s\n", info.SessionID, info.Role)
		cfg.SessionID, cfg.Token, cfg.ServerURL, cfg.Role = info.SessionID, info.Token, info.ServerURL, info.Role
	}
	c, err := peer.Dial(dialCtx, cfg)
	if err != nil {
		return err
	}
	defer c.Close()
	fmt.Printf("joined    as %s %s; members:", cfg.Role, c.ClientID())
	for _, m := range c.Members() {
		fmt.Printf(" %s(%s)", m.ClientID, m.Role)
	}
	fmt.Println()

	var wg sync.WaitGroup
	printCtx, stopPrint := context.WithCancel(ctx)
	defer func() { stopPrint(); wg.Wait() }()
	wg.Add(1)
	go func() { defer wg.Done(); printLoop(printCtx, c) }()

	if err := sendAll(ctx, c, o); err != nil {
		return err
	}
	if o.linger > 0 {
		t := time.NewTimer(o.linger)
		defer t.Stop()
		select {
		case <-t.C:
			return nil
		case <-ctx.Done():
		case <-c.Done():
			return c.Err()
		}
		return nil
	}
	select {
	case <-ctx.Done():
		return nil
	case <-c.Done():
		return c.Err()
	}
}

// sendAll sends --chords (or stdin's lines).
func sendAll(ctx context.Context, c *peer.Client, o options) error {
	send := func(s string) error {
		s = strings.TrimSpace(s)
		var err error
		switch strings.ToLower(s) {
		case "":
			return nil
		case "start":
			err = c.PracticeStart(ctx)
		case "end", "stop":
			err = c.PracticeEnd(ctx)
		default:
			err = c.SendChord(ctx, s)
		}
		if errors.Is(err, peer.ErrInvalidMessage) {
			fmt.Fprintf(os.Stderr, "skipped %q: %v\n", s, err)
			return nil
		}
		if err == nil {
			fmt.Printf("%s sent %-14s path=%s\n", stamp(time.Now()), s, c.Path())
		}
		return err
	}
	if o.chords == "" {
		lines := make(chan string)
		go func() { // ends at EOF; a blocked read of a terminal ends with the process
			defer close(lines)
			sc := bufio.NewScanner(os.Stdin)
			for sc.Scan() {
				lines <- sc.Text()
			}
		}()
		for {
			select {
			case <-ctx.Done():
				return nil
			case l, ok := <-lines:
				if !ok {
					return nil
				}
				if err := send(l); err != nil {
					return err
				}
			}
		}
	}
	list := strings.Split(o.chords, ",")
	n := o.count
	if n == 0 {
		n = len(list)
	}
	t := time.NewTicker(max(o.interval, time.Millisecond))
	defer t.Stop()
	for i := range n {
		if i > 0 {
			select {
			case <-ctx.Done():
				return nil
			case <-t.C:
			}
		}
		if err := send(list[i%len(list)]); err != nil {
			return err
		}
	}
	return nil
}

// printLoop prints every arrival and every change of the links.
func printLoop(ctx context.Context, c *peer.Client) {
	for {
		select {
		case <-ctx.Done():
			return
		case ev := <-c.Events():
			state := upDown(ev.Up)
			if ev.Kind == peer.EventP2P {
				state = ev.State.String()
			}
			line := fmt.Sprintf("%s link  %-5s %s", stamp(ev.At), ev.Kind, state)
			if ev.Peer != "" {
				line += fmt.Sprintf(" peer=%s gen=%d", ev.Peer, ev.Generation)
			}
			if ev.Reason != "" {
				line += " reason=" + ev.Reason
			}
			if ev.Kind == peer.EventP2P && ev.State == peer.LinkUp {
				line += " (chords race over both paths)"
			}
			fmt.Println(line)
		case d := <-c.Deliveries():
			printDelivery(os.Stdout, d)
		}
	}
}

func upDown(up bool) string {
	if up {
		return "up"
	}
	return "down"
}

func printDelivery(w io.Writer, d peer.Delivery) {
	m := d.Msg
	var data map[string]any
	_ = json.Unmarshal(m.Data, &data)
	line := fmt.Sprintf("%s recv  %-17s", stamp(d.At), m.Type)
	switch m.Type {
	case protocol.TypeChordChange:
		line += fmt.Sprintf(" chord=%v", data["chord"])
	case protocol.TypePracticeUpdate, protocol.TypeConnectionUpdate:
		line += fmt.Sprintf(" status=%v", data["status"])
		if id, ok := data["client_id"]; ok {
			line += fmt.Sprintf(" client=%v role=%v", id, data["role"])
		}
	case protocol.TypeSessionState:
		line += fmt.Sprintf(" chord=%v members=%d", data["chord"], lenOf(data["members"]))
	case protocol.TypeError:
		line += fmt.Sprintf(" %v (%v)", data["message"], data["code"])
	}
	if m.From != "" {
		line += " from=" + m.From
	}
	if m.Seq != 0 {
		line += fmt.Sprintf(" seq=%d", m.Seq)
	}
	line += " path=" + d.Path
	if m.At > 0 {
		lat := float64(d.At.UnixMicro())/1000 - m.At
		line += fmt.Sprintf(" latency=%.2fms", lat)
	}
	fmt.Fprintln(w, line)
}

func lenOf(v any) int {
	if a, ok := v.([]any); ok {
		return len(a)
	}
	return 0
}

func stamp(t time.Time) string { return t.Format("15:04:05.000") }
