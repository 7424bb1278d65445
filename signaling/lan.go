package signaling

import (
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// lanAddr returns the first non-loopback unicast address of this machine,
// preferring private IPv4 (what a phone on the same Wi-Fi reaches), then any
// IPv4, then a global IPv6. It returns "" when there is none.
func lanAddr() string {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return ""
	}
	var private, v4, v6 string
	for _, a := range addrs {
		pfx, err := netip.ParsePrefix(a.String())
		if err != nil {
			continue
		}
		ip := pfx.Addr()
		if ip.IsLoopback() || ip.IsLinkLocalUnicast() || ip.IsMulticast() || ip.IsUnspecified() {
			continue
		}
		switch {
		case ip.Is4() && ip.IsPrivate() && private == "":
			private = ip.String()
		case ip.Is4() && v4 == "":
			v4 = ip.String()
		case ip.Is6() && ip.IsGlobalUnicast() && v6 == "":
			v6 = "[" + ip.String() + "]"
		}
	}
	for _, s := range []string{private, v4, v6} {
		if s != "" {
			return s
		}
	}
	return ""
}

// isLocalHost reports whether host (without port) names this machine's loopback.
func isLocalHost(host string) bool {
	host = strings.Trim(strings.ToLower(host), "[]")
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && (ip.IsLoopback() || ip.IsUnspecified())
}

// baseURL returns the scheme://host[:port] a phone should use to reach this
// server, the base of pairing links: the public URL when configured; else
// the request's host if it names this server (hostAllowed: one of this
// machine's addresses or names), with the LAN address in place of a loopback
// name, and never a host that only the request says (a forged Host gets the
// LAN address). Forwarded headers are trusted for the scheme only (a
// TLS-terminating proxy sets X-Forwarded-Proto). Whoever builds a link that
// a phone opens calls this.
func (s *Server) baseURL(r *http.Request) string { return s.base(r, true) }

// callerURL is the base URL as the caller reached it (for the caller's own
// ws_url): the public URL when configured, else the request's host as is if
// it names this server, else the LAN address.
func (s *Server) callerURL(r *http.Request) string { return s.base(r, false) }

func (s *Server) base(r *http.Request, lan bool) string {
	if s.cfg.PublicURL != "" {
		return strings.TrimSuffix(s.cfg.PublicURL, "/")
	}
	scheme := requestScheme(r)
	host := r.Host
	h, port, err := net.SplitHostPort(host)
	if err != nil {
		h, port = host, ""
	}
	if !s.hostAllowed(host) || (lan && isLocalHost(h)) {
		if a := lanAddr(); a != "" {
			h = a
		} else if !s.hostAllowed(host) {
			h = "localhost"
		}
	}
	if port != "" {
		return scheme + "://" + joinHostPort(h, port)
	}
	return scheme + "://" + h
}

func joinHostPort(h, port string) string {
	if strings.HasPrefix(h, "[") {
		return h + ":" + port
	}
	return net.JoinHostPort(h, port)
}

// wsURL turns an http(s) base into the session's ws(s) URL.
func wsURL(base, sid string) string {
	switch {
	case strings.HasPrefix(base, "https://"):
		base = "wss://" + strings.TrimPrefix(base, "https://")
	case strings.HasPrefix(base, "http://"):
		base = "ws://" + strings.TrimPrefix(base, "http://")
	}
	return base + "/ws/guitar/" + sid + "/"
}
