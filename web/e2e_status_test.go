package web_test

// Browser tests of what the pages say about the link: a phone whose page is
// frozen (its JavaScript paused, as a phone asleep or a tab in the
// background) is shown not responding and then connected again, and the
// path and latency the PC shows are its status API's (see e2e_test.go for
// the namespace, the server and the tabs).

import (
	"context"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/debugger"
	"github.com/chromedp/chromedp"
)

// shownIsStatusJS is true when what the page shows of the link is what its
// status API (Link.linkState()) says now: the path badge and the latency's
// path, round trip and one-way chord latency (the medians of that path).
const shownIsStatusJS = `(() => { const st = window.__vt.link.linkState();
	const q = (id) => document.getElementById(id);
	const tenth = (v) => (v == null ? '' : String(Math.round(v * 10) / 10));
	const p2p = st.path === 'p2p', lat = q('latency');
	return q('path').dataset.path === st.path && lat.dataset.path === st.path
		&& lat.dataset.ms === tenth(p2p ? st.rttP2P : st.rttRelay)
		&& lat.dataset.chordMs === tenth(p2p ? st.chordP2P : st.chordRelay); })()`

// phoneRowJS is the PC page's device row of client id cid, as JavaScript.
func phoneRowJS(cid string) string {
	return `document.querySelector('#members li[data-client-id=` + jsString(cid) + `]')`
}

// linkOfJS is the state of the PC's data channel link to cid in its status API (empty without one).
func linkOfJS(cid string) string {
	return `((window.__vt.link.linkState().peers.find((p) => p.id === ` + jsString(cid) + `) || {}).state || '')`
}

// pauseJS freezes the page's JavaScript with the debugger (Debugger.pause
// takes effect at the next statement: the link's heartbeat timer runs every
// 100 ms) and returns when it is paused. (Page.setWebLifecycleState does not
// freeze a page in headless Chromium.)
func (b *tab) pauseJS() {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, waitTimeout)
	defer cancel()
	paused := chromedp.Events(ctx, debugger.Paused)
	b.do("pausing the page's JavaScript", chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		if _, err := cdp.Call(ctx, t, debugger.Enable, debugger.EnableParams{}); err != nil {
			return err
		}
		_, err := cdp.Call(ctx, t, debugger.Pause, cdp.Empty{})
		return err
	}))
	for _, err := range paused {
		if err != nil {
			b.t.Fatalf("%s: waiting for the debugger to pause the page: %v", b.name, err)
		}
		break
	}
	b.logs.Printf("JavaScript paused")
}

// resumeJS lets the paused page run again and turns the debugger off.
func (b *tab) resumeJS() {
	b.t.Helper()
	b.do("resuming the page's JavaScript", chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		if _, err := cdp.Call(ctx, t, debugger.Resume, debugger.ResumeParams{}); err != nil {
			return err
		}
		_, err := cdp.Call(ctx, t, debugger.Disable, cdp.Empty{})
		return err
	}))
	b.logs.Printf("JavaScript resumed")
}

// testSuspendedPhone: the phone's page is frozen (its JavaScript paused
// through the debugger) while the PC plays with it over p2p. The PC shows
// the phone not responding, with what to do, and the path as the relay (the
// status API's link to it is down), and says it is connected again once the
// page runs: P2P, chords arriving by p2p. Throughout, the path and the
// latency the PC shows are its status API's. The time to each is logged, not
// asserted (bounded by waitTimeout).
func testSuspendedPhone(t *testing.T, base string) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	pc, phone := pairedTabs(t, ctx, base, &pc768)
	cid := eval[string](phone, `window.__vt.link.clientId`)
	row := phoneRowJS(cid)
	waitPath(phone, "p2p")
	waitPath(pc, "p2p")
	for _, chord := range []string{"Am", "C"} {
		tapChord(phone, chord)
		waitChord(pc, chord, "p2p")
	}
	pc.wait(row+`.dataset.responding === 'true' && `+row+`.dataset.link === 'up' && `+linkOfJS(cid)+` === 'up'`, "the phone shown connected, its link up")
	pc.wait(shownIsStatusJS+` && window.__vt.link.linkState().chordP2P != null && document.getElementById('path').dataset.path === 'p2p'`,
		"P2P and its latency, as the status API says")

	phone.pauseJS()
	paused := time.Now()
	pc.wait(row+`.dataset.responding === 'false' && `+row+`.textContent.includes('not responding')
		&& `+row+`.dataset.link === `+linkOfJS(cid)+` && `+linkOfJS(cid)+` === 'down'
		&& document.getElementById('link-status').textContent.includes('not responding')
		&& document.getElementById('link-status').textContent.includes('screen')
		&& document.getElementById('path').dataset.path === 'relay'
		&& window.__vt.link.linkState().reasonCode === 'silent'
		&& document.getElementById('p2p-reason').textContent.includes('went silent')`, "the phone shown not responding")
	silent := time.Since(paused)
	pc.wait(shownIsStatusJS, "the relay and its latency, as the status API says")
	if e := pc.text("error"); e != "" {
		t.Errorf("a phone not responding is shown as an error: %q", e)
	}
	pc.wait(`document.getAnimations().every((a) => a.playState !== 'running')`, "animations to end")
	saveShot(t, "pc-phone-silent-desktop", pc.viewportPNG())

	phone.resumeJS()
	resumed := time.Now()
	pc.wait(row+`.dataset.responding === 'true' && `+row+`.dataset.link === 'up' && `+linkOfJS(cid)+` === 'up'
		&& `+row+`.textContent.includes('connected · P2P')
		&& document.getElementById('link-status').textContent === 'Phone connected.'
		&& document.getElementById('path').dataset.path === 'p2p'`, "the phone shown connected again")
	back := time.Since(resumed)
	for _, chord := range []string{"G", "Em"} {
		tapChord(phone, chord)
		waitChord(pc, chord, "p2p")
	}
	pc.wait(shownIsStatusJS+` && document.getElementById('path').dataset.path === 'p2p'`, "P2P and its latency again, as the status API says")
	t.Logf("the PC showed the paused phone not responding after %v, connected again %v after it resumed",
		silent.Round(time.Millisecond), back.Round(time.Millisecond))
}
