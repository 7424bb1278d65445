package peer

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/virtutune/link/protocol"
)

// SessionInfo is the server's answer to POST /api/sessions (all fields) and
// to POST /api/pair (the session, user, role, client id, token, ws_url and
// expiry; a protocol.PairResponse), plus the server it came from.
type SessionInfo struct {
	protocol.SessionResponse
	// ServerURL is the base URL the request went to (filled by this package).
	ServerURL string `json:"-"`
}

// maxAnswer bounds the size of an HTTP answer read by CreateSession and Pair.
const maxAnswer = 1 << 20

// CreateSession creates a session on the server at baseURL (http://host:port)
// with POST /api/sessions; apiKey may be empty when the server needs none. The
// answer holds the PC's token and the phone's pairing URL. It blocks until the
// server answers or ctx is done.
func CreateSession(ctx context.Context, baseURL, apiKey string) (SessionInfo, error) {
	base := strings.TrimSuffix(baseURL, "/")
	hdr := http.Header{}
	if apiKey != "" {
		hdr.Set("Authorization", "Bearer "+apiKey)
	}
	var info SessionInfo
	if err := postJSON(ctx, base+"/api/sessions", hdr, struct{}{}, http.StatusCreated, &info); err != nil {
		return SessionInfo{}, fmt.Errorf("create session: %w", err)
	}
	info.ServerURL = base
	return info, nil
}

// Pair trades the pairing code in a pairing URL (the QR code's content,
// http://host:port/p/<code>) for a phone token with POST /api/pair on the
// URL's host. A pairing code is single use. It blocks until the server
// answers or ctx is done.
func Pair(ctx context.Context, pairingURL string) (SessionInfo, error) {
	u, err := url.Parse(pairingURL)
	if err != nil {
		return SessionInfo{}, fmt.Errorf("%w: %v", ErrBadPairingURL, err)
	}
	rest, ok := strings.CutPrefix(u.Path, "/p/")
	if !ok {
		rest, ok = strings.CutPrefix(u.Path, "/P/")
	}
	if !ok || rest == "" || strings.Contains(rest, "/") || u.Host == "" {
		return SessionInfo{}, ErrBadPairingURL
	}
	return pair(ctx, u.Scheme+"://"+u.Host, protocol.PairRequest{Code: rest})
}

// PairPIN trades the 6-digit code shown on the PC for a phone token with
// POST /api/pair on the server at baseURL.
func PairPIN(ctx context.Context, baseURL, pin string) (SessionInfo, error) {
	return pair(ctx, strings.TrimSuffix(baseURL, "/"), protocol.PairRequest{PIN: pin})
}

func pair(ctx context.Context, base string, body protocol.PairRequest) (SessionInfo, error) {
	var info SessionInfo
	if err := postJSON(ctx, base+"/api/pair", nil, body, http.StatusOK, &info); err != nil {
		return SessionInfo{}, fmt.Errorf("pair: %w", err)
	}
	info.ServerURL = base
	return info, nil
}

// postJSON posts body as JSON and decodes an answer with status want into out.
func postJSON(ctx context.Context, u string, hdr http.Header, body any, want int, out any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(b))
	if err != nil {
		return err
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return err
	}
	if resp.StatusCode != want {
		return httpError(resp.StatusCode, data)
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("decode answer: %w", err)
	}
	return nil
}

// httpError makes an error of a refusal with the server's protocol.APIError body.
func httpError(status int, body []byte) error {
	var e protocol.APIError
	_ = json.Unmarshal(body, &e)
	if e.Message == "" {
		e.Message = strings.TrimSpace(string(body))
		if len(e.Message) > 200 {
			e.Message = e.Message[:200]
		}
	}
	return fmt.Errorf("HTTP %d %s: %s", status, http.StatusText(status), e.Message)
}
