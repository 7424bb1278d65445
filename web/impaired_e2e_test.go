package web_test

// The silent-UDP-death scenario of issue 10 with real browsers: server, phone
// and PC as three hosts of an emulated LAN (internal/netem: a userspace
// switch, each host an anonymous network namespace with a TAP interface),
// the phone and the PC pages each in its own headless Chromium inside its
// host, the server (signaling + web) in this process, listening inside the
// server's host. The phone page plays 4 chord changes per second; UDP between
// phone and PC dies silently for a while (the WebSocket through the server
// still flows), then returns. The test checks that the PC page got every
// chord once and in order, and none of those sent while UDP was dead later
// than a generous 3 s (the target is 500 ms), and reports the figures
// (internal/impaired) with t.Logf: latency, the latest chord while UDP was
// dead, when each page said relay, p2p again after the return.

import (
	"context"
	"encoding/json"
	"errors"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/virtutune/link/internal/impaired"
	"github.com/virtutune/link/internal/netem"
	"github.com/virtutune/link/internal/testkit"
)

const (
	// impairedTimeout bounds the whole browser scenario.
	impairedTimeout = 3 * time.Minute
	// udpDead is how long UDP between the two browsers stays dead.
	udpDead = 8 * time.Second
)

// inHost makes chromedp start the browser inside host h (and kills it should
// this process die, as chromedp does by default).
func inHost(h *netem.Host) chromedp.ExecAllocatorOption {
	return chromedp.ModifyCmdFunc(func(cmd *exec.Cmd) {
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		h.Wrap(cmd)
	})
}

// recorderJS records, on a page, every chord its link delivers and every
// change of its path, stamped with the wall clock (ms since the epoch).
const recorderJS = `(() => {
  const l = window.__vt.link;
  const now = () => performance.timeOrigin + performance.now();
  const rec = window.__rec = { chords: [], paths: [] };
  const onChord = l.onChord, onLinkState = l.onLinkState;
  let last = l.path;
  l.onChord = function (chord, meta) {
    rec.chords.push({ seq: meta.seq, at: meta.at, from: meta.from, path: meta.path, t: now() });
    return onChord.apply(this, arguments);
  };
  l.onLinkState = function (st) {
    if (st.path !== last) { last = st.path; rec.paths.push({ path: st.path, reason: st.reason || '', t: now() }); }
    return onLinkState.apply(this, arguments);
  };
  return true;
})()`

// playerJS makes the phone page's link play a chord change every 250 ms on a
// fixed schedule until window.__play.stop, recording each seq with its time.
const playerJS = `(() => {
  const l = window.__vt.link;
  const chords = ['C', 'G', 'Am', 'F', 'D', 'E', 'Em', 'A'];
  const now = () => performance.timeOrigin + performance.now();
  const p = window.__play = { sent: [], stop: false, done: false };
  const start = now();
  let i = 0;
  const tick = () => {
    if (p.stop) { p.done = true; return; }
    const t = now();
    const seq = l.sendChord(chords[i % chords.length]);
    p.sent.push({ seq, t });
    i++;
    setTimeout(tick, Math.max(0, start + i * 250 - now()));
  };
  tick();
  return true;
})()`

type jsChord struct {
	Seq  uint64  `json:"seq"`
	At   float64 `json:"at"`
	From string  `json:"from"`
	Path string  `json:"path"`
	T    float64 `json:"t"`
}

type jsPath struct {
	Path   string  `json:"path"`
	Reason string  `json:"reason"`
	T      float64 `json:"t"`
}

func jsTime(ms float64) time.Time { return time.UnixMicro(int64(ms * 1000)) }

func TestImpairedBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("browser tests skipped in -short mode")
	}
	if chromiumPath() == "" {
		testkit.SkipOrFail(t, "browser tests need Chromium (apt-get install -y chromium, or set %s)", envChromium)
	}
	if err := netem.Check(); err != nil {
		if !errors.Is(err, netem.ErrUnavailable) {
			t.Fatal(err)
		}
		testkit.SkipOrFail(t, "the impaired-network browser test needs the network emulator: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), impairedTimeout)
	defer cancel()

	logs := &lockedBuffer{}
	dumpOnFailure(t, "server and network log", logs)
	n, err := netem.New(netem.Config{Logger: newSlog(logs)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := n.Close(); err != nil {
			t.Errorf("closing the network: %v", err)
		}
	})
	var server, phoneHost, pcHost *netem.Host
	for _, h := range []struct {
		name string
		to   **netem.Host
	}{{"server", &server}, {"phone", &phoneHost}, {"pc", &pcHost}} {
		if *h.to, err = n.AddHost(ctx, h.name); err != nil {
			t.Fatal(err)
		}
	}
	ln, err := server.Listen(ctx, "tcp", server.Addr().String()+":0")
	if err != nil {
		t.Fatal(err)
	}
	base := serve(t, ln, logs) // closed at cleanup, before the network (LIFO)

	pc := newTab(t, ctx, "pc", inHost(pcHost))
	phone := newTab(t, ctx, "phone", inHost(phoneHost))
	phone.emulate(phoneSize)
	url := openPC(t, pc, base)
	phone.open(url)
	waitPath(phone, "p2p")
	waitPath(pc, "p2p")
	for _, b := range []*tab{pc, phone} {
		if !eval[bool](b, recorderJS) {
			t.Fatalf("%s: recorder not installed", b.name)
		}
	}
	phoneID := eval[string](phone, `window.__vt.link.clientId`)

	sc := impaired.Scenario{Name: "udp-death", Title: "Chromium phone and PC: UDP phone<->PC dies silently for " + udpDead.String() + ", then returns",
		Before: 3 * time.Second, Fault: impaired.UDPDeath, FaultFor: udpDead, After: 5 * time.Second, MaxAfter: 20 * time.Second}
	run := impaired.NewRun(sc)
	run.Start = time.Now()
	if !eval[bool](phone, playerJS) {
		t.Fatal("phone: player not started")
	}
	chordsAt := func() []jsChord {
		var cs []jsChord
		if err := json.Unmarshal([]byte(eval[string](pc, `JSON.stringify(window.__rec.chords)`)), &cs); err != nil {
			t.Fatal(err)
		}
		return cs
	}
	// p2pAgain reports whether the PC page got, directly, a chord the phone
	// sent after the return.
	p2pAgain := func(ret time.Time) (time.Time, bool) {
		for _, c := range chordsAt() {
			if c.From == phoneID && c.Path == "p2p" && !jsTime(c.At).Before(ret.Truncate(time.Millisecond)) {
				return jsTime(c.T), true
			}
		}
		return time.Time{}, false
	}
	pause := func(d time.Duration) {
		select {
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		case <-time.After(d): // the scenario's timeline, not a synchronisation
		}
	}

	pause(sc.Before + 125*time.Millisecond) // midway between two chords, as the Go lab does
	unblock := n.Block(netem.Rule{From: phoneHost, To: pcHost, Proto: netem.UDP})
	run.FaultAt = time.Now()
	pause(sc.FaultFor)
	unblock()
	run.ReturnAt = time.Now()
	pause(sc.After)
	// Play on until the PC page gets chords directly again (and 2 s beyond).
	deadline := run.ReturnAt.Add(sc.MaxAfter)
	for time.Now().Before(deadline) {
		if at, ok := p2pAgain(run.ReturnAt); ok {
			if d := time.Until(at.Add(2 * time.Second)); d > 0 {
				pause(d)
			}
			break
		}
		pause(250 * time.Millisecond)
	}
	eval[bool](phone, `window.__play.stop = true`)
	phone.wait(`window.__play.done`, "the player to stop")

	var sent []struct {
		Seq uint64  `json:"seq"`
		T   float64 `json:"t"`
	}
	if err := json.Unmarshal([]byte(eval[string](phone, `JSON.stringify(window.__play.sent)`)), &sent); err != nil {
		t.Fatal(err)
	}
	if len(sent) == 0 || sent[0].Seq == 0 {
		t.Fatalf("the phone page sent nothing: %+v", sent)
	}
	// Wait (bounded) for the PC page to get the last chord.
	last := sent[len(sent)-1].Seq
	pc.wait(`window.__rec.chords.some((c) => c.from === `+jsString(phoneID)+` && c.seq === `+jsonNumber(last)+`)`, "the last chord at the PC")

	// The page's seqs count its application messages from its first one;
	// the record numbers chords from 1.
	first := sent[0].Seq
	for _, s := range sent {
		run.Sent(s.Seq-first+1, jsTime(s.T))
	}
	for _, c := range chordsAt() {
		if c.From == phoneID && c.Seq >= first {
			run.Received(c.Seq-first+1, jsTime(c.T), c.Path, c.At)
		}
	}
	for _, b := range []*tab{pc, phone} {
		var ps []jsPath
		if err := json.Unmarshal([]byte(eval[string](b, `JSON.stringify(window.__rec.paths)`)), &ps); err != nil {
			t.Fatal(err)
		}
		for _, p := range ps {
			run.Links = append(run.Links, impaired.LinkEvent{Node: b.name, Kind: "p2p", Up: p.Path == "p2p", Reason: p.Reason, At: jsTime(p.T)})
		}
	}
	for _, e := range run.Links {
		t.Logf("%s page: path %s (%s) at fault %+v", e.Node, map[bool]string{true: "p2p", false: "relay"}[e.Up], e.Reason,
			e.At.Sub(run.FaultAt).Round(time.Millisecond))
	}
	for _, smp := range run.Samples {
		if lat := smp.Latency(); lat > 100*time.Millisecond {
			t.Logf("slow chord: seq %d sent at fault %+v, delivered by %s after %v", smp.Seq,
				smp.Sent.Sub(run.FaultAt).Round(time.Millisecond), smp.Path, lat.Round(time.Millisecond))
		}
	}
	r := run.Result()
	t.Logf("Chromium, both ends:\n%s", impaired.Table([]impaired.Result{r}))
	// A bound far above the target (500 ms) and far below the 9 s the pages
	// stalled before issue 10; the figures themselves are logged.
	if r.DuringMax == impaired.None || r.DuringMax > 3*time.Second {
		t.Errorf("latest chord sent while UDP was dead: %s, bound 3s", impaired.FormatDuration(r.DuringMax))
	}
	if !r.Clean() || r.Delivered != r.Sent || r.Sent < int((sc.Before+sc.FaultFor+sc.After)/(250*time.Millisecond))/2 {
		t.Errorf("%d sent, %d delivered, %d lost, %d duplicated, %d reordered", r.Sent, r.Delivered, r.Lost, r.Duplicated, r.Reordered)
	}
	for _, h := range []*netem.Host{phoneHost, pcHost} {
		t.Logf("%s: %+v", h, h.Stats())
	}
}

func jsonNumber(v uint64) string {
	b, _ := json.Marshal(v)
	return string(b)
}
