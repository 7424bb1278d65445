package test

// TestSoak: a bounded soak (minutes, not hours) of the whole deployment with
// every fault the system promises to survive, at random moments.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/virtutune/link/internal/peertest"
	"github.com/virtutune/link/internal/testkit"
	"github.com/virtutune/link/peer"
	"github.com/virtutune/link/protocol"
	"github.com/virtutune/link/signaling/redistest"
)

// Soak settings and their environment variables.
const (
	// soakSessionsDefault sessions (a Go PC and a Go phone each) run by
	// default (VIRTUTUNE_SOAK_SESSIONS); soakSessionsRace under -race, where
	// the peers and both server binaries run several times slower. 100 fit
	// on 2 cores under -race too (about 90 s, 1.2 cores busy on average);
	// lower it here if a slower machine cannot keep up. One did (2026-12-01:
	// 2.3–3.3× slower in system calls; under -race 100 sessions took 45–63 s
	// to join, and Redis, restarted, up to 43 s to read back 10 MiB of
	// append-only files): 60 under -race.
	soakSessionsDefault = 100
	soakSessionsRace    = 60
	// soakDurationDefault is how long chords flow (VIRTUTUNE_SOAK_DURATION,
	// a Go duration).
	soakDurationDefault = 60 * time.Second
	// soakRateDefault is the chords per second each member of a session
	// sends (VIRTUTUNE_SOAK_RATE): a fast guitarist, far below the server's
	// default limit of 50 messages a second per connection, which the soak's
	// instances keep.
	soakRateDefault = 3.0
	// soakLightFaultEvery is the mean time between two light faults (a data
	// channel dropped, a WebSocket cut); they come as a Poisson process.
	soakLightFaultEvery = 500 * time.Millisecond
	// soakDrainQuiet ends the final wait when nothing has moved for this
	// long (nothing more is coming); soakDrainMax bounds it in any case.
	soakDrainQuiet = 15 * time.Second
	soakDrainMax   = 90 * time.Second
)

// soakSettings reads the soak's size from the environment.
func soakSettings(t *testing.T) (sessions int, duration time.Duration, rate float64, seed uint64) {
	t.Helper()
	sessions = soakSessionsDefault
	if raceEnabled {
		sessions = soakSessionsRace
	}
	duration, rate = soakDurationDefault, soakRateDefault
	seed = uint64(time.Now().UnixNano())
	if v := os.Getenv("VIRTUTUNE_SOAK_SESSIONS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("VIRTUTUNE_SOAK_SESSIONS=%q: want a positive number", v)
		}
		sessions = n
	}
	if v := os.Getenv("VIRTUTUNE_SOAK_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 5*time.Second {
			t.Fatalf("VIRTUTUNE_SOAK_DURATION=%q: want a duration of at least 5s", v)
		}
		duration = d
	}
	if v := os.Getenv("VIRTUTUNE_SOAK_RATE"); v != "" {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f <= 0 || f > 20 {
			t.Fatalf("VIRTUTUNE_SOAK_RATE=%q: want chords per second in (0, 20]", v)
		}
		rate = f
	}
	if v := os.Getenv("VIRTUTUNE_SOAK_SEED"); v != "" {
		s, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("VIRTUTUNE_SOAK_SEED=%q: want an unsigned integer", v)
		}
		seed = s
	}
	return sessions, duration, rate, seed
}

// TestSoak runs sessions (a Go PC and a Go phone each, data channels on
// loopback) through nginx over two server instances that share one Redis
// (append-only file, fsync always), exchanging chords both ways at a modest
// rate, while faults come at random moments (the seed is logged; set
// VIRTUTUNE_SOAK_SEED to replay a schedule): data channels dropped,
// WebSockets cut without a close frame, Redis killed (SIGKILL) and restarted,
// an instance killed (SIGKILL) and started again on its port. Redis
// restarts and instance kills come one at a time, each recovered before the
// next; the light faults go on throughout.
//
// It then proves that every chord sent was delivered exactly once and in
// order to the other member of its session (anything missing is listed with
// what the outage rule of RedisBroker says about it, and fails the test
// unless the rule explains it), and that goroutines and memory return to
// their baseline: in this process once the peers are closed, and in each
// server process (/metrics: go_goroutines, virtutune_connections,
// process_resident_memory_bytes) once its clients are gone.
func TestSoak(t *testing.T) {
	if testing.Short() {
		t.Skip("soak test: skipped with -short")
	}
	testkit.Need(t, "nginx", "/usr/sbin/nginx")
	testkit.Need(t, "redis-server")
	nSessions, duration, rate, seed := soakSettings(t)
	t.Logf("soak: %d sessions, %v of traffic, %.1f chords/s per member each way, seed %d (VIRTUTUNE_SOAK_SEED=%d replays the fault schedule), race %v",
		nSessions, duration, rate, seed, seed, raceEnabled)
	ctx, cancel := context.WithTimeout(context.Background(), duration+5*time.Minute)
	defer cancel()
	started := time.Now()

	// ---- the deployment ----
	rd := startRedis(t, true)
	ngPort, public := nginxPort(t)
	// The servers' and nginx's logs outlive a failed soak, for the post-mortem.
	logDir, err := os.MkdirTemp("", "virtutune-soak-logs-")
	if err != nil {
		t.Fatal(err)
	}
	servers := []*soakServer{newSoakServer(t, "A", rd.URL(), public, logDir), newSoakServer(t, "B", rd.URL(), public, logDir)}
	for _, s := range servers {
		s.start(ctx)
	}
	ng := startNginx(t, ngPort, servers[0].addr, servers[1].addr)
	t.Cleanup(func() { // before nginx's own cleanup removes its directory
		if !t.Failed() {
			_ = os.RemoveAll(logDir)
			return
		}
		for _, f := range []string{"access.log", "error.log"} {
			if b, err := os.ReadFile(filepath.Join(ng.dir, f)); err == nil {
				_ = os.WriteFile(filepath.Join(logDir, "nginx-"+f), b, 0o644)
			}
		}
		t.Logf("the logs of the servers and nginx are kept in %s", logDir)
	})
	for _, s := range servers {
		s.firstIdle = s.idle
	}

	// ---- this process's baseline ----
	baseG, baseHeap := settledRuntime()
	t.Logf("test process baseline: %d goroutines, heap %s", baseG, mib(baseHeap))

	// ---- sessions ----
	log := soakLogger(t)
	sess := make([]*soakSession, nSessions)
	setupStart := time.Now()
	if err := forEach(ctx, nSessions, 8, func(ctx context.Context, i int) error {
		s, err := joinSoakSession(ctx, log, ng.url, i)
		sess[i] = s
		return err
	}); err != nil {
		for _, s := range sess {
			if s != nil {
				s.close()
			}
		}
		t.Fatalf("setting up the sessions: %v", err)
	}
	t.Cleanup(func() {
		for _, s := range sess {
			s.close()
		}
	})
	joinTook := time.Since(setupStart)
	split := 0
	for _, s := range sess {
		if instanceOf(s.pc.c) != instanceOf(s.phone.c) {
			split++
		}
	}
	// The data channels open by themselves; traffic starts once most are up
	// (or after a while: the relay carries what the channels do not).
	p2pWait, p2pCancel := context.WithTimeout(ctx, 30*time.Second)
	testkit.Until(p2pWait, 50*time.Millisecond, func() bool { return countP2P(sess) == len(sess) })
	p2pCancel()
	t.Logf("%d sessions joined through nginx in %v (%d with PC and phone on different instances); %d of them with the data channel up at both ends %v after the start",
		nSessions, joinTook.Round(time.Millisecond), split, countP2P(sess), time.Since(setupStart).Round(time.Millisecond))

	// ---- traffic and faults ----
	trafficStart := time.Now()
	trafficEnd := trafficStart.Add(duration)
	sendCtx, stopSending := context.WithCancel(ctx)
	var senders sync.WaitGroup
	phase := rand.New(rand.NewPCG(seed, 3))
	period := time.Duration(float64(time.Second) / rate)
	for _, s := range sess {
		for _, m := range []*soakMember{s.pc, s.phone} {
			senders.Add(1)
			go m.sendLoop(sendCtx, &senders, time.Duration(phase.Int64N(int64(period))), period)
		}
	}
	var faults faultCounts
	lightCtx, stopLight := context.WithCancel(ctx)
	lightDone := make(chan struct{})
	go func() {
		defer close(lightDone)
		lightFaults(lightCtx, rand.New(rand.NewPCG(seed, 2)), sess, &faults)
	}()
	outages := heavyFaults(ctx, t, rand.New(rand.NewPCG(seed, 1)), rd, servers, trafficStart, trafficEnd, &faults)
	waitUntil(ctx, trafficEnd)
	stopLight()
	<-lightDone
	stopSending()
	senders.Wait()
	trafficTook := time.Since(trafficStart)
	for _, s := range sess {
		for _, m := range []*soakMember{s.pc, s.phone} {
			if err := m.sendErr(); err != nil {
				t.Errorf("%s: send: %v", m.id, err)
			}
		}
	}

	// ---- drain: until every receiver has everything or nothing moves ----
	drainStart := time.Now()
	drainCtx, drainCancel := context.WithTimeout(ctx, soakDrainMax)
	complete := func() bool {
		for _, s := range sess {
			if !s.complete() {
				return false
			}
		}
		return true
	}
	progress := func() string {
		var b strings.Builder
		for _, s := range sess {
			fmt.Fprintf(&b, "%d/%d/%d/%d|", s.pc.rx.count(), s.phone.sent(), s.pc.c.Stats().Unconfirmed, s.phone.c.Stats().Unconfirmed)
			fmt.Fprintf(&b, "%d/%d|", s.phone.rx.count(), s.pc.sent())
		}
		return b.String()
	}
	last, lastMove := progress(), time.Now()
	testkit.Until(drainCtx, 100*time.Millisecond, func() bool {
		if complete() {
			return true
		}
		if p := progress(); p != last {
			last, lastMove = p, time.Now()
		}
		return time.Since(lastMove) > soakDrainQuiet
	})
	drainCancel()
	if !complete() {
		// What every goroutine of this process (the peers) is doing, for
		// the post-mortem of what did not arrive.
		if f, err := os.Create(filepath.Join(logDir, "test-goroutines.txt")); err == nil {
			buf := make([]byte, 64<<20)
			_, _ = f.Write(buf[:runtime.Stack(buf, true)])
			_ = f.Close()
			t.Logf("the drain ended incomplete; this process's goroutines are in %s", f.Name())
		}
	}
	// Once complete, flush every member once more: what the servers still
	// had for anyone (a late copy, say) arrives before the count.
	if complete() {
		_ = forEach(ctx, 2*len(sess), 16, func(ctx context.Context, i int) error {
			m := sess[i/2].pc
			if i%2 == 1 {
				m = sess[i/2].phone
			}
			fctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			defer cancel()
			_ = m.c.Flush(fctx)
			return nil
		})
	}
	drainTook := time.Since(drainStart)

	// ---- the count ----
	var (
		sent, delivered, dups, gaps, wrong, copiesDropped, reconnects, outboxDrops uint64
		paths                                                                      = map[string]int{}
		errCodes                                                                   = map[string]int{}
		missing                                                                    []string
		unexplained                                                                int
	)
	for _, s := range sess {
		for _, dir := range [][2]*soakMember{{s.pc, s.phone}, {s.phone, s.pc}} {
			from, to := dir[0], dir[1]
			n := from.sent()
			sent += uint64(n)
			rx := to.rx.snapshot()
			delivered += uint64(rx.got)
			dups += uint64(rx.dups)
			gaps += uint64(rx.gaps)
			wrong += uint64(rx.wrong)
			for p, k := range rx.paths {
				paths[p] += k
			}
			for _, issue := range rx.issues {
				t.Errorf("%s -> %s: %s", from.id, to.id, issue)
			}
			if rx.got < n {
				line, explained := explainMissing(from, to, rx, n, outages)
				missing = append(missing, line)
				if !explained {
					unexplained++
				}
			} else if rx.got > n {
				t.Errorf("%s -> %s: %d chords delivered, only %d sent", from.id, to.id, rx.got, n)
			}
		}
		for _, m := range []*soakMember{s.pc, s.phone} {
			st := m.c.Stats()
			copiesDropped += st.Duplicates
			reconnects += st.Reconnects
			outboxDrops += st.OutboxDropped
			for code, k := range m.rx.snapshot().errors {
				errCodes[code] += k
			}
		}
	}
	for _, line := range missing {
		t.Log("missing: " + line)
	}
	if unexplained > 0 {
		t.Errorf("%d directions are missing chords that the outage rule does not explain (see above)", unexplained)
	}
	if dups != 0 || gaps != 0 || wrong != 0 {
		t.Errorf("%d duplicates, %d out of order, %d with the wrong chord delivered to the application", dups, gaps, wrong)
	}
	if outboxDrops != 0 {
		t.Errorf("%d chords dropped from full outboxes", outboxDrops)
	}
	t.Logf("soak: %d sessions, traffic %v, drain %v: %d chords sent, %d delivered (exactly once and in order: duplicates %d, reordered %d), %d missing directions; "+
		"deliveries by path %v; copies dropped by the peers' dedupe %d; WebSocket reconnects %d; errors received by code %v",
		nSessions, trafficTook.Round(time.Millisecond), drainTook.Round(time.Millisecond), sent, delivered, dups, gaps, len(missing),
		paths, copiesDropped, reconnects, errCodes)
	t.Logf("faults: %s", faults.String())
	for _, o := range outages {
		t.Logf("outage: %s", o)
	}
	if faults.redis.Load() == 0 || faults.instance.Load() == 0 {
		t.Logf("note: the traffic phase was too short for both heavy faults (Redis restart and instance kill); raise VIRTUTUNE_SOAK_DURATION")
	}

	// ---- teardown and baselines ----
	closeStart := time.Now()
	_ = forEach(context.Background(), len(sess), 16, func(_ context.Context, i int) error {
		sess[i].close()
		return nil
	})
	closeTook := time.Since(closeStart)
	for _, s := range servers {
		var now serverFigures
		bctx, bcancel := context.WithTimeout(ctx, 30*time.Second)
		// Back to idle exactly, or, at the deadline, within two goroutines
		// of it (a connection of a straggling HTTP client).
		idle := func(slack float64) func() bool {
			return func() bool {
				f, err := scrapeFigures(bctx, s.url)
				if err != nil {
					return false
				}
				now = f
				return f.conns == 0 && f.goroutines <= s.idle.goroutines+slack
			}
		}
		ok := testkit.Until(bctx, 100*time.Millisecond, idle(0)) || idle(2)()
		bcancel()
		if !ok {
			_, dump := getStatus(ctx, s.pprofURL+"/debug/pprof/goroutine?debug=1")
			t.Errorf("instance %s did not return to idle: now %s, idle %s; its goroutines:\n%s", s.name, now, s.idle, dump)
		}
		// Go keeps freed heap for a while; the bound catches a leak of the
		// size of the soak, not the runtime's own caution.
		rssBound := 2*s.idle.rss + 128<<20
		if raceEnabled {
			rssBound = 3*s.idle.rss + 512<<20
		}
		if now.rss > rssBound {
			t.Errorf("instance %s: resident memory %s after the soak, above the bound %s (idle %s)", s.name, mib(now.rss), mib(rssBound), mib(s.idle.rss))
		}
		t.Logf("instance %s (started %d times): idle at first %s; idle at its last start %s; after the clients left %s",
			s.name, s.starts, s.firstIdle, s.idle, now)
	}
	sess = nil
	var afterG int
	var afterHeap uint64
	gctx, gcancel := context.WithTimeout(ctx, 15*time.Second)
	// Back to the baseline exactly, or, at the deadline, within two
	// goroutines of it (pion's last timers winding down).
	backTo := func(slack int) func() bool {
		return func() bool {
			http.DefaultTransport.(*http.Transport).CloseIdleConnections()
			afterG = runtime.NumGoroutine()
			return afterG <= baseG+slack
		}
	}
	okG := testkit.Until(gctx, 50*time.Millisecond, backTo(0)) || backTo(2)()
	gcancel()
	_, afterHeap = settledRuntime()
	if !okG {
		buf := make([]byte, 1<<20)
		t.Errorf("test process: %d goroutines after the peers closed, baseline %d:\n%s", afterG, baseG, buf[:runtime.Stack(buf, true)])
	}
	heapBound := baseHeap + 32<<20
	if afterHeap > heapBound {
		t.Errorf("test process: heap %s after the soak, above the bound %s (baseline %s)", mib(afterHeap), mib(heapBound), mib(baseHeap))
	}
	t.Logf("test process: goroutines %d at the baseline, %d after; heap %s at the baseline, %s after (bound %s); closing the peers took %v; whole test %v",
		baseG, afterG, mib(baseHeap), mib(afterHeap), mib(heapBound), closeTook.Round(time.Millisecond), time.Since(started).Round(time.Millisecond))
}

// ---- the server instances ----

// soakServer is a server instance with its idle figures; it is killed and
// started again on the same address (so nginx, which knows it by address,
// uses it again).
type soakServer struct {
	*instance
	pprofURL  string        // pprof has its own listener
	idle      serverFigures // of the current process, right after its start
	firstIdle serverFigures // of the first process
}

func newSoakServer(t *testing.T, name, redisURL, publicURL, logDir string) *soakServer {
	// The default rate limits (50 messages a second per connection); no
	// per-address limits: every client of the soak is on loopback.
	pprofAddr := fmt.Sprintf("127.0.0.1:%d", testkit.Port(t))
	in := newInstance(t, name, filepath.Join(logDir, "server-"+name+".log"),
		"-public-url", publicURL, "-redis-url", redisURL, "-pprof", "-pprof-addr", pprofAddr,
		"-sessions-per-minute", "1e9", "-upgrades-per-minute", "1e9", "-ws-per-addr", "1000000000", "-conns-per-addr", "1000000000")
	return &soakServer{instance: in, pprofURL: "http://" + pprofAddr}
}

// start runs the instance (again) and waits until it is ready; it notes
// its idle figures.
func (s *soakServer) start(ctx context.Context) {
	t := s.t
	t.Helper()
	s.instance.start(ctx)
	// Right after a restart the first scrape competes with every client's
	// reconnection (and, in make test, the race detector): each try has
	// scrapeFigures's 3 s, the whole 20 s.
	rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	var f serverFigures
	err := testkit.Poll(rctx, 100*time.Millisecond, func() (err error) {
		f, err = scrapeFigures(rctx, s.url)
		return err
	})
	if err != nil {
		t.Fatalf("instance %s: /metrics: %v", s.name, err)
	}
	s.idle = f
}

// serverFigures are what /metrics says about a server process.
type serverFigures struct {
	goroutines, conns float64
	rss               uint64
}

func (f serverFigures) String() string {
	return fmt.Sprintf("{goroutines %.0f, connections %.0f, RSS %s}", f.goroutines, f.conns, mib(f.rss))
}

// scrapeFigures reads an instance's /metrics.
func scrapeFigures(ctx context.Context, base string) (serverFigures, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
	if err != nil {
		return serverFigures{}, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return serverFigures{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return serverFigures{}, fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	vals := map[string]float64{}
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 4<<20))
	sc.Buffer(make([]byte, 64<<10), 64<<10)
	for sc.Scan() {
		name, v, ok := strings.Cut(sc.Text(), " ")
		if !ok || strings.HasPrefix(name, "#") || strings.Contains(name, "{") {
			continue
		}
		if f, err := strconv.ParseFloat(v, 64); err == nil {
			vals[name] = f
		}
	}
	if err := sc.Err(); err != nil {
		return serverFigures{}, err
	}
	for _, k := range []string{"go_goroutines", "virtutune_connections", "process_resident_memory_bytes"} {
		if _, ok := vals[k]; !ok {
			return serverFigures{}, fmt.Errorf("/metrics has no %s", k)
		}
	}
	return serverFigures{goroutines: vals["go_goroutines"], conns: vals["virtutune_connections"],
		rss: uint64(vals["process_resident_memory_bytes"])}, nil
}

// ---- faults ----

// faultCounts counts the faults injected, by kind.
type faultCounts struct {
	dcTried, dcDropped atomic.Int64 // data channel drops tried; those that found a peer connection
	wsTried, wsCut     atomic.Int64 // WebSocket cuts tried; those that found a connection
	redis              atomic.Int64 // Redis killed and restarted
	instance           atomic.Int64 // an instance killed and started again
}

func (f *faultCounts) String() string {
	return fmt.Sprintf("data channels dropped %d (of %d tries), WebSockets cut %d (of %d tries), Redis restarts %d, instance kills %d",
		f.dcDropped.Load(), f.dcTried.Load(), f.wsCut.Load(), f.wsTried.Load(), f.redis.Load(), f.instance.Load())
}

// lightFaults drops a random data channel or cuts a random WebSocket at
// random moments (mean soakLightFaultEvery apart) until ctx is done.
func lightFaults(ctx context.Context, rng *rand.Rand, sess []*soakSession, n *faultCounts) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		timer.Reset(time.Duration(rng.ExpFloat64() * float64(soakLightFaultEvery)))
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		s := sess[rng.IntN(len(sess))]
		m, other := s.pc, s.phone
		if rng.IntN(2) == 1 {
			m, other = other, m
		}
		if rng.IntN(2) == 0 {
			n.dcTried.Add(1)
			if m.c.DropDirect(other.id) {
				n.dcDropped.Add(1)
			}
		} else {
			n.wsTried.Add(1)
			if m.c.DropWebSocket() {
				n.wsCut.Add(1)
			}
		}
	}
}

// outage is a heavy fault: Redis down (from the kill until both instances
// were ready again) or an instance down (from the kill until it was ready).
type outage struct {
	kind     string
	from, to time.Time
	detail   string
}

func (o outage) String() string {
	return fmt.Sprintf("%s for %v (%s)", o.kind, o.to.Sub(o.from).Round(time.Millisecond), o.detail)
}

// heavyFaults runs on the test goroutine until the traffic ends: after a
// random pause, alternately, Redis is killed and restarted after a random
// outage, or a random instance is killed and started again on its port after
// a random while. Each is recovered (every instance ready) before the next.
// It returns the Redis outages and the instance downtimes.
func heavyFaults(ctx context.Context, t *testing.T, rng *rand.Rand, rd *redistest.Server, servers []*soakServer,
	start, end time.Time, n *faultCounts) []outage {
	t.Helper()
	var outs []outage
	redisNext := rng.IntN(2) == 0
	for {
		pause := time.Duration(float64(5*time.Second) * (1 + rng.Float64()))
		down := time.Duration(float64(time.Second) * (0.5 + 2*rng.Float64()))
		// Leave room for the recovery before the traffic ends.
		if time.Now().Add(pause + down + 5*time.Second).After(end) {
			return outs
		}
		if !waitUntil(ctx, time.Now().Add(pause)) {
			return outs
		}
		if redisNext {
			from := time.Now()
			if err := rd.Kill(); err != nil {
				t.Fatal(err)
			}
			waitUntil(ctx, time.Now().Add(down))
			loading, aof := restartRedis(ctx, t, rd)
			// Redis answers PING with LOADING until it has read its
			// append-only files back; the instances report degraded until
			// then (43 s for 9.9 MiB on a slow 2-vCPU host under the
			// soak's load, in a run that passed).
			rctx, cancel := context.WithTimeout(ctx, 90*time.Second)
			for _, s := range servers {
				waitReadyz(rctx, t, "ok", http.StatusOK, s.instance)
			}
			cancel()
			n.redis.Add(1)
			outs = append(outs, outage{kind: "redis", from: from, to: time.Now(),
				detail: fmt.Sprintf("SIGKILL at +%v, restarted after %v, answered PING %v later (append-only files %s)",
					from.Sub(start).Round(time.Millisecond), down.Round(time.Millisecond), loading.Round(time.Millisecond), mib(aof))})
		} else {
			s := servers[rng.IntN(len(servers))]
			from := time.Now()
			s.kill()
			waitUntil(ctx, time.Now().Add(down))
			s.start(ctx)
			n.instance.Add(1)
			outs = append(outs, outage{kind: "instance " + s.name, from: from, to: time.Now(),
				detail: fmt.Sprintf("SIGKILL at +%v, started again on %s after %v", from.Sub(start).Round(time.Millisecond), s.addr, down.Round(time.Millisecond))})
		}
		redisNext = !redisNext
	}
}

// restartRedis starts the killed Redis again on its port and directory and
// waits until it answers PING (it first loads its append-only files). It
// returns how long that took and the size of those files.
func restartRedis(ctx context.Context, t *testing.T, rd *redistest.Server) (time.Duration, uint64) {
	t.Helper()
	var aof uint64
	_ = filepath.WalkDir(rd.Dir, func(path string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.Contains(path, "appendonly") {
			if fi, err := d.Info(); err == nil {
				aof += uint64(fi.Size())
			}
		}
		return nil
	})
	from := time.Now()
	rctx, cancel := context.WithTimeout(ctx, 120*time.Second)
	defer cancel()
	if err := rd.Restart(rctx); err != nil {
		t.Fatalf("redis-server did not come back within %v (append-only files %s): %v",
			time.Since(from).Round(time.Millisecond), mib(aof), err)
	}
	return time.Since(from), aof
}

// ---- sessions and members ----

// soakSession is a PC and a phone of one session.
type soakSession struct {
	id        string
	pc, phone *soakMember
}

// soakMember is one Go peer with what it sent and what it received.
type soakMember struct {
	id string
	c  *peer.Client
	rx *soakRx

	mu   sync.Mutex
	snd  *peertest.Sender // its chords, once sendLoop started them
	err  error            // what ended them before the end of sending
	stop context.CancelFunc
	done chan struct{}
}

// joinSoakSession creates session i through nginx, joins its PC, pairs and
// joins its phone (each through nginx, wherever it lands), and starts
// recording what each receives from the other.
func joinSoakSession(ctx context.Context, log *slog.Logger, ngURL string, i int) (*soakSession, error) {
	info, err := peer.CreateSession(ctx, ngURL, "")
	if err != nil {
		return nil, err
	}
	s := &soakSession{id: info.SessionID}
	// Each one's client id is the one the server binds to its token.
	pc, err := dialSoak(ctx, log, protocol.RolePC, fmt.Sprintf("soak%03d-pc", i), info.SessionID, info.Token, ngURL, "")
	if err != nil {
		return nil, fmt.Errorf("session %d: PC: %w", i, err)
	}
	ph, err := peer.Pair(ctx, info.PairingURL)
	if err != nil {
		pc.Close()
		return nil, fmt.Errorf("session %d: pair: %w", i, err)
	}
	phone, err := dialSoak(ctx, log, protocol.RolePhone, fmt.Sprintf("soak%03d-phone", i), info.SessionID, ph.Token, "", ph.WSURL)
	if err != nil {
		pc.Close()
		return nil, fmt.Errorf("session %d: phone: %w", i, err)
	}
	s.pc = newSoakMember(pc, phone.ClientID())
	s.phone = newSoakMember(phone, pc.ClientID())
	return s, nil
}

func dialSoak(ctx context.Context, log *slog.Logger, role, name, sid, token, serverURL, wsURL string) (*peer.Client, error) {
	cfg := peer.Config{
		ServerURL: serverURL, WSURL: wsURL, SessionID: sid, Token: token,
		Role: role, LoopbackOnly: true,
		Logger:         log.With("member", name),
		BackoffMin:     50 * time.Millisecond,
		BackoffMax:     500 * time.Millisecond,
		PingInterval:   time.Second,
		ConnectTimeout: 8 * time.Second,
		SettingEngine: func(se *webrtc.SettingEngine) {
			se.SetICETimeouts(3*time.Second, 5*time.Second, 500*time.Millisecond)
		},
	}
	dctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	return peer.Dial(dctx, cfg)
}

func newSoakMember(c *peer.Client, from string) *soakMember {
	ctx, cancel := context.WithCancel(context.Background())
	m := &soakMember{id: c.ClientID(), c: c, rx: &soakRx{from: from, next: 1, paths: map[string]int{}, errors: map[string]int{}},
		stop: cancel, done: make(chan struct{})}
	go func() {
		defer close(m.done)
		m.rx.run(ctx, c)
	}()
	return m
}

// close closes the client and stops its recorder.
func (m *soakMember) close() {
	if m == nil {
		return
	}
	m.c.Close()
	m.stop()
	<-m.done
}

func (s *soakSession) close() {
	if s == nil {
		return
	}
	s.pc.close()
	s.phone.close()
}

// complete: each member has every chord the other sent, and neither keeps
// an unconfirmed one.
func (s *soakSession) complete() bool {
	return s.pc.rx.count() >= s.phone.sent() && s.phone.rx.count() >= s.pc.sent() &&
		s.pc.c.Stats().Unconfirmed == 0 && s.phone.c.Stats().Unconfirmed == 0
}

func countP2P(sess []*soakSession) int {
	n := 0
	for _, s := range sess {
		if s.pc.c.PathTo(s.phone.id) == protocol.PathP2P && s.phone.c.PathTo(s.pc.id) == protocol.PathP2P {
			n++
		}
	}
	return n
}

// sendLoop plays peertest.ChordFor(1, 2, ...) every period after a first
// delay (peertest.Play), until ctx is done.
func (m *soakMember) sendLoop(ctx context.Context, wg *sync.WaitGroup, first, period time.Duration) {
	defer wg.Done()
	if !waitUntil(ctx, time.Now().Add(first)) {
		return
	}
	snd := peertest.Play(ctx, m.c, period)
	m.mu.Lock()
	m.snd = snd
	m.mu.Unlock()
	select {
	case <-ctx.Done():
	case <-snd.Done():
	}
	snd.Stop()
	<-snd.Done()
	if err := snd.Err(); err != nil && ctx.Err() == nil {
		m.mu.Lock()
		m.err = err
		m.mu.Unlock()
	}
}

// sender is m's player, nil before it started.
func (m *soakMember) sender() *peertest.Sender {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.snd
}

func (m *soakMember) sent() int {
	if s := m.sender(); s != nil {
		return s.Count()
	}
	return 0
}

// sendErr is what ended m's chords before the end of sending.
func (m *soakMember) sendErr() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.err
}

// sentTime returns when chord seq was sent.
func (m *soakMember) sentTime(seq int) time.Time {
	if s := m.sender(); s != nil {
		return s.SentAt(seq)
	}
	return time.Time{}
}

// soakRx checks, as they arrive, the chords a member receives from the
// other member of its session: seq 1, 2, 3, ... each once, carrying
// peertest.ChordFor(seq). It keeps counts, not the deliveries.
type soakRx struct {
	mu     sync.Mutex
	from   string
	next   uint64 // the seq expected next
	got    int    // delivered in order
	dups   int    // a seq delivered again
	gaps   int    // a seq delivered before an earlier one
	wrong  int    // the wrong chord for its seq
	paths  map[string]int
	errors map[string]int // error deliveries by code
	issues []string       // the first few problems, described
	lastAt time.Time
}

func (r *soakRx) run(ctx context.Context, c *peer.Client) {
	for {
		d, err := c.Recv(ctx)
		if err != nil {
			return
		}
		r.mu.Lock()
		switch {
		case d.Msg.Type == protocol.TypeChordChange:
			r.chordLocked(d)
		case d.Msg.Type == protocol.TypeError:
			var e struct {
				Code string `json:"code"`
			}
			_ = json.Unmarshal(d.Msg.Data, &e)
			r.errors[e.Code]++
		}
		r.mu.Unlock()
	}
}

func (r *soakRx) chordLocked(d peer.Delivery) {
	issue := func(format string, a ...any) {
		if len(r.issues) < 5 {
			r.issues = append(r.issues, fmt.Sprintf(format, a...))
		}
	}
	if d.Msg.From != r.from {
		issue("a chord from %q, not the session's other member", d.Msg.From)
		return
	}
	seq := d.Msg.Seq
	switch {
	case seq < r.next:
		r.dups++
		issue("seq %d delivered again (next expected %d)", seq, r.next)
		return
	case seq > r.next:
		r.gaps++
		issue("seq %d delivered while %d..%d were not (reordered or lost)", seq, r.next, seq-1)
	}
	var cc protocol.ChordChange
	if err := json.Unmarshal(d.Msg.Data, &cc); err != nil || cc.Chord != peertest.ChordFor(int(seq)) {
		r.wrong++
		issue("seq %d carries %q, want %q", seq, cc.Chord, peertest.ChordFor(int(seq)))
	}
	r.next = seq + 1
	r.got++
	r.paths[d.Path]++
	r.lastAt = d.At
}

func (r *soakRx) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.got
}

// soakRxSnapshot is a copy of a soakRx's counts.
type soakRxSnapshot struct {
	next            uint64
	got, dups, gaps int
	wrong           int
	paths, errors   map[string]int
	issues          []string
	lastAt          time.Time
}

func (r *soakRx) snapshot() soakRxSnapshot {
	r.mu.Lock()
	defer r.mu.Unlock()
	return soakRxSnapshot{next: r.next, got: r.got, dups: r.dups, gaps: r.gaps, wrong: r.wrong,
		paths: maps(r.paths), errors: maps(r.errors), issues: slices.Clone(r.issues), lastAt: r.lastAt}
}

func maps(m map[string]int) map[string]int {
	out := make(map[string]int, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// explainMissing describes the chords from sent n that to has not
// received, and says whether RedisBroker's outage rule explains them: a
// chord sent while Redis was down is delivered on its sender's instance only
// and answered unavailable; it stays in the sender's outbox (unconfirmed)
// until it is resent after the recovery. So a missing chord is explained
// only if it was sent during an outage and the sender still holds it.
func explainMissing(from, to *soakMember, rx soakRxSnapshot, n int, outs []outage) (string, bool) {
	firstMissing := int(rx.next)
	st := from.c.Stats()
	held := n - st.Unconfirmed // seqs above this are still in the sender's outbox
	explained := true
	var during, after int
	for seq := firstMissing; seq <= n; seq++ {
		at := from.sentTime(seq)
		inOutage := false
		for _, o := range outs {
			if o.kind == "redis" && !at.Before(o.from) && !at.After(o.to) {
				inOutage = true
			}
		}
		if inOutage {
			during++
		} else {
			after++
		}
		if !inOutage || seq <= held {
			explained = false
		}
	}
	why := "NOT explained by the outage rule: "
	switch {
	case explained:
		why = "explained by the outage rule: sent while Redis was down and still in the sender's outbox (delayed, not lost)"
	case st.OutboxDropped > 0:
		why += fmt.Sprintf("the sender dropped %d from a full outbox", st.OutboxDropped)
	case held >= n:
		why += "the server confirmed them to the sender (they are in Redis) but they never reached the receiver"
	default:
		why += "sent outside any Redis outage, yet still unconfirmed"
	}
	rs := to.rx.snapshot()
	return fmt.Sprintf("%s -> %s: seqs %d..%d of %d (%d sent during a Redis outage, %d outside); sender %s on %q, unconfirmed %d, reconnects %d, unavailable errors %d; "+
		"receiver %s on %q, last delivery %v ago, path to sender %s: %s",
		from.id, to.id, firstMissing, n, n, during, after, from.c.State(), instanceOf(from.c), st.Unconfirmed, st.Reconnects,
		from.rx.snapshot().errors[string(protocol.CodeUnavailable)], to.c.State(), instanceOf(to.c),
		time.Since(rs.lastAt).Round(time.Millisecond), to.c.PathTo(from.id), why), explained
}

// ---- helpers ----

// forEach runs f(0..n-1) on at most par goroutines and returns the first error.
func forEach(ctx context.Context, n, par int, f func(context.Context, int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
		next  atomic.Int64
	)
	for range min(par, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				if err := f(ctx, i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
					cancel()
					return
				}
			}
		}()
	}
	wg.Wait()
	return first
}

// waitUntil blocks until the moment at (a point of the fault schedule, not
// a synchronisation) or ctx is done; it reports whether at was reached.
func waitUntil(ctx context.Context, at time.Time) bool {
	d := time.Until(at)
	if d <= 0 {
		return ctx.Err() == nil
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// settledRuntime returns this process's goroutines and live heap after a
// full garbage collection, once idle HTTP connections are closed.
func settledRuntime() (int, uint64) {
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return runtime.NumGoroutine(), ms.HeapAlloc
}

func mib(b uint64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// soakLogger logs the peers' errors to t.Logf (Debug with
// VIRTUTUNE_TEST_DEBUG): under faults, warnings are expected by the hundred.
func soakLogger(t *testing.T) *slog.Logger { return testkit.Logger(t, slog.LevelError) }
