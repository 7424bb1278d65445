package signaling

import (
	"math"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/virtutune/link/protocol"
)

// Per-address limits: what one client address may take of an instance, so
// that a flood from one address leaves every other address's pairing, joins
// and chords untouched. An address is the TCP peer's IP, or, when the peer is
// one of Config.TrustedProxies, the right-most address of X-Forwarded-For
// that is not itself a trusted proxy. IPv6 addresses count per /64 (one
// host's share of a network).

// addrKey returns the limiter's key for ip: the address itself for IPv4, its
// /64 for IPv6.
func addrKey(ip netip.Addr) netip.Addr {
	ip = ip.Unmap()
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		return p.Addr()
	}
	return ip
}

// addrName is the name of ip's limiter key (addrKey) in the store's counter
// keys: the IPv4 address, or the IPv6 /64 prefix ("2001:db8::/64"). The
// invalid address (a request whose RemoteAddr is no address) is "invalid IP".
func addrName(ip netip.Addr) string {
	k := addrKey(ip)
	if k.Is6() {
		return k.String() + "/64"
	}
	return k.String()
}

// peerAddr parses the IP of a net.Addr or "host:port" string.
func peerAddr(remote string) (netip.Addr, bool) {
	ap, err := netip.ParseAddrPort(remote)
	if err == nil {
		return ap.Addr().Unmap(), true
	}
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	ip, err := netip.ParseAddr(strings.Trim(host, "[]"))
	if err != nil {
		return netip.Addr{}, false
	}
	return ip.Unmap(), true
}

// trusted reports whether ip is one of the configured trusted proxies.
func (s *Server) trusted(ip netip.Addr) bool {
	for _, p := range s.proxies {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// clientAddr returns the address request r is from (see the comment above):
// X-Forwarded-For is honoured only when the TCP peer is a trusted proxy.
func (s *Server) clientAddr(r *http.Request) netip.Addr {
	peer, ok := peerAddr(r.RemoteAddr)
	if !ok {
		return netip.Addr{}
	}
	if !s.trusted(peer) {
		if r.Header.Get("X-Forwarded-For") != "" && s.xffWarn.CompareAndSwap(false, true) {
			s.log.Warn("X-Forwarded-For from a peer that is not a trusted proxy is ignored: behind a proxy, list it in -trusted-proxies (VIRTUTUNE_TRUSTED_PROXIES)", "peer", peer.String())
		}
		return peer
	}
	hops := r.Header.Values("X-Forwarded-For")
	for i := len(hops) - 1; i >= 0; i-- {
		parts := strings.Split(hops[i], ",")
		for j := len(parts) - 1; j >= 0; j-- {
			ip, ok := peerAddr(strings.TrimSpace(parts[j]))
			if !ok {
				return peer // a malformed hop: stop at what the proxy itself saw
			}
			if !s.trusted(ip) {
				return ip
			}
			peer = ip
		}
	}
	return peer
}

// addrLimiter keeps, per client address, the buckets and counters of the
// per-address limits. Its map is bounded (Limits.MaxAddrs): idle entries
// (nothing open, buckets full again) are forgotten first; when every entry
// is busy, a new address is refused.
type addrLimiter struct {
	lim Limits
	now func() time.Time

	mu    sync.Mutex
	addrs map[netip.Addr]*addrState
}

type addrState struct {
	sessions rateState // POST /api/sessions
	upgrades rateState // GET /ws/... attempts, refused or not
	ws       int       // WebSockets open
	conns    int       // HTTP connections open (TCP peers only)
}

// rateState is a token bucket's state; the rate and burst are the limiter's.
type rateState struct {
	tokens float64
	last   time.Time
}

// take takes one token from a bucket of rate per second up to burst; when
// it is empty it reports false and how long until a token is back.
func (b *rateState) take(now time.Time, rate, burst float64) (bool, time.Duration) {
	if b.last.IsZero() {
		b.tokens, b.last = burst, now
	}
	b.tokens = math.Min(burst, b.tokens+now.Sub(b.last).Seconds()*rate)
	b.last = now
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	return false, time.Duration((1 - b.tokens) / rate * float64(time.Second))
}

func (b *rateState) full(now time.Time, rate, burst float64) bool {
	return b.last.IsZero() || b.tokens+now.Sub(b.last).Seconds()*rate >= burst
}

func newAddrLimiter(lim Limits) *addrLimiter {
	return &addrLimiter{lim: lim, now: time.Now, addrs: make(map[netip.Addr]*addrState)}
}

// state returns ip's entry, making room for it; nil when the map is full of
// busy entries. Called with l.mu held.
func (l *addrLimiter) state(ip netip.Addr) *addrState {
	k := addrKey(ip)
	if st := l.addrs[k]; st != nil {
		return st
	}
	if len(l.addrs) >= l.lim.MaxAddrs {
		l.sweepLocked()
		if len(l.addrs) >= l.lim.MaxAddrs {
			return nil
		}
	}
	st := &addrState{}
	l.addrs[k] = st
	return st
}

// sweepLocked forgets every idle entry.
func (l *addrLimiter) sweepLocked() {
	now := l.now()
	for k, st := range l.addrs {
		if st.ws == 0 && st.conns == 0 &&
			st.sessions.full(now, l.lim.SessionsPerMinute/60, float64(l.lim.SessionBurst)) &&
			st.upgrades.full(now, l.lim.UpgradesPerMinute/60, float64(l.lim.UpgradeBurst)) {
			delete(l.addrs, k)
		}
	}
}

// sweep forgets idle entries (the hub's heartbeat calls it).
func (l *addrLimiter) sweep() {
	l.mu.Lock()
	l.sweepLocked()
	l.mu.Unlock()
}

// allowSession takes one session creation of ip; when refused it says when to retry.
func (l *addrLimiter) allowSession(ip netip.Addr) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	st := l.state(ip)
	if st == nil {
		return false, time.Minute
	}
	return st.sessions.take(l.now(), l.lim.SessionsPerMinute/60, float64(l.lim.SessionBurst))
}

// allowUpgrade takes one WebSocket attempt of ip.
func (l *addrLimiter) allowUpgrade(ip netip.Addr) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	st := l.state(ip)
	if st == nil {
		return false, time.Minute
	}
	return st.upgrades.take(l.now(), l.lim.UpgradesPerMinute/60, float64(l.lim.UpgradeBurst))
}

// openWS counts one more open WebSocket of ip unless it has MaxWSPerAddr
// open already; every true answer must be paired with closeWS.
func (l *addrLimiter) openWS(ip netip.Addr) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	st := l.state(ip)
	if st == nil || st.ws >= l.lim.MaxWSPerAddr {
		return false
	}
	st.ws++
	return true
}

func (l *addrLimiter) closeWS(ip netip.Addr) {
	l.mu.Lock()
	if st := l.addrs[addrKey(ip)]; st != nil && st.ws > 0 {
		st.ws--
	}
	l.mu.Unlock()
}

// openConn counts one more HTTP connection of TCP peer ip unless it has
// MaxConnsPerAddr open already; every true answer must be paired with
// closeConn.
func (l *addrLimiter) openConn(ip netip.Addr) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	st := l.state(ip)
	if st == nil || st.conns >= l.lim.MaxConnsPerAddr {
		return false
	}
	st.conns++
	return true
}

func (l *addrLimiter) closeConn(ip netip.Addr) {
	l.mu.Lock()
	if st := l.addrs[addrKey(ip)]; st != nil && st.conns > 0 {
		st.conns--
	}
	l.mu.Unlock()
}

// tooMany answers 429 with Retry-After (whole seconds, at least 1).
func tooMany(w http.ResponseWriter, retry time.Duration, code protocol.Code, msg string) {
	secs := int(math.Ceil(retry.Seconds()))
	if secs < 1 {
		secs = 1
	}
	w.Header().Set("Retry-After", strconv.Itoa(secs))
	httpError(w, http.StatusTooManyRequests, code, msg)
}
