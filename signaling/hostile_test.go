package signaling_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/virtutune/link/protocol"
	"github.com/virtutune/link/signaling"
)

// metricValue sums the samples of metric name whose labels include want.
func metricValue(t testing.TB, reg *prometheus.Registry, name string, want map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for k, v := range want {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == k && lp.GetValue() == v {
						found = true
					}
				}
				if !found {
					continue next
				}
			}
			sum += value(m)
		}
	}
	return sum
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount())
	}
	return 0
}

type hostile struct {
	name  string
	frame []byte
	kind  int // websocket.TextMessage or BinaryMessage
	code  protocol.Code
	msg   string // exact error message when not empty
	close int    // expected close code instead of an error
}

func hostileCorpus(selfID, otherID string) []hostile {
	text := func(name, s string, code protocol.Code, msg string) hostile {
		return hostile{name: name, frame: []byte(s), kind: websocket.TextMessage, code: code, msg: msg}
	}
	big := strings.Repeat("A", 1024)
	longType := strings.Repeat("x", 10000)
	sdp := "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\n"
	manyDirect := make([]string, 100)
	for i := range manyDirect {
		manyDirect[i] = fmt.Sprintf(`"peer%04d"`, i)
	}
	manySeen := make([]string, 100)
	for i := range manySeen {
		manySeen[i] = fmt.Sprintf(`"peer%04d":1`, i)
	}
	return []hostile{
		text("invalid json", `{not json`, protocol.CodeInvalidJSON, "Invalid JSON format"),
		text("empty frame", ``, protocol.CodeInvalidJSON, "Invalid JSON format"),
		text("null", `null`, protocol.CodeInvalidJSON, "Invalid JSON format"),
		text("array", `[{"type":"chord_change"}]`, protocol.CodeInvalidJSON, "Invalid JSON format"),
		text("string", `"chord_change"`, protocol.CodeInvalidJSON, "Invalid JSON format"),
		text("number", `42`, protocol.CodeInvalidJSON, "Invalid JSON format"),
		text("truncated", `{"type":"chord_change","data":{"chord":"C"}`, protocol.CodeInvalidJSON, "Invalid JSON format"),
		text("two messages in one frame", `{"type":"ping","data":{}}{"type":"ping","data":{}}`, protocol.CodeInvalidJSON, "Invalid JSON format"),
		{name: "invalid utf-8", frame: []byte("{\"type\":\"chord_change\",\"data\":{\"chord\":\"\xff\xfe\"}}"), kind: websocket.TextMessage, code: protocol.CodeInvalidJSON, msg: "Invalid JSON format"},
		text("deeply nested", `{"type":"ping","data":{"a":`+strings.Repeat("[", 5000)+strings.Repeat("]", 5000)+`}}`, protocol.CodeTooLarge, ""),
		text("no type", `{"data":{"chord":"C"}}`, protocol.CodeInvalidData, "Message type is required"),
		text("type number", `{"type":5,"data":{}}`, protocol.CodeInvalidData, "Message type must be a string"),
		text("type object", `{"type":{"x":1},"data":{}}`, protocol.CodeInvalidData, "Message type must be a string"),
		text("data string", `{"type":"chord_change","data":"C"}`, protocol.CodeInvalidData, "Message data must be an object"),
		text("data array", `{"type":"chord_change","data":["C"]}`, protocol.CodeInvalidData, "Message data must be an object"),
		text("chord number", `{"type":"chord_change","data":{"chord":7}}`, protocol.CodeInvalidData, "chord must be a string"),
		text("chord missing", `{"type":"chord_change","data":{}}`, protocol.CodeChordRequired, "Chord is required"),
		text("chord empty", `{"type":"chord_change","data":{"chord":""}}`, protocol.CodeChordRequired, "Chord is required"),
		text("chord H", `{"type":"chord_change","data":{"chord":"H"}}`, protocol.CodeInvalidChord, `Invalid chord: "H"`),
		text("chord markup", `{"type":"chord_change","data":{"chord":"C<script>"}}`, protocol.CodeInvalidChord, `Invalid chord: "C<script>"`),
		text("chord 1KiB", `{"type":"chord_change","data":{"chord":"`+big+`"}}`, protocol.CodeInvalidChord, ""),
		text("chord NUL", `{"type":"chord_change","data":{"chord":"C\u0000"}}`, protocol.CodeInvalidChord, ""),
		text("unknown type", `{"type":"strum","data":{}}`, protocol.CodeUnknownType, "Unknown message type: strum"),
		text("unknown long type", `{"type":"`+longType+`","data":{}}`, protocol.CodeUnknownType, "Unknown message type: "+strings.Repeat("x", 64)+"…"),
		text("forge pong", `{"type":"pong","data":{"timestamp":1}}`, protocol.CodeServerOnly, ""),
		text("forge connection_update", `{"type":"connection_update","data":{"status":"disconnected","user_id":1}}`, protocol.CodeServerOnly, ""),
		text("forge practice_update", `{"type":"practice_update","data":{"status":"started"}}`, protocol.CodeServerOnly, ""),
		text("forge error", `{"type":"error","data":{"message":"you are hacked"}}`, protocol.CodeServerOnly, ""),
		text("forge session_state", `{"type":"session_state","data":{}}`, protocol.CodeServerOnly, ""),
		text("forge resumed", `{"type":"resumed","data":{}}`, protocol.CodeServerOnly, ""),
		text("timestamp word", `{"type":"practice_start","data":{"timestamp":"yesterday"}}`, protocol.CodeInvalidTimestamp, ""),
		text("timestamp object", `{"type":"ping","data":{"timestamp":{"now":true}}}`, protocol.CodeInvalidTimestamp, ""),
		text("timestamp overflow", `{"type":"ping","data":{"timestamp":1e400}}`, protocol.CodeInvalidTimestamp, ""),
		text("timestamp negative", `{"type":"practice_end","data":{"timestamp":-5}}`, protocol.CodeInvalidTimestamp, ""),
		text("offer without target", `{"type":"rtc_offer","data":{"sdp":"`+jsonEsc(sdp)+`"}}`, protocol.CodeInvalidTarget, ""),
		text("offer to nobody", `{"type":"rtc_offer","to":"nobody-here","data":{"sdp":"`+jsonEsc(sdp)+`"}}`, protocol.CodeInvalidTarget, "No member nobody-here in this session"),
		text("offer to oneself", `{"type":"rtc_offer","to":"`+selfID+`","data":{"sdp":"`+jsonEsc(sdp)+`"}}`, protocol.CodeInvalidTarget, ""),
		text("offer bad target id", `{"type":"rtc_offer","to":"<x>","data":{"sdp":"`+jsonEsc(sdp)+`"}}`, protocol.CodeInvalidTarget, ""),
		text("offer malformed sdp", `{"type":"rtc_offer","to":"`+otherID+`","data":{"sdp":"hello"}}`, protocol.CodeInvalidSignal, ""),
		text("offer sdp too long", `{"type":"rtc_offer","to":"`+otherID+`","data":{"sdp":"v=0`+strings.Repeat("a", 17000)+`"}}`, protocol.CodeTooLarge, ""),
		text("answer sdp number", `{"type":"rtc_answer","to":"`+otherID+`","data":{"sdp":5}}`, protocol.CodeInvalidData, ""),
		text("candidate garbage", `{"type":"rtc_candidate","to":"`+otherID+`","data":{"candidate":"hello"}}`, protocol.CodeInvalidSignal, ""),
		text("candidate control chars", `{"type":"rtc_candidate","to":"`+otherID+`","data":{"candidate":"candidate:1 1 udp 1 1.2.3.4 5 typ host\u0007 x"}}`, protocol.CodeInvalidSignal, ""),
		text("forged sender", `{"type":"chord_change","from":"`+otherID+`","data":{"chord":"C"}}`, protocol.CodeInvalidSequence, "from must be your own client id"),
		text("forged sequence", `{"type":"chord_change","seq":1000000,"data":{"chord":"C"}}`, protocol.CodeInvalidSequence, ""),
		text("seq string", `{"type":"chord_change","seq":"1","data":{"chord":"C"}}`, protocol.CodeInvalidData, "seq must be a non-negative integer"),
		text("direct too long", `{"type":"chord_change","direct":[`+strings.Join(manyDirect, ",")+`],"data":{"chord":"C"}}`, protocol.CodeTooLarge, ""),
		text("p2p_state bad peer", `{"type":"p2p_state","data":{"peer":"","up":true}}`, protocol.CodeInvalidTarget, ""),
		text("resume seen too big", `{"type":"resume","data":{"since":0,"seen":{`+strings.Join(manySeen, ",")+`}}}`, protocol.CodeTooLarge, ""),
		text("latency bad path", `{"type":"latency_report","data":{"path":"x","us":1}}`, protocol.CodeInvalidData, ""),
		text("latency negative", `{"type":"latency_report","data":{"path":"p2p","us":-1}}`, protocol.CodeInvalidData, ""),
		{name: "binary frame", frame: []byte{0x00, 0x01, 0x02}, kind: websocket.BinaryMessage, code: protocol.CodeBinaryFrame},
		{name: "oversized frame", frame: []byte(`{"type":"ping","data":{"x":"` + strings.Repeat("x", protocol.MaxMessageSize) + `"}}`), kind: websocket.TextMessage, close: protocol.CloseTooBig},
	}
}

func jsonEsc(s string) string {
	return strings.NewReplacer("\r", `\r`, "\n", `\n`).Replace(s)
}

// Every hostile input gets its exact answer, and meanwhile another member of
// the same session keeps receiving every message of a third.
func TestHostileInputs(t *testing.T) {
	ts := newServer(t, nil)
	sess, victim, sender := pcAndPhone(t, ts)
	attackerTok := ts.memberToken(t, sess, "phone")
	attacker, _ := ts.join(t, sess.SessionID, attackerTok)
	corpus := hostileCorpus(attacker.ID, victim.ID)
	if len(corpus) < 40 {
		t.Fatalf("corpus has %d inputs, want at least 40", len(corpus))
	}
	chords := []string{"C", "G", "Am", "F", "D", "E", "Em", "A"}
	received := 0
	outer := t
	for i, h := range corpus {
		t.Run(h.name, func(t *testing.T) {
			attacker.t = t
			_ = attacker.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
			if err := attacker.conn.WriteMessage(h.kind, h.frame); err != nil {
				t.Fatalf("write: %v", err)
			}
			chord := chords[i%len(chords)]
			sender.t = t
			sender.send(protocol.TypeChordChange, map[string]string{"chord": chord})
			if h.close != 0 {
				attacker.expectClose(h.close)
				attacker, _ = ts.join(outer, sess.SessionID, attackerTok)
			} else {
				var m *protocol.Message
				for {
					m = attacker.next()
					if m.Type != protocol.TypeChordChange && m.Type != protocol.TypeConnectionUpdate {
						break
					}
				}
				e := errData(t, m)
				if e.Code != h.code || (h.msg != "" && e.Message != h.msg) {
					t.Fatalf("error %q %q, want %q %q", e.Code, e.Message, h.code, h.msg)
				}
			}
			// the victim got the sender's chord, in order, whatever the attacker did
			for {
				victim.t = t
				m := victim.next()
				if m.Type == protocol.TypeConnectionUpdate {
					continue
				}
				if got := chordOf(t, m); got != chord {
					t.Fatalf("victim got %s, want %s", got, chord)
				}
				received++
				break
			}
		})
	}
	if received != len(corpus) {
		t.Fatalf("victim received %d of %d chords", received, len(corpus))
	}
	// Unknown extra fields are not bad input.
	attacker.t, victim.t = t, t
	attacker.sendRaw(`{"type":"chord_change","data":{"chord":"Bb","fingering":[1,3,3]},"client_hint":"x"}`)
	for {
		m := victim.next()
		if m.Type == protocol.TypeConnectionUpdate {
			continue
		}
		if chordOf(t, m) != "Bb" {
			t.Fatal("want Bb")
		}
		break
	}
	if n := metricValue(t, ts.Registry(), "virtutune_errors_total", nil); n < 40 {
		t.Fatalf("errors_total = %v", n)
	}
}

// A client that floods is answered rate_limited and, if it goes on, closed
// with 1008; the other sessions lose nothing meanwhile.
func TestFloodDoesNotHurtOthers(t *testing.T) {
	ts := newServer(t, func(c *signaling.Config) {
		c.Limits.Rate, c.Limits.Burst, c.Limits.FloodClose = 100, 100, 300
		// The PCs read (and so answer pings) only once every phone has sent:
		// on a loaded machine that can take longer than the default pong
		// wait, which would drop them.
		c.Limits.PongWait = 10 * time.Minute
		// 101 sessions and 202 WebSockets from one loopback address
		c.Limits.SessionsPerMinute, c.Limits.UpgradesPerMinute, c.Limits.MaxWSPerAddr = 1e9, 1e9, 1e9
	})
	fs, _, flooder := pcAndPhone(t, ts)
	_ = fs
	const sessions, perSession = 100, 20
	type pair struct{ pc, phone *wsClient }
	pairs := make([]pair, sessions)
	for i := range pairs {
		_, pc, ph := pcAndPhone(t, ts)
		pairs[i] = pair{pc, ph}
	}
	floodDone := make(chan int, 1)
	go func() {
		n := 0
		msg := []byte(`{"type":"chord_change","data":{"chord":"C"}}`)
		for n < 100000 {
			_ = flooder.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
			if flooder.conn.WriteMessage(websocket.TextMessage, msg) != nil {
				break
			}
			n++
		}
		floodDone <- n
	}()
	for k := 0; k < perSession; k++ {
		for _, p := range pairs {
			p.phone.send(protocol.TypeChordChange, map[string]string{"chord": []string{"C", "G", "Am", "F"}[k%4]})
		}
	}
	got := 0
	for _, p := range pairs {
		for k := 0; k < perSession; k++ {
			if chordOf(t, p.pc.next()) != []string{"C", "G", "Am", "F"}[k%4] {
				t.Fatal("out of order")
			}
			got++
		}
	}
	if got != sessions*perSession {
		t.Fatalf("delivered %d of %d", got, sessions*perSession)
	}
	// The flooder was told (rate_limited), then closed with 1008. It may not
	// read the close frame: it is still writing when the server closes, and
	// the reset can discard what it had not read yet; the server's counters
	// say what the server sent.
	for {
		_, err := flooder.read(10 * time.Second)
		if err != nil {
			if websocket.IsCloseError(err) && !websocket.IsCloseError(err, protocol.ClosePolicy, websocket.CloseAbnormalClosure) {
				t.Fatalf("flooder closed with %v, want 1008", err)
			}
			break
		}
	}
	if n := metricValue(t, ts.Registry(), "virtutune_errors_total", map[string]string{"code": "rate_limited"}); n < 1 {
		t.Fatal("the flooder never got rate_limited")
	}
	deadline := time.Now().Add(10 * time.Second)
	for metricValue(t, ts.Registry(), "virtutune_closes_total", map[string]string{"code": "1008"}) != 1 {
		if time.Now().After(deadline) {
			t.Fatal("the flooder was not closed with 1008")
		}
		time.Sleep(10 * time.Millisecond) // polling a counter with a deadline
	}
	t.Logf("flooder sent %d frames before it was closed", <-floodDone)
}

// A client that never reads is closed as a slow consumer (4000) once its
// queue is full; the sender and the server go on, and its connection is freed.
func TestSlowReaderIsClosed(t *testing.T) {
	ts := newServer(t, func(c *signaling.Config) {
		c.Limits.Rate, c.Limits.Burst, c.Limits.SendQueue, c.Limits.SocketSendBuffer = 1e6, 1e6, 64, 8192
	})
	sess := ts.createSession(t)
	sender, _ := ts.join(t, sess.SessionID, sess.Token)
	other, _ := ts.join(t, sess.SessionID, ts.memberToken(t, sess, "phone"))
	sender.expect(protocol.TypeConnectionUpdate)
	// The slow reader has a tiny socket receive buffer and never reads.
	d := websocket.Dialer{NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err == nil {
			_ = c.(*net.TCPConn).SetReadBuffer(4096)
		}
		return c, err
	}}
	slow, _, err := d.Dial(ts.wsURL(sess.SessionID)+"?token="+ts.memberToken(t, sess, "phone"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	for _, c := range []*wsClient{sender, other} {
		c.expect(protocol.TypeConnectionUpdate)
	}
	chord := `{"type":"chord_change","data":{"chord":"Cmaj7"}}`
	deadline := time.Now().Add(30 * time.Second)
	sent := 0
	for metricValue(t, ts.Registry(), "virtutune_send_queue_overflows_total", nil) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("slow reader not closed after %d messages", sent)
		}
		for i := 0; i < 16; i++ {
			sender.sendRaw(chord)
		}
		sent += 16
		// keep the healthy member drained
		for i := 0; i < 16; {
			if m := other.next(); m.Type == protocol.TypeChordChange {
				i++
			}
		}
	}
	// the slow client's connection goes away: 3 members -> 2 connections
	for metricValue(t, ts.Registry(), "virtutune_connections", nil) != 2 {
		if time.Now().After(deadline) {
			t.Fatal("slow client's connection not released")
		}
		time.Sleep(10 * time.Millisecond) // polling a gauge with a deadline
	}
	if n := metricValue(t, ts.Registry(), "virtutune_closes_total", map[string]string{"code": "4000"}); n != 1 {
		t.Fatalf("closes{4000} = %v", n)
	}
	// the others still talk
	sender.send(protocol.TypeChordChange, map[string]string{"chord": "E"})
	for {
		m := other.next()
		if m.Type == protocol.TypeChordChange && chordOf(t, m) == "E" {
			break
		}
	}
	t.Logf("slow reader closed after %d messages", sent)
}
