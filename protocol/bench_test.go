package protocol

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
	"unicode/utf8"
)

// benchChord is a chord change as a Go peer sends it over the WebSocket.
var benchChord = []byte(`{"type":"chord_change","data":{"chord":"F#m7"},"seq":12,"direct":["abcd1234"],"at":1718000000123.5}`)

// BenchmarkDecode measures Decode of one chord change.
func BenchmarkDecode(b *testing.B) {
	b.ReportAllocs()
	b.SetBytes(int64(len(benchChord)))
	for b.Loop() {
		if _, err := Decode(benchChord); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkValidate measures Validate of one decoded chord change.
func BenchmarkValidate(b *testing.B) {
	m, err := Decode(benchChord)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Validate(m); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEncode measures Append of a relayed chord change into a reused buffer.
func BenchmarkEncode(b *testing.B) {
	m := &Message{Type: TypeChordChange, Data: json.RawMessage(`{"chord":"F#m7"}`), From: "go-k3v9x2abcdef",
		Seq: 12, Off: 40, Direct: []string{"abcd1234"}, At: 1718000000123.5}
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	for b.Loop() {
		buf = Append(buf[:0], m)
	}
	b.SetBytes(int64(len(buf)))
}

// BenchmarkValidChord measures the chord grammar on a chord with a bass note.
func BenchmarkValidChord(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if !ValidChord("F#m7b5/C") {
			b.Fatal("invalid")
		}
	}
}

// TestDecodeFastMatchesSlow checks that Decode's one-pass fast path gives
// exactly what the field-by-field path gives, on the table of
// TestDecodeValidate's kind of inputs and on the fuzz seeds.
func TestDecodeFastMatchesSlow(t *testing.T) {
	for _, in := range decodeCorpus {
		checkFastMatchesSlow(t, []byte(in))
	}
}

// FuzzDecodeFastMatchesSlow is TestDecodeFastMatchesSlow on generated input.
func FuzzDecodeFastMatchesSlow(f *testing.F) {
	for _, in := range decodeCorpus {
		f.Add([]byte(in))
	}
	f.Fuzz(func(t *testing.T, b []byte) { checkFastMatchesSlow(t, b) })
}

var decodeCorpus = []string{
	`{"type":"chord_change","data":{"chord":"C"}}`,
	`{"type":"chord_change","data":{"chord":"F#m7"},"seq":12,"direct":["abcd1234"],"at":1718000000123.5}`,
	`{"type":"chord_change","data":null,"from":null,"seq":null,"off":null,"to":null,"direct":null,"at":null}`,
	`{"type":null}`, `{"type":""}`, `{"type":5}`, `{"type":"x","data":"s"}`, `{"type":"x","data":[1]}`,
	`{"type":"x","seq":-1}`, `{"type":"x","seq":1.5}`, `{"type":"x","seq":1e3}`, `{"type":"x","off":"1"}`,
	`{"type":"x","at":-1}`, `{"type":"x","at":"1"}`, `{"type":"x","from":1}`, `{"type":"x","to":[]}`,
	`{"type":"x","direct":[]}`, `{"type":"x","direct":[""]}`, `{"type":"x","direct":[null]}`, `{"type":"x","direct":"abcd"}`,
	`{"type":"x","direct":["a","b","c","d","e","f","g","h","i","j","k","l","m","n","o","p","q"]}`,
	`{"type":"a","type":"b"}`, `{"TYPE":"a"}`, `{"type":"a","Type":"b","data":{},"DATA":{"x":1}}`,
	`{"type":"x","unknown":{"deep":[1,2,{"a":null}]}}`, `{"type":"\u0063hord_change"}`, `{"type":"x"} `,
	`{"type":"x",}`, `{"type":"x"`, `{}`, `{"data":{}}`, `{"type":"x","data":{"a":` + "\"\xff\"" + `}}`,
}

func checkFastMatchesSlow(t *testing.T, b []byte) {
	t.Helper()
	got, gerr := Decode(b)
	trimmed := bytes.TrimSpace(b)
	if len(trimmed) == 0 || trimmed[0] != '{' || !utf8.Valid(trimmed) || depthExceeds(trimmed, MaxDepth) {
		return // refused before either path runs
	}
	want, werr := decodeSlow(trimmed)
	if !reflect.DeepEqual(got, want) || !reflect.DeepEqual(gerr, werr) {
		t.Errorf("Decode(%q) = %+v, %v; the field-by-field path gives %+v, %v", b, got, gerr, want, werr)
	}
}
