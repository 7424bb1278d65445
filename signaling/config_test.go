package signaling_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/virtutune/link/signaling"
)

// TestConfigValidate: zero values mean the defaults; a negative value, and
// every other setting that makes no sense, is refused with an error that
// wraps ErrInvalidConfig and names the setting.
func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		mod  func(*signaling.Config)
		want string // the setting named; "" means valid
	}{
		{"defaults", func(*signaling.Config) {}, ""},
		{"explicit values", func(c *signaling.Config) {
			c.SessionTTL, c.PairingTTL = time.Hour, time.Minute
			c.Limits = signaling.Limits{SendQueue: 16, MaxMembers: 2, Rate: 1, Burst: 1, DisconnectGrace: time.Millisecond,
				SocketSendBuffer: 4096, PingInterval: time.Second, PongWait: 2 * time.Second}
		}, ""},
		{"short secret", func(c *signaling.Config) { c.Secret = []byte("short") }, "Secret"},
		{"any origin", func(c *signaling.Config) { c.AllowedOrigins = []string{"*"} }, "AllowedOrigins"},
		{"origin with a path", func(c *signaling.Config) { c.AllowedOrigins = []string{"https://a.example/x"} }, "AllowedOrigins"},
		{"public URL", func(c *signaling.Config) { c.PublicURL = "link.example.com" }, "PublicURL"},
		{"negative session TTL", func(c *signaling.Config) { c.SessionTTL = -time.Hour }, "SessionTTL"},
		{"short session TTL", func(c *signaling.Config) { c.SessionTTL = time.Second }, "SessionTTL"},
		{"negative pairing TTL", func(c *signaling.Config) { c.PairingTTL = -time.Second }, "PairingTTL"},
		{"short pairing TTL", func(c *signaling.Config) { c.PairingTTL = time.Millisecond }, "PairingTTL"},
		{"pairing TTL above the session's", func(c *signaling.Config) { c.SessionTTL, c.PairingTTL = time.Minute, time.Hour }, "PairingTTL"},
		{"negative message size", func(c *signaling.Config) { c.Limits.MaxMessageSize = -1 }, "Limits.MaxMessageSize"},
		{"small message size", func(c *signaling.Config) { c.Limits.MaxMessageSize = 100 }, "Limits.MaxMessageSize"},
		{"negative send queue", func(c *signaling.Config) { c.Limits.SendQueue = -1 }, "Limits.SendQueue"},
		{"small send queue", func(c *signaling.Config) { c.Limits.SendQueue = 4 }, "Limits.SendQueue"},
		{"one member", func(c *signaling.Config) { c.Limits.MaxMembers = 1 }, "Limits.MaxMembers"},
		{"negative sessions", func(c *signaling.Config) { c.Limits.MaxSessions = -5 }, "Limits.MaxSessions"},
		{"one connection", func(c *signaling.Config) { c.Limits.MaxConns = 1 }, "Limits.MaxConns"},
		{"negative rate", func(c *signaling.Config) { c.Limits.Rate = -1 }, "Limits.Rate"},
		{"negative burst", func(c *signaling.Config) { c.Limits.Burst = -1 }, "Limits.Burst"},
		{"negative flood close", func(c *signaling.Config) { c.Limits.FloodClose = -1 }, "Limits.FloodClose"},
		{"negative signal rate", func(c *signaling.Config) { c.Limits.SignalRate = -1 }, "Limits.SignalRate"},
		{"negative signal burst", func(c *signaling.Config) { c.Limits.SignalBurst = -1 }, "Limits.SignalBurst"},
		{"negative grace", func(c *signaling.Config) { c.Limits.DisconnectGrace = -time.Second }, "Limits.DisconnectGrace"},
		{"negative socket buffer", func(c *signaling.Config) { c.Limits.SocketSendBuffer = -1 }, "Limits.SocketSendBuffer"},
		{"negative ping interval", func(c *signaling.Config) { c.Limits.PingInterval = -time.Second }, "Limits.PingInterval"},
		{"negative pong wait", func(c *signaling.Config) { c.Limits.PongWait = -time.Second }, "Limits.PongWait"},
		{"pong wait below the ping interval", func(c *signaling.Config) { c.Limits.PongWait = time.Second }, "Limits.PongWait"},
		{"negative write wait", func(c *signaling.Config) { c.Limits.WriteWait = -time.Second }, "Limits.WriteWait"},
		{"negative pair failures", func(c *signaling.Config) { c.Limits.PairFailures = -1 }, "Limits.PairFailures"},
		{"negative pair fail window", func(c *signaling.Config) { c.Limits.PairFailWindow = -time.Minute }, "Limits.PairFailWindow"},
		{"negative PIN guesses per minute", func(c *signaling.Config) { c.Limits.PINGuessesPerMinute = -1 }, "Limits.PINGuessesPerMinute"},
		{"negative PIN guesses", func(c *signaling.Config) { c.Limits.PINGuesses = -1 }, "Limits.PINGuesses"},
		{"negative devices", func(c *signaling.Config) { c.Limits.MaxDevices = -1 }, "Limits.MaxDevices"},
		{"every slot the PC's", func(c *signaling.Config) { c.Limits.MaxMembers, c.Limits.PCSlots = 3, 3 }, "Limits.PCSlots"},
		{"negative sessions per minute", func(c *signaling.Config) { c.Limits.SessionsPerMinute = -1 }, "Limits.SessionsPerMinute"},
		{"negative WebSockets per address", func(c *signaling.Config) { c.Limits.MaxWSPerAddr = -1 }, "Limits.MaxWSPerAddr"},
		{"negative body timeout", func(c *signaling.Config) { c.Limits.BodyTimeout = -time.Second }, "Limits.BodyTimeout"},
		{"small body bound", func(c *signaling.Config) { c.Limits.MaxBodyBytes = 100 }, "Limits.MaxBodyBytes"},
		{"a trusted proxy that is no address", func(c *signaling.Config) { c.TrustedProxies = []string{"nginx"} }, "trusted proxy"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := signaling.Config{Secret: testSecret}
			tt.mod(&c)
			err := c.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if !errors.Is(err, signaling.ErrInvalidConfig) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate: %v, want an ErrInvalidConfig naming %s", err, tt.want)
			}
			if _, nerr := signaling.New(c); !errors.Is(nerr, signaling.ErrInvalidConfig) {
				t.Fatalf("New: %v, want ErrInvalidConfig", nerr)
			}
		})
	}
}

// TestMemoryConfigValidate: the MemoryBroker's zero values are defaults and
// its negative ones are refused by Validate and NewMemoryBroker.
func TestMemoryConfigValidate(t *testing.T) {
	if err := (&signaling.MemoryConfig{}).Validate(); err != nil {
		t.Fatalf("zero MemoryConfig: %v", err)
	}
	for name, c := range map[string]signaling.MemoryConfig{
		"HistorySize":     {HistorySize: -1},
		"HistoryTTL":      {HistoryTTL: -time.Second},
		"MaxSeqClients":   {MaxSeqClients: -1},
		"JanitorInterval": {JanitorInterval: -time.Second},
	} {
		err := c.Validate()
		if !errors.Is(err, signaling.ErrInvalidConfig) || !strings.Contains(err.Error(), name) {
			t.Errorf("%s negative: Validate = %v, want an ErrInvalidConfig naming it", name, err)
		}
		if b, err := signaling.NewMemoryBroker(c); !errors.Is(err, signaling.ErrInvalidConfig) || b != nil {
			t.Errorf("%s negative: NewMemoryBroker = %v, %v", name, b, err)
		}
	}
}
