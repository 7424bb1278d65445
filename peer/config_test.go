package peer_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/virtutune/link/peer"
)

func TestConfigValidate(t *testing.T) {
	defer goleak.VerifyNone(t)
	ok := peer.Config{ServerURL: "http://127.0.0.1:8000", SessionID: "s1", Token: "t"}
	tests := []struct {
		name string
		mod  func(*peer.Config)
		want string // substring of the error; "" means valid
	}{
		{"defaults", func(*peer.Config) {}, ""},
		{"ws url only", func(c *peer.Config) { c.ServerURL, c.SessionID, c.WSURL = "", "", "ws://h:1/ws/guitar/s/" }, ""},
		{"phone", func(c *peer.Config) { c.Role = "phone" }, ""},
		{"no server", func(c *peer.Config) { c.ServerURL = "" }, "ServerURL or WSURL"},
		{"no session", func(c *peer.Config) { c.SessionID = "" }, "SessionID"},
		{"no token", func(c *peer.Config) { c.Token = "" }, "Token"},
		{"bad role", func(c *peer.Config) { c.Role = "tablet" }, "Role"},
		{"bad client id", func(c *peer.Config) { c.ClientID = "a b" }, "ClientID"},
		{"short client id", func(c *peer.Config) { c.ClientID = "abc" }, "ClientID"},
		{"backoff", func(c *peer.Config) { c.BackoffMin, c.BackoffMax = time.Second, time.Millisecond }, "Backoff"},
		{"ping", func(c *peer.Config) { c.PingInterval = time.Microsecond }, "PingInterval"},
		{"outbox", func(c *peer.Config) { c.Outbox = -1 }, "Outbox"},
		{"scheme", func(c *peer.Config) { c.ServerURL = "ftp://h" }, "http://"},
		{"ws scheme", func(c *peer.Config) { c.WSURL = "http://h/ws" }, "ws://"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := ok
			tt.mod(&c)
			err := c.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("unexpected error %v", err)
			case tt.want != "" && (!errors.Is(err, peer.ErrInvalidConfig) || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("error %v, want an ErrInvalidConfig about %s", err, tt.want)
			}
		})
	}
}

func TestPairRefusesBadLinks(t *testing.T) {
	defer goleak.VerifyNone(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, u := range []string{"", "http://h/phone/", "http://h/phone/#s=x&p=y", "http://h/p/", "http://h/p/A/B", "/p/ABCDEFGHJKMN"} {
		if _, err := peer.Pair(ctx, u); !errors.Is(err, peer.ErrBadPairingURL) {
			t.Errorf("Pair(%q) = %v, want ErrBadPairingURL", u, err)
		}
	}
}

func TestDialRefusedToken(t *testing.T) {
	ctx, e := begin(t, 10*time.Second)
	info, err := peer.CreateSession(ctx, e.url, "")
	if err != nil {
		t.Fatal(err)
	}
	cfg := e.config("pc", nil)
	cfg.SessionID, cfg.Token = info.SessionID, "not-a-token"
	if _, err := peer.Dial(ctx, cfg); !errors.Is(err, peer.ErrRefused) {
		t.Fatalf("Dial with a bad token: %v, want ErrRefused", err)
	}
}
