package signaling_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/virtutune/link/protocol"
)

// A client id belongs to its holder: a phone asking for the PC's client id
// is refused before the upgrade, and the PC is neither closed nor
// impersonated; a token without a cid claim (minted by the main VirtuTune
// application) gets an id derived from it, which no other token can take.
func TestClientIDBoundToToken(t *testing.T) {
	ts := newServer(t, nil)
	sess := ts.createSession(t)
	pc, _ := ts.join(t, sess.SessionID, sess.Token)
	ph := ts.pair(t, sess)
	phone, _ := ts.join(t, sess.SessionID, ph.Token)
	pc.expect(protocol.TypeConnectionUpdate)
	if phone.ID == pc.ID {
		t.Fatalf("phone and PC share the client id %s", pc.ID)
	}

	// The phone asks for the PC's id.
	_, resp, err := ts.dialRaw(t, sess.SessionID, ph.Token, nil, "client_id="+pc.ID)
	if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("phone with the PC's client id: %v %+v, want 403", err, resp)
	}
	assertRefusal(t, resp, http.StatusForbidden)
	// The PC is still there, and its chords are its own.
	pc.send(protocol.TypeChordChange, map[string]string{"chord": "Am"})
	m := phone.next()
	if chordOf(t, m) != "Am" || m.From != pc.ID || m.Seq != 1 {
		t.Fatalf("the PC's chord arrived as %+v", m)
	}
	pc.sync()

	// A token minted elsewhere, without cid: its own derived id, stable
	// across its connections, and not the PC's.
	appTok, _, err := ts.Tokens().Sign(sess.UserID, sess.SessionID, protocol.RolePhone, "", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	app, _ := ts.join(t, sess.SessionID, appTok)
	if app.ID == pc.ID || app.ID == phone.ID {
		t.Fatalf("the app's token got %s (pc %s, phone %s)", app.ID, pc.ID, phone.ID)
	}
	pc.expect(protocol.TypeConnectionUpdate)
	phone.expect(protocol.TypeConnectionUpdate)
	if _, resp, err := ts.dialRaw(t, sess.SessionID, appTok, nil, "client_id="+pc.ID); err == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("the app's token with the PC's client id: %v %+v, want 403", err, resp)
	}
	// The same token again is the same holder: its newer connection takes
	// over (4100 for the older one), with the same id.
	app2, _ := ts.join(t, sess.SessionID, appTok)
	if app2.ID != app.ID {
		t.Fatalf("the same token got %s, then %s", app.ID, app2.ID)
	}
	app.expectClose(protocol.CloseReplaced) // the older connection of the app's token
	// Nobody else was replaced.
	pc.send(protocol.TypeChordChange, map[string]string{"chord": "G"})
	for {
		m := phone.next()
		if m.Type == protocol.TypeConnectionUpdate {
			continue
		}
		if chordOf(t, m) != "G" || m.From != pc.ID {
			t.Fatalf("got %+v", m)
		}
		break
	}
	phone.sync()
}

// A browser authenticates its WebSocket with the token as a subprotocol,
// not in the URL; the answer names virtutune.v1 and never the token.
func TestTokenAsSubprotocol(t *testing.T) {
	ts := newServer(t, nil)
	sess := ts.createSession(t)
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second, Subprotocols: []string{"virtutune.v1", "virtutune.token." + sess.Token}}
	conn, resp, err := d.Dial(ts.wsURL(sess.SessionID), nil)
	if err != nil {
		t.Fatalf("dial: %v %+v", err, resp)
	}
	defer conn.Close()
	if conn.Subprotocol() != "virtutune.v1" {
		t.Fatalf("subprotocol %q", conn.Subprotocol())
	}
	for k, vs := range resp.Header {
		for _, v := range vs {
			if strings.Contains(v, sess.Token) {
				t.Fatalf("the answer's %s carries the token", k)
			}
		}
	}
	c := &wsClient{t: t, conn: conn}
	c.expect(protocol.TypeConnectionUpdate)
	c.expect(protocol.TypeSessionState)
	// A bad token that way is refused like any other.
	d.Subprotocols = []string{"virtutune.v1", "virtutune.token." + sess.Token + "x"}
	if _, resp, err := d.Dial(ts.wsURL(sess.SessionID), nil); err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("bad token as a subprotocol: %v %+v", err, resp)
	}
}
