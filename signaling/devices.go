package signaling

import (
	"encoding/json"
	"net/http"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/virtutune/link/protocol"
)

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
	platform := firstNamed(ua, []struct{ needle, name string }{
		{"iPhone", "iPhone"}, {"iPad", "iPad"}, {"Android", "Android"}, {"Windows", "Windows"},
		{"Macintosh", "Mac"}, {"CrOS", "ChromeOS"}, {"Linux", "Linux"},
	})
	if platform == "" {
		platform = "Phone"
	}
	browser := firstNamed(ua, []struct{ needle, name string }{
		{"Edg/", "Edge"}, {"OPR/", "Opera"}, {"SamsungBrowser", "Samsung Internet"}, {"Firefox/", "Firefox"},
		{"CriOS", "Chrome"}, {"Chrome/", "Chrome"}, {"Safari/", "Safari"},
	})
	if browser == "" {
		return platform
	}
	return platform + " · " + browser
}

// firstNamed is the name of the first needle found in ua, or "".
func firstNamed(ua string, table []struct{ needle, name string }) string {
	for _, t := range table {
		if strings.Contains(ua, t.needle) {
			return t.name
		}
	}
	return ""
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
