package signaling

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/virtutune/link/protocol"
)

// TestRedisPubCodec checks that the hand-written redisPub encoder gives the
// bytes json.Marshal gives, and that the one-pass decoder gives what
// json.Unmarshal gives, for its own output and for other encodings.
func TestRedisPubCodec(t *testing.T) {
	pubs := []Publication{
		{Type: protocol.TypeChordChange, Data: json.RawMessage(`{"chord":"Am"}`), From: "phone-1", Seq: 7, At: 1718000000123.5,
			Chord: "Am", Skip: "phone-1", Instance: "a"},
		{Type: protocol.TypeChordChange, Data: json.RawMessage(`{"chord":"G"}`), From: "phone-1", Seq: 90, Gap: 84, Chord: "G", Skip: "phone-1"},
		{Type: protocol.TypeConnectionUpdate, Data: json.RawMessage(`{"status":"connected","user_id":1,"s":"}\"{"}`), Skip: "c<&>", Instance: "b"},
		{Type: protocol.TypePracticeUpdate, Data: json.RawMessage(`{"status":"started"}`), From: "x", Seq: 1,
			Practice: &protocol.Practice{Status: "started", Timestamp: json.RawMessage(`"2024-01-01T00:00:00Z"`)}, Instance: "a"},
		{Type: protocol.TypeRTCOffer, Data: json.RawMessage(`{"sdp":"v=0\r\n"}`), From: "a\"b\\c", To: "pc\u2028", At: 1e-7, Instance: "ü"},
		{Type: "x", At: 1e21},
		{Type: "y", At: 123456789012345678},
		{Type: "z", From: "\xff"},
	}
	for _, p := range pubs {
		got, err := encodePub(&p)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := json.Marshal(redisPub{T: p.Type, D: p.Data, F: p.From, Q: p.Seq, G: p.Gap, To: p.To, At: p.At, C: p.Chord, P: p.Practice, S: p.Skip, I: p.Instance})
		if got != string(want) {
			t.Errorf("encodePub = %s\njson.Marshal = %s", got, want)
		}
		checkDecodePub(t, got)
	}
	for _, raw := range []string{`{"i":"a","t":"chord_change"}`, `{"t":"a","d":{"x":[1,{"y":"]"}]}}`, `{"t":"a","q":1.5}`, `{"t":"a"} `,
		`{"t":"a","d":{"x":1}`, `{"t":"a","at":1e400}`, `{"t":"a","q":-1}`, `{"t":"a\u0062"}`, `{"t":"a","q":5,"g":-1}`} {
		checkDecodePub(t, raw)
	}
}

func checkDecodePub(t *testing.T, raw string) {
	t.Helper()
	got, gerr := decodePub(raw)
	var r redisPub
	werr := json.Unmarshal([]byte(raw), &r)
	if (gerr == nil) != (werr == nil) {
		t.Errorf("decodePub(%s) error %v, json.Unmarshal %v", raw, gerr, werr)
		return
	}
	if werr != nil {
		return
	}
	want := &Publication{Type: r.T, Data: r.D, From: r.F, Seq: r.Q, Gap: r.G, To: r.To, At: r.At, Chord: r.C, Practice: r.P, Skip: r.S, Instance: r.I}
	if len(want.Data) == 0 {
		want.Data = nil
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("decodePub(%s) = %+v, json.Unmarshal gives %+v", raw, got, want)
	}
}
