package signaling

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/binary"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"time"

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
	cid := randomID(9)
	token, exp, err := s.tokens.SignClient(uid, sid, protocol.RolePC, cid, s.cfg.SessionTTL)
	if err != nil {
		httpError(w, http.StatusInternalServerError, protocol.CodeInternal, "Could not sign a token")
		return
	}
	p, err := s.issuePairing(r, uid, sid)
	if err != nil {
		s.log.Warn("issue pairing", "session", sid, "err", err)
		httpError(w, http.StatusServiceUnavailable, protocol.CodeUnavailable, "Could not issue a pairing code, try again")
		return
	}
	base := s.callerURL(r)
	s.log.Info("session created", "session", sid, "user", uid)
	writeJSON(w, http.StatusCreated, protocol.SessionResponse{
		SessionToken: protocol.SessionToken{
			SessionID: sid, UserID: uid, Role: protocol.RolePC, ClientID: cid, Token: token,
			WSURL: wsURL(base, sid), ExpiresAt: exp,
		},
		PairingOffer: p.PairingOffer,
	})
}

func randomUserID() int64 {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("signaling: crypto/rand failed: " + err.Error())
	}
	return int64(binary.BigEndian.Uint64(b[:])%(maxUserID-1)) + 1
}
