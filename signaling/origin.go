package signaling

import (
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/virtutune/link/protocol"
)

// Origin and Host.
//
// The WebSocket accepts a browser's Origin only when its scheme, host and
// port are exactly those of the server's own origin (the Host the request
// names, with https when the connection or the proxy in front is TLS), of
// Config.PublicURL, or of one of Config.AllowedOrigins. And the API and the
// WebSocket answer only to a Host that names this server: the host of
// Config.PublicURL, localhost or a loopback address, one of this machine's
// own addresses, or its host name (and host name.local). A page whose name
// an attacker rebinds to this machine's address (DNS rebinding) sends Host
// and Origin both of the attacker's name: refused with 421 before anything
// else, so such a page can neither open the WebSocket nor create sessions,
// and no forged Host ever becomes the host of a pairing link or a ws_url.

// canonicalOrigin returns scheme://host:port in lower case with the
// default port made explicit, for an http or https origin with a host and
// nothing else; ok false otherwise ("null", ws://, javascript:, a path...).
func canonicalOrigin(o string) (string, bool) {
	u, err := url.Parse(strings.TrimSuffix(o, "/"))
	if err != nil || u.Host == "" || u.User != nil || u.Path != "" || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
		return "", false
	}
	scheme := strings.ToLower(u.Scheme)
	port := u.Port()
	switch scheme {
	case "http":
		if port == "" {
			port = "80"
		}
	case "https":
		if port == "" {
			port = "443"
		}
	default:
		return "", false
	}
	host := strings.TrimSuffix(strings.ToLower(u.Hostname()), ".")
	if host == "" {
		return "", false
	}
	return scheme + "://" + net.JoinHostPort(host, port), true
}

// requestScheme is the scheme the client used: https when the connection is
// TLS or the proxy in front says so (X-Forwarded-Proto; a browser page
// cannot set it on a WebSocket).
func requestScheme(r *http.Request) string {
	if r.TLS != nil || strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https") {
		return "https"
	}
	return "http"
}

// checkOrigin reports whether the request's Origin may open the WebSocket.
func (s *Server) checkOrigin(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true // not a browser: nothing to hijack
	}
	o, ok := canonicalOrigin(origin)
	if !ok {
		return false
	}
	if own, ok := canonicalOrigin(requestScheme(r) + "://" + r.Host); ok && o == own && s.hostAllowed(r.Host) {
		return true
	}
	if s.cfg.PublicURL != "" {
		if p, ok := canonicalOrigin(s.cfg.PublicURL); ok && o == p {
			return true
		}
	}
	for _, a := range s.cfg.AllowedOrigins {
		if c, ok := canonicalOrigin(a); ok && o == c {
			return true
		}
	}
	return false
}

// checkHost refuses, with 421, a request whose Host does not name this
// server (see hostAllowed).
func (s *Server) checkHost(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Host != "" && !s.hostAllowed(r.Host) {
			s.metrics.refusals.WithLabelValues(http.StatusText(http.StatusMisdirectedRequest)).Inc()
			httpError(w, http.StatusMisdirectedRequest, protocol.CodeHostNotAllowed,
				"This server does not answer to that host name: open it by its address, or configure its public URL (VIRTUTUNE_PUBLIC_URL)")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// hostAllowed reports whether hostport (a Host header) names this server:
// the public URL's host, localhost or a loopback address, one of this
// machine's addresses, or its host name.
func (s *Server) hostAllowed(hostport string) bool {
	h := hostOnly(hostport)
	if h == "" {
		return false
	}
	if s.cfg.PublicURL != "" {
		if u, err := url.Parse(s.cfg.PublicURL); err == nil && strings.EqualFold(strings.TrimSuffix(u.Hostname(), "."), h) {
			return true
		}
	}
	if h == "localhost" || strings.HasSuffix(h, ".localhost") {
		return true
	}
	if ip, err := netip.ParseAddr(h); err == nil {
		ip = ip.WithZone("").Unmap()
		return ip.IsLoopback() || s.addrs.has(ip)
	}
	return s.addrs.isHostName(h)
}

// hostOnly returns the lower-case host of a Host header, without port,
// brackets or a trailing dot.
func hostOnly(hostport string) string {
	h, _, err := net.SplitHostPort(hostport)
	if err != nil {
		h = hostport
	}
	return strings.TrimSuffix(strings.ToLower(strings.Trim(h, "[]")), ".")
}

// machineAddrs caches this machine's interface addresses and host name. A
// miss refreshes the cache, at most once a second, so a new address (DHCP,
// Wi-Fi) is known at once and a flood of foreign Hosts costs nothing.
type machineAddrs struct {
	mu      sync.Mutex
	at      time.Time
	ips     map[netip.Addr]bool
	names   map[string]bool
	refresh func() (map[netip.Addr]bool, map[string]bool)
}

func newMachineAddrs() *machineAddrs { return &machineAddrs{refresh: readMachineAddrs} }

func readMachineAddrs() (map[netip.Addr]bool, map[string]bool) {
	ips := map[netip.Addr]bool{}
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if p, err := netip.ParsePrefix(a.String()); err == nil {
				ips[p.Addr().WithZone("").Unmap()] = true
			}
		}
	}
	names := map[string]bool{}
	if n, err := os.Hostname(); err == nil && n != "" {
		n = strings.ToLower(n)
		names[n] = true
		names[n+".local"] = true
		if short, _, ok := strings.Cut(n, "."); ok {
			names[short] = true
			names[short+".local"] = true
		}
	}
	return ips, names
}

func (m *machineAddrs) lookup(f func() bool) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ips != nil && f() {
		return true
	}
	if now := time.Now(); m.ips == nil || now.Sub(m.at) > time.Second {
		m.ips, m.names = m.refresh()
		m.at = now
		return f()
	}
	return false
}

func (m *machineAddrs) has(ip netip.Addr) bool {
	return m.lookup(func() bool { return m.ips[ip] })
}

func (m *machineAddrs) isHostName(h string) bool {
	return m.lookup(func() bool { return m.names[h] })
}
