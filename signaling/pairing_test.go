package signaling_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/virtutune/link/protocol"
	"github.com/virtutune/link/signaling"
	"github.com/virtutune/link/signaling/redistest"
)

// pairFrom posts body to /api/pair as if from client address addr (the
// handler is called directly, so no traffic leaves the process).
func pairFrom(t *testing.T, ts *testServer, addr string, body map[string]string) *httptest.ResponseRecorder {
	t.Helper()
	return pairVia(t, ts, addr, "", body)
}

// pairVia is pairFrom from TCP peer addr with X-Forwarded-For xff (none
// when "").
func pairVia(t *testing.T, ts *testServer, addr, xff string, body map[string]string) *httptest.ResponseRecorder {
	t.Helper()
	b, _ := json.Marshal(body)
	req := httptest.NewRequest(http.MethodPost, "/api/pair", bytes.NewReader(b))
	req.RemoteAddr = addr + ":40000"
	if xff != "" {
		req.Header.Set("X-Forwarded-For", xff)
	}
	req.Host = "localhost" // a name of this server (httptest's example.com is not)
	rec := httptest.NewRecorder()
	ts.ServeHTTP(rec, req)
	return rec
}

func wrongPIN(right string) string {
	for i := 0; ; i++ {
		if p := fmt.Sprintf("%06d", (i*7919+13)%1_000_000); p != right {
			return p
		}
	}
}

// Guessing is bounded per address: past Limits.PairFailures wrong codes an
// address gets 429 with Retry-After, even with the right code, and another
// address is untouched.
func TestPairingGuessesPerAddress(t *testing.T) {
	ts := newServer(t, func(c *signaling.Config) { c.Limits.PairFailures = 5 })
	s := ts.createSession(t)
	for i := range 5 {
		if rec := pairFrom(t, ts, "10.1.0.1", map[string]string{"code": fmt.Sprintf("ZZZZZZZZZZZ%d", i)}); rec.Code != http.StatusUnauthorized {
			t.Fatalf("wrong code %d: %d %s", i, rec.Code, rec.Body)
		}
	}
	rec := pairFrom(t, ts, "10.1.0.1", map[string]string{"code": s.PairingCode})
	if rec.Code != http.StatusTooManyRequests || rec.Header().Get("Retry-After") == "" {
		t.Fatalf("the right code after 5 wrong ones from the same address: %d (Retry-After %q), want 429", rec.Code, rec.Header().Get("Retry-After"))
	}
	if rec := pairFrom(t, ts, "10.1.0.2", map[string]string{"code": s.PairingCode}); rec.Code != http.StatusOK {
		t.Fatalf("another address with the right code: %d %s", rec.Code, rec.Body)
	}
	// An IPv6 client counts by its /64.
	for i := range 5 {
		pairFrom(t, ts, fmt.Sprintf("[2001:db8::%x]", i+1), map[string]string{"pin": "000000x"})
	}
	if rec := pairFrom(t, ts, "[2001:db8::99]", map[string]string{"pin": "123456"}); rec.Code != http.StatusTooManyRequests {
		t.Fatalf("a sixth address of one /64: %d, want 429", rec.Code)
	}
}

// Behind a trusted proxy every request's TCP peer is the proxy: the
// wrong-code bound counts the forwarded client (the address of every
// per-address limit), so one guesser behind nginx locks out only itself and
// another client behind the same proxy pairs at once. From a peer that is
// not a trusted proxy, X-Forwarded-For is ignored: it cannot buy a fresh
// bound, and the peer's own address is the one limited.
func TestPairingGuessesBehindProxy(t *testing.T) {
	const proxy = "10.9.0.1"
	for _, trusted := range []bool{true, false} {
		t.Run(fmt.Sprintf("trusted=%v", trusted), func(t *testing.T) {
			ts := newServer(t, func(c *signaling.Config) {
				c.Limits.PairFailures = 5
				if trusted {
					c.TrustedProxies = []string{proxy}
				}
			})
			s := ts.createSession(t)
			// Five wrong guesses, codes and 6-digit ones (too few to burn the
			// live 6-digit code), all from one forwarded client.
			for i := range 5 {
				body := map[string]string{"code": fmt.Sprintf("ZZZZZZZZZZZ%d", i)}
				if i%2 == 1 {
					body = map[string]string{"pin": wrongPIN(s.PairingPIN)}
				}
				if rec := pairVia(t, ts, proxy, "203.0.113.7", body); rec.Code != http.StatusUnauthorized {
					t.Fatalf("wrong guess %d: %d %s", i, rec.Code, rec.Body)
				}
			}
			// The guesser is limited either way, a forged left-most hop
			// changing nothing (only the right-most untrusted hop counts).
			for _, xff := range []string{"203.0.113.7", "198.51.100.1, 203.0.113.7"} {
				if rec := pairVia(t, ts, proxy, xff, map[string]string{"pin": s.PairingPIN}); rec.Code != http.StatusTooManyRequests {
					t.Fatalf("the guesser (X-Forwarded-For %q) with the right code: %d %s, want 429", xff, rec.Code, rec.Body)
				}
			}
			other := pairVia(t, ts, proxy, "203.0.113.8", map[string]string{"pin": s.PairingPIN})
			if trusted {
				if other.Code != http.StatusOK {
					t.Fatalf("another client behind the trusted proxy with the right 6-digit code: %d %s, want 200", other.Code, other.Body)
				}
				return
			}
			if other.Code != http.StatusTooManyRequests {
				t.Fatalf("another X-Forwarded-For from an untrusted peer: %d %s, want 429 (the header ignored)", other.Code, other.Body)
			}
			if rec := pairVia(t, ts, "10.9.0.2", "", map[string]string{"pin": s.PairingPIN}); rec.Code != http.StatusOK {
				t.Fatalf("another peer with the right 6-digit code: %d %s, want 200", rec.Code, rec.Body)
			}
		})
	}
}

// A wrong 6-digit guess names no session, so it counts against every live
// 6-digit code: after Limits.PINGuesses of them (from any addresses) the
// live code is burned, and the PC is told so; past PINGuessesPerMinute
// 6-digit attempts answer 429 for everyone, while the QR link still works.
func TestPairingGuessesPerSession(t *testing.T) {
	ts := newServer(t, func(c *signaling.Config) {
		c.Limits.PINGuesses = 4
		c.Limits.PINGuessesPerMinute = 6
	})
	s := ts.createSession(t)
	status := func() protocol.PairingStatus {
		req := httptest.NewRequest(http.MethodGet, "/api/sessions/"+s.SessionID+"/pairing", nil)
		req.Host = "localhost"
		req.Header.Set("Authorization", "Bearer "+s.Token)
		rec := httptest.NewRecorder()
		ts.ServeHTTP(rec, req)
		var st protocol.PairingStatus
		if rec.Code != 200 || json.Unmarshal(rec.Body.Bytes(), &st) != nil {
			t.Fatalf("pairing status: %d %s", rec.Code, rec.Body)
		}
		return st
	}
	if st := status(); !st.Live || !st.PINLive {
		t.Fatalf("fresh pairing: %+v", st)
	}
	for i := range 4 {
		pairFrom(t, ts, fmt.Sprintf("10.2.0.%d", i+1), map[string]string{"pin": wrongPIN(s.PairingPIN)})
	}
	if st := status(); !st.Live || st.PINLive {
		t.Fatalf("after 4 wrong guesses: %+v, want the PIN burned", st)
	}
	if rec := pairFrom(t, ts, "10.2.1.1", map[string]string{"pin": s.PairingPIN}); rec.Code != http.StatusGone || !strings.Contains(rec.Body.String(), "pairing_burned") {
		t.Fatalf("the burned PIN: %d %s, want 410 pairing_burned", rec.Code, rec.Body)
	}
	// A new pairing gets a PIN that works again.
	p := ts.newPairing(t, s)
	for i := range 2 {
		pairFrom(t, ts, fmt.Sprintf("10.3.0.%d", i+1), map[string]string{"pin": wrongPIN(p.PairingPIN)})
	}
	rec := pairFrom(t, ts, "10.3.1.1", map[string]string{"pin": p.PairingPIN})
	if rec.Code != http.StatusTooManyRequests || rec.Header().Get("Retry-After") == "" {
		t.Fatalf("a 6-digit code past the per-minute budget: %d %s, want 429", rec.Code, rec.Body)
	}
	if rec := pairFrom(t, ts, "10.3.1.2", map[string]string{"code": p.PairingCode}); rec.Code != http.StatusOK {
		t.Fatalf("the QR link while 6-digit codes are limited: %d %s", rec.Code, rec.Body)
	}
}

// deviceReq sends an authenticated request to a device or pairing endpoint.
func deviceReq(t *testing.T, base, method, path, token string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, base+path, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return doRequest(t, req)
}

// testRemoveDevice: the phone is paired and connected to phoneSrv; the PC
// removes it through pcSrv (another instance, or the same): its connection
// closes with 4104 at once, its token no longer opens a WebSocket nor pairs
// again with its client id, and the other phone is untouched.
func testRemoveDevice(t *testing.T, pcSrv, phoneSrv *testServer) {
	s := pcSrv.createSession(t)
	pc, _ := pcSrv.join(t, s.SessionID, s.Token)
	pc.sync()
	ph := pcSrv.pair(t, s)
	other := pcSrv.pair(t, protocol.SessionResponse{PairingOffer: pcSrv.newPairing(t, s).PairingOffer})
	phone, _ := phoneSrv.join(t, s.SessionID, ph.Token)
	keep, _ := phoneSrv.join(t, s.SessionID, other.Token)

	code, body := deviceReq(t, pcSrv.URL, http.MethodGet, "/api/sessions/"+s.SessionID+"/devices", s.Token)
	var list protocol.DevicesResponse
	if code != 200 || json.Unmarshal(body, &list) != nil || len(list.Devices) != 2 || list.Devices[0].ClientID != ph.ClientID {
		t.Fatalf("devices: %d %s", code, body)
	}
	// Nobody but the PC may list or remove.
	if code, _ := deviceReq(t, pcSrv.URL, http.MethodDelete, "/api/sessions/"+s.SessionID+"/devices/"+other.ClientID, ph.Token); code != http.StatusForbidden {
		t.Fatalf("a phone removing another: %d, want 403", code)
	}
	if code, _ := deviceReq(t, pcSrv.URL, http.MethodDelete, "/api/sessions/"+s.SessionID+"/devices/"+s.ClientID, s.Token); code != http.StatusBadRequest {
		t.Fatalf("the PC removing itself: %d, want 400", code)
	}

	if code, body := deviceReq(t, pcSrv.URL, http.MethodDelete, "/api/sessions/"+s.SessionID+"/devices/"+ph.ClientID, s.Token); code != http.StatusNoContent {
		t.Fatalf("remove: %d %s", code, body)
	}
	waitClose(t, phone, protocol.CloseRevoked)
	if !protocol.CloseIsTerminal(protocol.CloseRevoked) {
		t.Fatal("4104 must be terminal")
	}
	// Its token is refused before the upgrade, on both instances.
	for _, srv := range []*testServer{pcSrv, phoneSrv} {
		_, resp, err := srv.dialRaw(t, s.SessionID, ph.Token, nil, "")
		if err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("the removed phone's token: %v (%v), want 401", err, resp)
		}
	}
	// Pairing again with the removed token as previous_token gets a new id.
	np := pcSrv.newPairing(t, s)
	code, body = pcSrv.pairRaw(t, map[string]string{"code": np.PairingCode, "previous_token": ph.Token})
	var again protocol.PairResponse
	if code != 200 || json.Unmarshal(body, &again) != nil || again.ClientID == ph.ClientID {
		t.Fatalf("pairing again after removal: %d %s", code, body)
	}
	// The other phone still talks to the PC.
	keep.send(protocol.TypeChordChange, protocol.ChordChange{Chord: "G"})
	for {
		m := pc.next()
		if m.Type == protocol.TypeChordChange && m.From == keep.ID {
			break
		}
	}
	code, body = deviceReq(t, pcSrv.URL, http.MethodGet, "/api/sessions/"+s.SessionID+"/devices", s.Token)
	if json.Unmarshal(body, &list) != nil || len(list.Devices) != 2 || list.Devices[0].ClientID != other.ClientID {
		t.Fatalf("devices after removal and a new pairing: %d %s", code, body)
	}
}

func TestRemoveDeviceMemory(t *testing.T) {
	ts := newServer(t, nil)
	testRemoveDevice(t, ts, ts)
}

// With Redis, the phone on instance B is closed by a removal on instance A.
func TestRemoveDeviceRedis(t *testing.T) {
	rs := redistest.New(t)
	a, b := newRedisInstance(t, rs, "vtrm:", "a", nil), newRedisInstance(t, rs, "vtrm:", "b", nil)
	testRemoveDevice(t, a, b)
}
