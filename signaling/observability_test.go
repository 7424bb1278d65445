package signaling_test

import (
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/virtutune/link/internal/testkit"
	"github.com/virtutune/link/protocol"
	"github.com/virtutune/link/signaling"
)

// /metrics exports what operators need: connections, sessions, messages by
// type and path, errors by code, closes by code, broker publish latency and
// health, and the chord latency per path reported by peers.
func TestMetricsExported(t *testing.T) {
	ts := newServer(t, nil)
	_, pc, phone := pcAndPhone(t, ts)
	pc.send(protocol.TypeP2PState, protocol.P2PState{Peer: phone.ID, Up: true})
	pc.sync()
	m := protocol.MustMarshal(protocol.TypeChordChange, protocol.ChordChange{Chord: "C"})
	m.Direct = []string{pc.ID}
	phone.sendRaw(string(protocol.Encode(m)))
	phone.send(protocol.TypeChordChange, map[string]string{"chord": "G"})
	pc.expect(protocol.TypeChordChange) // both are relayed: the paths race
	pc.expect(protocol.TypeChordChange)
	phone.sendRaw("{oops")
	errData(t, phone.next())
	pc.send(protocol.TypeLatency, protocol.Latency{Path: "p2p", Micros: 180})
	pc.send(protocol.TypeLatency, protocol.Latency{Path: "relay", Micros: 90})
	pc.sync()
	phone.bye()
	pc.expect(protocol.TypeConnectionUpdate)

	// The phone's close is counted once its connection has ended, which can
	// be a moment after the others were told it left.
	var body []byte
	testkit.Eventually(testkit.Context(t, 10*time.Second), t, "the phone's close to be counted", func() bool {
		resp, err := http.Get(ts.URL + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ = io.ReadAll(resp.Body)
		return strings.Contains(string(body), `virtutune_closes_total{code="1000"} 1`)
	})
	for _, want := range []string{
		"virtutune_connections 1",
		`virtutune_members{role="pc"} 1`,
		`virtutune_members{role="phone"} 0`,
		"virtutune_sessions_active 1",
		`virtutune_messages_total{dir="out",path="relay",type="chord_change"} 2`,
		`virtutune_errors_total{code="invalid_json"} 1`,
		`virtutune_closes_total{code="1000"} 1`,
		"virtutune_broker_publish_seconds_count",
		"virtutune_broker_up 1",
		`virtutune_chord_latency_seconds_count{path="p2p"} 1`,
		`virtutune_chord_latency_seconds_count{path="relay"} 1`,
		`virtutune_p2p_state_total{reason="",state="up"} 1`,
		"go_goroutines",
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if strings.Contains(string(body), `path="p2p",type="chord_change"`) {
		t.Errorf("/metrics counts skipped relays; every message is relayed")
	}
}

// Tokens, the secret, pairing tokens, SDP and ICE credentials never reach the
// logs, even at Debug.
func TestSecretsNeverLogged(t *testing.T) {
	var logs testkit.Buffer
	ts := newServer(t, func(c *signaling.Config) {
		c.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	sess, pc, phone := pcAndPhone(t, ts)
	offer := protocol.MustMarshal(protocol.TypeRTCOffer, protocol.RTCDescription{SDP: "v=0\r\na=ice-pwd:SECRETICEPASSWORD0123456789\r\na=ice-ufrag:UFRAGSECRET\r\n"})
	offer.To = phone.ID
	pc.sendRaw(string(protocol.Encode(offer)))
	phone.expect(protocol.TypeRTCOffer)
	// refused joins log too
	_, _, _ = ts.dialRaw(t, sess.SessionID, sess.Token+"x", nil, "")
	phone.bye()
	pc.expect(protocol.TypeConnectionUpdate)
	out := logs.String()
	if !strings.Contains(out, "joined") {
		t.Fatalf("no logs captured: %q", out)
	}
	for name, secret := range map[string]string{
		"pc token": sess.Token, "pairing code": sess.PairingCode, "secret": string(testSecret),
		"token signature": sess.Token[strings.LastIndexByte(sess.Token, '.')+1:],
		"ice pwd":         "SECRETICEPASSWORD", "ice ufrag": "UFRAGSECRET",
	} {
		if strings.Contains(out, secret) {
			t.Errorf("the %s appears in the logs", name)
		}
	}
}
