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
	"net"
	"net/http"
	httppprof "net/http/pprof"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/gorilla/websocket"

	"github.com/virtutune/link/internal/gcpolicy"
	"github.com/virtutune/link/signaling"
)

// subcommand runs the bench's child processes (servers, client workers)
// and the load test; it reports false for anything else.
func subcommand(name string, args []string) (bool, error) {
	switch name {
	case "--serve":
		return true, serveProject(args)
	case "--serve-hub":
		return true, serveHub()
	case "--load-clients":
		return true, runWorker(os.Stdin, os.Stdout)
	case "load":
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		return true, runLoad(ctx, args, os.Stdout)
	}
	return false, nil
}

// childProc is a process the bench started (a server under test, a client
// worker, redis-server, Centrifugo), with its stdin and stdout as pipes.
type childProc struct {
	name   string
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stdout io.Reader
	URL    string // the server's base URL (from its "LISTEN <url>" line)
	done   chan struct{}
}

// startProc starts exe with args; with listen it waits for the process to
// print "LISTEN <url>" on stdout. Its stderr goes to the bench's.
func startProc(name, exe string, args, env []string, listen bool) (*childProc, error) {
	if exe == os.Args[0] {
		if e, err := os.Executable(); err == nil {
			exe = e
		}
	}
	cmd := exec.Command(exe, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	c := &childProc{name: name, cmd: cmd, stdin: stdin, stdout: stdout, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(c.done) }()
	if !listen {
		return c, nil
	}
	br := bufio.NewReader(stdout)
	line := make(chan string, 1)
	go func() {
		l, _ := br.ReadString('\n')
		line <- strings.TrimSpace(l)
		_, _ = io.Copy(io.Discard, br)
	}()
	select {
	case l := <-line:
		u, ok := strings.CutPrefix(l, "LISTEN ")
		if !ok {
			c.Close()
			return nil, fmt.Errorf("%s said %q", name, l)
		}
		c.URL = u
		return c, nil
	case <-c.done:
		return nil, fmt.Errorf("%s exited at start", name)
	case <-time.After(30 * time.Second):
		c.Close()
		return nil, fmt.Errorf("%s did not start within 30s", name)
	}
}

func (c *childProc) Pid() int { return c.cmd.Process.Pid }

// Close closes the child's stdin (the bench's children shut down then) and
// waits; after 10 s it kills it.
func (c *childProc) Close() {
	_ = c.stdin.Close()
	select {
	case <-c.done:
	case <-time.After(10 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
}

// Kill ends the child at once (servers that do not read stdin).
func (c *childProc) Kill() {
	_ = c.cmd.Process.Signal(os.Interrupt)
	select {
	case <-c.done:
	case <-time.After(5 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
}

// benchMux adds the bench's endpoints (stats after a GC, profiles) in front of h.
func benchMux(h http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/bench/stats", func(w http.ResponseWriter, _ *http.Request) {
		st := childStats{Mem: readGoMem(), CPU: cpuTime().Seconds()}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(st)
	})
	mux.HandleFunc("/bench/heap", func(w http.ResponseWriter, _ *http.Request) {
		runtime.GC()
		_ = pprof.Lookup("heap").WriteTo(w, 0)
	})
	mux.HandleFunc("/bench/cpu", httppprof.Profile)
	mux.HandleFunc("/bench/trace", httppprof.Trace)
	mux.HandleFunc("/bench/goroutine", func(w http.ResponseWriter, _ *http.Request) {
		_ = pprof.Lookup("goroutine").WriteTo(w, 1)
	})
	mux.Handle("/", h)
	return mux
}

// serveProject is `--serve [--redis URL --instance NAME]`: one signaling
// server on 127.0.0.1 (memory broker, or Redis), printing "LISTEN <url>" and
// serving until stdin closes.
func serveProject(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	redisURL := fs.String("redis", "", "Redis URL (empty: memory broker)")
	name := fs.String("instance", "child", "instance name")
	if err := fs.Parse(args); err != nil {
		return err
	}
	raiseNoFile(1 << 20)
	gcpolicy.Apply() // as cmd/virtutune-server runs
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	var broker signaling.Broker
	if *redisURL != "" {
		b, err := signaling.NewRedisBroker(context.Background(), signaling.RedisConfig{URL: *redisURL, Prefix: "vtb:", Instance: *name, Logger: log})
		if err != nil {
			return err
		}
		defer b.Close()
		broker = b
	}
	in, err := startInstance(log, broker, *name, benchMux)
	if err != nil {
		return err
	}
	fmt.Println("LISTEN " + in.URL)
	_, _ = io.Copy(io.Discard, os.Stdin)
	in.Close()
	return nil
}

// hubReady is what the bare hub sends both members once a room is paired.
var hubReady = []byte(`{"type":"ready"}`)

// serveHub is `--serve-hub`: the floor of the load test, a bare gorilla hub.
// Two WebSockets that join /hub/<room> are paired; each one's reader writes
// every message it reads straight to the other socket (ReadMessage,
// WriteMessage: no parsing, no queue, no writer goroutine). It prints
// "LISTEN <url>" and serves until stdin closes.
func serveHub() error {
	raiseNoFile(1 << 20)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	type member struct {
		c  *websocket.Conn
		mu sync.Mutex // one writer at a time
	}
	type room struct {
		members []*member
		paired  chan struct{}
	}
	var mu sync.Mutex
	rooms := map[string]*room{}
	up := websocket.Upgrader{ReadBufferSize: 4096, WriteBufferSize: 4096}
	hub := http.NewServeMux()
	hub.HandleFunc("/hub/{room}", func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("room")
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		me := &member{c: c}
		mu.Lock()
		rm := rooms[id]
		if rm == nil {
			rm = &room{paired: make(chan struct{})}
			rooms[id] = rm
		}
		if len(rm.members) >= 2 {
			mu.Unlock()
			return
		}
		rm.members = append(rm.members, me)
		if len(rm.members) == 2 {
			close(rm.paired)
		}
		mu.Unlock()
		defer func() {
			mu.Lock()
			if rooms[id] == rm {
				delete(rooms, id)
			}
			mu.Unlock()
		}()
		select {
		case <-rm.paired:
		case <-r.Context().Done():
			return
		}
		other := rm.members[0]
		if other == me {
			other = rm.members[1]
		}
		me.mu.Lock()
		err = c.WriteMessage(websocket.TextMessage, hubReady)
		me.mu.Unlock()
		if err != nil {
			return
		}
		for {
			mt, msg, err := c.ReadMessage()
			if err != nil {
				return
			}
			other.mu.Lock()
			err = other.c.WriteMessage(mt, msg)
			other.mu.Unlock()
			if err != nil {
				return
			}
		}
	})
	hs := &http.Server{Handler: benchMux(hub), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = hs.Serve(ln) }()
	fmt.Println("LISTEN http://" + ln.Addr().String())
	_, _ = io.Copy(io.Discard, os.Stdin)
	_ = hs.Close()
	return nil
}

// childStats is what a --serve or --serve-hub child reports at /bench/stats.
type childStats struct {
	Mem goMem   `json:"mem"`
	CPU float64 `json:"cpu_seconds"`
}

// childStatsOf asks a bench server child (project or hub) for its memory
// after a GC.
func childStatsOf(ctx context.Context, base string) (childStats, error) {
	var st childStats
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/bench/stats", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, errors.New("stats: HTTP " + strconv.Itoa(resp.StatusCode))
	}
	err = json.NewDecoder(resp.Body).Decode(&st)
	return st, err
}

// saveChildProfile writes a child's /bench/<kind> profile to file.
func saveChildProfile(ctx context.Context, base, kind, file string) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/bench/"+kind, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	_, err = io.Copy(f, resp.Body)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func runtimeNumCPU() int     { return runtime.NumCPU() }
func runtimeVersion() string { return runtime.Version() }
func randomSuffix() string   { return strconv.FormatInt(time.Now().UnixNano()%1e6, 36) }

// uptimeLine is the machine's load averages (what `uptime` shows).
func uptimeLine() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return "load average: " + strings.Join(f[:3], ", ")
}

// loadAvg1 is the one-minute load average.
func loadAvg1() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}
