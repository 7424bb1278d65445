package signaling

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	qrcode "github.com/skip2/go-qrcode"

	"github.com/virtutune/link/protocol"
)

// Pairing is one pairing offer of a session: a short code (the QR code's
// link, http://host/p/<code>) and a 6-digit code to type, single use
// together. The store keeps only keyed hashes of the codes (CodeKey, PINKey):
// a code is looked up by its hash, never compared as a secret.
type Pairing struct {
	SessionID string `json:"sid"`
	UserID    int64  `json:"uid"`
	CodeKey   string `json:"ck"`
	PINKey    string `json:"pk"`
	// PINBase is the store-wide count of wrong 6-digit guesses when the
	// pairing was issued: once Limits.PINGuesses more were made, its 6-digit
	// code is burned.
	PINBase   int64     `json:"pb"`
	ExpiresAt time.Time `json:"exp"`
	// ExpiresMS is ExpiresAt in ms since the epoch (for Redis scripts).
	ExpiresMS int64 `json:"xms"`
}

// PairKind says which of a pairing's codes a TakePairing key is.
type PairKind int

// The kinds of pairing code.
const (
	PairByCode PairKind = iota + 1 // the short code of the QR link
	PairByPIN                      // the 6-digit code
)

// Pairing codes: the short code is CodeLen characters of codeAlphabet
// (Crockford's base32: no I, L, O, U; 60 bits), upper case so that a link
// made of it fits QR's compact alphanumeric mode; the PIN is 6 decimal digits.
const (
	CodeLen      = 12
	PINLen       = 6
	codeAlphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
	// pairingTombstone: how long a taken code is remembered after its expiry
	// (to answer 410 rather than 401).
	pairingTombstone = time.Minute
	// counter keys of the guessing limits
	countPINWrong   = "pin-wrong"       // store-wide, forever: burns 6-digit codes
	countPINWindow  = "pin-wrong-min"   // store-wide, per minute
	countAddrPrefix = "pair-fail-addr:" // per client address, per Limits.PairFailWindow
)

func randomCode() string {
	var b [CodeLen]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("signaling: crypto/rand failed: " + err.Error())
	}
	for i := range b {
		b[i] = codeAlphabet[b[i]&31]
	}
	return string(b[:])
}

func randomPIN() string {
	n, err := rand.Int(rand.Reader, big.NewInt(1_000_000))
	if err != nil {
		panic("signaling: crypto/rand failed: " + err.Error())
	}
	return fmt.Sprintf("%06d", n.Int64())
}

// normalizeCode upper-cases a typed or scanned short code and maps the
// letters Crockford's base32 reads as digits (I, L -> 1, O -> 0); it returns
// "" when the result is not a code.
func normalizeCode(s string) string {
	s = strings.ToUpper(strings.TrimSpace(s))
	s = strings.NewReplacer("I", "1", "L", "1", "O", "0", "-", "", " ", "").Replace(s)
	if len(s) != CodeLen {
		return ""
	}
	for i := 0; i < len(s); i++ {
		if !strings.ContainsRune(codeAlphabet, rune(s[i])) {
			return ""
		}
	}
	return s
}

// normalizePIN drops spaces and dashes from a typed 6-digit code; "" when it
// is not 6 digits.
func normalizePIN(s string) string {
	s = strings.NewReplacer(" ", "", "-", "", "\u00a0", "").Replace(strings.TrimSpace(s))
	if len(s) != PINLen {
		return ""
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return ""
		}
	}
	return s
}

// codeKey is the keyed hash under which the store knows a code: HMAC-SHA256
// with the token secret, so the store (Redis, the data file) holds nothing a
// reader could pair with, and a lookup's timing depends on the hash only.
func (s *Server) codeKey(kind PairKind, code string) string {
	m := hmac.New(sha256.New, s.cfg.Secret)
	fmt.Fprintf(m, "vt-pairing-%d:%s", kind, code)
	return hex.EncodeToString(m.Sum(nil))
}

// issuePairing makes a fresh pairing for session sid (ending the one before
// it) and returns its link, codes and QR code.
func (s *Server) issuePairing(r *http.Request, uid int64, sid string) (protocol.PairingResponse, error) {
	ctx := r.Context()
	base, err := s.broker.Count(ctx, countPINWrong, 0, 0)
	if err != nil {
		return protocol.PairingResponse{}, err
	}
	code := randomCode()
	exp := time.Now().Add(s.cfg.PairingTTL)
	var pin string
	for range 8 {
		pin = randomPIN()
		err = s.broker.PutPairing(ctx, Pairing{
			SessionID: sid, UserID: uid, CodeKey: s.codeKey(PairByCode, code), PINKey: s.codeKey(PairByPIN, pin),
			PINBase: base, ExpiresAt: exp, ExpiresMS: exp.UnixMilli(),
		})
		if !errors.Is(err, ErrPINTaken) {
			break
		}
	}
	if err != nil {
		return protocol.PairingResponse{}, err
	}
	link := s.baseURL(r) + "/p/" + code
	q, err := qrcode.New(link, qrcode.Medium)
	if err != nil {
		return protocol.PairingResponse{}, err
	}
	png, err := q.PNG(-1)
	if err != nil {
		return protocol.PairingResponse{}, err
	}
	return protocol.PairingResponse{SessionID: sid, PairingOffer: protocol.PairingOffer{
		PairingURL: link, PairingCode: code, PairingPIN: pin, PairingExpiresAt: exp,
		PairingQR:        "data:image/png;base64," + base64.StdEncoding.EncodeToString(png),
		PairingQRModules: len(q.Bitmap()),
	}}, nil
}

// pcClaims authenticates the session's PC for the pairing and device
// endpoints: a PC token of session sid (Authorization: Bearer) whose client
// id is not revoked. It answers the refusal itself and returns nil then.
func (s *Server) pcClaims(w http.ResponseWriter, r *http.Request, sid string) *Claims {
	c, err := s.tokens.Parse(bearer(r))
	if err != nil || c.Type != tokenSession {
		httpError(w, http.StatusUnauthorized, protocol.CodeInvalidToken, "A valid PC token is required (Authorization: Bearer)")
		return nil
	}
	if c.SessionID != sid || c.Role != protocol.RolePC {
		httpError(w, http.StatusForbidden, protocol.CodeForbidden, "Only this session's PC may do this")
		return nil
	}
	if _, err := s.broker.Session(r.Context(), sid); errors.Is(err, ErrSessionNotFound) {
		httpError(w, http.StatusNotFound, protocol.CodeSessionNotFound, "Session not found or expired")
		return nil
	} else if err != nil {
		httpError(w, http.StatusServiceUnavailable, protocol.CodeUnavailable, "Try again in a moment")
		return nil
	}
	if c.ClientID != "" {
		if rev, err := s.broker.Revoked(r.Context(), sid, c.ClientID); err != nil {
			httpError(w, http.StatusServiceUnavailable, protocol.CodeUnavailable, "Try again in a moment")
			return nil
		} else if rev {
			httpError(w, http.StatusUnauthorized, protocol.CodeRevoked, "This device was removed from the session")
			return nil
		}
	}
	return c
}

// handleNewPairing issues a fresh pairing for an existing session to the
// holder of its PC token, ending the older one, so a PC can show a new QR
// code without ending the session (a phone already paired stays paired).
func (s *Server) handleNewPairing(w http.ResponseWriter, r *http.Request) {
	sid := chi.URLParam(r, "session_id")
	c := s.pcClaims(w, r, sid)
	if c == nil {
		return
	}
	uid, _ := c.UserID()
	p, err := s.issuePairing(r, uid, sid)
	if err != nil {
		s.log.Warn("issue pairing", "session", sid, "err", err)
		httpError(w, http.StatusServiceUnavailable, protocol.CodeUnavailable, "Could not issue a pairing code, try again")
		return
	}
	writeJSON(w, http.StatusCreated, p)
}

// handlePairingStatus tells the PC whether its pairing is still live (not
// used, expired, replaced or burned), so the page can show a fresh one.
func (s *Server) handlePairingStatus(w http.ResponseWriter, r *http.Request) {
	sid := chi.URLParam(r, "session_id")
	if s.pcClaims(w, r, sid) == nil {
		return
	}
	p, err := s.broker.CurrentPairing(r.Context(), sid)
	switch {
	case errors.Is(err, ErrPairingNotFound):
		writeJSON(w, http.StatusOK, protocol.PairingStatus{})
		return
	case err != nil:
		httpError(w, http.StatusServiceUnavailable, protocol.CodeUnavailable, "Try again in a moment")
		return
	}
	now := time.Now()
	st := protocol.PairingStatus{Live: now.Before(p.ExpiresAt), ExpiresAt: p.ExpiresAt}
	if st.Live {
		n, err := s.broker.Count(r.Context(), countPINWrong, 0, 0)
		st.PINLive = err == nil && n-p.PINBase < int64(s.cfg.Limits.PINGuesses)
	}
	writeJSON(w, http.StatusOK, st)
}

// clientAddr is the address a request came from, the key of the per-address
// limits. (X-Forwarded-For is not trusted here.)
func clientAddr(r *http.Request) string {
	h, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	if ip := net.ParseIP(h); ip != nil && ip.To4() == nil {
		// An IPv6 client controls its /64: count the prefix.
		return ip.Mask(net.CIDRMask(64, 128)).String() + "/64"
	}
	return h
}

func retryAfter(w http.ResponseWriter, d time.Duration) {
	w.Header().Set("Retry-After", strconv.Itoa(max(1, int((d+time.Second-1)/time.Second))))
}

// handlePair trades a pairing code (the QR link's, or the 6-digit one) for
// a phone token with a client id of its own.
func (s *Server) handlePair(w http.ResponseWriter, r *http.Request) {
	var req protocol.PairRequest
	body, err := io.ReadAll(io.LimitReader(r.Body, maxAPIBody+1))
	if err != nil || len(body) > maxAPIBody {
		httpError(w, http.StatusRequestEntityTooLarge, protocol.CodeTooLarge, "Request body too large")
		return
	}
	if err := json.Unmarshal(body, &req); err != nil {
		httpError(w, http.StatusBadRequest, protocol.CodeInvalidJSON, protocol.MsgInvalidJSON)
		return
	}
	ctx := r.Context()
	lim := s.cfg.Limits
	var kind PairKind
	var code string
	switch {
	case req.Code != "":
		kind, code = PairByCode, normalizeCode(req.Code)
	case req.PIN != "":
		kind, code = PairByPIN, normalizePIN(req.PIN)
	case req.PairingToken != "":
		httpError(w, http.StatusUnauthorized, protocol.CodePairingInvalid, "This pairing link is from an older version: scan the QR code on the PC again")
		return
	default:
		httpError(w, http.StatusBadRequest, protocol.CodeInvalidData, "Give the pairing code (code) or the 6-digit code (pin)")
		return
	}
	addrKey := countAddrPrefix + clientAddr(r)
	if n, err := s.broker.Count(ctx, addrKey, 0, lim.PairFailWindow); err != nil {
		httpError(w, http.StatusServiceUnavailable, protocol.CodeUnavailable, "Try again in a moment")
		return
	} else if n >= int64(lim.PairFailures) {
		retryAfter(w, lim.PairFailWindow)
		httpError(w, http.StatusTooManyRequests, protocol.CodeTooManyAttempts, "Too many wrong codes from this device: wait a few minutes, or scan the QR code")
		return
	}
	if kind == PairByPIN {
		if n, err := s.broker.Count(ctx, countPINWindow, 0, time.Minute); err != nil {
			httpError(w, http.StatusServiceUnavailable, protocol.CodeUnavailable, "Try again in a moment")
			return
		} else if n >= int64(lim.PINGuessesPerMinute) {
			retryAfter(w, time.Minute)
			httpError(w, http.StatusTooManyRequests, protocol.CodeTooManyAttempts, "Too many wrong 6-digit codes were tried on this server: wait a minute, or scan the QR code")
			return
		}
	}
	// wrong counts a failed attempt against the address (and, for a 6-digit
	// code, against every live 6-digit code: a wrong guess names none).
	wrong := func() {
		_, _ = s.broker.Count(ctx, addrKey, 1, lim.PairFailWindow)
		if kind == PairByPIN {
			_, _ = s.broker.Count(ctx, countPINWrong, 1, 0)
			_, _ = s.broker.Count(ctx, countPINWindow, 1, time.Minute)
		}
	}
	if code == "" {
		wrong()
		httpError(w, http.StatusUnauthorized, protocol.CodePairingInvalid, "That code is not right: check it on the PC and try again")
		return
	}
	key := s.codeKey(kind, code)
	p, err := s.broker.TakePairing(ctx, kind, key, time.Now())
	switch {
	case errors.Is(err, ErrPairingExpired):
		httpError(w, http.StatusUnauthorized, protocol.CodePairingExpired, "This code has expired: the PC shows a new one (press New QR code)")
		return
	case errors.Is(err, ErrPairingUsed):
		httpError(w, http.StatusGone, protocol.CodePairingUsed, "This code was already used: the PC shows a new one")
		return
	case errors.Is(err, ErrPairingNotFound):
		wrong()
		if kind == PairByPIN {
			httpError(w, http.StatusUnauthorized, protocol.CodePairingInvalid, "That code is not right or has expired: check the 6-digit code on the PC and try again")
		} else {
			httpError(w, http.StatusUnauthorized, protocol.CodePairingInvalid, "This pairing link is not valid or has expired: scan the new QR code on the PC")
		}
		return
	case err != nil:
		httpError(w, http.StatusServiceUnavailable, protocol.CodeUnavailable, "Try again in a moment")
		return
	}
	// Belt and braces: the key found is the key computed (constant time).
	if want := p.CodeKey; kind == PairByPIN {
		want = p.PINKey
		if subtle.ConstantTimeCompare([]byte(want), []byte(key)) != 1 {
			httpError(w, http.StatusUnauthorized, protocol.CodePairingInvalid, "That code is not right")
			return
		}
	} else if subtle.ConstantTimeCompare([]byte(want), []byte(key)) != 1 {
		httpError(w, http.StatusUnauthorized, protocol.CodePairingInvalid, "That code is not right")
		return
	}
	if kind == PairByPIN {
		if n, err := s.broker.Count(ctx, countPINWrong, 0, 0); err != nil || n-p.PINBase >= int64(lim.PINGuesses) {
			httpError(w, http.StatusGone, protocol.CodePairingBurned, "This 6-digit code was retired after too many wrong tries on this server: type the new code the PC shows")
			return
		}
	}
	info, err := s.broker.Session(ctx, p.SessionID)
	if errors.Is(err, ErrSessionNotFound) {
		httpError(w, http.StatusNotFound, protocol.CodeSessionNotFound, "This session has ended: open VirtuTune Link on the PC again")
		return
	} else if err != nil {
		httpError(w, http.StatusServiceUnavailable, protocol.CodeUnavailable, "Try again in a moment")
		return
	}
	cid := ""
	if req.PreviousToken != "" {
		if c, err := s.tokens.Parse(req.PreviousToken); err == nil && c.Type == tokenSession &&
			c.SessionID == p.SessionID && c.Role == protocol.RolePhone && c.ClientID != "" {
			if rev, err := s.broker.Revoked(ctx, p.SessionID, c.ClientID); err == nil && !rev {
				cid = c.ClientID
			}
		}
	}
	if cid == "" {
		cid = randomID(9)
	}
	dev := protocol.Device{ClientID: cid, Role: protocol.RolePhone, Name: deviceName(r.Header.Get("User-Agent"), req.Name), PairedAt: time.Now().UTC()}
	if err := s.broker.AddDevice(ctx, p.SessionID, dev, lim.MaxDevices); errors.Is(err, ErrTooManyDevices) {
		httpError(w, http.StatusConflict, protocol.CodeTooManyDevices, "This session has too many paired devices: remove one on the PC first")
		return
	} else if err != nil {
		httpError(w, http.StatusServiceUnavailable, protocol.CodeUnavailable, "Try again in a moment")
		return
	}
	ttl := max(time.Until(info.ExpiresAt), time.Minute)
	token, exp, err := s.tokens.SignClient(p.UserID, p.SessionID, protocol.RolePhone, cid, ttl)
	if err != nil {
		httpError(w, http.StatusInternalServerError, protocol.CodeInternal, "Could not sign a token")
		return
	}
	s.log.Info("phone paired", "session", p.SessionID, "user", p.UserID, "client", cid, "by", map[PairKind]string{PairByCode: "link", PairByPIN: "pin"}[kind])
	writeJSON(w, http.StatusOK, protocol.PairResponse{
		SessionID: p.SessionID, UserID: p.UserID, Role: protocol.RolePhone, ClientID: cid, Token: token,
		WSURL: wsURL(s.callerURL(r), p.SessionID), ExpiresAt: exp,
	})
}

// deviceName is a short description of a device for the PC's list: the name
// it gave, else the platform and browser its User-Agent names.
func deviceName(ua, given string) string {
	if g := strings.TrimSpace(given); g != "" {
		if len(g) > 40 {
			g = g[:40]
		}
		return strings.Map(func(r rune) rune {
			if r < ' ' || r == 0x7f {
				return -1
			}
			return r
		}, g)
	}
	platform := "Phone"
	for _, p := range []struct{ needle, name string }{
		{"iPhone", "iPhone"}, {"iPad", "iPad"}, {"Android", "Android"}, {"Windows", "Windows"},
		{"Macintosh", "Mac"}, {"CrOS", "ChromeOS"}, {"Linux", "Linux"},
	} {
		if strings.Contains(ua, p.needle) {
			platform = p.name
			break
		}
	}
	browser := ""
	for _, b := range []struct{ needle, name string }{
		{"Edg/", "Edge"}, {"OPR/", "Opera"}, {"SamsungBrowser", "Samsung Internet"}, {"Firefox/", "Firefox"},
		{"CriOS", "Chrome"}, {"Chrome/", "Chrome"}, {"Safari/", "Safari"},
	} {
		if strings.Contains(ua, b.needle) {
			browser = b.name
			break
		}
	}
	if browser == "" {
		return platform
	}
	return platform + " · " + browser
}

// handleDevices lists the devices paired with the session (PC token).
func (s *Server) handleDevices(w http.ResponseWriter, r *http.Request) {
	sid := chi.URLParam(r, "session_id")
	if s.pcClaims(w, r, sid) == nil {
		return
	}
	ds, err := s.broker.Devices(r.Context(), sid)
	if err != nil {
		httpError(w, http.StatusServiceUnavailable, protocol.CodeUnavailable, "Try again in a moment")
		return
	}
	if ds == nil {
		ds = []protocol.Device{}
	}
	writeJSON(w, http.StatusOK, protocol.DevicesResponse{Devices: ds})
}

// typeRevoke is the internal publication (never sent to a client) that tells
// every instance to close the connections of a revoked client id.
const typeRevoke protocol.Type = "_revoke"

// handleRemoveDevice removes a paired device (PC token): its client id is
// revoked for the session, so its tokens stop working at once (WebSocket and
// API), and its live connections on every instance are closed with 4104.
func (s *Server) handleRemoveDevice(w http.ResponseWriter, r *http.Request) {
	sid := chi.URLParam(r, "session_id")
	c := s.pcClaims(w, r, sid)
	if c == nil {
		return
	}
	cid := chi.URLParam(r, "client_id")
	if !protocol.ValidClientID(cid) {
		httpError(w, http.StatusBadRequest, protocol.CodeInvalidClientID, "Not a client id")
		return
	}
	if cid == c.ClientID {
		httpError(w, http.StatusBadRequest, protocol.CodeInvalidClientID, "The PC cannot remove itself: start a new session instead")
		return
	}
	known, err := s.broker.RemoveDevice(r.Context(), sid, cid)
	if err != nil {
		httpError(w, http.StatusServiceUnavailable, protocol.CodeUnavailable, "Try again in a moment")
		return
	}
	data, _ := json.Marshal(map[string]string{"client_id": cid})
	if err := s.broker.Send(r.Context(), sid, &Publication{Type: typeRevoke, Data: data}); err != nil {
		// Revoked in the store all the same: its next connection is refused,
		// and an instance that missed this closes it at its next check.
		s.log.Warn("revoke: telling the instances", "session", sid, "err", err)
	}
	s.log.Info("device removed", "session", sid, "client", cid, "was_paired", known)
	if !known {
		httpError(w, http.StatusNotFound, protocol.CodeDeviceNotFound, "No such device in this session (revoked all the same)")
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// revoke closes this instance's connections of session sid whose token's
// client id is cid (the room's handler, for a typeRevoke publication).
func (r *room) revoke(p *Publication) {
	var v struct {
		ClientID string `json:"client_id"`
	}
	if json.Unmarshal(p.Data, &v) != nil || v.ClientID == "" {
		return
	}
	r.mu.Lock()
	for _, c := range r.clients {
		if c.tokenCID == v.ClientID {
			c.kill(protocol.CloseRevoked, "removed by the PC")
		}
	}
	r.mu.Unlock()
}
