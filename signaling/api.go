package signaling

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	qrcode "github.com/skip2/go-qrcode"

	"github.com/virtutune/link/protocol"
)

// maxAPIBody bounds the JSON body of the API's POSTs.
const maxAPIBody = 4 << 10

// maxUserID keeps random user ids exact in JavaScript numbers (2^53).
const maxUserID = 1<<53 - 1

func (s *Server) apiKeyOK(r *http.Request) bool {
	key := r.Header.Get("X-API-Key")
	if key == "" {
		if h := r.Header.Get("Authorization"); len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
			key = h[7:]
		}
	}
	return key != "" && subtle.ConstantTimeCompare([]byte(key), []byte(s.cfg.APIKey)) == 1
}

func (s *Server) handleCreateSession(w http.ResponseWriter, r *http.Request) {
	var req protocol.CreateSessionRequest
	body, err := io.ReadAll(io.LimitReader(r.Body, maxAPIBody+1))
	if err != nil || len(body) > maxAPIBody {
		httpError(w, http.StatusRequestEntityTooLarge, protocol.CodeTooLarge, "Request body too large")
		return
	}
	if len(strings.TrimSpace(string(body))) > 0 {
		if err := json.Unmarshal(body, &req); err != nil {
			httpError(w, http.StatusBadRequest, protocol.CodeInvalidJSON, protocol.MsgInvalidJSON)
			return
		}
	}
	if s.isDraining() {
		httpError(w, http.StatusServiceUnavailable, protocol.CodeDraining, "Server is shutting down")
		return
	}
	var uid int64
	if s.cfg.APIKey != "" {
		if !s.apiKeyOK(r) {
			httpError(w, http.StatusUnauthorized, protocol.CodeAPIKeyRequired, "A valid API key is required to create sessions")
			return
		}
		if req.UserID != nil {
			if *req.UserID <= 0 || *req.UserID > maxUserID {
				httpError(w, http.StatusBadRequest, protocol.CodeInvalidData, "user_id must be a positive integer below 2^53")
				return
			}
			uid = *req.UserID
		}
	} else if req.UserID != nil {
		httpError(w, http.StatusForbidden, protocol.CodeForbidden, "user_id may be named only with an API key")
		return
	}
	if uid == 0 {
		uid = randomUserID()
	}
	sid := randomID(16)
	now := time.Now()
	info := SessionInfo{ID: sid, UserID: uid, CreatedAt: now, ExpiresAt: now.Add(s.cfg.SessionTTL)}
	if err := s.broker.CreateSession(r.Context(), info); err != nil {
		s.log.Error("create session", "err", err)
		httpError(w, http.StatusServiceUnavailable, protocol.CodeUnavailable, "Could not create the session, try again")
		return
	}
	token, exp, err := s.tokens.Sign(uid, sid, protocol.RolePC, tokenSession, s.cfg.SessionTTL)
	if err != nil {
		httpError(w, http.StatusInternalServerError, protocol.CodeInternal, "Could not sign a token")
		return
	}
	pairURL, pexp, qr, err := s.pairingLink(r, uid, sid)
	if err != nil {
		httpError(w, http.StatusInternalServerError, protocol.CodeInternal, "Could not issue a pairing link")
		return
	}
	base := s.callerURL(r)
	s.log.Info("session created", "session", sid, "user", uid)
	writeJSON(w, http.StatusCreated, protocol.SessionResponse{
		SessionToken: protocol.SessionToken{
			SessionID: sid, UserID: uid, Role: protocol.RolePC, Token: token,
			WSURL: wsURL(base, sid), ExpiresAt: exp,
		},
		PairingURL: pairURL, PairingExpiresAt: pexp,
		PairingQR: qr,
	})
}

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
	c, err := s.tokens.Parse(req.PairingToken)
	if err != nil || c.Type != tokenPairing || c.ID == "" {
		httpError(w, http.StatusUnauthorized, protocol.CodeInvalidToken, "This pairing link is invalid or has expired: scan the new QR code on the PC")
		return
	}
	info, err := s.broker.Session(r.Context(), c.SessionID)
	if errors.Is(err, ErrSessionNotFound) {
		httpError(w, http.StatusNotFound, protocol.CodeSessionNotFound, "This session has ended: open VirtuTune Link on the PC again")
		return
	} else if err != nil {
		httpError(w, http.StatusServiceUnavailable, protocol.CodeUnavailable, "Try again in a moment")
		return
	}
	fresh, err := s.broker.UseOnce(r.Context(), "pair:"+c.ID, s.cfg.PairingTTL+time.Minute)
	if err != nil {
		httpError(w, http.StatusServiceUnavailable, protocol.CodeUnavailable, "Try again in a moment")
		return
	}
	if !fresh {
		httpError(w, http.StatusGone, protocol.CodePairingUsed, "This pairing link was already used: show a new QR code on the PC")
		return
	}
	uid, _ := c.UserID()
	ttl := time.Until(info.ExpiresAt)
	if ttl < time.Minute {
		ttl = time.Minute
	}
	token, exp, err := s.tokens.Sign(uid, c.SessionID, protocol.RolePhone, tokenSession, ttl)
	if err != nil {
		httpError(w, http.StatusInternalServerError, protocol.CodeInternal, "Could not sign a token")
		return
	}
	s.log.Info("phone paired", "session", c.SessionID, "user", uid)
	writeJSON(w, http.StatusOK, protocol.PairResponse{
		SessionID: c.SessionID, UserID: uid, Role: protocol.RolePhone, Token: token,
		WSURL: wsURL(s.callerURL(r), c.SessionID), ExpiresAt: exp,
	})
}

func randomUserID() int64 {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("signaling: crypto/rand failed: " + err.Error())
	}
	return int64(binary.BigEndian.Uint64(b[:])%(maxUserID-1)) + 1
}

// handleNewPairing issues a fresh pairing link for an existing session to
// the holder of its PC token, so a PC can show a new QR code without ending
// the session (and without dropping a phone already paired).
func (s *Server) handleNewPairing(w http.ResponseWriter, r *http.Request) {
	sid := chi.URLParam(r, "session_id")
	c, err := s.tokens.Parse(bearer(r))
	if err != nil || c.Type != tokenSession {
		httpError(w, http.StatusUnauthorized, protocol.CodeInvalidToken, "A valid PC token is required (Authorization: Bearer)")
		return
	}
	if c.SessionID != sid || c.Role != protocol.RolePC {
		httpError(w, http.StatusForbidden, protocol.CodeForbidden, "Only this session's PC may issue pairing links")
		return
	}
	if _, err := s.broker.Session(r.Context(), sid); errors.Is(err, ErrSessionNotFound) {
		httpError(w, http.StatusNotFound, protocol.CodeSessionNotFound, "Session not found or expired")
		return
	} else if err != nil {
		httpError(w, http.StatusServiceUnavailable, protocol.CodeUnavailable, "Try again in a moment")
		return
	}
	uid, _ := c.UserID()
	pairURL, pexp, qr, err := s.pairingLink(r, uid, sid)
	if err != nil {
		httpError(w, http.StatusInternalServerError, protocol.CodeInternal, "Could not issue a pairing link")
		return
	}
	writeJSON(w, http.StatusCreated, protocol.PairingResponse{SessionID: sid, PairingURL: pairURL, PairingExpiresAt: pexp, PairingQR: qr})
}

// pairingLink signs a single-use pairing token and returns its URL, expiry
// and QR code (a PNG data URL).
func (s *Server) pairingLink(r *http.Request, uid int64, sid string) (string, time.Time, string, error) {
	pairing, pexp, err := s.tokens.Sign(uid, sid, protocol.RolePhone, tokenPairing, s.cfg.PairingTTL)
	if err != nil {
		return "", time.Time{}, "", err
	}
	pairURL := s.baseURL(r) + "/phone/#s=" + sid + "&p=" + url.QueryEscape(pairing)
	png, err := qrcode.Encode(pairURL, qrcode.Medium, 320)
	if err != nil {
		return "", time.Time{}, "", err
	}
	return pairURL, pexp, "data:image/png;base64," + base64.StdEncoding.EncodeToString(png), nil
}
