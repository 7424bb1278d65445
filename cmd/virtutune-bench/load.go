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
	"math"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"text/tabwriter"
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

// StepResult is one measured step (or the closed loop) on one server.
type StepResult struct {
	Offered     float64 `json:"offered_per_second,omitempty"`
	Sent        uint64  `json:"sent"`
	Delivered   uint64  `json:"delivered"`
	Lost        uint64  `json:"lost"`
	Dup         uint64  `json:"dup"`
	Reord       uint64  `json:"reordered"`
	Disconnects int     `json:"disconnects,omitempty"`
	Latency     Latency `json:"latency"`
	PerSecond   float64 `json:"delivered_per_second"`
	Seconds     float64 `json:"seconds"`
	// ServerCPU is the server processes' CPU time (user+system) per
	// delivered message, in µs; RedisCPU redis-server's.
	ServerCPU  float64 `json:"server_cpu_us_per_msg,omitempty"`
	RedisCPU   float64 `json:"redis_cpu_us_per_msg,omitempty"`
	ServerCore float64 `json:"server_cores,omitempty"` // CPU seconds per second
	PSI        float64 `json:"cpu_pressure_avg10"`
	Load1      float64 `json:"loadavg1"`
	Pass       bool    `json:"pass"`
	Why        string  `json:"why,omitempty"`
}

// TargetRound is what one round measured on one server.
type TargetRound struct {
	Target       string        `json:"target"`
	Round        int           `json:"round"`
	Sessions     int           `json:"sessions"`
	SetupSeconds float64       `json:"setup_seconds"`
	SetupFailed  int           `json:"setup_failed,omitempty"`
	Setup        Latency       `json:"setup"`
	MemPerConn   float64       `json:"mem_per_conn_bytes,omitempty"` // Go heap+stack after GC
	RSSPerConn   float64       `json:"rss_per_conn_bytes,omitempty"`
	Loop         *StepResult   `json:"loop,omitempty"`
	Fixed        *StepResult   `json:"fixed,omitempty"`
	Search       []*StepResult `json:"search,omitempty"`
	Best         *StepResult   `json:"best,omitempty"` // highest passing step of the search
	Err          string        `json:"error,omitempty"`
}

// LoadSummary is the median over rounds of one server's figures.
type LoadSummary struct {
	Target        string  `json:"target"`
	Rounds        int     `json:"rounds"`
	LoopP50       float64 `json:"loop_p50_us"`
	LoopP99       float64 `json:"loop_p99_us"`
	FixedP50      float64 `json:"fixed_p50_us"`
	FixedP99      float64 `json:"fixed_p99_us"`
	FixedCPU      float64 `json:"fixed_server_cpu_us_per_msg"`
	FixedRedisCPU float64 `json:"fixed_redis_cpu_us_per_msg,omitempty"`
	FixedLost     float64 `json:"fixed_lost"`
	Sustained     float64 `json:"sustained_per_second"`
	BestCPU       float64 `json:"sustained_server_cpu_us_per_msg"`
	BestRedisCPU  float64 `json:"sustained_redis_cpu_us_per_msg,omitempty"`
	BestP99       float64 `json:"sustained_p99_us"`
	MemPerConn    float64 `json:"mem_per_conn_bytes"`
	RSSPerConn    float64 `json:"rss_per_conn_bytes"`
	// Each per round, in round order, for the raw figures.
	SustainedRounds []float64 `json:"sustained_rounds,omitempty"`
	FixedCPURounds  []float64 `json:"fixed_cpu_rounds,omitempty"`
	FixedP99Rounds  []float64 `json:"fixed_p99_rounds,omitempty"`
	LoopP50Rounds   []float64 `json:"loop_p50_rounds,omitempty"`
}

// LoadReport is the whole load run.
type LoadReport struct {
	CPUs      int            `json:"cpus"`
	Go        string         `json:"go"`
	Options   string         `json:"options"`
	Started   time.Time      `json:"started"`
	Load      string         `json:"uptime_at_start"`
	Rounds    []*TargetRound `json:"rounds"`
	Summaries []*LoadSummary `json:"summaries"`
	Ratios    []Ratio        `json:"ratios"`
	Errors    []string       `json:"errors,omitempty"`
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
			cp, err := startCentrifugo(lr.cfBin, lr.cfDir, fmt.Sprintf("%s-%d", t, i+1), s.cfSecret, redisURL)
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
	memBefore, rssBefore := lr.goMem(ctx, srv), rssOf(srv.pids())
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
		if memAfter := lr.goMem(ctx, srv); memBefore > 0 && memAfter > 0 {
			tr.MemPerConn = float64(memAfter-memBefore) / conns
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

// goMem sums the Go servers' heap+stack after a GC (0 if any cannot say).
func (lr *loadRun) goMem(ctx context.Context, srv *loadServer) uint64 {
	if len(srv.goBases) == 0 {
		return 0
	}
	var sum uint64
	for _, b := range srv.goBases {
		st, err := childStatsOf(ctx, b)
		if err != nil {
			return 0
		}
		sum += st.Mem.live()
	}
	return sum
}

type workerAnswer struct {
	res workerResult
	err error
}

// all runs f on every worker at once and collects the answers.
func (lr *loadRun) all(workers []*workerProc, f func(i int, w *workerProc) (workerResult, error)) []workerAnswer {
	out := make([]workerAnswer, len(workers))
	var wg sync.WaitGroup
	for i, w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := f(i, w)
			out[i] = workerAnswer{r, err}
		}()
	}
	wg.Wait()
	return out
}

// split gives worker i of n its share of sessions: [first, first+count).
func split(sessions, n, i int) (first, count int) {
	per := sessions / n
	extra := sessions % n
	first = i*per + min(i, extra)
	count = per
	if i < extra {
		count++
	}
	return first, count
}

// rateStep offers rate messages per second, spread over every session.
func (lr *loadRun) rateStep(ctx context.Context, srv *loadServer, workers []*workerProc, rate float64, sessions int) *StepResult {
	start := time.Now().Add(200 * time.Millisecond).UnixNano()
	cmd := workerCmd{Op: "step", Rate: rate / float64(sessions), Duration: lr.opt.Step, Start: start, Drain: lr.opt.Drain}
	r := lr.step(ctx, srv, workers, cmd, rate)
	// Pass: nothing lost, no connection ended, p99 within the limit, and the
	// clients offered (almost) what was asked.
	want := rate * lr.opt.Step.Seconds()
	switch {
	case r.Lost > 0:
		r.Why = fmt.Sprintf("%d lost", r.Lost)
	case r.Disconnects > 0:
		r.Why = fmt.Sprintf("%d connections ended", r.Disconnects)
	case r.Dup > 0 || r.Reord > 0:
		r.Why = fmt.Sprintf("%d duplicated, %d reordered", r.Dup, r.Reord)
	case r.Latency.P99 > us(lr.opt.P99Limit):
		r.Why = fmt.Sprintf("p99 %s > %s", fmtUS(r.Latency.P99), lr.opt.P99Limit)
	case float64(r.Sent) < 0.97*want:
		r.Why = fmt.Sprintf("the clients offered only %.0f of %.0f", float64(r.Sent), want)
	default:
		r.Pass = true
	}
	return r
}

// step sends cmd to workers and measures the server's CPU around it.
func (lr *loadRun) step(ctx context.Context, srv *loadServer, workers []*workerProc, cmd workerCmd, offered float64) *StepResult {
	pids := srv.pids()
	var rpid []int
	if srv.redis != nil {
		rpid = []int{srv.redis.cmd.Process.Pid}
	}
	c0, r0, t0 := cpuOf(pids), cpuOf(rpid), time.Now()
	ans := lr.all(workers, func(_ int, w *workerProc) (workerResult, error) { return w.do(cmd) })
	c1, r1, el := cpuOf(pids), cpuOf(rpid), time.Since(t0)
	res := &StepResult{Offered: offered, PSI: cpuPressure(), Load1: loadAvg1()}
	var parts [][][2]uint64
	var sendSec float64
	for _, a := range ans {
		if a.err != nil {
			res.Why = a.err.Error()
			continue
		}
		r := a.res
		res.Sent += r.Sent
		res.Delivered += r.Delivered
		res.Dup += r.Dup
		res.Reord += r.Reord
		res.Disconnects += r.Disconnects
		parts = append(parts, r.Hist)
		sendSec = max(sendSec, r.SendSeconds)
	}
	if res.Sent > res.Delivered {
		res.Lost = res.Sent - res.Delivered
	}
	res.Latency = histSummary(parts...)
	res.Seconds = sendSec
	if sendSec > 0 {
		res.PerSecond = float64(res.Delivered) / sendSec
	}
	if res.Delivered > 0 {
		res.ServerCPU = us(c1-c0) / float64(res.Delivered)
		if rpid != nil {
			res.RedisCPU = us(r1-r0) / float64(res.Delivered)
		}
	}
	res.ServerCore = (c1 - c0).Seconds() / el.Seconds()
	return res
}

// search steps the offered rate up by the factor while steps pass, then
// bisects between the last passing and the first failing rate.
func (lr *loadRun) search(ctx context.Context, srv *loadServer, workers []*workerProc, sessions int, prefix string) ([]*StepResult, *StepResult) {
	opt := lr.opt
	var steps []*StepResult
	var best *StepResult
	run := func(rate float64) *StepResult {
		lr.status(prefix + fmt.Sprintf("search: %.0f msg/s offered", rate))
		r := lr.rateStep(ctx, srv, workers, rate, sessions)
		for try := 0; !r.Pass && try < opt.Retry && ctx.Err() == nil; try++ {
			steps = append(steps, r)
			time.Sleep(2 * time.Second)
			lr.status(prefix + fmt.Sprintf("search: %.0f msg/s offered (again)", rate))
			r = lr.rateStep(ctx, srv, workers, rate, sessions)
		}
		steps = append(steps, r)
		if r.Pass && (best == nil || r.Offered > best.Offered) {
			best = r
		}
		if !r.Pass {
			// Let the server drain its backlog before the next step.
			time.Sleep(2 * time.Second)
		}
		return r
	}
	pass, fail := 0.0, 0.0
	for rate := opt.SearchStart; rate <= opt.SearchMax && ctx.Err() == nil; rate *= opt.Factor {
		if run(rate).Pass {
			pass = rate
			continue
		}
		fail = rate
		break
	}
	if pass == 0 && fail > 0 { // the first step failed: go down
		for rate := fail / opt.Factor; rate >= opt.SearchStart/8 && ctx.Err() == nil; rate /= opt.Factor {
			if run(rate).Pass {
				pass = rate
				break
			}
			fail = rate
		}
	}
	for range opt.Refine {
		if pass == 0 || fail == 0 || ctx.Err() != nil || (fail-pass)/pass < 0.03 {
			break
		}
		mid := math.Round((pass + fail) / 2)
		if run(mid).Pass {
			pass = mid
		} else {
			fail = mid
		}
	}
	return steps, best
}

func median(v []float64) float64 {
	var s []float64
	for _, x := range v {
		if !math.IsNaN(x) {
			s = append(s, x)
		}
	}
	if len(s) == 0 {
		return math.NaN()
	}
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func (rep *LoadReport) summarize(opt *loadOptions) {
	by := map[string]*LoadSummary{}
	for _, t := range opt.Targets {
		s := &LoadSummary{Target: t}
		by[t] = s
		rep.Summaries = append(rep.Summaries, s)
		var lp50, lp99, fp50, fp99, fcpu, frcpu, flost, sus, bcpu, brcpu, bp99, mem, rss []float64
		nan := math.NaN()
		for _, r := range rep.Rounds {
			if r.Target != t {
				continue
			}
			s.Rounds++
			pick := func(st *StepResult, f func(*StepResult) float64) float64 {
				if st == nil || st.Delivered == 0 {
					return nan
				}
				return f(st)
			}
			lp50 = append(lp50, pick(r.Loop, func(x *StepResult) float64 { return x.Latency.P50 }))
			lp99 = append(lp99, pick(r.Loop, func(x *StepResult) float64 { return x.Latency.P99 }))
			fp50 = append(fp50, pick(r.Fixed, func(x *StepResult) float64 { return x.Latency.P50 }))
			fp99 = append(fp99, pick(r.Fixed, func(x *StepResult) float64 { return x.Latency.P99 }))
			fcpu = append(fcpu, pick(r.Fixed, func(x *StepResult) float64 { return x.ServerCPU }))
			frcpu = append(frcpu, pick(r.Fixed, func(x *StepResult) float64 { return x.RedisCPU }))
			flost = append(flost, pick(r.Fixed, func(x *StepResult) float64 { return float64(x.Lost) }))
			if r.Search != nil {
				sus = append(sus, pick(r.Best, func(x *StepResult) float64 { return x.Offered }))
				if r.Best == nil {
					sus[len(sus)-1] = 0
				}
			}
			bcpu = append(bcpu, pick(r.Best, func(x *StepResult) float64 { return x.ServerCPU }))
			brcpu = append(brcpu, pick(r.Best, func(x *StepResult) float64 { return x.RedisCPU }))
			bp99 = append(bp99, pick(r.Best, func(x *StepResult) float64 { return x.Latency.P99 }))
			if r.MemPerConn > 0 {
				mem = append(mem, r.MemPerConn)
			}
			if r.RSSPerConn > 0 {
				rss = append(rss, r.RSSPerConn)
			}
		}
		s.LoopP50, s.LoopP99 = median(lp50), median(lp99)
		s.FixedP50, s.FixedP99, s.FixedCPU, s.FixedRedisCPU, s.FixedLost = median(fp50), median(fp99), median(fcpu), median(frcpu), median(flost)
		s.Sustained, s.BestCPU, s.BestRedisCPU, s.BestP99 = median(sus), median(bcpu), median(brcpu), median(bp99)
		s.MemPerConn, s.RSSPerConn = median(mem), median(rss)
		s.SustainedRounds, s.FixedCPURounds, s.FixedP99Rounds, s.LoopP50Rounds = sus, fcpu, fp99, lp50
	}
	// NaN does not encode as JSON: zero it.
	for _, s := range rep.Summaries {
		for _, f := range []*float64{&s.LoopP50, &s.LoopP99, &s.FixedP50, &s.FixedP99, &s.FixedCPU, &s.FixedRedisCPU, &s.FixedLost,
			&s.Sustained, &s.BestCPU, &s.BestRedisCPU, &s.BestP99, &s.MemPerConn, &s.RSSPerConn} {
			if math.IsNaN(*f) {
				*f = 0
			}
		}
		for _, v := range [][]float64{s.SustainedRounds, s.FixedCPURounds, s.FixedP99Rounds, s.LoopP50Rounds} {
			for i := range v {
				if math.IsNaN(v[i]) {
					v[i] = 0
				}
			}
		}
	}
	add := func(name string, v, target float64, unit, note string) {
		if v == 0 || math.IsNaN(v) || math.IsInf(v, 0) {
			return
		}
		rep.Ratios = append(rep.Ratios, Ratio{Name: name, Value: v, Target: target, Unit: unit, OK: v <= target, Note: note})
	}
	atLeast := func(name string, v, target float64, unit, note string) {
		if v == 0 || math.IsNaN(v) {
			return
		}
		rep.Ratios = append(rep.Ratios, Ratio{Name: name, Value: v, Target: target, Unit: unit, OK: v >= target, Note: note + " (at least)"})
	}
	hub, p, pr, cf, cfr := by["hub"], by["project"], by["project-redis"], by["centrifugo"], by["centrifugo-redis"]
	if p != nil {
		if hub != nil && hub.LoopP50 > 0 {
			add("project one-session p50 / hub p50", p.LoopP50/hub.LoopP50, 1.25, "x", "")
		}
		add(fmt.Sprintf("project server CPU per message at %.0f msg/s", opt.FixedRate), p.FixedCPU, 25, "µs", "")
		add("project server CPU per message at its sustained rate", p.BestCPU, 25, "µs", "")
		atLeast("project sustained rate", p.Sustained, 25000, "msg/s", "")
		add("project memory per connection (Go heap+stack)", p.MemPerConn/1024, 24, "KiB", "")
		add("project memory per connection (RSS)", p.RSSPerConn/1024, 24, "KiB", "")
		if cf != nil && cf.Sustained > 0 {
			atLeast("project sustained rate / centrifugo's", p.Sustained/cf.Sustained, 1, "x", "")
		}
	}
	if pr != nil {
		add(fmt.Sprintf("project-redis server CPU per message at %.0f msg/s (Redis excluded)", opt.FixedRate), pr.FixedCPU, 60, "µs", "")
		add("project-redis server CPU per message at its sustained rate (Redis excluded)", pr.BestCPU, 60, "µs", "")
		atLeast("project-redis sustained rate", pr.Sustained, 14000, "msg/s", "")
		if cfr != nil && cfr.Sustained > 0 {
			atLeast("project-redis sustained rate / centrifugo-redis's", pr.Sustained/cfr.Sustained, 1, "x", "")
		}
	}
	// The scale run: thousands of sessions at about one chord per second each.
	if p != nil && opt.Sessions >= 1000 && opt.FixedRate <= 2*float64(opt.Sessions) && slices.Contains(opt.Tests, "fixed") {
		for _, r := range rep.Rounds {
			if r.Target == "project" && r.Fixed != nil {
				add(fmt.Sprintf("project p99 at %d sessions, %.0f msg/s, round %d", r.Sessions, opt.FixedRate, r.Round), r.Fixed.Latency.P99/1000, 20, "ms",
					fmt.Sprintf("lost %d, PSI %.0f%%", r.Fixed.Lost, r.Fixed.PSI))
			}
		}
	}
}

func (rep *LoadReport) writeTable(w io.Writer, opt *loadOptions) {
	fmt.Fprintf(w, "VirtuTune Link load — %d CPUs, %s, %s\n%s\nuptime at start: %s\n\n", rep.CPUs, rep.Go, rep.Started.Format(time.RFC3339), rep.Options, rep.Load)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "round\ttarget\tsess\ttest\toffered/s\tdeliv/s\tp50\tp99\tmax\tlost\tdup\treord\tsrv µs/msg\tredis µs/msg\tsrv cores\tPSI\tload1\tpass\t")
	row := func(r *TargetRound, name string, s *StepResult) {
		pass := "-"
		if s.Offered > 0 {
			pass = "ok"
			if !s.Pass {
				pass = "FAIL " + s.Why
			}
		}
		rc := "-"
		if s.RedisCPU > 0 {
			rc = fmt.Sprintf("%.1f", s.RedisCPU)
		}
		fmt.Fprintf(tw, "%d\t%s\t%d\t%s\t%.0f\t%.0f\t%s\t%s\t%s\t%d\t%d\t%d\t%.1f\t%s\t%.2f\t%.0f%%\t%.2f\t%s\t\n",
			r.Round, r.Target, r.Sessions, name, s.Offered, s.PerSecond, fmtUS(s.Latency.P50), fmtUS(s.Latency.P99), fmtUS(s.Latency.Max),
			s.Lost, s.Dup, s.Reord, s.ServerCPU, rc, s.ServerCore, s.PSI, s.Load1, pass)
	}
	for _, r := range rep.Rounds {
		if r.Loop != nil {
			row(r, "loop", r.Loop)
		}
		if r.Fixed != nil {
			row(r, "fixed", r.Fixed)
		}
		for _, s := range r.Search {
			row(r, "search", s)
		}
	}
	tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "round\ttarget\tsessions\tsetup s\tsetup p50\tfailed\theap+stack B/conn\tRSS B/conn\t")
	for _, r := range rep.Rounds {
		fmt.Fprintf(tw, "%d\t%s\t%d\t%.1f\t%s\t%d\t%.0f\t%.0f\t\n", r.Round, r.Target, r.Sessions, r.SetupSeconds, fmtUS(r.Setup.P50), r.SetupFailed, r.MemPerConn, r.RSSPerConn)
	}
	tw.Flush()
	fmt.Fprintf(w, "\nmedians over rounds (%d sessions; fixed step %.0f msg/s; search p99 limit %s, nothing lost):\n", opt.Sessions, opt.FixedRate, opt.P99Limit)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "target\trounds\tloop p50\tloop p99\tfixed p50\tfixed p99\tfixed srv µs/msg\tfixed redis µs/msg\tsustained msg/s\tsrv µs/msg there\tredis µs/msg there\tp99 there\tB/conn heap\tB/conn RSS\t")
	for _, s := range rep.Summaries {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%.1f\t%.1f\t%.0f\t%.1f\t%.1f\t%s\t%.0f\t%.0f\t\n", s.Target, s.Rounds,
			fmtUS(s.LoopP50), fmtUS(s.LoopP99), fmtUS(s.FixedP50), fmtUS(s.FixedP99), s.FixedCPU, s.FixedRedisCPU,
			s.Sustained, s.BestCPU, s.BestRedisCPU, fmtUS(s.BestP99), s.MemPerConn, s.RSSPerConn)
	}
	tw.Flush()
	if len(rep.Ratios) > 0 {
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "figure\tvalue\ttarget\t\t")
		for _, r := range rep.Ratios {
			ok := "MISS"
			if r.OK {
				ok = "ok"
			}
			cmp := "<="
			if strings.HasSuffix(r.Note, "(at least)") {
				cmp = ">="
			}
			fmt.Fprintf(tw, "%s\t%.2f %s\t%s %g %s\t%s\t%s\n", r.Name, r.Value, r.Unit, cmp, r.Target, r.Unit, ok, r.Note)
		}
		tw.Flush()
	}
	for _, e := range rep.Errors {
		fmt.Fprintln(w, "error:", e)
	}
}
