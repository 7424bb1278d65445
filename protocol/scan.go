package protocol

import (
	"encoding/json"
	"strconv"
)

// The relay's hot path decodes every chord change a client sends: most are
// small, well-formed objects with lowercase keys and plain strings. scanMessage
// and scanChord read those in one pass over the bytes, allocating only what
// the result holds, and give up (report false) on anything else — escapes,
// unknown or repeated keys, null, empty arrays, odd numbers — so that the
// encoding/json paths decide, with identical results for every input
// (TestDecodeFastMatchesSlow and its fuzz target check it).

// scanner walks one JSON text; every method stops at the first surprise.
type scanner struct {
	b []byte
	i int
}

func (s *scanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

func (s *scanner) byte(c byte) bool {
	s.ws()
	if s.i < len(s.b) && s.b[s.i] == c {
		s.i++
		return true
	}
	return false
}

// str reads a string without escapes or control characters and returns its
// bytes (aliasing b).
func (s *scanner) str() ([]byte, bool) {
	s.ws()
	if s.i >= len(s.b) || s.b[s.i] != '"' {
		return nil, false
	}
	start := s.i + 1
	for j := start; j < len(s.b); j++ {
		switch c := s.b[j]; {
		case c == '"':
			s.i = j + 1
			return s.b[start:j], true
		case c == '\\' || c < 0x20:
			return nil, false
		}
	}
	return nil, false
}

// uint reads a JSON integer 0..MaxUint64 without sign, fraction or exponent.
func (s *scanner) uint() (uint64, bool) {
	s.ws()
	j := s.i
	for j < len(s.b) && s.b[j] >= '0' && s.b[j] <= '9' {
		j++
	}
	if j == s.i || (s.b[s.i] == '0' && j-s.i > 1) || (j < len(s.b) && (s.b[j] == '.' || s.b[j] == 'e' || s.b[j] == 'E')) {
		return 0, false
	}
	v, err := strconv.ParseUint(string(s.b[s.i:j]), 10, 64)
	if err != nil {
		return 0, false
	}
	s.i = j
	return v, true
}

// number reads a non-negative JSON number as a float64.
func (s *scanner) number() (float64, bool) {
	j, ok := s.numberEnd()
	if !ok {
		return 0, false
	}
	v, err := strconv.ParseFloat(string(s.b[s.i:j]), 64)
	if err != nil {
		return 0, false
	}
	s.i = j
	return v, true
}

// numberEnd returns where the non-negative JSON number at the scanner's
// position ends, reading nothing: its grammar only.
func (s *scanner) numberEnd() (int, bool) {
	s.ws()
	j := s.i
	digits := func() int {
		k := j
		for j < len(s.b) && s.b[j] >= '0' && s.b[j] <= '9' {
			j++
		}
		return j - k
	}
	n := digits()
	if n == 0 || (s.b[s.i] == '0' && n > 1) {
		return 0, false
	}
	if j < len(s.b) && s.b[j] == '.' {
		j++
		if digits() == 0 {
			return 0, false
		}
	}
	if j < len(s.b) && (s.b[j] == 'e' || s.b[j] == 'E') {
		j++
		if j < len(s.b) && (s.b[j] == '+' || s.b[j] == '-') {
			j++
		}
		if digits() == 0 {
			return 0, false
		}
	}
	return j, true
}

// object reads a JSON object one level below the top and returns its
// bytes (aliasing b): its extent found by brackets and strings, nesting at
// most MaxDepth-1 deep (the message's own braces are the first level), its
// validity checked by flatObject or else json.Valid.
func (s *scanner) object() ([]byte, bool) {
	s.ws()
	if s.i >= len(s.b) || s.b[s.i] != '{' {
		return nil, false
	}
	depth, in, flat := 0, false, true // flat: nothing nested inside
	for j := s.i; j < len(s.b); j++ {
		c := s.b[j]
		if in {
			switch c {
			case '\\':
				j++
			case '"':
				in = false
			}
			continue
		}
		switch c {
		case '"':
			in = true
		case '{', '[':
			if depth++; depth+1 > MaxDepth {
				return nil, false
			}
			if depth > 1 {
				flat = false
			}
		case '}', ']':
			depth--
			if depth == 0 {
				o := s.b[s.i : j+1]
				if c != '}' || !(flat && flatObject(o) || json.Valid(o)) {
					return nil, false
				}
				s.i = j + 1
				return o, true
			}
		}
	}
	return nil, false
}

// flatObject reports whether o is an object of plain strings, non-negative
// numbers, true, false and null (a chord change's data, a latency
// report's): a strict subset of JSON read with the scanner, quicker than
// json.Valid's state machine; false only means "not this simple form".
func flatObject(o []byte) bool {
	s := scanner{b: o}
	if !s.byte('{') {
		return false
	}
	if s.byte('}') {
		return s.atEnd()
	}
	for {
		if _, ok := s.str(); !ok || !s.byte(':') || !s.flatValue() {
			return false
		}
		if s.byte('}') {
			return s.atEnd()
		}
		if !s.byte(',') {
			return false
		}
	}
}

// flatValue reads a plain string, a non-negative number, true, false or
// null.
func (s *scanner) flatValue() bool {
	s.ws()
	if s.i >= len(s.b) {
		return false
	}
	switch c := s.b[s.i]; {
	case c == '"':
		_, ok := s.str()
		return ok
	case c >= '0' && c <= '9':
		j, ok := s.numberEnd()
		if ok {
			s.i = j
		}
		return ok
	}
	return s.literal("true") || s.literal("false") || s.literal("null")
}

// atEnd reports whether only whitespace is left.
func (s *scanner) atEnd() bool {
	s.ws()
	return s.i == len(s.b)
}

// literal reads the bare word w (true, false, null).
func (s *scanner) literal(w string) bool {
	if len(s.b)-s.i >= len(w) && string(s.b[s.i:s.i+len(w)]) == w {
		s.i += len(w)
		return true
	}
	return false
}

// knownType returns the package's constant for a known type name, so that
// decoding one allocates nothing.
func knownType(b []byte) Type {
	switch string(b) {
	case string(TypeChordChange):
		return TypeChordChange
	case string(TypePing):
		return TypePing
	case string(TypeLatency):
		return TypeLatency
	case string(TypePracticeStart):
		return TypePracticeStart
	case string(TypePracticeEnd):
		return TypePracticeEnd
	}
	return Type(b)
}

// scanMessage is Decode's fast path (see the top of this file).
func scanMessage(b []byte) (*Message, bool) {
	s := scanner{b: b}
	if !s.byte('{') {
		return nil, false
	}
	m := &Message{}
	var seen uint16
	once := func(bit uint16) bool {
		if seen&bit != 0 {
			return false
		}
		seen |= bit
		return true
	}
	if s.byte('}') {
		return nil, false // no type: the other paths say so
	}
	for {
		key, ok := s.str()
		if !ok || !s.byte(':') {
			return nil, false
		}
		switch string(key) {
		case "type":
			v, ok := s.str()
			if !ok || len(v) == 0 || !once(1) {
				return nil, false
			}
			m.Type = knownType(v)
		case "data":
			v, ok := s.object()
			if !ok || !once(2) {
				return nil, false
			}
			m.Data = append(json.RawMessage(nil), v...)
		case "from":
			v, ok := s.str()
			if !ok || !once(4) {
				return nil, false
			}
			m.From = string(v)
		case "seq":
			v, ok := s.uint()
			if !ok || !once(8) {
				return nil, false
			}
			m.Seq = v
		case "gap":
			v, ok := s.uint()
			if !ok || !once(256) {
				return nil, false
			}
			m.Gap = v
		case "off":
			v, ok := s.uint()
			if !ok || !once(16) {
				return nil, false
			}
			m.Off = v
		case "to":
			v, ok := s.str()
			if !ok || !once(32) {
				return nil, false
			}
			m.To = string(v)
		case "direct":
			if !s.byte('[') || !once(64) {
				return nil, false
			}
			for {
				v, ok := s.str()
				if !ok || len(m.Direct) == MaxDirect || !ValidClientID(string(v)) {
					return nil, false
				}
				m.Direct = append(m.Direct, string(v))
				if s.byte(']') {
					break
				}
				if !s.byte(',') {
					return nil, false
				}
			}
		case "at":
			v, ok := s.number()
			if !ok || !once(128) {
				return nil, false
			}
			m.At = v
		default:
			return nil, false
		}
		if s.byte('}') {
			break
		}
		if !s.byte(',') {
			return nil, false
		}
	}
	if !s.atEnd() || m.Type == "" {
		return nil, false
	}
	return m, true
}

// scanChord is Validate's fast path for a chord change's data: exactly
// {"chord":"<name>"} (whitespace allowed) with a valid chord name.
func scanChord(data []byte) (string, bool) {
	s := scanner{b: data}
	if !s.byte('{') {
		return "", false
	}
	key, ok := s.str()
	if !ok || string(key) != "chord" || !s.byte(':') {
		return "", false
	}
	v, ok := s.str()
	if !ok || !s.byte('}') {
		return "", false
	}
	if !s.atEnd() {
		return "", false
	}
	c := internChord(v)
	return c, ValidChord(c)
}

// commonChords are the chord names the phone's grid offers: scanChord
// returns these without allocating.
var commonChords = []string{"C", "G", "Am", "F", "D", "E", "Em", "A", "Dm", "B", "Bm", "C7", "G7", "D7", "E7", "A7"}

func internChord(b []byte) string {
	for _, c := range commonChords {
		if string(b) == c {
			return c
		}
	}
	return string(b)
}

// ChordData returns the canonical data of a chord change with chord name
// chord, as json.Marshal(ChordChange{Chord: chord}) gives it.
func ChordData(chord string) json.RawMessage {
	plain := ValidChord(chord)
	for i := 0; plain && i < len(chord); i++ {
		switch c := chord[i]; c {
		case '"', '\\', '<', '>', '&':
			plain = false
		default:
			plain = c >= 0x20 && c != 0xe2 // (U+2028/2029 start with 0xe2; json escapes them)
		}
	}
	if !plain {
		b, _ := json.Marshal(ChordChange{Chord: chord})
		return b
	}
	b := make([]byte, 0, len(`{"chord":""}`)+len(chord))
	b = append(b, `{"chord":"`...)
	b = append(b, chord...)
	return append(b, `"}`...)
}
