package protocol

import (
	"bytes"
	"encoding/json"
	"strconv"
	"sync"
	"unicode/utf8"
)

// Bounds of the codec. The server's read limit (MaxMessageSize by default) is
// enforced on the WebSocket before Decode sees a byte.
const (
	// MaxMessageSize is the default bound of one message in bytes: an SDP offer
	// with a few candidates fits many times over.
	MaxMessageSize = 32 << 10
	// MaxDepth bounds JSON nesting. Every valid message nests at most 3 deep.
	MaxDepth = 8
	// MaxSDPLen bounds an SDP in bytes.
	MaxSDPLen = 16 << 10
	// MaxCandidateLen bounds an ICE candidate line in bytes.
	MaxCandidateLen = 1024
	// MaxSeen bounds the number of peers in resume.seen.
	MaxSeen = 32
	// MaxDirect bounds the number of client ids in direct.
	MaxDirect = 16
)

// wire is Message as decoded, with the fields whose JSON type must be checked kept raw.
type wire struct {
	Type   json.RawMessage `json:"type"`
	Data   json.RawMessage `json:"data"`
	From   json.RawMessage `json:"from"`
	Seq    json.RawMessage `json:"seq"`
	Gap    json.RawMessage `json:"gap"`
	Off    json.RawMessage `json:"off"`
	To     json.RawMessage `json:"to"`
	Direct json.RawMessage `json:"direct"`
	At     json.RawMessage `json:"at"`
}

// Decode parses one message. It fails with CodeInvalidJSON ("Invalid JSON
// format") for anything that is not a JSON object in valid UTF-8, with
// CodeTooLarge for nesting deeper than MaxDepth, and with CodeInvalidData when
// type is not a string, data not an object or an extension field has the wrong
// JSON type. Unknown fields are ignored. Decode does not check that the type is
// known; Validate does.
func Decode(b []byte) (*Message, *Error) {
	b = bytes.TrimSpace(b)
	if len(b) == 0 || b[0] != '{' || !utf8.Valid(b) {
		return nil, &Error{Code: CodeInvalidJSON, Message: MsgInvalidJSON}
	}
	// scanMessage takes only what nests at most MaxDepth deep (its data
	// object checks as it goes), so the depth check, a pass of its own over
	// the bytes and a fifth of a chord change's decoding, is for the paths
	// after it: the result is the same for every input.
	if m, ok := scanMessage(b); ok {
		return m, nil
	}
	if depthExceeds(b, MaxDepth) {
		return nil, Errorf(CodeTooLarge, "JSON nested deeper than %d levels", MaxDepth)
	}
	if m, ok := decodeFast(b); ok {
		return m, nil
	}
	return decodeSlow(b)
}

// fastWire is Message with typed fields: what a well-formed message decodes
// into in one pass.
type fastWire struct {
	Type   string          `json:"type"`
	Data   json.RawMessage `json:"data"`
	From   string          `json:"from"`
	Seq    uint64          `json:"seq"`
	Gap    uint64          `json:"gap"`
	Off    uint64          `json:"off"`
	To     string          `json:"to"`
	Direct []string        `json:"direct"`
	At     float64         `json:"at"`
}

// decodeFast decodes a well-formed message in one pass of encoding/json (a
// third of the time and half the allocations of decodeSlow, which checks
// each field's JSON type separately: virtutune-bench's relay profile). It
// reports false for anything decodeSlow might refuse, which then decides,
// so both give the same result for every input.
func decodeFast(b []byte) (*Message, bool) {
	var f fastWire
	if json.Unmarshal(b, &f) != nil || f.Type == "" || f.At < 0 || len(f.Direct) > MaxDirect {
		return nil, false
	}
	if len(f.Data) > 0 && !isNull(f.Data) && f.Data[0] != '{' {
		return nil, false
	}
	for _, id := range f.Direct {
		if !ValidClientID(id) {
			return nil, false
		}
	}
	m := &Message{Type: Type(f.Type), From: f.From, Seq: f.Seq, Gap: f.Gap, Off: f.Off, To: f.To, Direct: f.Direct, At: f.At}
	if len(f.Data) > 0 && !isNull(f.Data) {
		m.Data = f.Data
	}
	return m, true
}

// decodeSlow decodes b field by field, so that each error names its field.
func decodeSlow(b []byte) (*Message, *Error) {
	var w wire
	if err := json.Unmarshal(b, &w); err != nil {
		return nil, &Error{Code: CodeInvalidJSON, Message: MsgInvalidJSON}
	}
	m := &Message{}
	if len(w.Type) == 0 || isNull(w.Type) {
		return nil, Errorf(CodeInvalidData, "Message type is required")
	}
	var t string
	if err := json.Unmarshal(w.Type, &t); err != nil {
		return nil, Errorf(CodeInvalidData, "Message type must be a string")
	}
	m.Type = Type(t)
	if len(w.Data) > 0 && !isNull(w.Data) {
		if w.Data[0] != '{' {
			return nil, Errorf(CodeInvalidData, "Message data must be an object")
		}
		m.Data = w.Data
	}
	if len(w.From) > 0 && !isNull(w.From) {
		if err := json.Unmarshal(w.From, &m.From); err != nil {
			return nil, Errorf(CodeInvalidData, "from must be a string")
		}
	}
	if len(w.To) > 0 && !isNull(w.To) {
		if err := json.Unmarshal(w.To, &m.To); err != nil {
			return nil, Errorf(CodeInvalidData, "to must be a string")
		}
	}
	if len(w.Seq) > 0 && !isNull(w.Seq) {
		if err := json.Unmarshal(w.Seq, &m.Seq); err != nil {
			return nil, Errorf(CodeInvalidData, "seq must be a non-negative integer")
		}
	}
	if len(w.Gap) > 0 && !isNull(w.Gap) {
		if err := json.Unmarshal(w.Gap, &m.Gap); err != nil {
			return nil, Errorf(CodeInvalidData, "gap must be a non-negative integer")
		}
	}
	if len(w.Off) > 0 && !isNull(w.Off) {
		if err := json.Unmarshal(w.Off, &m.Off); err != nil {
			return nil, Errorf(CodeInvalidData, "off must be a non-negative integer")
		}
	}
	if len(w.Direct) > 0 && !isNull(w.Direct) {
		if err := json.Unmarshal(w.Direct, &m.Direct); err != nil {
			return nil, Errorf(CodeInvalidData, "direct must be an array of client ids")
		}
		if len(m.Direct) > MaxDirect {
			return nil, Errorf(CodeTooLarge, "direct lists more than %d client ids", MaxDirect)
		}
		for _, id := range m.Direct {
			if !ValidClientID(id) {
				return nil, Errorf(CodeInvalidData, "direct holds an invalid client id")
			}
		}
	}
	if len(w.At) > 0 && !isNull(w.At) {
		if err := json.Unmarshal(w.At, &m.At); err != nil || m.At < 0 {
			return nil, Errorf(CodeInvalidData, "at must be a number of milliseconds")
		}
	}
	return m, nil
}

func isNull(b json.RawMessage) bool { return string(b) == "null" }

// depthExceeds reports whether JSON text b nests objects/arrays deeper than max.
// It skips string contents; it does not validate.
func depthExceeds(b []byte, max int) bool {
	depth := 0
	inStr := false
	for i := 0; i < len(b); i++ {
		c := b[i]
		if inStr {
			switch c {
			case '\\':
				i++
			case '"':
				inStr = false
			}
			continue
		}
		switch c {
		case '"':
			inStr = true
		case '{', '[':
			depth++
			if depth > max {
				return true
			}
		case '}', ']':
			depth--
		}
	}
	return false
}

// ValidClientID reports whether id is a client id: 4 to 64 bytes of
// [A-Za-z0-9_-].
func ValidClientID(id string) bool {
	if len(id) < 4 || len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// Append appends the JSON encoding of m to dst and returns it. m.Data must be
// valid JSON (as Decode and Marshal produce); Append allocates nothing beyond
// growing dst.
func Append(dst []byte, m *Message) []byte {
	dst = append(dst, `{"type":`...)
	dst = appendString(dst, string(m.Type))
	if len(m.Data) > 0 {
		dst = append(dst, `,"data":`...)
		dst = append(dst, m.Data...)
	} else {
		dst = append(dst, `,"data":{}`...)
	}
	if m.From != "" {
		dst = append(dst, `,"from":`...)
		dst = appendString(dst, m.From)
	}
	if m.Seq != 0 {
		dst = append(dst, `,"seq":`...)
		dst = strconv.AppendUint(dst, m.Seq, 10)
	}
	if m.Gap != 0 {
		dst = append(dst, `,"gap":`...)
		dst = strconv.AppendUint(dst, m.Gap, 10)
	}
	if m.Off != 0 {
		dst = append(dst, `,"off":`...)
		dst = strconv.AppendUint(dst, m.Off, 10)
	}
	if m.To != "" {
		dst = append(dst, `,"to":`...)
		dst = appendString(dst, m.To)
	}
	if len(m.Direct) > 0 {
		dst = append(dst, `,"direct":[`...)
		for i, id := range m.Direct {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendString(dst, id)
		}
		dst = append(dst, ']')
	}
	if m.At != 0 {
		dst = append(dst, `,"at":`...)
		dst = strconv.AppendFloat(dst, m.At, 'f', -1, 64)
	}
	return append(dst, '}')
}

// Encode returns the JSON encoding of m, in a slice of its own just as long
// (it is built in a pooled buffer, then copied): one allocation, and nothing
// spare in what a history keeps.
func Encode(m *Message) []byte {
	bp := encodePool.Get().(*[]byte)
	b := Append((*bp)[:0], m)
	out := append([]byte(nil), b...)
	if cap(b) <= 16<<10 {
		*bp = b[:0]
		encodePool.Put(bp)
	}
	return out
}

var encodePool = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// Marshal builds a message of type t whose data is v encoded as JSON.
func Marshal(t Type, v any) (*Message, error) {
	d, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return &Message{Type: t, Data: d}, nil
}

// MustMarshal is Marshal for data types that cannot fail to encode (the
// structs of this package); it panics otherwise.
func MustMarshal(t Type, v any) *Message {
	m, err := Marshal(t, v)
	if err != nil {
		panic("protocol: " + err.Error())
	}
	return m
}

// ErrorMessage builds an error message from e.
func ErrorMessage(e *Error) *Message { return MustMarshal(TypeError, e) }

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string. Invalid UTF-8 becomes U+FFFD.
// AppendJSONString appends s as a JSON string, escaped exactly as
// encoding/json escapes it (HTML characters, U+2028 and U+2029 included,
// invalid UTF-8 as U+FFFD).
func AppendJSONString(dst []byte, s string) []byte { return appendString(dst, s) }

func appendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
