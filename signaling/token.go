package signaling

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/virtutune/link/protocol"
)

// Token types: a session token joins the WebSocket; a pairing token is traded
// once at POST /api/pair for a phone's session token.
const (
	tokenSession = ""
	tokenPairing = "pairing"
)

// Claims are the claims of a VirtuTune Link token. The main VirtuTune
// application can mint session tokens itself with the shared secret: HS256,
// sub (user id as a decimal string), sid, role ("pc" or "phone"), iat, exp.
type Claims struct {
	SessionID string `json:"sid"`
	Role      string `json:"role"`
	// Type is "pairing" for pairing tokens and absent for session tokens.
	Type string `json:"typ,omitempty"`
	// ClientID (cid) is the device's client id, minted into the tokens this
	// server issues (the PC's at POST /api/sessions, a phone's at pairing):
	// removing a device revokes its cid for the session. Tokens minted
	// elsewhere (the main VirtuTune application) may lack it.
	ClientID string `json:"cid,omitempty"`
	jwt.RegisteredClaims
}

// UserID returns the user id of sub.
func (c *Claims) UserID() (int64, error) {
	id, err := strconv.ParseInt(c.Subject, 10, 64)
	if err != nil || id <= 0 {
		return 0, fmt.Errorf("%w: sub must be a positive decimal user id", errBadToken)
	}
	return id, nil
}

var errBadToken = errors.New("signaling: invalid token")

// Tokens signs and verifies tokens with one shared secret.
type Tokens struct {
	secret []byte
	now    func() time.Time
}

// MinSecretLen is the shortest accepted token secret in bytes.
const MinSecretLen = 32

// NewTokens returns a Tokens for secret (at least MinSecretLen bytes).
func NewTokens(secret []byte) (*Tokens, error) {
	if len(secret) < MinSecretLen {
		return nil, fmt.Errorf("%w: secret must be at least %d bytes", ErrInvalidConfig, MinSecretLen)
	}
	return &Tokens{secret: append([]byte(nil), secret...), now: time.Now}, nil
}

// Sign returns a signed token for user uid in session sid with role, valid for ttl.
func (t *Tokens) Sign(uid int64, sid, role, typ string, ttl time.Duration) (string, time.Time, error) {
	return t.sign(uid, sid, role, typ, "", ttl)
}

// SignClient returns a signed session token for user uid in session sid with
// role and client id cid (the cid claim), valid for ttl.
func (t *Tokens) SignClient(uid int64, sid, role, cid string, ttl time.Duration) (string, time.Time, error) {
	return t.sign(uid, sid, role, tokenSession, cid, ttl)
}

func (t *Tokens) sign(uid int64, sid, role, typ, cid string, ttl time.Duration) (string, time.Time, error) {
	now := t.now()
	exp := now.Add(ttl)
	c := Claims{
		SessionID: sid,
		Role:      role,
		Type:      typ,
		ClientID:  cid,
		RegisteredClaims: jwt.RegisteredClaims{
			Subject:   strconv.FormatInt(uid, 10),
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(exp),
		},
	}
	if typ == tokenPairing {
		c.ID = randomID(16)
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(t.secret)
	return s, exp, err
}

// Parse verifies a token: HS256 only (alg none and every other algorithm are
// refused), a valid signature, exp present and in the future, iat not in the
// future, sid, role pc|phone and a positive decimal sub, each segment in
// canonical base64url (no padding, unused bits zero, so a token has exactly
// one spelling). The leeway for clock skew between instances is 30 s.
func (t *Tokens) Parse(s string) (*Claims, error) {
	if len(s) > 4096 {
		return nil, fmt.Errorf("%w: too long", errBadToken)
	}
	var c Claims
	_, err := jwt.ParseWithClaims(s, &c, func(*jwt.Token) (any, error) { return t.secret, nil },
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(30*time.Second),
		jwt.WithTimeFunc(t.now),
		// One token, one spelling: the signature's last character may not
		// vary in its unused bits (base64url with non-zero padding bits).
		jwt.WithStrictDecoding(),
	)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errBadToken, err)
	}
	if c.SessionID == "" || !validSessionID(c.SessionID) {
		return nil, fmt.Errorf("%w: sid missing", errBadToken)
	}
	if c.Role != protocol.RolePC && c.Role != protocol.RolePhone {
		return nil, fmt.Errorf("%w: role must be pc or phone", errBadToken)
	}
	if _, err := c.UserID(); err != nil {
		return nil, err
	}
	if c.Type != tokenSession && c.Type != tokenPairing {
		return nil, fmt.Errorf("%w: unknown token type", errBadToken)
	}
	if c.ClientID != "" && !protocol.ValidClientID(c.ClientID) {
		return nil, fmt.Errorf("%w: cid is not a client id", errBadToken)
	}
	return &c, nil
}

// boundClientID is the client id a connection with claims c has: the
// token's cid claim when it has one (the tokens this server mints), else an
// id derived from the token itself, an HMAC under the secret of its
// identifying claims (sid, sub, role, iat, exp), so that every connection
// of one token is one client and no other token, of the same session or
// not, can take its id or replace its connection.
func (s *Server) boundClientID(c *Claims) string {
	if id := c.ClientID; id != "" {
		return id
	}
	m := hmac.New(sha256.New, s.tokens.secret)
	var iat, exp int64
	if c.IssuedAt != nil {
		iat = c.IssuedAt.Unix()
	}
	if c.ExpiresAt != nil {
		exp = c.ExpiresAt.Unix()
	}
	fmt.Fprintf(m, "virtutune-cid\x00%s\x00%s\x00%s\x00%d\x00%d", c.SessionID, c.Subject, c.Role, iat, exp)
	return "t" + base64.RawURLEncoding.EncodeToString(m.Sum(nil)[:12])
}

// randomID returns n random bytes, base64url without padding.
func randomID(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic("signaling: crypto/rand failed: " + err.Error())
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// validSessionID reports whether id looks like a session id: 8 to 64 bytes of
// [A-Za-z0-9_-] (the same alphabet as client ids).
func validSessionID(id string) bool {
	return len(id) >= 8 && protocol.ValidClientID(id)
}
