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
func TestDecodeFastMatchesSlow(t *testing.T) { runCorpus(t, decodeCorpus, checkFastMatchesSlow) }

// FuzzDecodeFastMatchesSlow is TestDecodeFastMatchesSlow on generated input.
func FuzzDecodeFastMatchesSlow(f *testing.F) { fuzzCorpus(f, decodeCorpus, checkFastMatchesSlow) }

// runCorpus runs check on every input of corpus.
func runCorpus(t *testing.T, corpus []string, check func(*testing.T, []byte)) {
	for _, in := range corpus {
		check(t, []byte(in))
	}
}

// fuzzCorpus fuzzes check, with corpus as its seeds.
func fuzzCorpus(f *testing.F, corpus []string, check func(*testing.T, []byte)) {
	for _, in := range corpus {
		f.Add([]byte(in))
	}
	f.Fuzz(check)
}

var decodeCorpus = []string{
	`{"type":"chord_change","data":{"chord":"C"}}`,
	// data objects: the flat form the scanner checks itself, and what
	// json.Valid decides (nested, negative, malformed)
	`{"type":"latency_report","data":{"path":"relay","micros":12.5,"ok":true,"no":false,"n":null}}`,
	`{"type":"x","data":{}}`, `{"type":"x","data":{ }}`, `{"type":"x","data":{"a":-1}}`, `{"type":"x","data":{"a":1e-3}}`,
	`{"type":"x","data":{"a":tru}}`, `{"type":"x","data":{"a":truex}}`, `{"type":"x","data":{"a":1,}}`, `{"type":"x","data":{"a" "b"}}`,
	`{"type":"x","data":{"a":01}}`, `{"type":"x","data":{"a":"b"}x}`, `{"type":"x","data":{"a":{"b":[1,{"c":2}]}}}`,
	`{"type":"x","data":{"a":"\u00e9","b":"é"}}`, `{"type":"x","data":{,}}`, `{"type":"x","data":{"a":}}`,
	// nesting: 8 levels pass, 9 do not (MaxDepth), however the levels are made
	`{"type":"x","data":{"a":{"b":{"c":{"d":{"e":{"f":{"g":1}}}}}}}}`,
	`{"type":"x","data":{"a":{"b":{"c":{"d":{"e":{"f":{"g":{}}}}}}}}}`,
	`{"type":"x","data":{"a":[[[[[[1]]]]]]}}`, `{"type":"x","data":{"a":[[[[[[[1]]]]]]]}}`,
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
	// the one-pass scanner's edges
	` { "type" : "chord_change" , "data" : { "chord" : "C" } , "seq" : 0 , "at" : 0 } `,
	`{"type":"chord_change","data":{"chord":"C","x":"}"},"from":"ab\"cd"}`, `{"type":"a","data":{"s":"\"}"}}`,
	`{"type":"a","data":{}}`, `{"type":"a","data":{"a":[1,{"b":[]}]}}`, `{"type":"a","data":{"a":}}`, `{"type":"a","data":{]}`,
	`{"type":"a","seq":18446744073709551615}`, `{"type":"a","seq":18446744073709551616}`, `{"type":"a","seq":01}`,
	`{"type":"a","seq":1,"seq":2}`, `{"type":"a","at":1.5e3}`, `{"type":"a","at":1e400}`, `{"type":"a","at":0.}`,
	`{"type":"a","at":.5}`, `{"type":"a","at":1E+2}`, `{"type":"a","at":-0}`, `{"type":"a","direct":["abcd","efgh"]}`,
	`{"type":"a","direct":["abcd",]}`, `{"type":"a","direct":["ab"]}`, `{"type":"a","to":"x\u0041"}`, `{"type":"a","from":""}`,
	"{\"type\":\"a\x01\"}", `{"type":"a"}}`, `{"type":"a"` + "\n}", `{"type":"a","data":{"chord":"C"}` + "\t}",
}

// TestChordFastMatchesSlow checks that Validate's fast path for a chord
// change's data gives what the encoding/json path gives.
func TestChordFastMatchesSlow(t *testing.T) { runCorpus(t, chordCorpus, checkChordFastMatchesSlow) }

// FuzzChordFastMatchesSlow is TestChordFastMatchesSlow on generated data.
func FuzzChordFastMatchesSlow(f *testing.F) { fuzzCorpus(f, chordCorpus, checkChordFastMatchesSlow) }

var chordCorpus = []string{
	`{"chord":"C"}`, ` { "chord" : "F#m7b5/C" } `, `{"chord":""}`, `{"chord":"H"}`, `{"CHORD":"C"}`, `{"chord":"C","chord":"D"}`,
	`{"chord":"C","x":1}`, `{"chord":null}`, `{"chord":5}`, `{"chord":"\u0043"}`, `{}`, `{"chord":"C"`, `{"chord":"Am"}x`,
	`{"chord":"Cmaj7"}`, `{"chord":"Bbmaj9#11/F"}`, `{"chord":"C<script>"}`,
}

func checkChordFastMatchesSlow(t *testing.T, d []byte) {
	t.Helper()
	m := &Message{Type: TypeChordChange, Data: d}
	got, gerr := Validate(m)
	c, ok := scanChord(d)
	if !ok {
		return // the slow path decided alone
	}
	// What the encoding/json path makes of it:
	var w struct {
		Chord string `json:"chord"`
	}
	if err := json.Unmarshal(d, &w); err != nil || w.Chord != c || gerr != nil || got.Chord != c {
		t.Errorf("chord data %q: fast %q; Validate %+v, %v; encoding/json %q, %v", d, c, got, gerr, w.Chord, err)
	}
}

func TestChordData(t *testing.T) {
	for _, c := range []string{"C", "F#m7b5/C", "C°7", "Bø", "x<y", "a\"b", "\u2028"} {
		want, _ := json.Marshal(ChordChange{Chord: c})
		if got := ChordData(c); string(got) != string(want) {
			t.Errorf("ChordData(%q) = %s, want %s", c, got, want)
		}
	}
}

func checkFastMatchesSlow(t *testing.T, b []byte) {
	t.Helper()
	got, gerr := Decode(b)
	trimmed := bytes.TrimSpace(b)
	if len(trimmed) == 0 || trimmed[0] != '{' || !utf8.Valid(trimmed) {
		return // refused before either path runs
	}
	if depthExceeds(trimmed, MaxDepth) { // refused by every path
		if got != nil || gerr == nil || gerr.Code != CodeTooLarge {
			t.Errorf("Decode(%q) = %+v, %v; want too_large (nested deeper than %d)", b, got, gerr, MaxDepth)
		}
		return
	}
	want, werr := decodeSlow(trimmed)
	if !reflect.DeepEqual(got, want) || !reflect.DeepEqual(gerr, werr) {
		t.Errorf("Decode(%q) = %+v, %v; the field-by-field path gives %+v, %v", b, got, gerr, want, werr)
	}
}
