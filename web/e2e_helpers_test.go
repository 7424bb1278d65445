package web_test

// Helpers of the browser tests (e2e_test.go): the private network namespace,
// the server inside it, Chromium tabs, polling, diagnostics and screenshots.

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"image/png"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/target"
	"github.com/chromedp/chromedp"

	"github.com/virtutune/link/internal/testkit"
	"github.com/virtutune/link/peer"
	"github.com/virtutune/link/signaling"
	"github.com/virtutune/link/web"
)

const (
	// envNetns marks the test binary re-executed inside its own network namespace.
	envNetns = "VT_NETNS"
	// envScreenshots=1 writes the screenshots to web/screenshots/ (they are
	// always taken and checked; without it they are thrown away).
	envScreenshots = "VT_SCREENSHOTS"
	// envChromium overrides the Chromium binary.
	envChromium = "VT_CHROMIUM"

	// nsAddr is the address of the veth interface inside the namespace: the
	// one non-loopback interface Chromium needs to gather ICE candidates.
	nsAddr = "10.213.0.1"

	// childTimeout bounds the re-executed test binary as a whole.
	childTimeout = 4 * time.Minute
	// waitTimeout bounds one wait for a page to reach a state.
	waitTimeout = 30 * time.Second
	// pollEvery is how often a page condition is evaluated.
	pollEvery = 40 * time.Millisecond
)

var testSecret = []byte("0123456789abcdef0123456789abcdef-e2e-tests")

// chromiumPath returns the Chromium binary, or "".
func chromiumPath() string {
	if p := os.Getenv(envChromium); p != "" {
		if p, err := exec.LookPath(p); err == nil {
			return p
		}
		return ""
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// runInNetns re-executes this test binary under `unshare -n` so that the
// browser tests run in a fresh network namespace, and relays the result. It
// runs only TestBrowser (with the subtest part of -test.run, if any).
func runInNetns(t *testing.T) {
	chromium := chromiumPath()
	if chromium == "" {
		testkit.SkipOrFail(t, "browser tests need Chromium (apt-get install -y chromium, or set %s)", envChromium)
	}
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		testkit.SkipOrFail(t, "browser tests need unshare (util-linux) to make a private network namespace")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		testkit.SkipOrFail(t, "browser tests need ip (iproute2) to set up the private network namespace")
	}
	ctx, cancel := context.WithTimeout(context.Background(), childTimeout)
	defer cancel()
	if out, err := exec.CommandContext(ctx, unshare, "-n", "--", "true").CombinedOutput(); err != nil {
		testkit.SkipOrFail(t, "browser tests need a private network namespace, and `unshare -n` failed "+
			"(they need root or CAP_SYS_ADMIN): %v %s", err, bytes.TrimSpace(out))
	}

	pattern := "^TestBrowser$"
	if f := flagValue("test.run"); f != "" {
		if i := strings.Index(f, "/"); i >= 0 {
			pattern += f[i:]
		}
	}
	args := []string{"-n", "--", os.Args[0], "-test.run=" + pattern, "-test.v", "-test.count=1",
		"-test.timeout=" + (childTimeout - 15*time.Second).String()}
	cmd := exec.CommandContext(ctx, unshare, args...)
	cmd.Env = append(os.Environ(), envNetns+"=1", envChromium+"="+chromium)
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	out, err := cmd.CombinedOutput()
	t.Logf("browser tests ran in a private network namespace (%s):", time.Since(start).Round(time.Millisecond))
	if err != nil || testing.Verbose() {
		t.Logf("\n%s", indent(out))
	}
	switch {
	case err != nil:
		t.Fatalf("browser tests failed: %v", err)
	case bytes.Contains(out, []byte("--- SKIP: TestBrowser ")):
		t.Skip("skipped inside the namespace (see the log)")
	case !bytes.Contains(out, []byte("--- PASS: TestBrowser ")):
		t.Fatalf("the re-executed test binary ran no TestBrowser")
	}
}

func indent(b []byte) string {
	return "    " + strings.ReplaceAll(strings.TrimRight(string(b), "\n"), "\n", "\n    ")
}

// setupNetns brings up the namespace's network: lo, and a veth pair whose
// one end carries nsAddr and the default route, so Chromium sees a
// non-loopback interface. It refuses to touch a namespace that has any
// interface but lo (VT_NETNS=1 set by mistake outside unshare).
func setupNetns(t *testing.T) {
	ifaces, err := net.Interfaces() // netlink: this namespace's (unlike /sys/class/net)
	if err != nil {
		t.Fatalf("listing interfaces: %v", err)
	}
	for _, e := range ifaces {
		if e.Name != "lo" {
			t.Fatalf("%s=1 but this network namespace has interface %q: not a private namespace made by the test; refusing to change it", envNetns, e.Name)
		}
	}
	for _, args := range [][]string{
		{"link", "set", "lo", "up"},
		{"link", "add", "vt0", "type", "veth", "peer", "name", "vt1"},
		{"addr", "add", nsAddr + "/24", "dev", "vt0"},
		{"link", "set", "vt0", "up"},
		{"link", "set", "vt1", "up"},
		{"route", "add", "default", "dev", "vt0"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v %s", strings.Join(args, " "), err, out)
		}
	}
}

// lockedBuffer collects log lines from several goroutines; the test prints
// it only when it fails.
type lockedBuffer struct{ testkit.Buffer }

// Printf appends one line, with the time.
func (l *lockedBuffer) Printf(format string, args ...any) {
	fmt.Fprintf(l, time.Now().Format("15:04:05.000 ")+format+"\n", args...)
}

// dumpOnFailure logs buf at the end of the test if the test failed.
func dumpOnFailure(t *testing.T, name string, buf *lockedBuffer) {
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s:\n%s", name, indent([]byte(buf.String())))
		}
	})
}

// startServer serves signaling + web on nsAddr and returns its base URL,
// which is also Config.PublicURL (the host of the pairing links).
func startServer(t *testing.T, logs *lockedBuffer) string {
	ln, err := net.Listen("tcp", nsAddr+":0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	base := serve(t, ln, logs)
	res, err := http.Get(base + "/healthz")
	if err != nil {
		t.Fatalf("server not reachable at %s: %v", base, err)
	}
	_ = res.Body.Close()
	return base
}

// serve serves signaling + web on ln and returns its base URL, which is also
// Config.PublicURL.
func serve(t *testing.T, ln net.Listener, logs *lockedBuffer) string {
	base := "http://" + ln.Addr().String()
	srv, err := signaling.New(signaling.Config{
		Secret:    testSecret,
		Logger:    slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo})),
		Static:    web.Handler(),
		PublicURL: base,
	})
	if err != nil {
		t.Fatalf("signaling.New: %v", err)
	}
	hs := httptest.NewUnstartedServer(srv)
	_ = hs.Listener.Close()
	hs.Listener = ln
	hs.Start()
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Errorf("server close: %v", err)
		}
		hs.Close()
	})
	return base
}

// twoTabs starts a browser test: its context (testTimeout; the caller
// defers cancel), a PC tab and a phone-sized phone tab.
func twoTabs(t *testing.T) (ctx context.Context, cancel context.CancelFunc, pc, phone *tab) {
	ctx, cancel = context.WithTimeout(context.Background(), testTimeout)
	pc = newTab(t, ctx, "pc")
	phone = newTab(t, ctx, "phone")
	phone.emulate(phoneSize)
	return ctx, cancel, pc, phone
}

// dialGo dials a Go peer with the credentials of info in role, its logs
// under name; the caller closes it.
func dialGo(ctx context.Context, t *testing.T, info peer.SessionInfo, role, name string) *peer.Client {
	t.Helper()
	c, err := peer.Dial(ctx, peer.Config{
		ServerURL: info.ServerURL, SessionID: info.SessionID, Token: info.Token, Role: role,
		Logger: newSlog(goLogger(t, name)),
	})
	if err != nil {
		t.Fatalf("peer.Dial: %v", err)
	}
	return c
}

// tab is one page in its own Chromium process.
type tab struct {
	t    *testing.T
	name string
	ctx  context.Context
	logs *lockedBuffer
	// stop closes the browser and waits for it (idempotent).
	stop func()
}

// browserOpts are the options of every browser: the task's flags, a fresh
// profile, no sandbox (we run as root in a container).
func browserOpts(profile string) []chromedp.ExecAllocatorOption {
	opts := append([]chromedp.ExecAllocatorOption{}, chromedp.DefaultExecAllocatorOptions[:]...)
	return append(opts,
		chromedp.ExecPath(chromiumPath()),
		chromedp.UserDataDir(profile),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("autoplay-policy", "no-user-gesture-required"),
		chromedp.WindowSize(1366, 850),
		chromedp.WSURLReadTimeout(45*time.Second),
	)
}

// newTab starts a Chromium process for one page; cleanup closes it. The
// browser lives as long as parent (the test's bounded context).
// extra are more allocator options (impaired_e2e_test.go runs the browser
// in a host of an emulated LAN).
func newTab(t *testing.T, parent context.Context, name string, extra ...chromedp.ExecAllocatorOption) *tab {
	t.Helper()
	return newTabProfile(t, parent, name, t.TempDir(), extra...)
}

// newTabProfile is newTab with the browser profile in dir: a second browser
// on the same dir (after the first closed) is the same browser restarted.
func newTabProfile(t *testing.T, parent context.Context, name, dir string, extra ...chromedp.ExecAllocatorOption) *tab {
	t.Helper()
	logs := &lockedBuffer{}
	dumpOnFailure(t, name+" console", logs)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(parent, append(browserOpts(dir), extra...)...)
	ctx, cancelCtx := chromedp.NewContext(allocCtx,
		chromedp.WithErrorf(func(f string, a ...any) { logs.Printf("chromedp error: "+f, a...) }))
	// Start the browser and the tab without a timeout of their own.
	if err := chromedp.Do(ctx); err != nil {
		cancelCtx()
		cancelAlloc()
		t.Fatalf("%s: starting Chromium: %v", name, err)
	}
	var wg sync.WaitGroup
	msgs := chromedp.Console(ctx)
	wg.Go(func() {
		for m, err := range msgs {
			if err != nil {
				return
			}
			logs.Printf("%s: %s", m.Type, m.Text)
		}
	})
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancelCtx() // closes the browser and waits for it
			cancelAlloc()
			wg.Wait()
		})
	}
	t.Cleanup(stop)
	return &tab{t: t, name: name, ctx: ctx, logs: logs, stop: stop}
}

// closeTab closes the page's tab as a user does (the browser goes on).
func (b *tab) closeTab() {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, waitTimeout)
	defer cancel()
	id := chromedp.FromContext(b.ctx).Target.TargetID
	if _, err := chromedp.CallBrowser(ctx, target.CloseTarget, target.CloseTargetParams{TargetID: id}); err != nil {
		b.t.Fatalf("%s: closing the tab: %v", b.name, err)
	}
	b.logs.Printf("tab closed")
}

// closeBrowser closes the whole browser, as quitting it does.
func (b *tab) closeBrowser() { b.stop() }

// do runs actions with waitTimeout.
func (b *tab) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, waitTimeout)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.t.Fatalf("%s: %s: %v\n%s", b.name, what, err, b.state())
	}
}

// initScript runs js in every document this tab loads, before its scripts.
func (b *tab) initScript(js string) {
	b.t.Helper()
	b.do("adding an init script", chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		_, err := cdp.Call(ctx, t, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: js})
		return err
	}))
}

// open navigates to url and waits until the page's link is connected.
func (b *tab) open(url string) {
	b.t.Helper()
	b.logs.Printf("open %s", url)
	b.do("navigate", chromedp.Navigate(url))
	b.wait(`document.querySelector('#ws-state').dataset.state === 'open'`, "connected to the server")
}

// wait polls the JavaScript condition cond until it is true.
func (b *tab) wait(cond, what string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, waitTimeout+5*time.Second)
	defer cancel()
	start := time.Now()
	_, err := chromedp.Run(ctx, chromedp.Poll[bool]("!!("+cond+")",
		chromedp.WithPollingInterval(pollEvery), chromedp.WithPollingTimeout(waitTimeout)))
	if err != nil {
		b.t.Fatalf("%s: waiting %s for %s (%s): %v\n%s", b.name, time.Since(start).Round(time.Millisecond), what, cond, err, b.state())
	}
	b.logs.Printf("ok after %s: %s", time.Since(start).Round(time.Millisecond), what)
}

// eval evaluates a JavaScript expression and decodes its value into a T.
func eval[T any](b *tab, js string) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, waitTimeout)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](js))
	if err != nil {
		b.t.Fatalf("%s: evaluating %s: %v\n%s", b.name, js, err, b.state())
	}
	return v
}

// text returns the text content of the element with id.
func (b *tab) text(id string) string {
	b.t.Helper()
	return eval[string](b, `(document.getElementById(`+jsString(id)+`) || {}).textContent || ''`)
}

// stateJS reads what the tests look at, for failure messages.
const stateJS = `JSON.stringify((() => {
  const q = (id) => document.getElementById(id);
  const l = window.__vt && window.__vt.link;
  return {
    url: location.href,
    ws: q('ws-state') && q('ws-state').dataset.state,
    path: q('path') && q('path').dataset.path,
    chord: q('chord') && q('chord').textContent,
    chordMeta: q('chord-meta') && [q('chord-meta').textContent, q('chord-meta').dataset.path],
    practice: q('practice') && q('practice').dataset.status,
    error: q('error') && q('error').textContent,
    reason: q('p2p-reason') && q('p2p-reason').textContent,
    link: l ? l.linkState() : null,
    members: l ? l.memberList() : null,
  };
})())`

// state describes the page for a failure message. It never fails the test.
func (b *tab) state() string {
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](stateJS))
	if err != nil {
		return fmt.Sprintf("%s page state unavailable: %v", b.name, err)
	}
	return b.name + " page: " + s
}

func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// viewport is one screen size of the screenshots.
type viewport struct {
	name          string
	width, height int64
	scale         float64
	mobile        bool
}

var (
	phoneSize   = viewport{"phone", 390, 844, 2, true}
	desktopSize = viewport{"desktop", 1366, 850, 1, false}
)

// emulate sets the tab's viewport (and touch, for a phone).
func (b *tab) emulate(v viewport) {
	b.t.Helper()
	opts := []chromedp.EmulateViewportOption{chromedp.EmulateScale(v.scale)}
	if v.mobile {
		opts = append(opts, chromedp.EmulatePortrait, chromedp.EmulateMobile, chromedp.EmulateTouch)
	}
	b.do("emulating "+v.name, chromedp.EmulateViewport(v.width, v.height, opts...))
}

// screenshot captures the whole page at viewport v as a PNG, checks it, and
// writes it to screenshots/<name>-<v.name>.png when VT_SCREENSHOTS=1.
func (b *tab) screenshot(v viewport) {
	b.t.Helper()
	b.emulate(v)
	// Let the page lay out at the new size (two animation frames) and finish
	// its animations (the chord's flash).
	b.wait(`new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(() => r(true))))`, "layout at "+v.name+" size")
	b.wait(`document.getAnimations().every((a) => a.playState !== 'running')`, "animations to end")
	ctx, cancel := context.WithTimeout(b.ctx, waitTimeout)
	defer cancel()
	img, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Fatalf("%s: screenshot at %s size: %v", b.name, v.name, err)
	}
	cfg, err := png.DecodeConfig(bytes.NewReader(img))
	if err != nil {
		b.t.Fatalf("%s: screenshot at %s size is not a PNG: %v", b.name, v.name, err)
	}
	if want := int(float64(v.width) * v.scale); cfg.Width != want || cfg.Height < int(float64(v.height)*v.scale)/2 {
		b.t.Errorf("%s: screenshot at %s size is %dx%d, want %d wide", b.name, v.name, cfg.Width, cfg.Height, want)
	}
	if os.Getenv(envScreenshots) != "1" {
		return
	}
	if err := os.MkdirAll("screenshots", 0o755); err != nil {
		b.t.Fatal(err)
	}
	file := filepath.Join("screenshots", b.name+"-"+v.name+".png")
	if err := os.WriteFile(file, img, 0o644); err != nil {
		b.t.Fatal(err)
	}
	b.t.Logf("wrote web/%s (%dx%d)", file, cfg.Width, cfg.Height)
}

// pairedTabs starts a PC tab (at viewport pcSize unless it is nil) and a
// phone tab (phoneSize), opens the PC page at base and the pairing link it
// shows on the phone (with phoneQuery, if any, after it: "?nop2p=1"), and
// returns both once the phone page is connected.
func pairedTabs(t *testing.T, ctx context.Context, base string, pcSize *viewport, phoneQuery ...string) (pc, phone *tab) {
	t.Helper()
	pc = newTab(t, ctx, "pc")
	if pcSize != nil {
		pc.emulate(*pcSize)
	}
	phone = newTab(t, ctx, "phone")
	phone.emulate(phoneSize)
	pc.open(base + "/")
	waitQR(pc, 5)
	phone.open(pc.text("pairing-url") + strings.Join(phoneQuery, ""))
	return pc, phone
}

// waitGo polls cond (Go side) until it is true or ctx ends.
func waitGo(ctx context.Context, cond func() bool) error {
	if testkit.Until(ctx, pollEvery, cond) {
		return nil
	}
	return ctx.Err()
}

// flagValue returns the value of a registered flag ("" when unknown).
func flagValue(name string) string {
	f := flag.Lookup(name)
	if f == nil {
		return ""
	}
	return f.Value.String()
}

// newSlog returns a logger writing to buf (Info and above).
func newSlog(buf *lockedBuffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
}
