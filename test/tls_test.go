package test

// TLS served by the server itself (-tls-cert, -tls-key), no proxy in front.

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/virtutune/link/internal/testkit"
	"github.com/virtutune/link/peer"
	"github.com/virtutune/link/protocol"
)

// TestTLSDirect: given a certificate and key, the server serves HTTPS and
// WSS on its own port. A client that trusts the certificate gets /healthz;
// one that does not is refused by its own TLS check (the server really
// presents the given certificate); the API's links say https:// and wss://
// (the scheme comes from the TLS connection, no public URL configured); a PC
// and a phone join over wss:// (the phone's token from POST /api/pair over
// HTTPS, the phone with the Origin a browser on that page would send), get
// their connection_update, and a chord change crosses; plain http:// and
// ws:// to the TLS port fail.
func TestTLSDirect(t *testing.T) {
	ctx := testkit.Context(t, 30*time.Second)
	dir := t.TempDir()
	certFile, keyFile, pool := selfSignedCert(t, dir)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	t.Cleanup(tr.CloseIdleConnections)
	trusting := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	in := newInstance(t, "TLS", filepath.Join(dir, "server.log"), "-tls-cert", certFile, "-tls-key", keyFile)
	in.url, in.client = "https://"+in.addr, trusting
	in.start(ctx)
	addr, base := in.addr, in.url
	if !in.logContains("Open " + base + "/") {
		t.Errorf("the server did not print %s/ as the URL to open", base)
	}

	// A client with the system's roots does not trust the self-signed
	// certificate: the server presents the one it was given.
	sysTr := &http.Transport{}
	t.Cleanup(sysTr.CloseIdleConnections)
	_, untrusted := (&http.Client{Transport: sysTr, Timeout: 5 * time.Second}).Get(base + "/healthz")
	var unknown x509.UnknownAuthorityError
	if !errors.As(untrusted, &unknown) {
		t.Errorf("GET /healthz without trusting the certificate: %v, want x509: certificate signed by unknown authority", untrusted)
	}

	// The API answers with https:// and wss:// links.
	var info peer.SessionInfo
	if code := postTLS(ctx, t, trusting, base+"/api/sessions", "", struct{}{}, &info); code != http.StatusCreated {
		t.Fatalf("POST /api/sessions over HTTPS: HTTP %d", code)
	}
	if !strings.HasPrefix(info.PairingURL, "https://") {
		t.Errorf("pairing_url %q does not start with https://", info.PairingURL)
	}
	if want := "wss://" + addr + "/ws/guitar/" + info.SessionID + "/"; info.WSURL != want {
		t.Errorf("ws_url %q, want %q", info.WSURL, want)
	}
	// The pairing URL's host is the machine's LAN address (the phone's way
	// in), which this server, listening on 127.0.0.1, does not serve: trade
	// its code here.
	pu, err := url.Parse(info.PairingURL)
	if err != nil {
		t.Fatalf("pairing_url %q: %v", info.PairingURL, err)
	}
	var ph peer.SessionInfo
	if code := postTLS(ctx, t, trusting, base+"/api/pair", "", protocol.PairRequest{Code: strings.TrimPrefix(pu.Path, "/p/")}, &ph); code != http.StatusOK {
		t.Fatalf("POST /api/pair over HTTPS: HTTP %d", code)
	}
	if want := "wss://" + addr + "/ws/guitar/" + info.SessionID + "/"; ph.WSURL != want {
		t.Errorf("the phone's ws_url %q, want %q", ph.WSURL, want)
	}

	// The PC (token in the Authorization header, as the Go peer sends it)
	// and the phone (token in the query, Origin of the page) join over wss://.
	pc := dialTLS(ctx, t, pool, info.WSURL, http.Header{"Authorization": {"Bearer " + info.Token}})
	phone := dialTLS(ctx, t, pool, ph.WSURL+"?token="+url.QueryEscape(ph.Token), http.Header{"Origin": {base}})
	pc.wait(ctx, "the phone's arrival", func(m *protocol.Message) bool {
		var cu protocol.ConnectionUpdate
		return m.Type == protocol.TypeConnectionUpdate && json.Unmarshal(m.Data, &cu) == nil &&
			cu.Status == protocol.StatusConnected && cu.ClientID == phone.id
	})
	phone.send(`{"type":"chord_change","data":{"chord":"Am"}}`)
	pc.wait(ctx, "the phone's chord over wss://", isType(protocol.TypeChordChange, map[string]string{"chord": `"Am"`}))
	phone.close()
	pc.close()

	// The Go peer joins over wss:// with a TLS configuration that trusts the
	// certificate (peer.Config.TLSConfig).
	gp, err := peer.Dial(ctx, peer.Config{WSURL: info.WSURL, SessionID: info.SessionID, Token: info.Token,
		Role: protocol.RolePC, DisableP2P: true, TLSConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}})
	if err != nil {
		t.Fatalf("peer.Dial over wss://: %v", err)
	}
	if st := gp.SessionState(); st.SessionID != info.SessionID {
		t.Errorf("the Go peer's snapshot names session %q", st.SessionID)
	}
	_ = gp.Close()

	// Plain HTTP to the TLS port: Go's TLS server answers 400 to an HTTP
	// request; nothing is served.
	plainTr := &http.Transport{}
	t.Cleanup(plainTr.CloseIdleConnections)
	resp, err := (&http.Client{Transport: plainTr, Timeout: 5 * time.Second}).Get("http://" + addr + "/healthz")
	plain := fmt.Sprint(err)
	if err == nil {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		resp.Body.Close()
		plain = fmt.Sprintf("HTTP %d %q", resp.StatusCode, bytes.TrimSpace(b))
		if resp.StatusCode == http.StatusOK {
			t.Errorf("plain http:// to the TLS port served /healthz")
		}
	}
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	if c, _, err := d.DialContext(ctx, "ws://"+addr+"/ws/guitar/"+info.SessionID+"/?token="+url.QueryEscape(info.Token), nil); err == nil {
		c.Close()
		t.Errorf("plain ws:// to the TLS port was upgraded")
	}
	t.Logf("TLS on %s: /healthz, the API (pairing link %s..., ws_url %s) and two wss:// members work with the certificate trusted; without it: %v; plain http://: %s",
		addr, info.PairingURL[:strings.LastIndex(info.PairingURL, "/")], info.WSURL, untrusted, plain)
}

// selfSignedCert writes a self-signed ECDSA certificate for 127.0.0.1 (and
// localhost), valid for an hour, and its key as PEM files in dir; pool
// trusts it.
func selfSignedCert(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "virtutune test"},
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:              []string{"localhost"},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8}), 0o600); err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// postTLS posts body as JSON with client and decodes the answer into out;
// it returns the status.
func postTLS(ctx context.Context, t *testing.T, client *http.Client, u, bearer string, body, out any) int {
	t.Helper()
	b, _ := json.Marshal(body)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", u, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err := json.Unmarshal(data, out); err != nil {
		t.Fatalf("POST %s: HTTP %d, undecodable answer %.200q", u, resp.StatusCode, data)
	}
	return resp.StatusCode
}

// dialTLS opens a WebSocket at a wss:// URL trusting pool, and waits for
// the member's own connection_update.
func dialTLS(ctx context.Context, t *testing.T, pool *x509.CertPool, u string, hdr http.Header) *rawClient {
	t.Helper()
	d := &websocket.Dialer{HandshakeTimeout: 5 * time.Second, TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	return dialRawWith(ctx, t, d, u, hdr)
}
