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
	// chords until one was delivered first by p2p, its one-way latency
	// measured (both paths race: on a loaded machine the relay's copy may
	// win a few times)
	for i, chord := range []string{"Am", "C", "G", "D", "Em", "F", "A", "E"} {
		tapChord(phone, chord)
		waitChord(pc, chord, "p2p")
		if eval[bool](pc, `window.__vt.link.linkState().chordP2P != null`) {
			break
		}
		if i == 7 {
			t.Fatal("8 chords, none delivered first by p2p with its latency measured")
		}
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
	// Every chord arrives; the data channel carries them again once the
	// link settles: the PC may have begun a fresh channel while the phone
	// was silent, and the old one the phone resumes on can close under it
	// (its chords then come over the relay alone, in time).
	carried := false
	for _, chord := range []string{"G", "Em", "D", "C", "A", "E"} {
		tapChord(phone, chord)
		waitChord(pc, chord, "")
		if eval[bool](pc, `window.__vt.link.stats().lastChord.p2p === `+jsString(chord)) {
			carried = true
			break
		}
		// Came over the relay alone: the next once the phone's link is up again.
		phone.wait(`window.__vt.link.linkState().peers.some((p) => p.state === 'up')`, "the phone's link up again")
	}
	if !carried {
		t.Fatal("after the phone resumed, 6 chords arrived and none over the data channel")
	}
	pc.wait(shownIsStatusJS+` && document.getElementById('path').dataset.path === 'p2p'`, "P2P and its latency again, as the status API says")
	t.Logf("the PC showed the paused phone not responding after %v, connected again %v after it resumed",
		silent.Round(time.Millisecond), back.Round(time.Millisecond))
}

// testSuspendedPhoneRelay: with P2P off (the phone opened with ?nop2p=1)
// there is no data channel, and the server's WebSocket pings are answered by
// the browser even while the page's JavaScript is paused: only the probe
// over the relay tells. The phone's page is frozen: the PC shows it not
// responding; once it runs again, connected on the relay. Then the PC's
// page is frozen: the phone says the PC is not responding, and that it is
// here again once it runs. Times are logged, not asserted (each wait is
// bounded by waitTimeout).
func testSuspendedPhoneRelay(t *testing.T, base string) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	pc, phone := pairedTabs(t, ctx, base, nil, "?nop2p=1")
	pc.wait(`document.querySelectorAll('#members li[data-role="phone"]').length === 1`, "the phone in the member list")
	cid := eval[string](phone, `window.__vt.link.clientId`)
	row := phoneRowJS(cid)
	tapChord(phone, "Am")
	waitChord(pc, "Am", "relay")
	pc.wait(row+`.dataset.responding === 'true' && `+row+`.dataset.live === 'live' && `+row+`.textContent.includes('connected · relay')
		&& document.getElementById('link-status').textContent === 'Phone connected.'`, "the phone shown connected on the relay, answering")
	phone.wait(`document.getElementById('status').dataset.pc === 'here'`, "the phone to say the PC is here")

	phone.pauseJS()
	paused := time.Now()
	pc.wait(row+`.dataset.responding === 'false' && `+row+`.dataset.live === 'silent' && `+row+`.textContent.includes('not responding')
		&& document.getElementById('link-status').textContent.includes('not responding')
		&& document.getElementById('path').dataset.path === 'relay'`, "the paused phone shown not responding")
	silent := time.Since(paused)
	if e := pc.text("error"); e != "" {
		t.Errorf("a phone not responding is shown as an error: %q", e)
	}

	phone.resumeJS()
	resumed := time.Now()
	pc.wait(row+`.dataset.responding === 'true' && `+row+`.dataset.live === 'live' && `+row+`.textContent.includes('connected · relay')
		&& document.getElementById('link-status').textContent === 'Phone connected.'`, "the phone shown connected again")
	back := time.Since(resumed)
	tapChord(phone, "G")
	waitChord(pc, "G", "relay")

	// and the other way: the PC's page frozen, the phone says so
	pc.pauseJS()
	pcPaused := time.Now()
	phone.wait(`document.getElementById('status').dataset.pc === 'silent'
		&& document.getElementById('status').textContent.includes('PC is not responding')`, "the phone to say the PC is not responding")
	pcSilent := time.Since(pcPaused)
	pc.resumeJS()
	phone.wait(`document.getElementById('status').dataset.pc === 'here' && document.getElementById('status').textContent === ''`,
		"the phone to say the PC is here again")
	t.Logf("relay only: the PC showed the paused phone not responding after %v, connected again %v after it resumed; the phone said the paused PC was not responding after %v",
		silent.Round(time.Millisecond), back.Round(time.Millisecond), pcSilent.Round(time.Millisecond))
}

// muteDirectJS makes the phone page's data channel useless while its
// JavaScript and its WebSocket work on: what comes over the channel is
// ignored, nothing goes out over it, and no new attempt is answered — the
// direct path dead, as a firewall that starts dropping UDP would leave it.
const muteDirectJS = `(() => { const l = window.__vt.link;
	l._onDCMessage = () => {}; l._dcSend = () => false; l._onSignal = async () => {};
	return true; })()`

// watchRowJS records, on the PC page, every 50 ms, whether the row of cid
// said not responding while its link was down (window.__rowSeen).
func watchRowJS(cid string) string {
	return `(() => { const seen = window.__rowSeen = { down: 0, silent: 0 };
	setInterval(() => { const r = ` + phoneRowJS(cid) + `;
		if (!r || ` + linkOfJS(cid) + ` !== 'down') return;
		seen.down++; if (r.dataset.responding !== 'true') seen.silent++; }, 50);
	return true; })()`
}

// testDirectDeadIdlePhone: the direct path dies while the phone is idle (it
// sends nothing) and the phone itself is fine: the PC's link to it goes
// down, and the PC shows it connected on the relay (the probe over the
// relay is answered), never not responding, until the test ends.
func testDirectDeadIdlePhone(t *testing.T, base string) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	pc, phone := pairedTabs(t, ctx, base, nil)
	cid := eval[string](phone, `window.__vt.link.clientId`)
	row := phoneRowJS(cid)
	waitPath(phone, "p2p")
	waitPath(pc, "p2p")
	tapChord(phone, "Am")
	waitChord(pc, "Am", "p2p")
	pc.wait(row+`.dataset.link === 'up' && `+row+`.textContent.includes('connected · P2P')`, "the phone shown connected over P2P")
	if !eval[bool](pc, watchRowJS(cid)) {
		t.Fatal("the row watcher did not start")
	}

	if !eval[bool](phone, muteDirectJS) {
		t.Fatal("could not mute the phone's data channel")
	}
	muted := time.Now()
	pc.wait(linkOfJS(cid)+` === 'down' && `+row+`.dataset.link === 'down' && `+row+`.dataset.responding === 'true'
		&& `+row+`.dataset.live === 'live' && `+row+`.textContent.includes('connected · relay')
		&& document.getElementById('path').dataset.path === 'relay'`, "the idle phone shown connected on the relay, its direct link down")
	shown := time.Since(muted)
	// a while on: the watcher saw the link down many times, the phone never
	// not responding (the probe keeps being answered)
	pc.wait(`window.__rowSeen.down >= 40`, "two seconds of the link down on the PC")
	seen := eval[map[string]int](pc, `window.__rowSeen`)
	if seen["silent"] != 0 {
		t.Errorf("the idle phone was shown not responding in %d of %d looks while its direct link was down", seen["silent"], seen["down"])
	}
	if e := pc.text("error"); e != "" {
		t.Errorf("the direct link lost is shown as an error: %q", e)
	}
	t.Logf("direct path dead, phone idle: the PC showed it connected on the relay %v after the channel went mute; %d looks over the link down, none not responding",
		shown.Round(time.Millisecond), seen["down"])
}
