package signaling

import (
	"fmt"
	"log/slog"
	"net/http"
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
	// MaxMembers bounds the connected members of a session (default 8). One
	// more is refused with close 4103 right after the upgrade.
	MaxMembers int
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
	// SignalRate bounds signaling messages (rtc_*) per second per session
	// (default 50, burst 200); beyond it they are dropped with rate_limited.
	SignalRate  float64
	SignalBurst int
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
		{"Limits.MaxDevices", l.MaxDevices < 0},
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
	case l.MaxConns < 2:
		return bad("Limits.MaxConns %d is below 2 (a phone and a PC)", l.MaxConns)
	case l.PongWait <= l.PingInterval:
		return bad("Limits.PongWait %s must exceed Limits.PingInterval %s", l.PongWait, l.PingInterval)
	}
	return nil
}

// normalizeOrigin lowercases scheme and host and drops a trailing slash.
func normalizeOrigin(o string) string {
	return strings.TrimSuffix(strings.ToLower(o), "/")
}
