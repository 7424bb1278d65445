package main

// `virtutune-bench load`: many sessions against servers in their own
// processes, each server measured with the same client harness in the same
// run, servers alternated round by round, medians over rounds:
//
//	project           one instance, memory broker
//	project-redis     two instances sharing a redis-server; sender on A, receiver on B
//	hub               the floor: a bare gorilla hub whose reader writes straight to the other socket
//	centrifugo        Centrifugo (built from the module proxy into a temporary directory), memory engine
//	centrifugo-redis  two Centrifugo nodes with the Redis engine; sender on one, receiver on the other
//
// Each session is two clients, one sending chord changes, the other
// receiving them. The clients live in worker processes of their own (each
// with its own open-file limit). Per server and round it measures: one
// session closed loop (p50/p99 one-way); a step at a fixed offered rate
// (latency, loss, server CPU µs per relayed message from /proc/<pid>/stat,
// Redis's own CPU separately); the sustained-rate search (offered rate
// stepped up until p99 exceeds the limit or anything is lost, then
// bisected); and memory per connection.

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
)

type loadOptions struct {
	Targets     []string
	Sessions    int
	Rounds      int
	Tests       []string
	LoopCount   int
	FixedRate   float64
	Step        time.Duration
	Drain       time.Duration
	SearchStart float64
	SearchMax   float64
	Factor      float64
	Refine      int
	Retry       int
	P99Limit    time.Duration
	ClientProcs int
	CPUProfile  string
	HeapProfile string
	JSON        bool
	RedisBin    string
	CFBin       string
	CFVersion   string
	CFHistory   int
	CompareBin  string
	Quiet       bool
}

var loadTargets = []string{"project", "project-redis", "hub", "centrifugo", "centrifugo-redis"}

func parseLoadFlags(args []string) (*loadOptions, error) {
	o := &loadOptions{}
	fs := flag.NewFlagSet("virtutune-bench load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	targets := fs.String("targets", "project,project-redis,hub", "servers to load, alternated each round: "+strings.Join(loadTargets, ", "))
	fs.IntVar(&o.Sessions, "sessions", 1000, "sessions (a sending and a receiving client each)")
	fs.IntVar(&o.Rounds, "rounds", 3, "rounds; every server is measured once per round, in rotating order")
	tests := fs.String("tests", "loop,fixed,search", "what to measure: loop (one session closed loop), fixed (--fixed-rate), search (sustained-rate search)")
	fs.IntVar(&o.LoopCount, "loop-count", 3000, "messages of the one-session closed loop")
	fs.Float64Var(&o.FixedRate, "fixed-rate", 5000, "offered messages per second (all sessions together) of the fixed step")
	fs.DurationVar(&o.Step, "step", 5*time.Second, "how long each rate step sends")
	fs.DurationVar(&o.Drain, "drain", 3*time.Second, "how long a step waits for its last messages; later ones count as lost")
	fs.Float64Var(&o.SearchStart, "search-start", 5000, "first offered rate of the search (messages/s)")
	fs.Float64Var(&o.SearchMax, "search-max", 120000, "highest offered rate the search tries")
	fs.Float64Var(&o.Factor, "search-factor", 1.25, "the search multiplies the rate by this while steps pass")
	fs.IntVar(&o.Refine, "search-refine", 3, "bisection steps between the last passing and the first failing rate")
	fs.IntVar(&o.Retry, "search-retry", 1, "a failing search step is measured again up to this many times and fails only if every try fails (the machine is shared: another process's burst is not the server's limit)")
	fs.DurationVar(&o.P99Limit, "p99-limit", 50*time.Millisecond, "a step fails when its p99 exceeds this (or anything is lost)")
	fs.IntVar(&o.ClientProcs, "client-procs", 0, "client worker processes (0: one per 8,000 sessions)")
	fs.StringVar(&o.CPUProfile, "cpuprofile", "", "write the CPU profile of each Go server under the fixed step of the first round to FILE.<target>[.<instance>]")
	fs.StringVar(&o.HeapProfile, "memprofile", "", "write each Go server's heap profile after the first round's search to FILE.<target>[.<instance>]")
	fs.BoolVar(&o.JSON, "json", false, "print the report as JSON")
	fs.StringVar(&o.RedisBin, "redis-server", "redis-server", "redis-server binary")
	fs.StringVar(&o.CFBin, "centrifugo-bin", "", "a centrifugo binary; empty: build Centrifugo with go install into a temporary directory (needs the Go module proxy)")
	fs.StringVar(&o.CFVersion, "centrifugo-version", centrifugoVersion, "the Centrifugo version to build")
	fs.IntVar(&o.CFHistory, "centrifugo-history", 0, "Centrifugo keeps this many publications per channel (history_size, history_ttl 300s), as the project keeps its history; 0: no history (Centrifugo's default)")
	fs.StringVar(&o.CompareBin, "compare-bin", "", "another virtutune-bench binary (e.g. built from an older commit) whose --serve servers the targets project@old and project-redis@old run, in the same run as the others")
	fs.BoolVar(&o.Quiet, "quiet", false, "no progress lines")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	for _, t := range strings.Split(*targets, ",") {
		if t = strings.TrimSpace(t); t == "" {
			continue
		}
		base, old := strings.CutSuffix(t, "@old")
		if !slices.Contains(loadTargets, base) || (old && !strings.HasPrefix(base, "project")) {
			return nil, fmt.Errorf("unknown target %q (want %s, or project@old, project-redis@old with --compare-bin)", t, strings.Join(loadTargets, ", "))
		}
		if old && o.CompareBin == "" {
			return nil, fmt.Errorf("target %s needs --compare-bin", t)
		}
		o.Targets = append(o.Targets, t)
	}
	for _, t := range strings.Split(*tests, ",") {
		if t = strings.TrimSpace(t); t == "" {
			continue
		}
		if t != "loop" && t != "fixed" && t != "search" {
			return nil, fmt.Errorf("unknown test %q (want loop, fixed, search)", t)
		}
		o.Tests = append(o.Tests, t)
	}
	switch {
	case len(o.Targets) == 0:
		return nil, errors.New("no --targets")
	case o.Sessions < 1 || o.Rounds < 1:
		return nil, errors.New("--sessions and --rounds must be at least 1")
	case o.FixedRate <= 0 || o.SearchStart <= 0 || o.Factor <= 1 || o.Step <= 0:
		return nil, errors.New("--fixed-rate, --search-start and --step must be positive, --search-factor above 1")
	}
	if o.ClientProcs <= 0 {
		o.ClientProcs = (o.Sessions + 7999) / 8000
	}
	o.ClientProcs = min(o.ClientProcs, o.Sessions)
	return o, nil
}

// loadServer is a server under test, running in processes of its own.
type loadServer struct {
	name, kind             string
	api, phoneBase, pcBase string
	procs                  []*childProc
	goBases                []string // Go servers with /bench endpoints
	redis                  *redisProc
	cfSecret               string
	stop                   func()
}

func (s *loadServer) pids() []int {
	var out []int
	for _, p := range s.procs {
		out = append(out, p.Pid())
	}
	return out
}

func cpuOf(pids []int) time.Duration {
	var sum time.Duration
	for _, p := range pids {
		if d, err := procCPU(p); err == nil {
			sum += d
		}
	}
	return sum
}

func rssOf(pids []int) int64 {
	var sum int64
	for _, p := range pids {
		if r, err := procRSS(p); err == nil {
			sum += r
		}
	}
	return sum
}

// loadRun holds what a load run shares across rounds.
type loadRun struct {
	opt    *loadOptions
	cfBin  string
	cfDir  string
	runSeq int
}

func runLoad(ctx context.Context, args []string, out io.Writer) error {
	opt, err := parseLoadFlags(args)
	if err != nil {
		return err
	}
	lr := &loadRun{opt: opt}
	rep := &LoadReport{CPUs: runtimeNumCPU(), Go: runtimeVersion(), Options: "virtutune-bench load " + strings.Join(args, " "),
		Started: time.Now().UTC(), Load: uptimeLine()}
	if slices.ContainsFunc(opt.Targets, func(t string) bool { return strings.HasPrefix(t, "centrifugo") }) {
		dir, err := os.MkdirTemp("", "virtutune-bench-centrifugo-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		lr.cfDir, lr.cfBin = dir, opt.CFBin
		if lr.cfBin == "" {
			lr.status("building Centrifugo " + opt.CFVersion + " (go install into " + dir + ")")
			if lr.cfBin, err = buildCentrifugo(ctx, dir, opt.CFVersion); err != nil {
				return err
			}
		}
	}
	for round := range opt.Rounds {
		for k := range opt.Targets {
			if ctx.Err() != nil {
				break
			}
			t := opt.Targets[(k+round)%len(opt.Targets)]
			tr := lr.measure(ctx, t, round)
			rep.Rounds = append(rep.Rounds, tr)
			if tr.Err != "" {
				rep.Errors = append(rep.Errors, fmt.Sprintf("%s round %d: %s", t, round+1, tr.Err))
			}
		}
	}
	lr.status("")
	rep.summarize(opt)
	if opt.JSON {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else {
		rep.writeTable(out, opt)
	}
	return ctx.Err()
}

func (lr *loadRun) status(s string) {
	if lr.opt.Quiet {
		return
	}
	if s == "" {
		fmt.Fprint(stderr, "\r\033[K")
		return
	}
	fmt.Fprintf(stderr, "\r\033[K%s", s)
}

// start starts server t in processes of its own.
func (lr *loadRun) start(ctx context.Context, t string) (*loadServer, error) {
	s := &loadServer{name: t}
	var closers []func()
	s.stop = func() {
		for _, f := range slices.Backward(closers) {
			f()
		}
	}
	fail := func(err error) (*loadServer, error) { s.stop(); return nil, err }
	base, old := strings.CutSuffix(t, "@old")
	if strings.HasSuffix(base, "-redis") {
		rd, err := startRedis(ctx, lr.opt.RedisBin)
		if err != nil {
			return fail(err)
		}
		closers = append(closers, rd.Close)
		s.redis = rd
	}
	self := os.Args[0]
	if old {
		self = lr.opt.CompareBin
	}
	switch base {
	case "project", "project-redis":
		s.kind = "project"
		names := []string{"a"}
		if s.redis != nil {
			names = []string{"a", "b"}
		}
		for _, n := range names {
			args := []string{"--serve", "--instance", "bench-" + n}
			if s.redis != nil {
				args = append(args, "--redis", s.redis.URL())
			}
			cp, err := startProc(t+"-"+n, self, args, nil, true)
			if err != nil {
				return fail(err)
			}
			closers = append(closers, cp.Close)
			s.procs = append(s.procs, cp)
			s.goBases = append(s.goBases, cp.URL)
		}
	case "hub":
		s.kind = "hub"
		cp, err := startProc(t, self, []string{"--serve-hub"}, nil, true)
		if err != nil {
			return fail(err)
		}
		closers = append(closers, cp.Close)
		s.procs = append(s.procs, cp)
		s.goBases = append(s.goBases, cp.URL)
	case "centrifugo", "centrifugo-redis":
		s.kind = "centrifugo"
		s.cfSecret = "virtutune-bench-centrifugo-secret-0123456789"
		n := 1
		redisURL := ""
		if s.redis != nil {
			n, redisURL = 2, s.redis.URL()
		}
		for i := range n {
			cp, err := startCentrifugo(lr.cfBin, lr.cfDir, fmt.Sprintf("%s-%d", t, i+1), s.cfSecret, redisURL, lr.opt.CFHistory)
			if err != nil {
				return fail(err)
			}
			closers = append(closers, cp.Kill)
			s.procs = append(s.procs, cp)
		}
	}
	s.api, s.phoneBase, s.pcBase = s.procs[0].URL, s.procs[0].URL, s.procs[len(s.procs)-1].URL
	return s, nil
}

// measure runs every test of one round on server t.
func (lr *loadRun) measure(ctx context.Context, t string, round int) *TargetRound {
	opt := lr.opt
	tr := &TargetRound{Target: t, Round: round + 1, Sessions: opt.Sessions}
	prefix := fmt.Sprintf("[round %d/%d %s] ", round+1, opt.Rounds, t)
	lr.status(prefix + "starting")
	srv, err := lr.start(ctx, t)
	if err != nil {
		tr.Err = err.Error()
		return tr
	}
	defer srv.stop()
	var workers []*workerProc
	defer func() {
		var wg sync.WaitGroup
		for _, w := range workers {
			wg.Add(1)
			go func() { defer wg.Done(); w.Close() }()
		}
		wg.Wait()
	}()
	for i := range opt.ClientProcs {
		w, err := startWorker(fmt.Sprintf("clients-%d", i+1))
		if err != nil {
			tr.Err = err.Error()
			return tr
		}
		workers = append(workers, w)
	}
	memBefore, objBefore := lr.goMem(ctx, srv)
	rssBefore := rssOf(srv.pids())
	lr.runSeq++
	runID := fmt.Sprintf("L%d%s", lr.runSeq, randomSuffix())
	lr.status(prefix + fmt.Sprintf("setting up %d sessions", opt.Sessions))
	t0 := time.Now()
	results := lr.all(workers, func(i int, w *workerProc) (workerResult, error) {
		first, n := split(opt.Sessions, len(workers), i)
		return w.do(workerCmd{Op: "setup", Target: srv.kind, API: srv.api, PhoneBase: srv.phoneBase, PCBase: srv.pcBase,
			CFSecret: srv.cfSecret, First: first, Count: n, RunID: runID})
	})
	tr.SetupSeconds = time.Since(t0).Seconds()
	var setupParts [][][2]uint64
	live := 0
	for _, r := range results {
		if r.err != nil {
			tr.Err = r.err.Error()
			return tr
		}
		live += r.res.Sessions
		tr.SetupFailed += r.res.SetupFailed
		setupParts = append(setupParts, r.res.Setup)
		if r.res.Err != "" && tr.Err == "" {
			tr.Err = "setup: " + r.res.Err
		}
	}
	tr.Setup = histSummary(setupParts...)
	tr.Sessions = live
	if live == 0 {
		return tr
	}
	conns := float64(2 * live)
	if live >= 50 {
		if memAfter, objAfter := lr.goMem(ctx, srv); memBefore > 0 && memAfter > 0 {
			tr.MemPerConn = float64(memAfter-memBefore) / conns
			tr.ObjPerConn = (float64(objAfter) - float64(objBefore)) / conns
		}
		tr.RSSPerConn = float64(rssOf(srv.pids())-rssBefore) / conns
	}
	for _, test := range opt.Tests {
		if ctx.Err() != nil {
			break
		}
		switch test {
		case "loop":
			lr.status(prefix + "one session, closed loop")
			tr.Loop = lr.step(ctx, srv, workers[:1], workerCmd{Op: "loop", Count: opt.LoopCount, Drain: opt.Drain}, 0)
		case "fixed":
			lr.status(prefix + fmt.Sprintf("fixed step, %.0f msg/s offered", opt.FixedRate))
			var prof sync.WaitGroup
			if opt.CPUProfile != "" && round == 0 && len(srv.goBases) > 0 {
				secs := max(1, int(opt.Step/time.Second)-1)
				for i, base := range srv.goBases {
					file := profileFile(opt.CPUProfile, t, i, len(srv.goBases))
					prof.Add(1)
					go func() {
						defer prof.Done()
						time.Sleep(700 * time.Millisecond) // the step starts 200 ms after the command; skip its first half second
						if err := saveChildProfile(ctx, base, fmt.Sprintf("cpu?seconds=%d", secs), file); err != nil {
							fmt.Fprintln(stderr, "cpu profile:", err)
						}
					}()
				}
			}
			tr.Fixed = lr.rateStep(ctx, srv, workers, opt.FixedRate, live)
			prof.Wait()
		case "search":
			tr.Search, tr.Best = lr.search(ctx, srv, workers, live, prefix)
			if opt.HeapProfile != "" && round == 0 {
				for i, base := range srv.goBases {
					_ = saveChildProfile(ctx, base, "heap", profileFile(opt.HeapProfile, t, i, len(srv.goBases)))
				}
			}
		}
	}
	return tr
}

func profileFile(base, target string, i, n int) string {
	f := base + "." + target
	if n > 1 {
		f += fmt.Sprintf(".%c", 'a'+i)
	}
	return f
}

// goMem sums the Go servers' heap+stack and live heap objects after a GC
// (0 if any cannot say).
func (lr *loadRun) goMem(ctx context.Context, srv *loadServer) (live, objects uint64) {
	if len(srv.goBases) == 0 {
		return 0, 0
	}
	for _, b := range srv.goBases {
		st, err := childStatsOf(ctx, b)
		if err != nil {
			return 0, 0
		}
		live += st.Mem.live()
		objects += st.Mem.HeapObjects
	}
	return live, objects
}
