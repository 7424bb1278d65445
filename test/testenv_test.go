package test

// The test environment of the multi-instance tests: the server binary built
// once, child processes (proc), server instances (instance) on free ports of
// 127.0.0.1, real redis-server processes (signaling/redistest), Go peers, and
// recorders that count what every peer receives. Every child process is
// killed at the test's cleanup (and, should the test binary die, by the
// kernel: Pdeathsig). Polling and tool lookups are internal/testkit's.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"
	"go.uber.org/goleak"

	"github.com/virtutune/link/internal/testkit"
	"github.com/virtutune/link/peer"
	"github.com/virtutune/link/protocol"
	"github.com/virtutune/link/signaling/redistest"
)

// testSecret is the token secret every instance of a test shares.
const testSecret = "virtutune-integration-test-secret-0123456789"

// serverBin is the virtutune-server binary TestMain built (with -race when
// the tests run with it), or buildErr why it could not.
var (
	serverBin string
	buildErr  error
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "virtutune-server-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	serverBin, buildErr = buildServer(dir)
	code := m.Run()
	_ = os.RemoveAll(dir)
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	if code == 0 {
		if err := goleak.Find(goleakOptions()...); err != nil {
			fmt.Fprintln(os.Stderr, "goleak: goroutines left after the tests:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// goleakOptions ignore what outlives a test by design: the HTTP client's idle
// connections (closed at the end) and pion's package-level goroutines.
func goleakOptions() []goleak.Option {
	return []goleak.Option{
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
	}
}

// buildServer builds cmd/virtutune-server into dir with `go build` (go test
// puts its own go command first on PATH).
func buildServer(dir string) (string, error) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("no go command to build the server: %w", err)
	}
	bin := filepath.Join(dir, "virtutune-server")
	args := []string{"build", "-o", bin}
	if raceEnabled {
		args = append(args, "-race")
	}
	cmd := exec.Command(gobin, append(args, "github.com/virtutune/link/cmd/virtutune-server")...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out.Bytes())
	}
	return bin, nil
}

// describe tells what a client received from each sender and its counters.
func describe(name string, c *peer.Client, r *recorder) func() string {
	return func() string {
		r.mu.Lock()
		counts := map[string]string{}
		for from, ds := range r.byID {
			var last uint64
			if len(ds) > 0 {
				last = ds[len(ds)-1].Msg.Seq
			}
			counts[from] = fmt.Sprintf("%d (last seq %d)", len(ds), last)
		}
		r.mu.Unlock()
		return fmt.Sprintf("%s %s: state %s, received %v, errors %v, stats %+v", name, c.ClientID(), c.State(), counts, r.errorCodes(), c.Stats())
	}
}

// ---- child processes ----

// proc is a child process of the test with its output in a log file.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error // Wait's result, once done is closed
}

// startProc starts argv with output to logPath, in a process group of its
// own; the process dies with the test binary (Pdeathsig), and its group
// (nginx's workers included) is killed at t's cleanup.
func startProc(t testing.TB, name, logPath string, argv ...string) *proc {
	t.Helper()
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = childEnv()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		_ = f.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		_ = f.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.kill(t)
		if t.Failed() {
			p.dumpLog(t, 60)
		}
	})
	return p
}

// childEnv is the environment without the server's own variables, so that
// a developer's settings cannot change what the tests run.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "VIRTUTUNE_") || strings.HasPrefix(kv, "REDIS_URL=") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// kill sends SIGKILL (a crash) to the process and its group, and waits for
// the process.
func (p *proc) kill(t testing.TB) {
	t.Helper()
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL) // the group: nginx's workers too
	if p.exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		t.Errorf("%s (pid %d) did not die after SIGKILL", p.name, p.cmd.Process.Pid)
	}
}

// dumpLog logs the last n lines of the process's output.
func (p *proc) dumpLog(t testing.TB, n int) {
	b, err := os.ReadFile(p.log)
	if err != nil {
		return
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	t.Logf("---- last lines of %s (%s) ----\n%s", p.name, p.log, strings.Join(lines, "\n"))
}

// ---- Redis ----

// startRedis starts a redis-server for the test (signaling/redistest).
// Persistent ones write an append-only file with fsync on every write, so a
// SIGKILL loses nothing: production Redis needs persistence (AOF) for
// sessions to survive a restart, as the original's deployment notes say.
func startRedis(t testing.TB, persistent bool) *redistest.Server {
	t.Helper()
	if persistent {
		return redistest.New(t, "--appendonly", "yes", "--appendfsync", "always")
	}
	return redistest.New(t)
}

// ---- server instances ----

// instance is a virtutune-server child process on a port of its own; it can
// be killed and started again on the same port.
type instance struct {
	t       testing.TB
	name    string
	addr    string // 127.0.0.1:port
	url     string // http://127.0.0.1:port (https:// when it serves TLS)
	argv    []string
	logPath string
	// client asks /readyz (nil: http.DefaultClient).
	client *http.Client
	p      *proc
	starts int
}

// newInstance prepares instance name on a free port, with the tests' secret,
// a data directory of its own (kept across its restarts) and args, logging
// to logPath; start runs it.
func newInstance(t testing.TB, name, logPath string, args ...string) *instance {
	t.Helper()
	if buildErr != nil {
		t.Fatalf("building virtutune-server: %v", buildErr)
	}
	in := &instance{t: t, name: name, addr: fmt.Sprintf("127.0.0.1:%d", testkit.Port(t)), logPath: logPath}
	in.url = "http://" + in.addr
	in.argv = append([]string{serverBin, "-addr", in.addr, "-secret", testSecret, "-instance", name, "-log-level", "info",
		"-data-dir", filepath.Join(t.TempDir(), "data-"+name)}, args...)
	return in
}

// start runs the instance (again: the same port and arguments) and waits
// until it answers /readyz with 200.
func (in *instance) start(ctx context.Context) {
	t := in.t
	t.Helper()
	in.p = startProc(t, "instance "+in.name, in.logPath, in.argv...)
	in.starts++
	client := in.client
	if client == nil {
		client = http.DefaultClient
	}
	rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	testkit.Eventually(rctx, t, "instance "+in.name+" to be ready", func() bool {
		if in.p.exited() {
			in.p.dumpLog(t, 30)
			t.Fatalf("instance %s exited at start: %v", in.name, in.p.err)
		}
		st, _ := getStatusWith(rctx, client, in.url+"/readyz")
		return st == http.StatusOK
	})
}

// startInstance runs instance name with the Redis at redisURL ("" for the
// memory broker). publicURL is the base of the links it builds ("" means its
// own URL). Rate limits are raised so that tests can send in bursts.
func startInstance(t testing.TB, name, redisURL, publicURL string, extra ...string) *instance {
	t.Helper()
	in := newInstance(t, name, filepath.Join(t.TempDir(), "server-"+name+".log"))
	if publicURL == "" {
		publicURL = in.url
	}
	in.argv = append(in.argv, "-public-url", publicURL, "-rate", "100000", "-burst", "100000")
	if redisURL != "" {
		in.argv = append(in.argv, "-redis-url", redisURL)
	}
	in.argv = append(in.argv, extra...)
	in.start(context.Background())
	return in
}

// twoInstances starts a Redis (persistent: see startRedis) and instances A
// and B sharing it, each with publicURL as the base of its links ("": its
// own URL).
func twoInstances(t testing.TB, persistent bool, publicURL string) (rd *redistest.Server, a, b *instance) {
	t.Helper()
	rd = startRedis(t, persistent)
	return rd, startInstance(t, "A", rd.URL(), publicURL), startInstance(t, "B", rd.URL(), publicURL)
}

// waitReadyz waits until the /readyz of every instance answers code with
// status ("ok", "degraded").
func waitReadyz(ctx context.Context, t testing.TB, status string, code int, ins ...*instance) {
	t.Helper()
	for _, in := range ins {
		testkit.Eventually(ctx, t, "instance "+in.name+" to report "+status, func() bool {
			st, c := readyStatus(ctx, in.url)
			return st == status && c == code
		})
	}
}

// kill crashes the instance (SIGKILL): no close frames, no goodbyes.
func (in *instance) kill() { in.p.kill(in.t) }

// terminate sends SIGTERM and returns how long the process took to exit and
// its exit code; it fails the test if it does not exit within limit.
func (in *instance) terminate(limit time.Duration) (time.Duration, int) {
	t := in.t
	t.Helper()
	start := time.Now()
	if err := in.p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM %s: %v", in.name, err)
	}
	select {
	case <-in.p.done:
	case <-time.After(limit):
		t.Fatalf("instance %s did not exit within %v of SIGTERM", in.name, limit)
	}
	code := 0
	var ee *exec.ExitError
	if errors.As(in.p.err, &ee) {
		code = ee.ExitCode()
	} else if in.p.err != nil {
		code = -1
	}
	return time.Since(start), code
}

// logContains reports whether the instance's output holds s.
func (in *instance) logContains(s string) bool {
	b, _ := os.ReadFile(in.p.log)
	return bytes.Contains(b, []byte(s))
}

// getStatus GETs u and returns the status code and body.
func getStatus(ctx context.Context, u string) (int, string) {
	return getStatusWith(ctx, http.DefaultClient, u)
}

// getStatusWith is getStatus with client.
func getStatusWith(ctx context.Context, client *http.Client, u string) (int, string) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, err.Error()
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, string(b)
}

// readyStatus returns the status word of /readyz ("ok", "degraded", ...) and its HTTP status.
func readyStatus(ctx context.Context, base string) (string, int) {
	code, body := getStatus(ctx, base+"/readyz")
	var v struct {
		Status string `json:"status"`
	}
	_ = json.Unmarshal([]byte(body), &v)
	return v.Status, code
}

// ---- peers ----

// peerConfig is a Go peer's configuration for tests: loopback only, quick
// reconnects and pings. relayOnly keeps every message on the WebSocket, so
// that the data channel cannot hide what the servers lose.
func peerConfig(log *slog.Logger, role string, relayOnly bool) peer.Config {
	return peer.Config{
		Role:           role,
		LoopbackOnly:   true,
		DisableP2P:     relayOnly,
		Logger:         log.With("side", role),
		BackoffMin:     20 * time.Millisecond,
		BackoffMax:     200 * time.Millisecond,
		PingInterval:   200 * time.Millisecond,
		ConnectTimeout: 5 * time.Second,
		SettingEngine: func(se *webrtc.SettingEngine) {
			se.SetICETimeouts(2*time.Second, 3*time.Second, 200*time.Millisecond)
		},
	}
}

// dialPeer dials a Go peer with cfg completed by the server URL and token;
// it is closed at t's cleanup.
func dialPeer(ctx context.Context, t testing.TB, cfg peer.Config, serverURL, sid, token string) *peer.Client {
	t.Helper()
	cfg.ServerURL, cfg.SessionID, cfg.Token = serverURL, sid, token
	c, err := peer.Dial(ctx, cfg)
	if err != nil {
		t.Fatalf("dial %s as %s: %v", serverURL, cfg.Role, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// createSession creates a session at base, as the PC page does.
func createSession(ctx context.Context, t testing.TB, base string) peer.SessionInfo {
	t.Helper()
	info, err := peer.CreateSession(ctx, base, "")
	if err != nil {
		t.Fatalf("create a session at %s: %v", base, err)
	}
	return info
}

// joinPCAndPhone dials the session's PC at pcURL, then pairs its phone with
// the session's pairing link and dials it at phoneURL, recording what each
// receives (the PC from before the phone joins).
func joinPCAndPhone(ctx context.Context, t testing.TB, log *slog.Logger, info peer.SessionInfo, pcURL, phoneURL string,
	relayOnly bool) (pc, phone *peer.Client, atPC, atPhone *recorder) {
	t.Helper()
	pc = dialPeer(ctx, t, peerConfig(log, protocol.RolePC, relayOnly), pcURL, info.SessionID, info.Token)
	atPC = record(t, pc)
	ph := pairPhone(ctx, t, info.PairingURL)
	phone = dialPeer(ctx, t, peerConfig(log, protocol.RolePhone, relayOnly), phoneURL, info.SessionID, ph.Token)
	return pc, phone, atPC, record(t, phone)
}

// pairPhone trades a pairing link for a phone token.
func pairPhone(ctx context.Context, t testing.TB, pairingURL string) peer.SessionInfo {
	t.Helper()
	ph, err := peer.Pair(ctx, pairingURL)
	if err != nil {
		t.Fatalf("pair: %v", err)
	}
	return ph
}

// newPairing asks base for a fresh pairing link of the session (PC token).
func newPairing(ctx context.Context, t testing.TB, base string, info peer.SessionInfo) string {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/api/sessions/"+info.SessionID+"/pairing", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+info.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var v struct {
		PairingURL string `json:"pairing_url"`
	}
	if resp.StatusCode != http.StatusCreated || json.NewDecoder(resp.Body).Decode(&v) != nil {
		t.Fatalf("new pairing link: HTTP %d", resp.StatusCode)
	}
	return v.PairingURL
}

// instanceOf returns the instance a client is connected to, as the session
// state it got at its (last) join says.
func instanceOf(c *peer.Client) string {
	for _, m := range c.SessionState().Members {
		if m.ClientID == c.ClientID() {
			return m.Instance
		}
	}
	return ""
}

// ---- counting what arrives ----

var chords = []string{"C", "G", "Am", "F", "D", "E", "Em", "A", "Dm7", "G/B", "Cmaj7", "Bb"}

// chordFor is the chord a test sends as its i-th chord (from 1).
func chordFor(i int) string { return chords[(i-1)%len(chords)] }

// recorder reads every delivery of a client in a goroutine (stopped at t's
// cleanup) and keeps them, with the chord changes by sender.
type recorder struct {
	c    *peer.Client
	mu   sync.Mutex
	all  []peer.Delivery
	byID map[string][]peer.Delivery // chord_change by sender
	done chan struct{}
}

func record(t testing.TB, c *peer.Client) *recorder {
	ctx, cancel := context.WithCancel(context.Background())
	r := &recorder{c: c, byID: map[string][]peer.Delivery{}, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		for {
			d, err := c.Recv(ctx)
			if err != nil {
				return
			}
			r.mu.Lock()
			r.all = append(r.all, d)
			if d.Msg.Type == protocol.TypeChordChange {
				r.byID[d.Msg.From] = append(r.byID[d.Msg.From], d)
			}
			r.mu.Unlock()
		}
	}()
	t.Cleanup(func() { cancel(); <-r.done })
	return r
}

// chordsFrom returns the chord changes received from client id from.
func (r *recorder) chordsFrom(from string) []peer.Delivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]peer.Delivery(nil), r.byID[from]...)
}

func (r *recorder) countFrom(from string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.byID[from])
}

// matching returns the deliveries for which f holds.
func (r *recorder) matching(f func(peer.Delivery) bool) []peer.Delivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []peer.Delivery
	for _, d := range r.all {
		if f(d) {
			out = append(out, d)
		}
	}
	return out
}

// ofType returns the deliveries of type typ.
func (r *recorder) ofType(typ protocol.Type) []peer.Delivery {
	return r.matching(func(d peer.Delivery) bool { return d.Msg.Type == typ })
}

// errorCodes counts the error deliveries by code.
func (r *recorder) errorCodes() map[string]int {
	out := map[string]int{}
	for _, d := range r.ofType(protocol.TypeError) {
		var e struct {
			Code string `json:"code"`
		}
		_ = json.Unmarshal(d.Msg.Data, &e)
		out[e.Code]++
	}
	return out
}

// connUpdates returns the connection_update data received about client id.
func (r *recorder) connUpdates(id string) []protocol.ConnectionUpdate {
	var out []protocol.ConnectionUpdate
	for _, d := range r.ofType(protocol.TypeConnectionUpdate) {
		var cu protocol.ConnectionUpdate
		if json.Unmarshal(d.Msg.Data, &cu) == nil && cu.ClientID == id {
			out = append(out, cu)
		}
	}
	return out
}

// checkChords asserts that ds are exactly the chords chordFor(1..n) sent with
// the consecutive seqs first, first+1, ...: none lost, duplicated or
// reordered. It returns how many came by each path.
func checkChords(t testing.TB, name string, ds []peer.Delivery, first uint64, n int) map[string]int {
	t.Helper()
	if len(ds) != n {
		t.Fatalf("%s: %d chord changes received, want %d", name, len(ds), n)
	}
	paths := map[string]int{}
	for i, d := range ds {
		if want := first + uint64(i); d.Msg.Seq != want {
			t.Fatalf("%s: chord change #%d has seq %d, want %d (lost, duplicated or reordered)", name, i+1, d.Msg.Seq, want)
		}
		var cc protocol.ChordChange
		if err := json.Unmarshal(d.Msg.Data, &cc); err != nil || cc.Chord != chordFor(i+1) {
			t.Fatalf("%s: chord change #%d carries %q, want %q", name, i+1, cc.Chord, chordFor(i+1))
		}
		paths[d.Path]++
	}
	return paths
}

// sender sends the chords chordFor(1, 2, ...) from a goroutine, one every
// pace (0: as fast as Send returns), until it sent n or is stopped, and
// counts them.
type sender struct {
	mu       sync.Mutex
	sent     int
	done     chan struct{}
	stopCh   chan struct{}
	stopOnce sync.Once
	err      error
}

func startSender(ctx context.Context, c *peer.Client, n int, pace time.Duration) *sender {
	s := &sender{done: make(chan struct{}), stopCh: make(chan struct{})}
	go func() {
		defer close(s.done)
		var tick <-chan time.Time
		if pace > 0 {
			tk := time.NewTicker(pace)
			defer tk.Stop()
			tick = tk.C
		}
		for i := 1; i <= n; i++ {
			select {
			case <-s.stopCh:
				return
			default:
			}
			if tick != nil {
				select {
				case <-tick:
				case <-s.stopCh:
					return
				case <-ctx.Done():
					s.err = ctx.Err()
					return
				}
			}
			if err := c.SendChord(ctx, chordFor(i)); err != nil {
				s.err = err
				return
			}
			s.mu.Lock()
			s.sent++
			s.mu.Unlock()
		}
	}()
	return s
}

// stop makes the sender stop after the chord it is sending.
func (s *sender) stop() { s.stopOnce.Do(func() { close(s.stopCh) }) }

func (s *sender) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sent
}

// wait waits for the sender to finish and fails the test on its error.
func (s *sender) wait(ctx context.Context, t testing.TB, name string) {
	t.Helper()
	select {
	case <-s.done:
	case <-ctx.Done():
		t.Fatalf("%s: sender did not finish", name)
	}
	if s.err != nil {
		t.Fatalf("%s: send: %v", name, s.err)
	}
}

// settle waits until every client has no unconfirmed message (the server
// holds all it sent) and has flushed its WebSocket once more, so that
// anything still in flight (a duplicate, say) would have arrived.
func settle(ctx context.Context, t testing.TB, cs ...*peer.Client) {
	t.Helper()
	for _, c := range cs {
		testkit.Eventually(ctx, t, "the server to confirm every message of "+c.ClientID(), func() bool {
			if c.State() != peer.StateConnected {
				return false
			}
			fctx, cancel := context.WithTimeout(ctx, time.Second)
			defer cancel()
			return c.Flush(fctx) == nil && c.Stats().Unconfirmed == 0
		})
	}
	for _, c := range cs {
		if err := c.Flush(ctx); err != nil {
			t.Fatalf("flush %s: %v", c.ClientID(), err)
		}
	}
}
