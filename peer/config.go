package peer

import (
	"crypto/rand"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/webrtc/v4"
	"github.com/virtutune/link/protocol"
)

// Defaults of Config's zero values.
const (
	DefaultBackoffMin     = 250 * time.Millisecond
	DefaultBackoffMax     = 10 * time.Second
	DefaultPingInterval   = 2 * time.Second
	DefaultHeartbeat      = 100 * time.Millisecond
	DefaultOutbox         = 4096
	DefaultRecvQueue      = 4096
	DefaultControlQueue   = 512
	DefaultConnectTimeout = maxConnectTimeout
	DefaultHandshake      = 10 * time.Second
	// writeWait bounds one WebSocket write.
	writeWait = 5 * time.Second
)

// Timings of the direct path (link.js uses the same).
const (
	// heartbeatIdle is the heartbeat interval of an idle session: no
	// application message sent or received for idleAfter.
	heartbeatIdle = time.Second
	idleAfter     = time.Minute
	// p2pBackoff*: the wait before the next attempt of a link that was up
	// before in this session (a path known to work: retried fast, so that
	// p2p is back within about a second of its return), and of one that
	// never was (the path may be impossible: retried ever more slowly).
	p2pBackoffKnownMin = 250 * time.Millisecond
	p2pBackoffKnownMax = time.Second
	p2pBackoffNewMin   = time.Second
	p2pBackoffNewMax   = 30 * time.Second
	// maxConnectTimeout bounds every attempt: SCTP gives up its handshake
	// after nine retransmission timeouts (4.5 s with sctpRTOMax), and pion
	// leaks the association of a handshake it gave up on when the peer's
	// answer comes later, so an attempt must end (and close its connection)
	// before that.
	maxConnectTimeout = 4 * time.Second
	// restartAfter: a link down this long gets a fresh attempt beside the
	// silent channel (which comes back by itself if the peer is heard again).
	restartAfter = 500 * time.Millisecond
	// noOfferWait: the answering side asks again (rtc_restart) when no offer
	// came this long after it asked.
	noOfferWait = 8 * time.Second
	// sctpRTOMax caps SCTP's retransmission timeout (pion: 1 s, doubling up
	// to 60 s), so a channel resumes within half a second of the network's
	// return. Lower would do more (BenchmarkChannelModes measured 200 ms),
	// but the cap also paces the handshake's retransmissions, and SCTP gives
	// a handshake up after nine of them (see maxConnectTimeout).
	sctpRTOMax = 500 * time.Millisecond
	// iceCheckInterval is pion's connectivity check interval while connecting.
	iceCheckInterval = 200 * time.Millisecond
	// iceDisconnected and iceFailed are pion's ICE timeouts: no packet from
	// the peer for iceDisconnected counts as down (the heartbeat usually says
	// so first); after iceFailed more the connection is given up. Long, so a
	// blackout of several seconds resumes on the same connection.
	iceDisconnected = time.Second
	iceFailed       = 25 * time.Second
	iceKeepalive    = 500 * time.Millisecond
)

// Config configures a Client. The zero value of every field except SessionID,
// Token and one of ServerURL/WSURL means the documented default; Validate
// refuses negative numbers and durations, naming the setting.
type Config struct {
	// ServerURL is the server's base URL, http://host:port (or https://). The
	// WebSocket URL is derived from it: ws://host:port/ws/guitar/<SessionID>/.
	ServerURL string
	// WSURL, when set, is the WebSocket URL to use instead (ws:// or wss://, as
	// the server's ws_url field gives it). The token and client id are added.
	WSURL string
	// SessionID is the session to join. Required.
	SessionID string
	// Token is the session token (a JWT for this session). Required. It is sent
	// in the Authorization header, never logged.
	Token string
	// Role is "pc" or "phone" and must match the token's role. It decides who
	// offers the data channel (protocol.Offers). Default "pc".
	Role string
	// ClientID is this client's id. The server binds a client id to the
	// token (the token's cid claim, or an id derived from the token), so
	// leave it empty: the client adopts the id the server gives in its first
	// connection_update and keeps it across reconnects. When set (4-64 bytes
	// of [A-Za-z0-9_-]) it must be the token's, or the server refuses it.
	ClientID string
	// ICEServers are the STUN/TURN servers for the data channel. Default none:
	// host candidates only, which is what two devices on one LAN need.
	ICEServers []webrtc.ICEServer
	// DisableP2P keeps every message on the WebSocket relay: this client
	// neither offers nor answers a data channel.
	DisableP2P bool
	// LoopbackOnly restricts pion to loopback addresses with mDNS disabled (for
	// tests on one machine).
	LoopbackOnly bool
	// SettingEngine, when not nil, is called with the SettingEngine this client
	// builds (logger already set, LoopbackOnly applied) before the WebRTC API is
	// created, to set anything else pion offers (SetNet with a vnet, ICE timeouts).
	SettingEngine func(*webrtc.SettingEngine)
	// Logger receives the client's logs and pion's (Debug for pion's Trace and
	// Debug). Default: discard.
	Logger *slog.Logger
	// BackoffMin and BackoffMax bound the exponential backoff (with jitter) of
	// WebSocket reconnects. Defaults 250ms and 10s. (Data channel attempts
	// have their own: 250ms to 1s for a link that was up before, 1s to 30s
	// for one that never was.)
	BackoffMin, BackoffMax time.Duration
	// PingInterval is how often the client pings over the WebSocket to
	// measure round-trip time and learn which of its messages the server
	// holds. Default 2s. The WebSocket is considered dead after three
	// intervals without a message.
	PingInterval time.Duration
	// Heartbeat is how often the client pings each peer over its data
	// channel while the session is active (an idle session, no application
	// message for a minute, pings every second). Two intervals without a word
	// from the peer make the link suspect, four make it down. Default 100ms.
	Heartbeat time.Duration
	// ConnectTimeout bounds one attempt to open a data channel to a peer
	// (one generation); a failed attempt is retried after backoff. Default
	// and at most 4s (a longer one is cut to 4s: SCTP's handshake gives up
	// after 4.5s).
	ConnectTimeout time.Duration
	// TLSConfig, when set, is used for wss:// connections (a private CA, a
	// self-signed certificate in a test). nil means the system's roots.
	TLSConfig *tls.Config
	// Outbox bounds the application messages kept until the server and every
	// peer with a data channel confirmed them. When exceeded, the oldest is
	// dropped and counted (Stats): a destination that lacked it is told the
	// gap with the next message it gets, and takes the newest (see
	// protocol/doc.go, "Delivery"). Default 4096.
	Outbox int
	// RecvQueue bounds the deliveries waiting for Recv. When it is full, the
	// client stops reading (backpressure) rather than drop. Default 4096.
	RecvQueue int
	// ReorderWindow bounds the messages per sender held back while an earlier
	// one is missing; an arrival beyond it is dropped (counted in Stats), to
	// be delivered when the other path or a resend brings it. Default 1024.
	ReorderWindow int
}

// withDefaults returns c with its zero values replaced by defaults.
func (c Config) withDefaults() Config {
	if c.Role == "" {
		c.Role = protocol.RolePC
	}
	if c.Logger == nil {
		c.Logger = discardLogger()
	}
	if c.BackoffMin == 0 {
		c.BackoffMin = DefaultBackoffMin
	}
	if c.BackoffMax == 0 {
		c.BackoffMax = max(DefaultBackoffMax, c.BackoffMin)
	}
	if c.PingInterval == 0 {
		c.PingInterval = DefaultPingInterval
	}
	if c.Heartbeat == 0 {
		c.Heartbeat = DefaultHeartbeat
	}
	if c.ConnectTimeout == 0 || c.ConnectTimeout > maxConnectTimeout {
		c.ConnectTimeout = DefaultConnectTimeout
	}
	if c.Outbox == 0 {
		c.Outbox = DefaultOutbox
	}
	if c.RecvQueue == 0 {
		c.RecvQueue = DefaultRecvQueue
	}
	if c.ReorderWindow == 0 {
		c.ReorderWindow = DefaultReorderWindow
	}
	return c
}

// Validate reports the first setting that is wrong, defaults applied, with an
// error wrapping ErrInvalidConfig that names it.
func (c Config) Validate() error {
	c = c.withDefaults()
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidConfig, fmt.Sprintf(format, args...))
	}
	switch {
	case c.ServerURL == "" && c.WSURL == "":
		return bad("ServerURL or WSURL is required")
	case c.SessionID == "" && c.WSURL == "":
		return bad("SessionID is required")
	case c.Token == "":
		return bad("Token is required")
	case c.Role != protocol.RolePC && c.Role != protocol.RolePhone:
		return bad("Role must be %q or %q, not %q", protocol.RolePC, protocol.RolePhone, c.Role)
	case c.ClientID != "" && !protocol.ValidClientID(c.ClientID):
		return bad("ClientID must be 4-64 bytes of [A-Za-z0-9_-]")
	case c.BackoffMin < 0:
		return bad("BackoffMin must not be negative")
	case c.BackoffMax < c.BackoffMin:
		return bad("BackoffMax %s is below BackoffMin %s", c.BackoffMax, c.BackoffMin)
	case c.PingInterval < 10*time.Millisecond:
		return bad("PingInterval must be at least 10ms")
	case c.Heartbeat < 10*time.Millisecond || c.Heartbeat > heartbeatIdle:
		return bad("Heartbeat must be between 10ms and %v", heartbeatIdle)
	case c.ConnectTimeout < 0:
		return bad("ConnectTimeout must not be negative")
	case c.Outbox < 0:
		return bad("Outbox must not be negative")
	case c.RecvQueue < 0:
		return bad("RecvQueue must not be negative")
	case c.ReorderWindow < 0:
		return bad("ReorderWindow must not be negative")
	}
	if _, err := c.wsURL(); err != nil {
		return bad("%v", err)
	}
	return nil
}

// wsURL returns the WebSocket URL with client_id in its query.
func (c Config) wsURL() (string, error) {
	var u *url.URL
	var err error
	if c.WSURL != "" {
		u, err = url.Parse(c.WSURL)
		if err != nil {
			return "", fmt.Errorf("WSURL: %w", err)
		}
		if u.Scheme != "ws" && u.Scheme != "wss" {
			return "", fmt.Errorf("WSURL must start with ws:// or wss://")
		}
	} else {
		u, err = url.Parse(c.ServerURL)
		if err != nil {
			return "", fmt.Errorf("ServerURL: %w", err)
		}
		switch u.Scheme {
		case "http", "ws":
			u.Scheme = "ws"
		case "https", "wss":
			u.Scheme = "wss"
		default:
			return "", fmt.Errorf("ServerURL must start with http:// or https://")
		}
		if u.Host == "" {
			return "", fmt.Errorf("ServerURL has no host")
		}
		u.Path = strings.TrimSuffix(u.Path, "/") + "/ws/guitar/" + url.PathEscape(c.SessionID) + "/"
		u.RawQuery = ""
		u.Fragment = ""
	}
	q := u.Query()
	if c.ClientID != "" {
		q.Set("client_id", c.ClientID)
	}
	if c.DisableP2P {
		q.Set("p2p", "0") // the others are told not to offer a data channel
	}
	u.RawQuery = q.Encode()
	return u.String(), nil
}

// settingEngine builds the pion SettingEngine of a client.
func (c Config) settingEngine() webrtc.SettingEngine {
	var se webrtc.SettingEngine
	se.LoggerFactory = slogFactory{log: c.Logger}
	se.SetSCTPRTOMax(sctpRTOMax)
	se.SetICETimeouts(iceDisconnected, iceFailed, iceKeepalive)
	// an attempt keeps checking for as long as it may take, so one started
	// during an outage finds the path the moment it returns
	se.SetICEMaxBindingRequests(uint16(min(1000, c.ConnectTimeout/iceCheckInterval+1)))
	if c.LoopbackOnly {
		se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
		se.SetIncludeLoopbackCandidate(true)
		se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
		se.SetIPFilter(func(ip net.IP) bool { return ip.IsLoopback() })
	}
	if c.SettingEngine != nil {
		c.SettingEngine(&se)
	}
	return se
}

// randFloat returns a random number in [0, 1).
func randFloat() float64 { return float64(randUint64()>>11) / (1 << 53) }

func randUint64() uint64 {
	var b [8]byte
	_, _ = rand.Read(b[:])
	var v uint64
	for _, x := range b {
		v = v<<8 | uint64(x)
	}
	return v
}
