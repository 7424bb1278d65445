package signaling_test

import (
	"testing"

	"github.com/virtutune/link/protocol"
	"github.com/virtutune/link/signaling"
)

// The signaling rate is per member: a phone that used up its own signaling
// bucket leaves the PC's untouched.
func TestSignalingRatePerMember(t *testing.T) {
	ts := newServer(t, func(c *signaling.Config) { c.Limits.SignalRate, c.Limits.SignalBurst = 0.01, 5 })
	_, pc, phone := pcAndPhone(t, ts)
	flood := protocol.MustMarshal(protocol.TypeRTCRestart, protocol.RTCRestart{Reason: "flood"})
	flood.To = pc.ID
	for i := 0; i < 20; i++ {
		phone.sendRaw(string(protocol.Encode(flood)))
	}
	limited := 0
	for _, m := range phone.untilPong() {
		if e := errData(t, m); e.Code == protocol.CodeRateLimited {
			limited++
		}
	}
	if limited != 15 {
		t.Fatalf("the phone was limited %d times, want 15 (20 sent, burst 5)", limited)
	}
	// The PC's own signaling still goes through, all of it.
	offer := protocol.MustMarshal(protocol.TypeRTCRestart, protocol.RTCRestart{Reason: "pc"})
	offer.To = phone.ID
	for i := 0; i < 5; i++ {
		pc.sendRaw(string(protocol.Encode(offer)))
	}
	pc.pingThrough("the PC's signaling")
	got := 0
	phone.send(protocol.TypePing, map[string]any{})
	for phone.next().Type != protocol.TypePong {
		got++
	}
	if got != 5 {
		t.Fatalf("the phone got %d of the PC's 5 signaling messages", got)
	}
}

// latency_report is bounded (values outside 0-60 s are refused) and
// rate-limited per member: a flood of reports moves the latency metrics by
// the member's burst, not by the flood.
func TestLatencyReportsBoundedAndRateLimited(t *testing.T) {
	// LatencyRate 1/s, burst 5 (the default); the message rate out of the way
	ts := newServer(t, func(c *signaling.Config) { c.Limits.Rate, c.Limits.Burst = 1e6, 1e6 })
	_, pc, _ := pcAndPhone(t, ts)
	count := func() float64 {
		return metricValue(t, ts.Registry(), "virtutune_chord_latency_seconds", nil)
	}
	before := count()
	for i := 0; i < 100; i++ {
		pc.send(protocol.TypeLatency, protocol.Latency{Path: protocol.PathRelay, Micros: 1})
	}
	pc.send(protocol.TypeLatency, protocol.Latency{Path: protocol.PathRelay, Micros: 61e6})
	if e := errData(t, pc.next()); e.Code != protocol.CodeInvalidData {
		t.Fatalf("a 61 s report: %+v", e)
	}
	pc.sync()
	if n := count() - before; n < 5 || n > 7 {
		t.Fatalf("100 reports moved the latency histogram by %g samples, want the burst of 5 (or 6-7 refilled)", n)
	}
	if d := metricValue(t, ts.Registry(), "virtutune_latency_reports_dropped_total", nil); d < 93 {
		t.Fatalf("dropped %g reports", d)
	}
}

// Sequence state is bounded without breaking anyone: members that come and
// go with new client ids never make the session forget the PC's count (on
// main they did, and the PC's next chord failed invalid_sequence); a sender
// beyond the bound is refused, clearly, until absent ones are long gone.
func TestSequenceStateNeverForgetsThePC(t *testing.T) {
	b, err := signaling.NewMemoryBroker(signaling.MemoryConfig{MaxSeqClients: 4})
	ts := withBroker(t, b, err)
	sess, pc, listener := pcAndPhone(t, ts)
	pc.send(protocol.TypeChordChange, map[string]string{"chord": "C"})
	if chordOf(t, listener.next()) != "C" {
		t.Fatal("want C")
	}
	refused := 0
	for i := 0; i < 6; i++ {
		c, _ := ts.join(t, sess.SessionID, ts.memberToken(t, sess, "phone"))
		c.send(protocol.TypeChordChange, map[string]string{"chord": "G"})
		for _, m := range c.untilPong() {
			if m.Type == protocol.TypeError {
				if e := errData(t, m); e.Code != protocol.CodeRateLimited {
					t.Fatalf("sender %d: %+v", i, e)
				}
				refused++
			}
		}
		c.bye()
	}
	// pc, listener (no chord yet, so no entry) and the first three senders.
	if refused != 3 {
		t.Fatalf("%d of 6 new senders refused, want 3 (4 remembered: the PC and 3)", refused)
	}
	pc.send(protocol.TypeChordChange, map[string]string{"chord": "Am"})
	pc.pingThrough("the PC's chord")
	for {
		m := listener.next()
		if m.Type == protocol.TypeConnectionUpdate || (m.Type == protocol.TypeChordChange && chordOf(t, m) == "G") {
			continue
		}
		if chordOf(t, m) != "Am" || m.From != pc.ID || m.Seq != 2 {
			t.Fatalf("the PC's next chord arrived as %+v", m)
		}
		break
	}
}

// probe goes to its one target with the sender's id, as the member sent it
// (a question n or an answer ack); a malformed one is refused with
// invalid_data and never relayed; probes count in the sender's signaling
// rate (its bucket of 6 here: the 7th is rate_limited); one to a member not
// present is dropped without an error (the asker stops when it learns the
// member left).
func TestProbeRelayedAndBounded(t *testing.T) {
	ts := newServer(t, func(c *signaling.Config) { c.Limits.SignalRate, c.Limits.SignalBurst = 0.01, 6 })
	_, pc, phone := pcAndPhone(t, ts)
	for _, bad := range []string{`{}`, `{"n":1,"ack":1}`, `{"n":-1}`, `{"n":"1"}`, `{"ack":9007199254740993}`} {
		pc.sendRaw(`{"type":"probe","to":"` + phone.ID + `","data":` + bad + `}`)
		if e := errData(t, pc.next()); e.Code != protocol.CodeInvalidData {
			t.Fatalf("probe %s: error %+v, want invalid_data", bad, e)
		}
	}
	pc.sendRaw(`{"type":"probe","data":{"n":1}}`)
	if e := errData(t, pc.next()); e.Code != protocol.CodeInvalidTarget {
		t.Fatalf("probe without to: error %+v, want invalid_target", e)
	}
	for n := 1; n <= 3; n++ {
		pc.sendRaw(`{"type":"probe","to":"` + phone.ID + `","data":{"n":` + string(rune('0'+n)) + `}}`)
	}
	pc.sendRaw(`{"type":"probe","to":"nobody0123456789","data":{"n":1}}`)
	pc.sync()
	for n := uint64(1); n <= 3; n++ {
		m := phone.expect(protocol.TypeProbe)
		var p protocol.Probe
		mustUnmarshal(t, m.Data, &p)
		if m.From != pc.ID || m.To != phone.ID || p.N != n || p.Ack != 0 {
			t.Fatalf("relayed probe %+v %s, want n=%d from %s", m, m.Data, n, pc.ID)
		}
	}
	phone.sendRaw(`{"type":"probe","to":"` + pc.ID + `","data":{"ack":3}}`)
	m := pc.expect(protocol.TypeProbe)
	var p protocol.Probe
	mustUnmarshal(t, m.Data, &p)
	if m.From != phone.ID || p.Ack != 3 || p.N != 0 {
		t.Fatalf("relayed answer %+v %s, want ack=3 from %s", m, m.Data, phone.ID)
	}
	// 4 of the PC's 6 are spent: 2 more pass, the next is refused
	for i := 0; i < 3; i++ {
		pc.sendRaw(`{"type":"probe","to":"` + phone.ID + `","data":{"n":9}}`)
	}
	if errs := pc.untilPong(); len(errs) != 1 || errData(t, errs[0]).Code != protocol.CodeRateLimited {
		t.Fatalf("before the pong: %d messages, want one rate_limited (7 probes, burst 6)", len(errs))
	}
	for i := 0; i < 2; i++ {
		phone.expect(protocol.TypeProbe)
	}
	phone.sync()
}
