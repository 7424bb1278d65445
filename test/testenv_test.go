package test

// The test environment of the multi-instance tests: the server binary built
// once, child processes (proc), server instances (instance) on free ports of
// 127.0.0.1, real redis-server processes (signaling/redistest), Go peers
// (their configuration, recorders and senders are internal/peertest's).
// Every child process is killed at the test's cleanup (and, should the test
// binary die, by the kernel: Pdeathsig). Polling and tool lookups are
// internal/testkit's.

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
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/virtutune/link/internal/peertest"
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
func describe(name string, c *peer.Client, r *peertest.Recorder) func() string {
	return func() string {
		return fmt.Sprintf("%s %s: state %s, received %v, errors %v, stats %+v", name, c.ClientID(), c.State(), r.PerSender(), r.ErrorCodes(), c.Stats())
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
	// A race-built instance restarted under the soak's load (its clients
	// reconnecting at once, Redis busy with their joins) reported ready 13 s
	// after its start on a slow 2-vCPU host with the machine to itself, and
	// not within 20 s with another load beside it: the bound is the test's
	// patience, not a figure of the server's.
	rctx, cancel := context.WithTimeout(ctx, 45*time.Second)
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

// peerConfig is a Go peer's configuration for tests (peertest.Config).
// relayOnly keeps every message on the WebSocket, so that the data channel
// cannot hide what the servers lose.
func peerConfig(log *slog.Logger, role string, relayOnly bool) peer.Config {
	cfg := peertest.Config(log, role)
	cfg.DisableP2P = relayOnly
	return cfg
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

// joinPCAndPhone dials the session's PC at instance pcOn, then pairs its
// phone with the session's pairing link and dials it at phoneOn, recording
// what each receives (the PC from before the phone joins); it checks that
// each is a member on the instance it dialled.
func joinPCAndPhone(ctx context.Context, t testing.TB, log *slog.Logger, info peer.SessionInfo, pcOn, phoneOn *instance,
	relayOnly bool) (pc, phone *peer.Client, atPC, atPhone *peertest.Recorder) {
	t.Helper()
	pc = dialPeer(ctx, t, peerConfig(log, protocol.RolePC, relayOnly), pcOn.url, info.SessionID, info.Token)
	atPC = peertest.RecordT(t, pc)
	ph := pairPhone(ctx, t, info.PairingURL)
	phone = dialPeer(ctx, t, peerConfig(log, protocol.RolePhone, relayOnly), phoneOn.url, info.SessionID, ph.Token)
	if instanceOf(pc) != pcOn.name || instanceOf(phone) != phoneOn.name {
		t.Fatalf("PC on %q, phone on %q; want %s and %s", instanceOf(pc), instanceOf(phone), pcOn.name, phoneOn.name)
	}
	return pc, phone, atPC, peertest.RecordT(t, phone)
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
//
// What a client receives is recorded by peertest.RecordT, chords are sent by
// peertest.StartSender and checked by peertest.CheckChords (internal/peertest,
// shared with package peer's tests).

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
