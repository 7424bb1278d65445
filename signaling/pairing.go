package signaling

import (
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"
	qrcode "github.com/skip2/go-qrcode"

	"github.com/virtutune/link/protocol"
)

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
	// The address is the server's one (Server.clientAddr): behind a trusted
	// proxy the forwarded client's, so one guesser locks out only itself.
	failKey := countAddrPrefix + addrName(s.clientAddr(r))
	if n, err := s.broker.Count(ctx, failKey, 0, lim.PairFailWindow); err != nil {
		httpError(w, http.StatusServiceUnavailable, protocol.CodeUnavailable, "Try again in a moment")
		return
	} else if n >= int64(lim.PairFailures) {
		tooMany(w, lim.PairFailWindow, protocol.CodeTooManyAttempts, "Too many wrong codes from this device: wait a few minutes, or scan the QR code")
		return
	}
	if kind == PairByPIN {
		if n, err := s.broker.Count(ctx, countPINWindow, 0, time.Minute); err != nil {
			httpError(w, http.StatusServiceUnavailable, protocol.CodeUnavailable, "Try again in a moment")
			return
		} else if n >= int64(lim.PINGuessesPerMinute) {
			tooMany(w, time.Minute, protocol.CodeTooManyAttempts, "Too many wrong 6-digit codes were tried on this server: wait a minute, or scan the QR code")
			return
		}
	}
	// wrong counts a failed attempt against the address (and, for a 6-digit
	// code, against every live 6-digit code: a wrong guess names none).
	wrong := func() {
		_, _ = s.broker.Count(ctx, failKey, 1, lim.PairFailWindow)
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
