package signaling_test

import (
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/virtutune/link/protocol"
	"github.com/virtutune/link/signaling"
)

// The Origin check compares scheme, host and port, exactly.
func TestOriginComparesSchemeHostPort(t *testing.T) {
	ts := newServer(t, func(c *signaling.Config) { c.AllowedOrigins = []string{"https://app.example.com"} })
	sess := ts.createSession(t)
	u, _ := url.Parse(ts.URL)
	host, port := u.Hostname(), u.Port()
	cases := []struct {
		origin string
		want   int
	}{
		{"http://" + host + ":" + port, http.StatusSwitchingProtocols},
		{"HTTP://" + host + ":" + port + "/", http.StatusSwitchingProtocols},
		{"https://app.example.com", http.StatusSwitchingProtocols},
		{"https://app.example.com:443", http.StatusSwitchingProtocols},
		{"https://" + host + ":" + port, http.StatusForbidden},
		{"ws://" + host + ":" + port, http.StatusForbidden},
		{"javascript://" + host + ":" + port, http.StatusForbidden},
		{"http://" + host + ":1" + port, http.StatusForbidden},
		{"http://" + host, http.StatusForbidden},
		{"null", http.StatusForbidden},
		{"http://app.example.com", http.StatusForbidden},
		{"https://app.example.com:8443", http.StatusForbidden},
		{"http://" + host + ":" + port + "/path", http.StatusForbidden},
	}
	for _, c := range cases {
		conn, resp, err := ts.dialRaw(t, sess.SessionID, sess.Token, http.Header{"Origin": {c.origin}}, "")
		got := 0
		if resp != nil {
			got = resp.StatusCode
		}
		if err == nil {
			conn.Close()
		}
		if got != c.want {
			t.Errorf("Origin %q: %d, want %d", c.origin, got, c.want)
		}
	}
}

// A Host that does not name this server (the DNS-rebinding shape: Host and
// Origin both the attacker's name) is refused before anything else, by the
// WebSocket and by the API; so no forged Host reaches a pairing link or a
// ws_url.
func TestForeignHostRefused(t *testing.T) {
	ts := newServer(t, nil)
	sess := ts.createSession(t)
	_, port := splitPort(t, ts.URL)
	for _, h := range []string{"evil.example:" + port, "evil.example", "127.0.0.1.evil.example:" + port} {
		_, resp, err := ts.dialRaw(t, sess.SessionID, sess.Token, http.Header{"Host": {h}, "Origin": {"http://" + h}}, "")
		if err == nil || resp == nil || resp.StatusCode != http.StatusMisdirectedRequest {
			t.Errorf("WebSocket with Host %q: %v %v, want 421", h, err, resp)
		}
		for _, path := range []string{"/api/sessions", "/api/pair", "/api/sessions/" + sess.SessionID + "/pairing"} {
			req, _ := http.NewRequest(http.MethodPost, ts.URL+path, strings.NewReader(`{}`))
			req.Host = h
			req.Header.Set("Authorization", "Bearer "+sess.Token)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusMisdirectedRequest || strings.Contains(string(b), "evil") {
				t.Errorf("POST %s with Host %q: %d %s, want 421", path, h, resp.StatusCode, b)
			}
		}
	}
	// The names of this machine are served: localhost, loopback, and the
	// links built from them carry the LAN address or loopback, not the
	// request's words.
	for _, h := range []string{"localhost:" + port, "127.0.0.1:" + port, "[::1]:" + port} {
		req, _ := http.NewRequest(http.MethodPost, ts.URL+"/api/sessions", nil)
		req.Host = h
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var s protocol.SessionResponse
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			t.Fatalf("Host %q: %d %s", h, resp.StatusCode, b)
		}
		mustUnmarshal(t, b, &s)
		if pu, err := url.Parse(s.PairingURL); err != nil || pu.Port() != port || strings.Contains(pu.Host, "localhost") {
			t.Errorf("Host %q: pairing_url %q", h, s.PairingURL)
		}
	}
}

func splitPort(t *testing.T, base string) (string, string) {
	t.Helper()
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	return u.Hostname(), u.Port()
}

// A token has one spelling: its signature's last character may not vary in
// the bits base64url leaves unused.
func TestTokenSignatureCanonical(t *testing.T) {
	tok, err := signaling.NewTokens(testSecret)
	if err != nil {
		t.Fatal(err)
	}
	s, _, err := tok.Sign(42, "session-0001", "pc", "", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tok.Parse(s); err != nil {
		t.Fatalf("the token as signed: %v", err)
	}
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	last := strings.IndexByte(alphabet, s[len(s)-1])
	variants := 0
	for v := 0; v < 4; v++ { // a 32-byte signature leaves 2 bits of its last character unused
		c := alphabet[last&^3|v]
		if c == s[len(s)-1] {
			continue
		}
		variants++
		if _, err := tok.Parse(s[:len(s)-1] + string(c)); err == nil {
			t.Errorf("the token with its last character %q for %q was accepted", c, s[len(s)-1])
		}
	}
	if variants != 3 {
		t.Fatalf("%d variants", variants)
	}
}
