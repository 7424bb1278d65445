package signaling

import (
	"strings"
	"testing"
	"time"
)

// FuzzTokenParse feeds arbitrary strings (and mutations of real tokens) to
// the token parser: it must never panic, and whatever it accepts must be a
// session or pairing token of this secret with a valid session id, role and
// user id that has not expired.
func FuzzTokenParse(f *testing.F) {
	tk, err := NewTokens([]byte("fuzz-secret-fuzz-secret-fuzz-secret!"))
	if err != nil {
		f.Fatal(err)
	}
	good, _, _ := tk.Sign(42, "abcdefgh12345678", "pc", tokenSession, time.Hour)
	pair, _, _ := tk.Sign(42, "abcdefgh12345678", "phone", tokenPairing, time.Minute)
	f.Add(good)
	f.Add(pair)
	f.Add("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiIxIiwic2lkIjoiYWJjZGVmZ2gxMjM0NTY3OCIsInJvbGUiOiJwYyIsImV4cCI6OTk5OTk5OTk5OX0.")
	f.Add(strings.Replace(good, "e", "f", 1))
	f.Add("")
	f.Add("...")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := tk.Parse(s)
		if err != nil {
			return
		}
		if !validSessionID(c.SessionID) || (c.Role != "pc" && c.Role != "phone") {
			t.Fatalf("accepted claims %+v", c)
		}
		if _, err := c.UserID(); err != nil {
			t.Fatalf("accepted a bad sub: %+v", c)
		}
		if c.ExpiresAt == nil || c.ExpiresAt.Before(time.Now().Add(-time.Minute)) {
			t.Fatalf("accepted an expired token: %+v", c)
		}
		if !strings.HasPrefix(s, "eyJhbGciOiJIUzI1NiIs") {
			t.Fatalf("accepted a token whose header is not HS256: %q", s)
		}
	})
}
