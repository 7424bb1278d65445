package web_test

// Browser tests: Debian's Chromium, headless, driven by chromedp, against the
// real server (signaling + web) and, in two cases, a Go peer (package peer).
//
// Chromium gathers no ICE candidates when loopback is its only interface, so
// TestBrowser re-executes the test binary under `unshare -n` (a private
// network namespace: nothing leaves it, mDNS included), gives that namespace a
// veth interface with 10.213.0.1 and a default route, serves the server there
// and opens the pages at http://10.213.0.1:<port>/. Every browser is its own
// Chromium process with a fresh profile.
//
// Needs: chromium (or VT_CHROMIUM), unshare (util-linux), ip (iproute2), and
// root or CAP_SYS_ADMIN. Without them the test is skipped, or fails when
// CI=true. -short skips it. VT_SCREENSHOTS=1 writes the screenshots to
// web/screenshots/ (they are taken and checked on every run).

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/virtutune/link/peer"
	"github.com/virtutune/link/protocol"
)

// testTimeout bounds one subtest, browsers included.
const testTimeout = 90 * time.Second

func TestBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("browser tests skipped in -short mode")
	}
	if os.Getenv(envNetns) != "1" {
		runInNetns(t)
		return
	}
	setupNetns(t)
	logs := &lockedBuffer{}
	dumpOnFailure(t, "server log", logs)
	base := startServer(t, logs)

	t.Run("P2P", func(t *testing.T) { testP2P(t, base) })
	t.Run("RelayNoP2PQuery", func(t *testing.T) {
		testRelay(t, base, "?nop2p=1", "", "phone", "Direct connection turned off")
	})
	t.Run("RelayNoWebRTC", func(t *testing.T) {
		testRelay(t, base, "", "delete window.RTCPeerConnection; delete window.webkitRTCPeerConnection;",
			"pc", "no WebRTC")
	})
	t.Run("GoPhone", func(t *testing.T) { testGoPhone(t, base) })
	t.Run("GoPC", func(t *testing.T) { testGoPC(t, base) })
	t.Run("PairQRScreenshot", func(t *testing.T) { testPairQRScreenshot(t, base) })
	t.Run("PairPIN", func(t *testing.T) { testPairPIN(t, base) })
	t.Run("PhoneReopen", func(t *testing.T) { testPhoneReopen(t, base) })
	t.Run("SuspendedPhone", func(t *testing.T) { testSuspendedPhone(t, base) })
	t.Run("SuspendedPhoneRelay", func(t *testing.T) { testSuspendedPhoneRelay(t, base) })
	t.Run("DirectDeadIdlePhone", func(t *testing.T) { testDirectDeadIdlePhone(t, base) })
	t.Run("GridStays", func(t *testing.T) { testGridStays(t, base) })
	t.Run("Axe", func(t *testing.T) { testAxe(t, base) })
	t.Run("Restart", func(t *testing.T) { testRestart(t, logs) })
}

// openPC opens the PC page, checks its QR code and returns the pairing URL.
func openPC(t *testing.T, pc *tab, base string) string {
	t.Helper()
	pc.open(base + "/")
	pc.wait(`(() => { const i = document.getElementById('qr');
		return i.src.startsWith('data:image/png;base64,') && i.complete && i.naturalWidth > 0; })()`,
		"the QR code")
	url := pc.text("pairing-url")
	if !strings.HasPrefix(url, base+"/p/") || len(url) > 60 {
		t.Fatalf("pairing URL %q: want %s/p/<code>, at most 60 characters", url, base)
	}
	if href := eval[string](pc, `document.getElementById('pairing-url').href`); href != url {
		t.Errorf("pairing link href %q, text %q", href, url)
	}
	return url
}

// tapChord taps a chord on the phone page and waits until it shows there.
func tapChord(phone *tab, chord string) {
	phone.t.Helper()
	sel := chromedp.CSS(`button.chord[data-chord="` + chord + `"]`)
	phone.do("tapping "+chord, chromedp.Tap(sel))
	phone.wait(`document.getElementById('chord').textContent === `+jsString(chord)+
		` && document.querySelector('button.chord[data-chord=`+jsString(chord)+`]').getAttribute('aria-pressed') === 'true'`,
		"the phone to show "+chord)
}

// waitChord waits until a page shows chord; with path "p2p" also that a copy
// of it came over the data channel (both paths race, so the relay's copy may
// be the one shown first), with "relay" that it came by the relay.
func waitChord(b *tab, chord, path string) {
	b.t.Helper()
	cond := `document.getElementById('chord').textContent === ` + jsString(chord)
	switch path {
	case "p2p":
		cond += ` && window.__vt.link.stats().lastChord.p2p === ` + jsString(chord)
	case "relay":
		cond += ` && document.getElementById('chord-meta').dataset.path === ` + jsString(path)
	}
	b.wait(cond, b.name+" to show "+chord+" "+path)
}

func waitPath(b *tab, path string) {
	b.t.Helper()
	b.wait(`document.getElementById('path').dataset.path === `+jsString(path), b.name+" to say "+path)
}

func waitPractice(b *tab, status string) {
	b.t.Helper()
	b.wait(`document.getElementById('practice').dataset.status === `+jsString(status), b.name+" to show practice "+status)
}

// togglePractice taps the phone's practice button and waits for status on both pages.
func togglePractice(phone, pc *tab, status string) {
	phone.t.Helper()
	phone.do("tapping practice", chromedp.Tap(chromedp.ID("practice-toggle")))
	waitPractice(phone, status)
	waitPractice(pc, status)
}

// testP2P: PC and phone in two browsers pair through the QR link, find each
// other directly, and chord changes and practice start/stop go phone -> PC.
func testP2P(t *testing.T, base string) {
	ctx, cancel, pc, phone := twoTabs(t)
	defer cancel()

	url := openPC(t, pc, base)
	phone.open(url)
	if got := eval[string](phone, `location.pathname + location.hash`); got != "/phone/" {
		t.Errorf("the phone page kept the single-use pairing code in its address: %q", got)
	}
	pc.wait(`document.querySelectorAll('#members li[data-role="phone"]').length === 1`, "the phone in the member list")
	// The used link is replaced by a fresh one of the same session.
	pc.wait(`(() => { const a = document.getElementById('pairing-url');
		return a.textContent !== `+jsString(url)+` && a.textContent.startsWith(`+jsString(base+"/p/")+`)
			&& a.href === a.textContent && document.getElementById('qr').complete; })()`, "a fresh pairing link")
	fresh := pc.text("pairing-url")
	waitPath(phone, "p2p")
	waitPath(pc, "p2p")

	for _, chord := range []string{"Am", "G", "F", "C"} {
		tapChord(phone, chord)
		waitChord(pc, chord, "p2p")
	}
	togglePractice(phone, pc, "started")
	// The practice update re-renders the session state: the chord stays.
	for _, b := range []*tab{phone, pc} {
		if got := b.text("chord"); got != "C" {
			t.Errorf("%s page shows chord %q after practice start, want C", b.name, got)
		}
	}

	// Screenshots: paired, a chord shown, practice running.
	pc.screenshot(phoneSize)
	pc.screenshot(desktopSize)
	phone.screenshot(desktopSize)
	phone.screenshot(phoneSize)

	togglePractice(phone, pc, "ended")
	tapChord(phone, "Em")
	waitChord(pc, "Em", "p2p")

	// The link the phone used is spent; the fresh one on the PC page works.
	if _, err := peer.Pair(ctx, url); err == nil || !strings.Contains(err.Error(), "410") {
		t.Errorf("pairing again with the used link: %v, want HTTP 410", err)
	}
	sid := eval[string](pc, `window.__vt.link.sessionId`)
	if info, err := peer.Pair(ctx, fresh); err != nil {
		t.Errorf("pairing with the PC page's fresh link: %v", err)
	} else if info.SessionID != sid {
		t.Errorf("the fresh link is for session %s, the PC's is %s", info.SessionID, sid)
	}
}

// testRelay: one side has no direct path (the phone opened with ?nop2p=1, or
// the PC's browser lacks RTCPeerConnection); the same works over the relay
// and both pages say relay, the side without it saying why.
func testRelay(t *testing.T, base, phoneQuery, pcInit, reasonOn, reason string) {
	_, cancel, pc, phone := twoTabs(t)
	defer cancel()
	if pcInit != "" {
		pc.initScript(pcInit)
	}

	url := openPC(t, pc, base)
	url += phoneQuery
	phone.open(url)
	pc.wait(`document.querySelectorAll('#members li[data-role="phone"]').length === 1`, "the phone in the member list")
	why := map[string]*tab{"pc": pc, "phone": phone}[reasonOn]
	why.wait(`document.getElementById('p2p-reason').textContent.includes(`+jsString(reason)+`)`, "the reason: "+reason)

	for _, chord := range []string{"D", "Am", "E"} {
		tapChord(phone, chord)
		waitChord(pc, chord, "relay")
	}
	togglePractice(phone, pc, "started")
	togglePractice(phone, pc, "ended")
	for _, b := range []*tab{pc, phone} {
		if p := eval[string](b, `document.getElementById('path').dataset.path`); p != "relay" {
			t.Errorf("%s page says path %q, want relay", b.name, p)
		}
	}
}

// goLogger returns a logger for a Go peer, printed if the test fails.
func goLogger(t *testing.T, name string) *lockedBuffer {
	buf := &lockedBuffer{}
	dumpOnFailure(t, name+" log", buf)
	return buf
}

// recvChord reads deliveries until a chord_change, and returns it with its path.
func recvChord(ctx context.Context, t *testing.T, c *peer.Client) (string, string) {
	t.Helper()
	for {
		d, err := c.Recv(ctx)
		if err != nil {
			t.Fatalf("Go peer: waiting for a chord: %v", err)
		}
		if d.Msg.Type != protocol.TypeChordChange {
			continue
		}
		var cc protocol.ChordChange
		if err := json.Unmarshal(d.Msg.Data, &cc); err != nil {
			t.Fatalf("Go peer: chord_change data %s: %v", d.Msg.Data, err)
		}
		return cc.Chord, d.Path
	}
}

// waitGoCopy waits until the Go peer has received more copies over the data
// channel than before (both paths race: the relay's copy of
// a chord may be delivered first).
func waitGoCopy(ctx context.Context, t *testing.T, c *peer.Client, before uint64) {
	t.Helper()
	wctx, cancel := context.WithTimeout(ctx, waitTimeout)
	defer cancel()
	if err := waitGo(wctx, func() bool { return c.Stats().P2PCopies > before }); err != nil {
		t.Fatalf("Go peer: waiting for the data channel's copy: %v (links %+v)", err, c.Links())
	}
}

func waitGoP2P(ctx context.Context, t *testing.T, c *peer.Client) {
	t.Helper()
	wctx, cancel := context.WithTimeout(ctx, waitTimeout)
	defer cancel()
	if err := waitGo(wctx, func() bool { return c.Path() == protocol.PathP2P }); err != nil {
		t.Fatalf("Go peer: waiting for p2p: %v (links %+v)", err, c.Links())
	}
}

// testGoPhone: the PC page in Chromium offers, a Go phone (pion) answers;
// chords go both ways over the data channel.
func testGoPhone(t *testing.T, base string) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	pc := newTab(t, ctx, "pc")
	url := openPC(t, pc, base)

	info, err := peer.Pair(ctx, url)
	if err != nil {
		t.Fatalf("peer.Pair(%q): %v", url, err)
	}
	c := dialGo(ctx, t, info, protocol.RolePhone, "Go phone")
	defer c.Close()

	waitGoP2P(ctx, t, c)
	waitPath(pc, "p2p")

	for _, chord := range []string{"Am", "C7", "F#m"} {
		if err := c.SendChord(ctx, chord); err != nil {
			t.Fatalf("SendChord(%s): %v", chord, err)
		}
		waitChord(pc, chord, "p2p")
	}
	for _, chord := range []string{"G", "Dsus4"} {
		before := c.Stats().P2PCopies
		if seq := eval[int](pc, `window.__vt.link.sendChord(`+jsString(chord)+`)`); seq <= 0 {
			t.Fatalf("the PC page's link refused to send %s", chord)
		}
		if got, _ := recvChord(ctx, t, c); got != chord {
			t.Fatalf("Go phone received %q, want %q", got, chord)
		}
		waitGoCopy(ctx, t, c, before)
	}
}

// testGoPC: a Go PC (pion) offers, the phone page in Chromium answers; chords
// go both ways over the data channel.
func testGoPC(t *testing.T, base string) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	info, err := peer.CreateSession(ctx, base, "")
	if err != nil {
		t.Fatalf("peer.CreateSession: %v", err)
	}
	c := dialGo(ctx, t, info, protocol.RolePC, "Go PC")
	defer c.Close()

	phone := newTab(t, ctx, "phone")
	phone.emulate(phoneSize)
	phone.open(info.PairingURL)
	waitPath(phone, "p2p")
	waitGoP2P(ctx, t, c)

	for _, chord := range []string{"E", "Am"} {
		before := c.Stats().P2PCopies
		tapChord(phone, chord)
		if got, _ := recvChord(ctx, t, c); got != chord {
			t.Fatalf("Go PC received %q, want %q", got, chord)
		}
		waitGoCopy(ctx, t, c, before)
	}
	if err := c.SendChord(ctx, "Bm"); err != nil {
		t.Fatalf("SendChord: %v", err)
	}
	waitChord(phone, "Bm", "")
}
