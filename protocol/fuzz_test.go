package protocol

import (
	"encoding/json"
	"testing"
)

// FuzzDecode feeds arbitrary bytes to Decode and Validate: they must never
// panic, every error must carry a code and a message, and whatever decodes
// must encode back to valid JSON that decodes to the same type.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		`{"type":"chord_change","data":{"chord":"C"}}`,
		`{"type":"ping","data":{"timestamp":"2024-01-01T00:00:00Z"}}`,
		`{"type":"practice_start","data":{"timestamp":1718000000000}}`,
		`{"type":"rtc_candidate","to":"abcd1234","data":{"candidate":"a=candidate:1 1 udp 1 x.local 1 typ host"}}`,
		`{"type":"resume","data":{"since":1,"seen":{"abcd":2}}}`,
		`{"type":`, `[]`, `{"type":"x","data":[[[[[[[[[[]]]]]]]]]]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Decode(b)
		if err != nil {
			if err.Code == "" || err.Message == "" {
				t.Fatalf("error without code or message: %+v", err)
			}
			return
		}
		if _, err := Validate(m); err != nil && (err.Code == "" || err.Message == "") {
			t.Fatalf("error without code or message: %+v", err)
		}
		out := Encode(m)
		if !json.Valid(out) {
			t.Fatalf("Encode produced invalid JSON: %q", out)
		}
		m2, err := Decode(out)
		if err != nil || m2.Type != m.Type {
			t.Fatalf("re-decode: %v %+v", err, m2)
		}
	})
}

// FuzzChord checks the chord grammar never panics, never accepts more than
// MaxChordLen bytes, and never accepts markup or control characters.
func FuzzChord(f *testing.F) {
	for _, s := range []string{"C", "F#m7", "Bbmaj7", "D/F#", "H", "C<script>", "Cm7b5/G#"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if !ValidChord(s) {
			return
		}
		if len(s) > MaxChordLen {
			t.Fatalf("accepted %d bytes", len(s))
		}
		for _, r := range s {
			if r < 0x20 || r == '<' || r == '>' || r == '"' || r == '&' || r == ' ' {
				t.Fatalf("accepted %q", s)
			}
		}
	})
}

// FuzzSignal checks signaling validation: never a panic; a normalized
// candidate is empty or starts with "candidate:" and holds no control bytes.
func FuzzSignal(f *testing.F) {
	for _, s := range []string{"a=candidate:1 1 udp 2122260223 192.168.1.2 54321 typ host", "", "candidate:", "a=end-of-candidates"} {
		f.Add(s, "v=0\r\n")
	}
	f.Fuzz(func(t *testing.T, cand, sdp string) {
		c, err := NormalizeCandidate(cand)
		if err == nil && c != "" {
			if len(c) < 10 || c[:10] != "candidate:" {
				t.Fatalf("normalized %q", c)
			}
			for i := 0; i < len(c); i++ {
				if c[i] < 0x20 {
					t.Fatalf("control byte in %q", c)
				}
			}
		}
		_ = ValidSDP(sdp)
	})
}
