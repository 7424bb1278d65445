package impaired

import (
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)

func ms(n int) time.Duration { return time.Duration(n) * time.Millisecond }

func at(n int) time.Time { return t0.Add(ms(n)) }

func TestResultNoFault(t *testing.T) {
	r := NewRun(Scenario{Name: "wifi", Before: time.Second})
	// 100 chords, latency i ms for the i-th, all p2p but the last by relay.
	for i := 1; i <= 100; i++ {
		r.Sent(uint64(i), at(i*250))
		path := "p2p"
		if i == 100 {
			path = "relay"
		}
		r.Received(uint64(i), at(i*250+i), path, 0)
	}
	res := r.Result()
	if res.Sent != 100 || res.Delivered != 100 || !res.Clean() || res.ViaP2P != 99 || res.ViaRelay != 1 {
		t.Fatalf("counts: %+v", res)
	}
	if res.P50 != ms(50) || res.P99 != ms(99) || res.Max != ms(100) {
		t.Errorf("p50/p99/max %v %v %v, want 50ms 99ms 100ms", res.P50, res.P99, res.Max)
	}
	if res.DuringMax != None || res.AfterMax != None || res.P2PAgain != None || res.DownKnown != None {
		t.Errorf("fault figures without a fault: %+v", res)
	}
	cs := res.Checks()
	if len(cs) != 2 || cs[0].Met || cs[1].Met {
		t.Errorf("wifi checks %+v: p99 99ms must miss the 60ms target", cs)
	}
	// A stall of the machine over the slowest chords: they no longer count
	// in the undisturbed figures.
	r.Stalls = []Stall{{Where: "switch", From: at(95*250 + 10), To: at(100*250 + 50)}}
	res = r.Result()
	if res.Stalls != 1 || res.StallMax != ms(1290) || res.Disturbed != 6 || res.P99Undisturbed != ms(94) || res.MaxUndisturbed != ms(94) {
		t.Errorf("with a stall: %d stalls (max %v), %d disturbed, undisturbed p99 %v max %v",
			res.Stalls, res.StallMax, res.Disturbed, res.P99Undisturbed, res.MaxUndisturbed)
	}
	if res.P99 != ms(99) {
		t.Errorf("p99 of all %v, want 99ms", res.P99)
	}
}

func TestResultLostDuplicatedReordered(t *testing.T) {
	r := NewRun(Scenario{Name: "clean", Before: time.Second})
	for i := 1; i <= 5; i++ {
		r.Sent(uint64(i), at(i))
	}
	r.Received(1, at(10), "p2p", 0)
	r.Received(3, at(11), "p2p", 0)
	r.Received(2, at(12), "relay", 0) // after 3: reordered
	r.Received(3, at(13), "relay", 0) // twice: duplicated
	// 4 and 5 never arrive; 6 arrives without a report of its send.
	r.Received(6, at(14), "relay", float64(at(7).UnixMicro())/1000)
	res := r.Result()
	if res.Sent != 6 || res.Lost != 2 || res.Duplicated != 1 || res.Reordered != 1 || res.Clean() {
		t.Errorf("%+v", res)
	}
	if r.complete() {
		t.Error("complete with chords missing")
	}
}

func TestResultUDPDeath(t *testing.T) {
	sc := Scenario{Name: "udp-death", Before: time.Second, Fault: UDPDeath, FaultFor: 2 * time.Second, After: time.Second}
	r := NewRun(sc)
	r.Start, r.FaultAt, r.ReturnAt = at(0), at(1000), at(3000)
	r.Links = []LinkEvent{
		{Node: "pc", Kind: "p2p", Up: true, At: at(-500)},
		{Node: "pc", Kind: "p2p", Up: false, At: at(1450)},
		{Node: "phone", Kind: "p2p", Up: false, At: at(1400)}, // earlier, listed later
		{Node: "pc", Kind: "p2p", Up: true, At: at(3700)},
	}
	seq := uint64(0)
	add := func(sent, recv int, path string) {
		seq++
		r.Sent(seq, at(sent))
		r.Received(seq, at(recv), path, 0)
	}
	add(500, 501, "p2p")     // before
	add(1100, 1500, "relay") // during: 400ms
	add(2000, 2005, "relay") // during
	add(3100, 3105, "relay") // after, relay
	add(3800, 3801, "p2p")   // after, p2p again at +801ms
	res := r.Result()
	if res.DuringSent != 2 || res.DuringMax != ms(400) || res.DuringAfterReturn != ms(-995) {
		t.Errorf("during: %d sent, max %v, after return %v", res.DuringSent, res.DuringMax, res.DuringAfterReturn)
	}
	if res.AfterSent != 2 || res.AfterMax != ms(5) || res.AfterP50 != ms(1) {
		t.Errorf("after: %d sent, p50 %v max %v", res.AfterSent, res.AfterP50, res.AfterMax)
	}
	if res.P2PAgain != ms(801) || res.DownKnown != ms(400) || res.UpAgain != ms(700) {
		t.Errorf("p2p again %v, down known %v, up again %v", res.P2PAgain, res.DownKnown, res.UpAgain)
	}
	for _, c := range res.Checks() {
		if !c.Met {
			t.Errorf("check %+v not met", c)
		}
	}
	if tab := Table([]Result{res}); !strings.Contains(tab, "udp-death") || strings.Contains(tab, "MISSED") {
		t.Errorf("table:\n%s", tab)
	}
}

func TestResultBlackout(t *testing.T) {
	sc := Scenario{Name: "blackout-3s", Before: time.Second, Fault: Blackout, FaultFor: 3 * time.Second, After: time.Second}
	r := NewRun(sc)
	r.FaultAt, r.ReturnAt = at(1000), at(4000)
	r.Sent(1, at(1500))
	r.Received(1, at(5200), "p2p", 0) // 1.2 s after the return: missed
	r.Sent(2, at(4500))
	r.Received(2, at(4600), "relay", 0)
	res := r.Result()
	if res.DuringAfterReturn != ms(1200) || res.AfterMax != ms(100) {
		t.Errorf("during: %v after the return; after: max %v", res.DuringAfterReturn, res.AfterMax)
	}
	cs := res.Checks()
	if len(cs) != 2 || cs[0].Met || !cs[1].Met {
		t.Errorf("checks %+v", cs)
	}
}

func TestMedianAndQuantile(t *testing.T) {
	if q := quantile(nil, 0.5); q != None {
		t.Errorf("quantile of nothing: %v", q)
	}
	if q := quantile([]time.Duration{3, 1, 2}, 0.5); q != 2 {
		t.Errorf("median of 1,2,3: %v", q)
	}
	rs := []Result{
		{Name: "x", P99: ms(10), P2PAgain: None, Sent: 10, Lost: 1},
		{Name: "x", P99: ms(30), P2PAgain: ms(5), Sent: 10},
		{Name: "x", P99: ms(20), P2PAgain: None, Sent: 10},
	}
	m := Median(rs)
	if m.P99 != ms(20) || m.P2PAgain != None || m.Sent != 30 || m.Lost != 1 {
		t.Errorf("median %+v", m)
	}
	rs[2].P2PAgain = ms(7)
	if m := Median(rs); m.P2PAgain != ms(7) {
		t.Errorf("median p2p again %v, want 7ms (None counts as the longest)", m.P2PAgain)
	}
}

func TestFormatDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		None: "-", 500 * time.Microsecond: "500µs", 2500 * time.Microsecond: "2.5ms",
		ms(250): "250ms", 12 * time.Second: "12.0s", -ms(995): "-995ms",
	} {
		if got := FormatDuration(d); got != want {
			t.Errorf("FormatDuration(%v) = %q, want %q", d, got, want)
		}
	}
}
