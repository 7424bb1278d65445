package signaling

import (
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/virtutune/link/protocol"
)

// Config configures a Server. The zero value of every field but Secret means
// the documented default; New fills them in. Validate refuses a negative
// number or duration and any other nonsense, naming the setting.
type Config struct {
	// Secret signs and verifies tokens (HS256), shared by every instance and
	// by the main VirtuTune application. At least MinSecretLen bytes. Required.
	Secret []byte
	// APIKey, when set, is required to create sessions (and lets the caller
	// name user_id). Empty: anyone may create a session as a fresh user.
	APIKey string
	// AllowedOrigins are extra Origins (scheme://host[:port]) allowed to open
	// the WebSocket, besides the server's own origin. "*" is refused.
	AllowedOrigins []string
	// PublicURL, when set (e.g. https://link.example.com), is the base of
	// pairing URLs and the server's own origin; otherwise they come from the
	// request (with the LAN address in place of localhost).
	PublicURL string
	// Broker carries messages between members; nil means a MemoryBroker that
	// the Server owns and closes.
	Broker Broker
	// Logger receives the server's logs; nil means slog.Default().
	Logger *slog.Logger
	// Static serves everything that is not API, WebSocket, health or metrics
	// (the web pages); nil answers 404.
	Static http.Handler
	// Registry holds the server's Prometheus metrics, served at /metrics; nil
	// means a new registry of the server's own (with the Go runtime and
	// process collectors).
	Registry *prometheus.Registry
	// Instance names this instance in presence and logs; default a random id.
	Instance string
	// TrustedProxies lists the proxies (IP addresses or CIDR prefixes, e.g.
	// "127.0.0.1", "10.0.0.0/8") whose X-Forwarded-For names the client
	// address that the per-address limits count. Empty (the default): the
	// header is ignored and every request counts for its TCP peer.
	TrustedProxies []string

	// SessionTTL is how long a session and its tokens live (default 12h). A
	// session with a member connected is extended as it is used.
	SessionTTL time.Duration
	// PairingTTL is how long a pairing link stays valid (default 300 s, the
	// original's). It can be used once.
	PairingTTL time.Duration

	Limits Limits
}

// Limits bound every part of the message path. Zero values mean the
// defaults; negative values are refused (Config.Validate).
type Limits struct {
	// MaxMessageSize bounds one WebSocket frame in bytes (default
	// protocol.MaxMessageSize, 32 KiB). A larger frame closes with 1009.
	MaxMessageSize int64
	// SendQueue bounds each client's queue of messages waiting to be written
	// (default 256). A client whose queue is full is closed with 4000 (slow
	// consumer); nobody else waits for it.
	SendQueue int
	// MaxMembers bounds the connected members of a session (default 8), of
	// which PCSlots (default 2) are the PC role's alone: phones take at most
	// MaxMembers-PCSlots, PCs at most PCSlots, so no number of phones keeps
	// the PC out. One more of a full role is closed with 4103 right after
	// the upgrade. A member's own earlier connection (live, or held for the
	// disconnect grace) never counts against it. The cap is atomic across
	// instances.
	MaxMembers int
	PCSlots    int
	// MaxSessions bounds the sessions with a member connected to this
	// instance (default 20000); MaxConns the WebSocket connections (default
	// 50000). Beyond either, the upgrade is refused with 503.
	MaxSessions int
	MaxConns    int
	// Rate is the sustained messages per second per connection (default 50),
	// Burst the bucket size (default 100). A message over the rate is dropped
	// with error rate_limited; after FloodClose consecutive drops (default 200)
	// the connection is closed with 1008.
	Rate       float64
	Burst      int
	FloodClose int
	// SignalRate bounds signaling messages (rtc_*) per second per member
	// (default 50, burst 200); beyond it they are dropped with rate_limited.
	SignalRate  float64
	SignalBurst int
	// LatencyRate bounds the latency_report messages per second per member
	// that reach the latency metrics (default 1, burst LatencyBurst 5; the
	// clients send about one every 3 s per path); beyond it they are
	// dropped silently (virtutune_latency_reports_dropped_total).
	LatencyRate  float64
	LatencyBurst int
	// DisconnectGrace is how long the server waits before it tells the
	// others that a member whose connection died (no close frame: network
	// blip, phone asleep, ping timeout) or that it asked to reconnect (1001,
	// 4000, 4001) has left (default 10 s). A member that comes back within
	// it, on any instance, was never gone for the others: no "disconnected"
	// storm. A member that closes on purpose is announced at once.
	DisconnectGrace time.Duration
	// SocketSendBuffer, when set, is each WebSocket's kernel send buffer
	// (SO_SNDBUF) in bytes; 0 keeps the operating system's default.
	// A small buffer makes a stalled client reach its SendQueue bound sooner.
	SocketSendBuffer int
	// PingInterval is how often the server pings each client (default 20 s);
	// PongWait how long it waits for any frame before it drops the client
	// (default 45 s); WriteWait bounds one write (default 10 s).
	PingInterval time.Duration
	PongWait     time.Duration
	WriteWait    time.Duration

	// PairFailures bounds the failed pairing attempts (a wrong or expired
	// code of either kind) from one client address within PairFailWindow
	// (default 10 in 10 minutes); beyond it POST /api/pair answers 429 with
	// Retry-After, whatever the code, until the window ends.
	PairFailures   int
	PairFailWindow time.Duration
	// PINGuessesPerMinute bounds the wrong 6-digit codes tried per minute on
	// the whole store (every instance), from any address (default 30);
	// beyond it 6-digit attempts answer 429 until the minute ends (the QR
	// link still works). PINGuesses burns every live 6-digit code once that
	// many wrong 6-digit codes were tried after it was issued (default 10):
	// a wrong guess names no session, so it counts against all of them.
	PINGuessesPerMinute int
	PINGuesses          int
	// MaxDevices bounds the devices paired with one session (default 8);
	// pairing one more answers 409 until the PC removes one.
	MaxDevices int
	// HTTP phases, applied by Server.HTTPServer: HeaderTimeout bounds
	// reading a request's headers (default 10 s), BodyTimeout reading its
	// body after them (default 10 s), ResponseTimeout writing the answer
	// (default 30 s), IdleTimeout a kept-alive connection's wait for its next
	// request (default 120 s); past a bound the connection is closed.
	// UpgradeTimeout bounds a WebSocket upgrade from its request to the 101
	// (default 10 s). MaxBodyBytes bounds every request body (default 8 KiB;
	// the API's JSON bodies are at most 4 KiB): a larger one is refused with
	// 413. MaxHeaderBytes bounds a request's headers (default 16 KiB; 431).
	HeaderTimeout   time.Duration
	BodyTimeout     time.Duration
	ResponseTimeout time.Duration
	IdleTimeout     time.Duration
	UpgradeTimeout  time.Duration
	MaxBodyBytes    int64
	MaxHeaderBytes  int

	// Per client address (see Config.TrustedProxies); a large value lifts a
	// limit (a load test from one address). SessionsPerMinute bounds POST /api/sessions (default
	// 20 a minute, SessionBurst 10 at once): beyond, 429 with Retry-After.
	// UpgradesPerMinute bounds WebSocket attempts, refused ones included
	// (default 120 a minute, UpgradeBurst 60): beyond, 429 with Retry-After.
	// MaxWSPerAddr bounds the WebSockets open at once (default 64): one more
	// is refused with 429 before the upgrade. MaxConnsPerAddr bounds the
	// HTTP connections a TCP peer holds open at once (default 128; trusted
	// proxies are exempt): one more is closed as it is accepted. MaxAddrs
	// bounds the addresses tracked at once (default 65536): idle ones are
	// forgotten first; when all are busy, a new address is refused (429).
	SessionsPerMinute float64
	SessionBurst      int
	UpgradesPerMinute float64
	UpgradeBurst      int
	MaxWSPerAddr      int
	MaxConnsPerAddr   int
	MaxAddrs          int
}

func (l *Limits) fill() {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	if l.MaxMessageSize == 0 {
		l.MaxMessageSize = protocol.MaxMessageSize
	}
	def(&l.SendQueue, 256)
	def(&l.MaxMembers, 8)
	if l.PCSlots == 0 {
		l.PCSlots = 2
		if l.MaxMembers <= 2 {
			l.PCSlots = 1 // a phone's slot stays
		}
	}
	def(&l.MaxSessions, 20000)
	def(&l.MaxConns, 50000)
	if l.Rate == 0 {
		l.Rate = 50
	}
	def(&l.Burst, 100)
	def(&l.FloodClose, 200)
	if l.SignalRate == 0 {
		l.SignalRate = 50
	}
	def(&l.SignalBurst, 200)
	if l.LatencyRate == 0 {
		l.LatencyRate = 1
	}
	def(&l.LatencyBurst, 5)
	if l.PingInterval == 0 {
		l.PingInterval = 20 * time.Second
	}
	if l.PongWait == 0 {
		l.PongWait = 45 * time.Second
	}
	if l.DisconnectGrace == 0 {
		l.DisconnectGrace = 10 * time.Second
	}
	if l.WriteWait == 0 {
		l.WriteWait = 10 * time.Second
	}
	def(&l.PairFailures, 10)
	if l.PairFailWindow == 0 {
		l.PairFailWindow = 10 * time.Minute
	}
	def(&l.PINGuessesPerMinute, 30)
	def(&l.PINGuesses, 10)
	def(&l.MaxDevices, 8)
	dur := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	dur(&l.HeaderTimeout, 10*time.Second)
	dur(&l.BodyTimeout, 10*time.Second)
	dur(&l.ResponseTimeout, 30*time.Second)
	dur(&l.IdleTimeout, 120*time.Second)
	dur(&l.UpgradeTimeout, 10*time.Second)
	if l.MaxBodyBytes == 0 {
		l.MaxBodyBytes = 8 << 10
	}
	def(&l.MaxHeaderBytes, 16<<10)
	if l.SessionsPerMinute == 0 {
		l.SessionsPerMinute = 20
	}
	def(&l.SessionBurst, 10)
	if l.UpgradesPerMinute == 0 {
		l.UpgradesPerMinute = 120
	}
	def(&l.UpgradeBurst, 60)
	def(&l.MaxWSPerAddr, 64)
	def(&l.MaxConnsPerAddr, 128)
	def(&l.MaxAddrs, 65536)
}

func (c *Config) fill() {
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Instance == "" {
		c.Instance = randomID(6)
	}
	if c.SessionTTL == 0 {
		c.SessionTTL = 12 * time.Hour
	}
	if c.PairingTTL == 0 {
		c.PairingTTL = 300 * time.Second
	}
	c.Limits.fill()
}

// Validate reports the first setting that makes no sense, naming it, with
// an error wrapping ErrInvalidConfig. Zero values stand for their defaults.
func (c *Config) Validate() error {
	f := *c
	f.fill()
	return f.validate()
}

// validate checks a filled Config.
func (c *Config) validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidConfig, fmt.Sprintf(format, a...))
	}
	l := c.Limits
	for _, n := range []struct {
		name     string
		negative bool
	}{
		{"SessionTTL", c.SessionTTL < 0}, {"PairingTTL", c.PairingTTL < 0},
		{"Limits.MaxMessageSize", l.MaxMessageSize < 0}, {"Limits.SendQueue", l.SendQueue < 0},
		{"Limits.MaxMembers", l.MaxMembers < 0}, {"Limits.MaxSessions", l.MaxSessions < 0},
		{"Limits.MaxConns", l.MaxConns < 0}, {"Limits.Rate", l.Rate < 0}, {"Limits.Burst", l.Burst < 0},
		{"Limits.FloodClose", l.FloodClose < 0}, {"Limits.SignalRate", l.SignalRate < 0},
		{"Limits.SignalBurst", l.SignalBurst < 0}, {"Limits.DisconnectGrace", l.DisconnectGrace < 0},
		{"Limits.SocketSendBuffer", l.SocketSendBuffer < 0}, {"Limits.PingInterval", l.PingInterval < 0},
		{"Limits.PongWait", l.PongWait < 0}, {"Limits.WriteWait", l.WriteWait < 0},
		{"Limits.PairFailures", l.PairFailures < 0}, {"Limits.PairFailWindow", l.PairFailWindow < 0},
		{"Limits.PINGuessesPerMinute", l.PINGuessesPerMinute < 0}, {"Limits.PINGuesses", l.PINGuesses < 0},
		{"Limits.MaxDevices", l.MaxDevices < 0}, {"Limits.PCSlots", l.PCSlots < 0},
		{"Limits.LatencyRate", l.LatencyRate < 0}, {"Limits.LatencyBurst", l.LatencyBurst < 0},
		{"Limits.HeaderTimeout", l.HeaderTimeout < 0}, {"Limits.BodyTimeout", l.BodyTimeout < 0},
		{"Limits.ResponseTimeout", l.ResponseTimeout < 0}, {"Limits.IdleTimeout", l.IdleTimeout < 0},
		{"Limits.UpgradeTimeout", l.UpgradeTimeout < 0}, {"Limits.MaxBodyBytes", l.MaxBodyBytes < 0},
		{"Limits.MaxHeaderBytes", l.MaxHeaderBytes < 0},
		{"Limits.SessionsPerMinute", l.SessionsPerMinute < 0}, {"Limits.SessionBurst", l.SessionBurst < 0},
		{"Limits.UpgradesPerMinute", l.UpgradesPerMinute < 0}, {"Limits.UpgradeBurst", l.UpgradeBurst < 0},
		{"Limits.MaxWSPerAddr", l.MaxWSPerAddr < 0}, {"Limits.MaxConnsPerAddr", l.MaxConnsPerAddr < 0},
		{"Limits.MaxAddrs", l.MaxAddrs < 0},
	} {
		if n.negative {
			return bad("%s must not be negative (0 means the default)", n.name)
		}
	}
	if len(c.Secret) < MinSecretLen {
		return bad("Secret must be at least %d bytes (VIRTUTUNE_SECRET)", MinSecretLen)
	}
	for _, o := range c.AllowedOrigins {
		if o == "*" {
			return bad("AllowedOrigins: \"*\" would let any site open the WebSocket; list origins instead")
		}
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") {
			return bad("AllowedOrigins: %q must look like https://host[:port]", o)
		}
	}
	if c.PublicURL != "" {
		u, err := url.Parse(c.PublicURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return bad("PublicURL %q must look like https://host[:port]", c.PublicURL)
		}
	}
	if c.SessionTTL < time.Minute {
		return bad("SessionTTL %s is shorter than a minute", c.SessionTTL)
	}
	if c.PairingTTL < time.Second || c.PairingTTL > c.SessionTTL {
		return bad("PairingTTL %s must be between 1s and SessionTTL", c.PairingTTL)
	}
	switch {
	case l.MaxMessageSize < 1024:
		return bad("Limits.MaxMessageSize %d is below 1024 bytes", l.MaxMessageSize)
	case l.SendQueue < 8:
		return bad("Limits.SendQueue %d is below 8", l.SendQueue)
	case l.MaxMembers < 2:
		return bad("Limits.MaxMembers %d is below 2 (a phone and a PC)", l.MaxMembers)
	case l.PCSlots >= l.MaxMembers:
		return bad("Limits.PCSlots %d must leave a phone's slot of the %d members (Limits.MaxMembers)", l.PCSlots, l.MaxMembers)
	case l.MaxConns < 2:
		return bad("Limits.MaxConns %d is below 2 (a phone and a PC)", l.MaxConns)
	case l.PongWait <= l.PingInterval:
		return bad("Limits.PongWait %s must exceed Limits.PingInterval %s", l.PongWait, l.PingInterval)
	case l.MaxBodyBytes < maxAPIBody:
		return bad("Limits.MaxBodyBytes %d is below the API's %d", l.MaxBodyBytes, maxAPIBody)
	case l.MaxHeaderBytes < 4096:
		return bad("Limits.MaxHeaderBytes %d is below 4096", l.MaxHeaderBytes)
	}
	if _, err := parseProxies(c.TrustedProxies); err != nil {
		return bad("%v", err)
	}
	return nil
}

// parseProxies parses Config.TrustedProxies: IP addresses or CIDR prefixes.
func parseProxies(list []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range list {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked())
			continue
		}
		ip, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("trusted proxy %q is neither an IP address nor a CIDR prefix (VIRTUTUNE_TRUSTED_PROXIES)", s)
		}
		ip = ip.Unmap()
		out = append(out, netip.PrefixFrom(ip, ip.BitLen()))
	}
	return out, nil
}
