package protocol

import (
	"encoding/json"
	"testing"
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
