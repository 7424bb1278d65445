package web_test

// Browser tests of pairing, of pairing that lasts, of a restart nobody
// notices, of the layout and of accessibility (see e2e_test.go for the
// namespace, the server and the tabs).

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"image/png"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/makiuchi-d/gozxing"
	"github.com/makiuchi-d/gozxing/qrcode"

	"github.com/virtutune/link/internal/testkit"
	"github.com/virtutune/link/peer"
	"github.com/virtutune/link/signaling"
	"github.com/virtutune/link/web"
)

// pc768 is the PC window the layout must fit after pairing.
var pc768 = viewport{"desktop-768", 1366, 768, 1, false}

// viewportPNG captures what the tab's viewport shows (not the full page).
func (b *tab) viewportPNG() image.Image {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, waitTimeout)
	defer cancel()
	raw, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		b.t.Fatalf("%s: screenshot: %v", b.name, err)
	}
	img, err := png.Decode(bytes.NewReader(raw))
	if err != nil {
		b.t.Fatalf("%s: screenshot is not a PNG: %v", b.name, err)
	}
	return img
}

// saveShot writes img to screenshots/<name>.png when VT_SCREENSHOTS=1.
func saveShot(t *testing.T, name string, img image.Image) {
	t.Helper()
	if os.Getenv(envScreenshots) != "1" {
		return
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join("screenshots", name+".png")
	if err := os.WriteFile(file, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote web/%s", file)
}

// decodeQR finds and decodes the QR code in a screenshot: the pixels as the
// page drew them, at the size it drew them.
func decodeQR(t *testing.T, img image.Image) string {
	t.Helper()
	bmp, err := gozxing.NewBinaryBitmapFromImage(img)
	if err != nil {
		t.Fatalf("QR: %v", err)
	}
	res, err := qrcode.NewQRCodeReader().Decode(bmp, map[gozxing.DecodeHintType]any{gozxing.DecodeHintType_TRY_HARDER: true})
	if err != nil {
		t.Fatalf("no QR code could be read from the screenshot: %v", err)
	}
	return res.GetText()
}

// waitQR waits until the PC page's QR image is loaded and drawn at a whole
// number (at least min) of pixels per module; it returns that number.
func waitQR(pc *tab, min int) int {
	pc.t.Helper()
	pc.wait(`(() => { const i = document.getElementById('qr'); const n = Number(i.dataset.modules);
		return i.complete && i.naturalWidth === n && n > 0 && i.getBoundingClientRect().width >= n * `+fmt.Sprint(min)+`; })()`, "the QR code drawn")
	return eval[int](pc, `Math.round(document.getElementById('qr').getBoundingClientRect().width / Number(document.getElementById('qr').dataset.modules))`)
}

// inViewport reports the ids (of those given) whose box is not wholly inside the viewport.
func outOfViewport(b *tab, ids ...string) []string {
	b.t.Helper()
	var q []string
	for _, id := range ids {
		q = append(q, jsString(id))
	}
	return eval[[]string](b, `[`+strings.Join(q, ",")+`].filter((id) => { const e = document.getElementById(id);
		if (!e) return true; const r = e.getBoundingClientRect();
		return !(r.width > 0 && r.top >= 0 && r.left >= 0 && r.bottom <= innerHeight && r.right <= innerWidth); })`)
}

// testPairQRScreenshot: the phone pairs with what a camera would read off the
// PC's screen at 1366x768, before and after pairing; after pairing the PC
// shows chord, diagram, strings, Strum and the practice timer without
// scrolling.
func testPairQRScreenshot(t *testing.T, base string) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	pc := newTab(t, ctx, "pc")
	pc.emulate(pc768)
	phone := newTab(t, ctx, "phone")
	phone.emulate(phoneSize)

	pc.open(base + "/")
	if px := waitQR(pc, 5); px < 5 {
		t.Fatalf("QR drawn with %d px per module before pairing, want at least 5", px)
	}
	if n := eval[int](pc, `Number(document.getElementById('qr').dataset.modules)`); n > 37+8 {
		t.Fatalf("QR code of %d modules: more than version 5", n)
	}
	shot := pc.viewportPNG()
	saveShot(t, "pc-pairing-desktop", shot)
	link := decodeQR(t, shot)
	if link != pc.text("pairing-url") || !strings.HasPrefix(link, base+"/p/") || len(link) > 60 {
		t.Fatalf("QR code reads %q, the page says %q", link, pc.text("pairing-url"))
	}
	pin := eval[string](pc, `document.getElementById('pin').dataset.pin`)
	if len(pin) != 6 {
		t.Fatalf("the PC shows 6-digit code %q", pin)
	}

	phone.open(link)
	pc.wait(`document.querySelectorAll('#members li[data-role="phone"][data-connected="true"]').length === 1`, "the phone connected")
	pc.wait(`!document.getElementById('pairing').open`, "the pairing panel folded away")
	tapChord(phone, "G")
	waitChord(pc, "G", "")
	phone.do("starting practice", chromedp.Tap(chromedp.ID("practice-toggle")))
	waitPractice(pc, "started")
	pc.wait(`document.getAnimations().every((a) => a.playState !== 'running')`, "animations to end")
	if out := outOfViewport(pc, "chord", "diagram", "strings", "strum", "timer", "practice", "members"); len(out) > 0 {
		t.Errorf("at 1366x768 after pairing these are not inside the viewport: %v", out)
	}
	if sy := eval[int](pc, `document.scrollingElement.scrollTop`); sy != 0 {
		t.Errorf("the page scrolled (%d px)", sy)
	}
	saveShot(t, "pc-paired-desktop", pc.viewportPNG())
	// The used code on screen is replaced; what a camera reads after
	// pairing, with the panel opened again, pairs a second phone.
	pc.do("opening the pairing panel", chromedp.Click(chromedp.CSS(`#pairing > summary`)))
	pc.wait(`document.getElementById('pairing').open && document.getElementById('pairing-url').textContent !== `+jsString(link), "a fresh code")
	if px := waitQR(pc, 5); px < 5 {
		t.Fatalf("QR drawn with %d px per module after pairing, want at least 5", px)
	}
	second := decodeQR(t, pc.viewportPNG())
	if second == link || second != pc.text("pairing-url") {
		t.Fatalf("after pairing the QR code reads %q (page %q, first %q)", second, pc.text("pairing-url"), link)
	}
	info, err := peer.Pair(ctx, second)
	if err != nil {
		t.Fatalf("pairing a second phone with the code read after pairing: %v", err)
	}
	if sid := eval[string](pc, `window.__vt.link.sessionId`); info.SessionID != sid {
		t.Fatalf("the second phone paired with session %s, the PC's is %s", info.SessionID, sid)
	}
	if _, err := peer.Pair(ctx, link); err == nil || !strings.Contains(err.Error(), "410") {
		t.Errorf("the first, used link: %v, want HTTP 410", err)
	}
}

// testPairPIN: a phone without a camera opens /phone/, sees how to pair (no
// chord grid), types the 6-digit code and plays.
func testPairPIN(t *testing.T, base string) {
	_, cancel, pc, phone := twoTabs(t)
	defer cancel()
	pc.open(base + "/")
	waitQR(pc, 5)
	pin := eval[string](pc, `document.getElementById('pin').dataset.pin`)

	phone.do("navigate", chromedp.Navigate(base+"/phone/"))
	phone.wait(`!document.getElementById('pair-view').hidden && document.getElementById('play-view').hidden`, "the pairing instructions")
	if n := eval[int](phone, `[...document.querySelectorAll('button.chord, #practice-toggle')].filter((b) => b.getClientRects().length > 0).length`); n != 0 {
		t.Fatalf("a phone that is not paired shows %d chord or practice buttons", n)
	}
	if got := phone.text("pair-view"); !strings.Contains(got, "Scan") || !strings.Contains(got, "6-digit") {
		t.Fatalf("the pairing instructions say %q", got)
	}
	// A wrong code first: refused with a message, still not paired.
	wrong := "000000"
	if pin == wrong {
		wrong = "000001"
	}
	phone.do("typing a wrong code", chromedp.SendKeys(chromedp.ID("pin"), wrong), chromedp.Click(chromedp.ID("pin-submit")))
	phone.wait(`document.getElementById('pair-status').textContent.includes('not right')`, "the wrong code refused")
	_ = eval[bool](phone, `(document.getElementById('pin').value = '', true)`)
	phone.do("typing the code", chromedp.SendKeys(chromedp.ID("pin"), pin[:3]+" "+pin[3:]), chromedp.Click(chromedp.ID("pin-submit")))
	phone.wait(`document.querySelector('#ws-state').dataset.state === 'open' && !document.getElementById('play-view').hidden`, "paired and connected")
	tapChord(phone, "Em")
	waitChord(pc, "Em", "")
}

// restartable is a server in the default single-instance mode (memory broker
// on a bbolt store, the secret generated into it) that can be restarted on
// the same address and data directory.
type restartable struct {
	t     *testing.T
	logs  *lockedBuffer
	dir   string
	addr  string
	mu    sync.Mutex
	srv   *signaling.Server
	hs    *http.Server
	b     *signaling.MemoryBroker
	st    *signaling.BoltStore
	serve chan error
}

func startRestartable(t *testing.T, logs *lockedBuffer) *restartable {
	ln, err := net.Listen("tcp", nsAddr+":0")
	if err != nil {
		t.Fatal(err)
	}
	r := &restartable{t: t, logs: logs, dir: t.TempDir(), addr: ln.Addr().String()}
	r.start(ln)
	t.Cleanup(func() { r.stop() })
	return r
}

func (r *restartable) base() string { return "http://" + r.addr }

func (r *restartable) start(ln net.Listener) {
	t := r.t
	st, err := signaling.OpenBoltStore(r.dir)
	if err != nil {
		t.Fatal(err)
	}
	secret, _, err := st.Secret()
	if err != nil {
		t.Fatal(err)
	}
	b, err := signaling.OpenMemoryBroker(signaling.MemoryConfig{}, st)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := signaling.New(signaling.Config{Secret: secret, Broker: b, Logger: newSlog(r.logs), Static: web.Handler(), PublicURL: r.base()})
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 5 * time.Second}
	r.mu.Lock()
	r.srv, r.hs, r.b, r.st, r.serve = srv, hs, b, st, make(chan error, 1)
	serve := r.serve
	r.mu.Unlock()
	go func() { serve <- hs.Serve(ln) }()
}

// stop shuts the server down as SIGTERM does: clients closed with 1001, the
// final checkpoint written, the store closed.
func (r *restartable) stop() {
	r.mu.Lock()
	srv, hs, b, st, serve := r.srv, r.hs, r.b, r.st, r.serve
	r.srv = nil
	r.mu.Unlock()
	if srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = hs.Shutdown(ctx)
	_ = srv.Shutdown(ctx)
	_ = b.Close()
	_ = st.Close()
	<-serve
}

// restart stops the server and starts a new one on the same address and
// data directory; it returns when the new one listens.
func (r *restartable) restart() {
	r.stop()
	var ln net.Listener
	var err error
	for range 50 { // the old listener's port is free at once (SO_REUSEADDR); retry briefly all the same
		if ln, err = net.Listen("tcp", r.addr); err == nil {
			break
		}
		<-time.After(20 * time.Millisecond)
	}
	if err != nil {
		r.t.Fatalf("listening again on %s: %v", r.addr, err)
	}
	r.start(ln)
}

var _ = httptest.NewServer

// testRestart: the default single instance restarts; both pages come back by
// themselves within 3 s, nothing rescanned, the chord sent meanwhile over
// P2P arrives, and chords flow through the restarted server.
func testRestart(t *testing.T, logs *lockedBuffer) {
	srv := startRestartable(t, logs)
	base := srv.base()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	pc, phone := pairedTabs(t, ctx, base, nil)
	waitPath(phone, "p2p")
	waitPath(pc, "p2p")
	tapChord(phone, "Am")
	waitChord(pc, "Am", "p2p")
	phoneURL := eval[string](phone, `location.href`)

	srv.restart()
	restarted := time.Now()
	tapChord(phone, "D") // the data channel stayed up
	waitChord(pc, "D", "")
	for _, b := range []*tab{pc, phone} {
		b.wait(`document.querySelector('#ws-state').dataset.state === 'open'`, b.name+" back on the restarted server")
	}
	back := time.Since(restarted)
	tapChord(phone, "F")
	waitChord(pc, "F", "")
	// And through the server alone: the PC sends, the phone shows it.
	if seq := eval[int](pc, `window.__vt.link.sendChord('C')`); seq <= 0 {
		t.Fatal("the PC refused to send after the restart")
	}
	waitChord(phone, "C", "")
	flowing := time.Since(restarted)
	t.Logf("after the restart: both pages connected in %v, chords both ways in %v", back.Round(time.Millisecond), flowing.Round(time.Millisecond))
	if flowing > 3*time.Second {
		t.Errorf("both pages back and chords flowing %v after the restart, want within 3 s", flowing)
	}
	if got := eval[string](phone, `location.href`); got != phoneURL || !eval[bool](phone, `document.getElementById('pair-view').hidden`) {
		t.Errorf("the phone asks to pair again after the restart (%s)", got)
	}
	if e := phone.text("error") + pc.text("error"); e != "" {
		t.Errorf("an error is shown after the restart: %q", e)
	}
}

// testPhoneReopen: the phone's browser closes its tab (the PC says it is
// gone within a second), then the whole browser is restarted on the same
// profile: the phone page comes back paired, without a code.
func testPhoneReopen(t *testing.T, base string) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	pc := newTab(t, ctx, "pc")
	pc.open(base + "/")
	waitQR(pc, 5)
	profile := t.TempDir()
	phone := newTabProfile(t, ctx, "phone", profile)
	phone.emulate(phoneSize)
	phone.open(pc.text("pairing-url"))
	cid := eval[string](phone, `window.__vt.link.clientId`)
	pc.wait(`document.querySelector('#members li[data-client-id=`+jsString(cid)+`][data-connected="true"]') !== null`, "the phone connected")
	tapChord(phone, "E")
	waitChord(pc, "E", "")
	// Position of the chord buttons is kept after the first tap (checked in
	// testGridStays); here: the tab closes.
	closed := time.Now()
	phone.closeTab()
	pc.wait(`document.querySelector('#members li[data-client-id=`+jsString(cid)+`][data-connected="false"]') !== null
		&& document.getElementById('link-status').textContent.includes('No phone connected')`, "the phone shown gone")
	if d := time.Since(closed); d > time.Second {
		t.Errorf("the PC showed the phone gone %v after its tab closed, want within 1 s", d.Round(time.Millisecond))
	}
	phone.closeBrowser()

	again := newTabProfile(t, ctx, "phone-again", profile)
	again.emulate(phoneSize)
	again.open(base + "/phone/")
	if got := eval[string](again, `window.__vt.link.clientId`); got != cid {
		t.Errorf("the reopened phone is client %q, was %q", got, cid)
	}
	pc.wait(`document.querySelector('#members li[data-client-id=`+jsString(cid)+`][data-connected="true"]') !== null`, "the phone back")
	tapChord(again, "A")
	waitChord(pc, "A", "")
	// The reopened page counted on after its earlier run's seqs (the
	// server's last_seq): the PC took A as new, not as a resend of E.
	seq := eval[int](again, `window.__vt.link.count.last`)
	if last := eval[int](pc, `window.__vt.link.inbox.lastSeq(`+jsString(cid)+`)`); seq < 2 || last != seq {
		t.Errorf("the reopened phone sent A as seq %d, the PC's last from it is %d; want both the same, after E's", seq, last)
	}
	// The PC removes it: the phone page says so and shows how to pair.
	pc.do("removing the phone", chromedp.Click(chromedp.CSS(`#members li[data-client-id=`+jsString(cid)+`] button.remove`)))
	again.wait(`!document.getElementById('pair-view').hidden && document.getElementById('pair-status').textContent.includes('no longer paired')`, "the phone told it was removed")
	pc.wait(`document.querySelector('#members li[data-client-id=`+jsString(cid)+`]') === null`, "the phone gone from the PC's list")
	again.do("reloading", chromedp.Reload())
	again.wait(`!document.getElementById('pair-view').hidden`, "still not paired after a reload")
}

// testGridStays: the phone's chord buttons stay where they are when the
// first tap shows the diagram (and a notice or error appears).
func testGridStays(t *testing.T, base string) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	_, phone := pairedTabs(t, ctx, base, nil)
	// Layout boxes (offsets, so the pressed button's brief scale(.97) does not count).
	const rects = `JSON.stringify([...document.querySelectorAll('button.chord, #practice-toggle')].map((b) => {
		let x = 0, y = 0; for (let e = b; e; e = e.offsetParent) { x += e.offsetLeft; y += e.offsetTop; }
		return [b.textContent, x, y - scrollY, b.offsetWidth, b.offsetHeight]; }))`
	before := eval[string](phone, rects)
	tapChord(phone, "C")
	phone.wait(`document.querySelector('#diagram svg') !== null`, "the diagram shown")
	if after := eval[string](phone, rects); after != before {
		t.Errorf("the chord buttons moved on the first tap:\nbefore %s\nafter  %s", before, after)
	}
	_ = eval[bool](phone, `(document.getElementById('error').textContent = 'A test error', true)`)
	if after := eval[string](phone, rects); after != before {
		t.Errorf("the chord buttons moved when an error appeared:\nbefore %s\nafter  %s", before, after)
	}
	_ = eval[bool](phone, `(document.getElementById('error').textContent = '', true)`)
	// Held sideways, all sixteen chords and the practice button are on screen.
	phone.emulate(viewport{"phone-landscape", 844, 390, 2, true})
	phone.wait(`new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(() => r(true))))`, "layout in landscape")
	ids := eval[[]string](phone, `[...document.querySelectorAll('button.chord')].map((b, i) => (b.id = 'chord-' + i))`)
	if out := outOfViewport(phone, append(ids, "practice-toggle")...); len(out) > 0 || len(ids) != 16 {
		t.Errorf("a landscape phone (844x390) does not show %v (of %d chords)", out, len(ids))
	}
	saveShot(t, "phone-landscape", phone.viewportPNG())
}

// axeSource is axe-core's browser build, installed by make deps (npm ci in
// web/testdata, pinned by its package-lock.json).
func axeSource(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "node_modules", "axe-core", "axe.min.js"))
	if err != nil {
		testkit.SkipOrFail(t, "axe-core is not installed (make deps, or: cd web/testdata && npm ci): %v", err)
	}
	return string(b)
}

// checkAxe runs axe-core in the page and fails on serious or critical violations.
func checkAxe(t *testing.T, b *tab, src, what string) {
	t.Helper()
	if !eval[bool](b, `typeof window.axe === 'object'`) {
		_ = eval[bool](b, src+`;true`)
	}
	ctx, cancel := context.WithTimeout(b.ctx, waitTimeout)
	defer cancel()
	res, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`axe.run(document, { resultTypes: ['violations'] }).then((r) => r.violations
		.filter((v) => v.impact === 'serious' || v.impact === 'critical')
		.map((v) => v.impact + ' ' + v.id + ': ' + v.help + ' — ' + v.nodes.slice(0, 3).map((n) => n.target.join(' ')).join(', ')))`, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("%s: running axe-core: %v", b.name, err)
	}
	for _, v := range res {
		t.Errorf("axe-core, %s page (%s): %s", b.name, what, v)
	}
	b.logs.Printf("axe-core: %d serious or critical violations (%s)", len(res), what)
}

// testAxe: both pages, in their states, pass axe-core with no serious or
// critical violation.
func testAxe(t *testing.T, base string) {
	src := axeSource(t)
	_, cancel, pc, phone := twoTabs(t)
	defer cancel()
	pc.open(base + "/")
	waitQR(pc, 5)
	checkAxe(t, pc, src, "pairing")
	phone.do("navigate", chromedp.Navigate(base+"/phone/"))
	phone.wait(`!document.getElementById('pair-view').hidden`, "the pairing instructions")
	checkAxe(t, phone, src, "not paired")
	phone.open(pc.text("pairing-url"))
	tapChord(phone, "Am")
	waitChord(pc, "Am", "")
	phone.do("starting practice", chromedp.Tap(chromedp.ID("practice-toggle")))
	waitPractice(pc, "started")
	pc.wait(`!document.getElementById('pairing').open`, "the pairing folded")
	checkAxe(t, pc, src, "paired, playing")
	checkAxe(t, phone, src, "paired, playing")
	// Space strums even with a string button focused (it used to pluck it).
	strums := eval[int](pc, `Number(document.body.dataset.strums || 0)`)
	pc.do("focusing string 3 and pressing space", chromedp.Focus(chromedp.CSS(`.string[data-string="3"]`)), chromedp.KeyEvent(" "))
	pc.wait(`Number(document.body.dataset.strums || 0) === `+fmt.Sprint(strums+1), "a strum")
	if name := eval[string](pc, `(() => { const b = document.querySelector('.string[data-string="6"]'); return b.getAttribute('aria-label') || b.textContent; })()`); !strings.Contains(name, "6 E") {
		t.Errorf("string 6's accessible name %q lacks its visible text", name)
	}
}
