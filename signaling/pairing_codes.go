package signaling

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/big"
	"strings"
	"time"
)

// Pairing is one pairing offer of a session: a short code (the QR code's
// link, http://host/p/<code>) and a 6-digit code to type, single use
// together. The store keeps only keyed hashes of the codes (CodeKey, PINKey):
// a code is looked up by its hash, never compared as a secret.
type Pairing struct {
	SessionID string `json:"sid"`
	UserID    int64  `json:"uid"`
	CodeKey   string `json:"ck"`
	PINKey    string `json:"pk"`
	// PINBase is the store-wide count of wrong 6-digit guesses when the
	// pairing was issued: once Limits.PINGuesses more were made, its 6-digit
	// code is burned.
	PINBase   int64     `json:"pb"`
	ExpiresAt time.Time `json:"exp"`
	// ExpiresMS is ExpiresAt in ms since the epoch (for Redis scripts).
	ExpiresMS int64 `json:"xms"`
}

// PairKind says which of a pairing's codes a TakePairing key is.
type PairKind int

// The kinds of pairing code.
const (
	PairByCode PairKind = iota + 1 // the short code of the QR link
	PairByPIN                      // the 6-digit code
)

// Pairing codes: the short code is CodeLen characters of codeAlphabet
// (Crockford's base32: no I, L, O, U; 60 bits), upper case so that a link
// made of it fits QR's compact alphanumeric mode; the PIN is 6 decimal digits.
const (
	CodeLen      = 12
	PINLen       = 6
	codeAlphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
	// pairingTombstone: how long a taken code is remembered after its expiry
	// (to answer 410 rather than 401).
	pairingTombstone = time.Minute
	// counter keys of the guessing limits
	countPINWrong   = "pin-wrong"       // store-wide, forever: burns 6-digit codes
	countPINWindow  = "pin-wrong-min"   // store-wide, per minute
	countAddrPrefix = "pair-fail-addr:" // per client address, per Limits.PairFailWindow
)

func randomCode() string {
	var b [CodeLen]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("signaling: crypto/rand failed: " + err.Error())
	}
	for i := range b {
		b[i] = codeAlphabet[b[i]&31]
	}
	return string(b[:])
}

func randomPIN() string {
	n, err := rand.Int(rand.Reader, big.NewInt(1_000_000))
	if err != nil {
		panic("signaling: crypto/rand failed: " + err.Error())
	}
	return fmt.Sprintf("%06d", n.Int64())
}

// normalizeCode upper-cases a typed or scanned short code and maps the
// letters Crockford's base32 reads as digits (I, L -> 1, O -> 0); it returns
// "" when the result is not a code.
func normalizeCode(s string) string {
	s = strings.ToUpper(strings.TrimSpace(s))
	s = strings.NewReplacer("I", "1", "L", "1", "O", "0", "-", "", " ", "").Replace(s)
	if len(s) != CodeLen {
		return ""
	}
	for i := 0; i < len(s); i++ {
		if !strings.ContainsRune(codeAlphabet, rune(s[i])) {
			return ""
		}
	}
	return s
}

// normalizePIN drops spaces and dashes from a typed 6-digit code; "" when it
// is not 6 digits.
func normalizePIN(s string) string {
	s = strings.NewReplacer(" ", "", "-", "", "\u00a0", "").Replace(strings.TrimSpace(s))
	if len(s) != PINLen {
		return ""
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return ""
		}
	}
	return s
}

// codeKey is the keyed hash under which the store knows a code: HMAC-SHA256
// with the token secret, so the store (Redis, the data file) holds nothing a
// reader could pair with, and a lookup's timing depends on the hash only.
func (s *Server) codeKey(kind PairKind, code string) string {
	m := hmac.New(sha256.New, s.cfg.Secret)
	fmt.Fprintf(m, "vt-pairing-%d:%s", kind, code)
	return hex.EncodeToString(m.Sum(nil))
}
