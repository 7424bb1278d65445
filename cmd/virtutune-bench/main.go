package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/virtutune/link/internal/impaired"
	"github.com/virtutune/link/signaling"
)

// stderr receives the progress line and logs.
var stderr io.Writer = os.Stderr

func main() {
	impaired.MaybeNode() // the nodes of the --impaired mode are this binary
	if len(os.Args) > 1 {
		if handled, err := subcommand(os.Args[1], os.Args[2:]); handled {
			if err != nil {
				fmt.Fprintln(os.Stderr, "virtutune-bench "+os.Args[1]+":", err)
				os.Exit(1)
			}
			return
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	var err error
	if len(os.Args) > 1 && os.Args[1] == impairedFlag {
		err = runImpaired(ctx, os.Args[2:], os.Stdout) // impaired.go
	} else {
		err = run(ctx, os.Args[1:], os.Stdout)
	}
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "virtutune-bench:", err)
		os.Exit(1)
	}
}

// options are the command's flags.
type options struct {
	URL, URLB  string
	Sessions   int
	Rate       float64
	Duration   time.Duration
	Count      int
	Paths      []string
	Floors     bool
	FloorCount int
	FarRTT     time.Duration
	JSON       bool
	SVG        string
	CPUProfile string
	MemProfile string
	Child      bool
	Setups     int
	RedisBin   string
	Quiet      bool
	LogLevel   string

	runID string
}

var allPaths = []string{"p2p", "relay", "relay-redis"}

func parseFlags(args []string) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("virtutune-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.URL, "url", "", "base URL of a running server (loopback only) instead of an in-process one; its Limits.Rate must allow the load")
	fs.StringVar(&o.URLB, "url-b", "", "with --url: a second instance sharing the first one's Redis, for the relay-redis path")
	fs.IntVar(&o.Sessions, "sessions", 1, "concurrent sessions (a phone and a PC each) per path")
	fs.Float64Var(&o.Rate, "rate", 0, "chord changes per second per session; 0 = closed loop, as fast as possible (the next once the previous arrived)")
	fs.DurationVar(&o.Duration, "duration", 5*time.Second, "how long each path sends (unless --count)")
	fs.IntVar(&o.Count, "count", 0, "chord changes per session per path (overrides --duration)")
	paths := fs.String("paths", strings.Join(allPaths, ","), "paths to measure: p2p, relay, relay-redis")
	fs.BoolVar(&o.Floors, "floors", true, "measure the machine's floors (bare ws relay, pion, redis)")
	fs.IntVar(&o.FloorCount, "floor-count", 2000, "round trips per floor")
	fs.DurationVar(&o.FarRTT, "far-rtt", 0, "round trip a delay proxy adds to every WebSocket byte (e.g. 40ms); the p2p data channel is not delayed")
	fs.BoolVar(&o.JSON, "json", false, "print the report as JSON")
	fs.StringVar(&o.SVG, "svg", "", "write a latency histogram (SVG) to this file")
	fs.StringVar(&o.CPUProfile, "cpuprofile", "", "write a CPU profile of the whole run to this file (with --child also the server's, under load, to FILE.server)")
	fs.StringVar(&o.MemProfile, "memprofile", "", "write a heap profile at the end to this file (with --child also the server's, loaded, to FILE.server)")
	fs.BoolVar(&o.Child, "child", false, "run the relay path's server as a child process (server-only CPU and memory; for the scale test)")
	fs.IntVar(&o.Setups, "setups", 10, "p2p sessions set up one after the other to measure setup time")
	fs.StringVar(&o.RedisBin, "redis-server", "redis-server", "redis-server binary for the relay-redis path and the redis floor")
	fs.BoolVar(&o.Quiet, "quiet", false, "no progress line")
	fs.StringVar(&o.LogLevel, "log-level", "error", "log level of the servers and clients")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	o.Paths = nil
	for _, p := range strings.Split(*paths, ",") {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		if !slices.Contains(allPaths, p) {
			return nil, fmt.Errorf("unknown path %q (want %s)", p, strings.Join(allPaths, ", "))
		}
		o.Paths = append(o.Paths, p)
	}
	switch {
	case o.Sessions < 1:
		return nil, errors.New("--sessions must be at least 1")
	case o.Rate < 0:
		return nil, errors.New("--rate must not be negative")
	case o.Count < 0 || (o.Count == 0 && o.Duration <= 0):
		return nil, errors.New("give a positive --duration or --count")
	case o.FarRTT < 0:
		return nil, errors.New("--far-rtt must not be negative")
	case o.Setups < 0:
		return nil, errors.New("--setups must not be negative")
	}
	for _, u := range []string{o.URL, o.URLB} {
		if u == "" {
			continue
		}
		if err := loopbackURL(u); err != nil {
			return nil, err
		}
	}
	var b [3]byte
	_, _ = rand.Read(b[:])
	o.runID = "b" + hex.EncodeToString(b[:])
	return o, nil
}

// loopbackURL refuses any target that is not a loopback address.
func loopbackURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("--url %q must look like http://127.0.0.1:8000", raw)
	}
	host := u.Hostname()
	if host == "localhost" {
		return nil
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("--url %q: only loopback addresses may be targets", raw)
	}
	return nil
}

func run(ctx context.Context, args []string, out io.Writer) error {
	opt, err := parseFlags(args)
	if err != nil {
		return err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(opt.LogLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	// Each process holds one socket per connection: the bench the clients'
	// (two per session), an in-process server as many again.
	need := uint64(2*opt.Sessions + 48)
	if !opt.Child && opt.URL == "" && slices.ContainsFunc(opt.Paths, func(p string) bool { return p != "p2p" }) {
		need += uint64(2 * opt.Sessions)
	}
	if lim := raiseNoFile(need + 4096); lim < need {
		return fmt.Errorf("--sessions %d needs about %d open files in this process but the limit is %d "+
			"(raising the hard limit needs CAP_SYS_RESOURCE); use --child to put the server in its own process, or fewer sessions",
			opt.Sessions, need, lim)
	}
	if opt.CPUProfile != "" {
		f, err := os.Create(opt.CPUProfile)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer func() { pprof.StopCPUProfile(); _ = f.Close() }()
	}
	if opt.Child && os.Getenv("GOGC") == "" {
		// The clients are not under test: collect their garbage less often so
		// they steal less of the machine from the server process.
		debug.SetGCPercent(400)
	}
	rep := &Report{CPUs: runtime.NumCPU(), GOMAXPROCS: runtime.GOMAXPROCS(0), Go: runtime.Version(),
		Options: "virtutune-bench " + strings.Join(args, " "), Started: time.Now().UTC()}
	floorLat := map[string][]time.Duration{}

	// Redis: for the relay-redis path and the redis floor (own server only).
	var rd *redisProc
	needRedis := opt.URL == "" && (slices.Contains(opt.Paths, "relay-redis") || opt.Floors)
	if needRedis {
		rd, err = startRedis(ctx, opt.RedisBin)
		if err != nil {
			rep.Errors = append(rep.Errors, "redis: "+err.Error())
			rd = nil
		} else {
			defer rd.Close()
		}
	}

	if opt.Floors {
		note := func(name string, l []time.Duration, err error) *Latency {
			if err != nil {
				rep.Floors.Errors = append(rep.Floors.Errors, name+": "+err.Error())
			}
			if len(l) == 0 {
				return nil
			}
			floorLat[name] = l
			s := summarize(l)
			return &s
		}
		status(opt, "floor: bare ws relay")
		l, err := floorWSRelay(ctx, opt.FloorCount, 30*time.Second)
		rep.Floors.WSRelay = note("ws-relay floor", l, err)
		status(opt, "floor: bare pion data channel")
		l, err = floorPion(ctx, opt.FloorCount, 30*time.Second)
		rep.Floors.PionHalfRTT = note("pion rtt/2 floor", l, err)
		if rd != nil {
			status(opt, "floor: bare redis hop")
			l, err = floorRedis(ctx, rd.URL(), opt.FloorCount, 30*time.Second)
			rep.Floors.RedisHop = note("redis hop floor", l, err)
		}
	}

	for _, path := range opt.Paths {
		if ctx.Err() != nil {
			break
		}
		rs, err := runPath(ctx, opt, log, path, rd)
		if err != nil {
			rep.Errors = append(rep.Errors, path+": "+err.Error())
		}
		rep.Paths = append(rep.Paths, rs...)
	}
	rep.computeRatios(opt.FarRTT, opt.Sessions == 1 && opt.Rate == 0)
	if opt.MemProfile != "" {
		f, err := os.Create(opt.MemProfile)
		if err != nil {
			return err
		}
		runtime.GC()
		_ = pprof.WriteHeapProfile(f)
		_ = f.Close()
	}
	if opt.SVG != "" {
		if err := rep.writeSVG(opt.SVG, floorLat); err != nil {
			return err
		}
	}
	if opt.JSON {
		return rep.writeJSON(out)
	}
	rep.writeTable(out)
	return ctx.Err()
}

func status(opt *options, s string) {
	if !opt.Quiet {
		fmt.Fprintf(stderr, "\r\033[K%s ...", s)
	}
}

// inprocProbe observes this process (server and clients together).
func inprocProbe(context.Context) (goMem, time.Duration, error) { return readGoMem(), cpuTime(), nil }

// runPath measures one path; with --far-rtt it measures p2p twice (loopback
// reference, then far) and the relay paths far only.
func runPath(ctx context.Context, opt *options, log *slog.Logger, path string, rd *redisProc) ([]*PathResult, error) {
	var out []*PathResult
	switch path {
	case "p2p", "relay":
		var srv server
		var cleanup []func()
		defer func() {
			for _, f := range slices.Backward(cleanup) {
				f()
			}
		}()
		switch {
		case opt.URL != "":
			srv = server{api: opt.URL, phoneBase: opt.URL, pcBase: opt.URL, pid: -1}
		case opt.Child && path == "relay":
			c, err := startChild()
			if err != nil {
				return nil, err
			}
			cleanup = append(cleanup, c.Close)
			srv = server{api: c.URL, phoneBase: c.URL, pcBase: c.URL, scope: "server", pid: c.Pid(),
				probe: func(ctx context.Context) (goMem, time.Duration, error) {
					st, err := childStatsOf(ctx, c.URL)
					if err != nil {
						return goMem{}, 0, err
					}
					cpu, err := procCPU(c.Pid())
					if rss, e := procRSS(c.Pid()); e == nil {
						st.Mem.RSS = rss
					}
					return st.Mem, cpu, err
				}}
			srv.loaded = func(ctx context.Context) {
				if opt.MemProfile != "" {
					if err := saveChildProfile(ctx, c.URL, "heap", opt.MemProfile+".server"); err != nil {
						log.Error("server heap profile", "err", err)
					}
				}
				if opt.CPUProfile != "" { // the server's CPU while the load runs
					secs := max(1, int(min(opt.Duration, 30*time.Second)/time.Second)-1)
					go func() {
						if err := saveChildProfile(ctx, c.URL, "cpu?seconds="+strconv.Itoa(secs), opt.CPUProfile+".server"); err != nil {
							log.Error("server cpu profile", "err", err)
						}
					}()
				}
			}
		default:
			in, err := startInstance(log, nil, "bench-a", nil)
			if err != nil {
				return nil, err
			}
			cleanup = append(cleanup, in.Close)
			srv = server{api: in.URL, phoneBase: in.URL, pcBase: in.URL, scope: "process", probe: inprocProbe}
		}
		runOne := func(name string, s server) error {
			status(opt, "path: "+name)
			var r *PathResult
			var err error
			if path == "p2p" {
				r, err = runP2P(ctx, opt, name, s)
			} else {
				r, err = runRelay(ctx, opt, name, s)
			}
			if r != nil {
				out = append(out, r)
			}
			return err
		}
		if opt.FarRTT == 0 || path == "p2p" {
			if err := runOne(path, srv); err != nil {
				return out, err
			}
		}
		if opt.FarRTT > 0 {
			far, closeFar, err := proxied(srv, opt.FarRTT)
			if err != nil {
				return out, err
			}
			defer closeFar()
			if err := runOne(path+" far", far); err != nil {
				return out, err
			}
		}
		return out, nil
	case "relay-redis":
		var srv server
		switch {
		case opt.URL != "" && opt.URLB != "":
			srv = server{api: opt.URL, phoneBase: opt.URL, pcBase: opt.URLB, pid: -1}
		case opt.URL != "":
			return nil, errors.New("skipped: give --url-b (a second instance sharing the first one's Redis)")
		case rd == nil:
			return nil, errors.New("skipped: no redis-server")
		default:
			var ins []*instance
			for _, name := range []string{"bench-a", "bench-b"} {
				b, err := signaling.NewRedisBroker(ctx, signaling.RedisConfig{URL: rd.URL(), Prefix: "vtb:", Instance: name, Logger: log})
				if err != nil {
					return nil, fmt.Errorf("redis broker: %w", err)
				}
				in, err := startInstance(log, b, name, nil)
				if err != nil {
					_ = b.Close()
					return nil, err
				}
				ins = append(ins, in)
				defer func() { in.Close(); _ = b.Close() }()
			}
			srv = server{api: ins[0].URL, phoneBase: ins[0].URL, pcBase: ins[1].URL, scope: "process", probe: inprocProbe}
		}
		name := "relay-redis"
		if opt.FarRTT > 0 {
			far, closeFar, err := proxied(srv, opt.FarRTT)
			if err != nil {
				return nil, err
			}
			defer closeFar()
			srv, name = far, name+" far"
		}
		status(opt, "path: "+name)
		if rd != nil && opt.URL == "" {
			_ = redisCommandStats(ctx, rd.URL(), true)
		}
		r, err := runRelay(ctx, opt, name, srv)
		if r != nil {
			if rd != nil && opt.URL == "" {
				r.Notes = append(r.Notes, redisCommandStats(ctx, rd.URL(), false)...)
			}
			out = append(out, r)
		}
		return out, err
	}
	return nil, fmt.Errorf("unknown path %q", path)
}

// proxied puts a delay proxy in front of each server URL of srv.
func proxied(srv server, rtt time.Duration) (server, func(), error) {
	proxies := map[string]string{}
	var all []*delayProxy
	closeAll := func() {
		for _, p := range all {
			p.Close()
		}
	}
	via := func(base string) (string, error) {
		if v, ok := proxies[base]; ok {
			return v, nil
		}
		u, err := url.Parse(base)
		if err != nil {
			return "", err
		}
		p, err := startProxy(u.Host, rtt)
		if err != nil {
			return "", err
		}
		all = append(all, p)
		v := u.Scheme + "://" + p.Addr()
		proxies[base] = v
		return v, nil
	}
	out := srv
	var err error
	for _, f := range []*string{&out.api, &out.phoneBase, &out.pcBase} {
		if *f, err = via(*f); err != nil {
			closeAll()
			return server{}, nil, err
		}
	}
	return out, closeAll, nil
}
