package protocol

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestValidChord(t *testing.T) {
	good := []string{
		"C", "G", "Am", "F", "D", "E", "Em", "A", "F#m7", "Bbmaj7", "D/F#", "Cm7b5", "Gsus4", "Dsus2",
		"Cdim", "Cdim7", "Caug", "C+", "Cadd9", "C6", "C9", "C69", "C13", "G7", "E7#9", "Bb", "Ebm",
		"Cmaj9", "C7sus4", "Am/G", "C/E", "Dm7/C", "Fmaj7#11", "Bm7b5", "Cmin", "CM7", "C°", "Cø", "A5",
	}
	bad := []string{
		"", "H", "c", "am", "C<script>", "C ", " C", "Cx", "C/", "C/H", "C/E/G", "Cm7b5b9#11#5",
		"C##", "Cbb", "Z", "C\x00", "Am\n", strings.Repeat("C", 1024), "Cmaj7maj7maj7maj7maj7", "C/Fb#",
		"Ｃ", "C#m7♭5",
	}
	for _, s := range good {
		if !ValidChord(s) {
			t.Errorf("ValidChord(%q) = false, want true", s)
		}
	}
	for _, s := range bad {
		if ValidChord(s) {
			t.Errorf("ValidChord(%q) = true, want false", s)
		}
	}
}

func TestDecodeValidate(t *testing.T) {
	cases := []struct {
		name string
		in   string
		code Code   // "" means valid
		msg  string // exact message when not empty
	}{
		{"chord", `{"type":"chord_change","data":{"chord":"C"}}`, "", ""},
		{"chord with extra fields", `{"type":"chord_change","data":{"chord":"C","velocity":3},"x":1}`, "", ""},
		{"chord missing", `{"type":"chord_change","data":{}}`, CodeChordRequired, "Chord is required"},
		{"chord empty", `{"type":"chord_change","data":{"chord":""}}`, CodeChordRequired, "Chord is required"},
		{"chord null", `{"type":"chord_change","data":{"chord":null}}`, CodeChordRequired, "Chord is required"},
		{"no data", `{"type":"chord_change"}`, CodeChordRequired, "Chord is required"},
		{"chord number", `{"type":"chord_change","data":{"chord":5}}`, CodeInvalidData, ""},
		{"chord invalid", `{"type":"chord_change","data":{"chord":"H"}}`, CodeInvalidChord, `Invalid chord: "H"`},
		{"chord script", `{"type":"chord_change","data":{"chord":"C<script>"}}`, CodeInvalidChord, ""},
		{"invalid json", `{"type":`, CodeInvalidJSON, "Invalid JSON format"},
		{"not object", `["chord_change"]`, CodeInvalidJSON, "Invalid JSON format"},
		{"string", `"hello"`, CodeInvalidJSON, "Invalid JSON format"},
		{"empty", ``, CodeInvalidJSON, "Invalid JSON format"},
		{"invalid utf8", "{\"type\":\"ping\",\"data\":{\"timestamp\":\"\xff\"}}", CodeInvalidJSON, "Invalid JSON format"},
		{"unknown type", `{"type":"strum","data":{}}`, CodeUnknownType, "Unknown message type: strum"},
		{"type missing", `{"data":{}}`, CodeInvalidData, ""},
		{"type number", `{"type":1,"data":{}}`, CodeInvalidData, ""},
		{"data array", `{"type":"ping","data":[]}`, CodeInvalidData, ""},
		{"data string", `{"type":"ping","data":"x"}`, CodeInvalidData, ""},
		{"deep", `{"type":"ping","data":{"a":[[[[[[[[[[1]]]]]]]]]]}}`, CodeTooLarge, ""},
		{"ping rfc3339", `{"type":"ping","data":{"timestamp":"2024-01-01T00:00:00Z"}}`, "", ""},
		{"ping millis", `{"type":"ping","data":{"timestamp":1718000000000}}`, "", ""},
		{"ping no timestamp", `{"type":"ping","data":{}}`, "", ""},
		{"ping bad timestamp", `{"type":"ping","data":{"timestamp":"yesterday"}}`, CodeInvalidTimestamp, ""},
		{"ping negative", `{"type":"ping","data":{"timestamp":-1}}`, CodeInvalidTimestamp, ""},
		{"ping object ts", `{"type":"ping","data":{"timestamp":{}}}`, CodeInvalidTimestamp, ""},
		{"practice start", `{"type":"practice_start","data":{"timestamp":"2024-01-01T00:00:00+09:00"}}`, "", ""},
		{"server only pong", `{"type":"pong","data":{}}`, CodeServerOnly, ""},
		{"server only connection_update", `{"type":"connection_update","data":{"status":"connected","user_id":1}}`, CodeServerOnly, ""},
		{"server only practice_update", `{"type":"practice_update","data":{}}`, CodeServerOnly, ""},
		{"server only error", `{"type":"error","data":{"message":"x"}}`, CodeServerOnly, ""},
		{"offer", `{"type":"rtc_offer","to":"abcd1234","data":{"sdp":"v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\n"}}`, "", ""},
		{"offer no to", `{"type":"rtc_offer","data":{"sdp":"v=0\r\n"}}`, CodeInvalidTarget, ""},
		{"offer bad sdp", `{"type":"rtc_offer","to":"abcd1234","data":{"sdp":"hello"}}`, CodeInvalidSignal, ""},
		{"candidate a=", `{"type":"rtc_candidate","to":"abcd1234","data":{"candidate":"a=candidate:1 1 udp 2122260223 192.168.1.2 54321 typ host","sdpMid":"0","sdpMLineIndex":0}}`, "", ""},
		{"candidate mdns", `{"type":"rtc_candidate","to":"abcd1234","data":{"candidate":"candidate:1 1 udp 2122260223 0b1e2c3d-aaaa.local 54321 typ host"}}`, "", ""},
		{"end of candidates", `{"type":"rtc_candidate","to":"abcd1234","data":{"candidate":""}}`, "", ""},
		{"candidate garbage", `{"type":"rtc_candidate","to":"abcd1234","data":{"candidate":"hello"}}`, CodeInvalidSignal, ""},
		{"seq string", `{"type":"chord_change","seq":"1","data":{"chord":"C"}}`, CodeInvalidData, ""},
		{"seq negative", `{"type":"chord_change","seq":-1,"data":{"chord":"C"}}`, CodeInvalidData, ""},
		{"gap", `{"type":"chord_change","seq":9,"gap":5,"data":{"chord":"C"}}`, "", ""},
		{"gap at seq", `{"type":"chord_change","seq":9,"gap":9,"data":{"chord":"C"}}`, CodeInvalidData, ""},
		{"gap without seq", `{"type":"chord_change","gap":1,"data":{"chord":"C"}}`, CodeInvalidData, ""},
		{"gap on a ping", `{"type":"ping","seq":3,"gap":1,"data":{}}`, CodeInvalidData, ""},
		{"gap string", `{"type":"chord_change","seq":9,"gap":"1","data":{"chord":"C"}}`, CodeInvalidData, ""},
		{"p2p_state", `{"type":"p2p_state","data":{"peer":"abcd1234","up":true}}`, "", ""},
		{"p2p_state no peer", `{"type":"p2p_state","data":{"up":true}}`, CodeInvalidTarget, ""},
		{"latency", `{"type":"latency_report","data":{"path":"p2p","us":120.5}}`, "", ""},
		{"latency bad path", `{"type":"latency_report","data":{"path":"carrier pigeon","us":1}}`, CodeInvalidData, ""},
		{"resume", `{"type":"resume","data":{"since":12,"seen":{"abcd1234":3}}}`, "", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m, err := Decode([]byte(c.in))
			if err == nil {
				_, err = Validate(m)
			}
			if c.code == "" {
				if err != nil {
					t.Fatalf("got error %v, want none", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("no error, want %s", c.code)
			}
			if err.Code != c.code {
				t.Fatalf("code %s (%s), want %s", err.Code, err.Message, c.code)
			}
			if c.msg != "" && err.Message != c.msg {
				t.Fatalf("message %q, want %q", err.Message, c.msg)
			}
		})
	}
}

func TestEncodeRoundTrip(t *testing.T) {
	in := &Message{Type: TypeChordChange, Data: json.RawMessage(`{"chord":"F#m7"}`), From: "abc_DEF-1", Seq: 7, Gap: 3, Off: 42,
		Direct: []string{"peer1234"}, At: 1718000000123.25}
	b := Encode(in)
	out, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if out.Type != in.Type || string(out.Data) != string(in.Data) || out.From != in.From || out.Seq != in.Seq ||
		out.Gap != in.Gap || out.Off != in.Off || len(out.Direct) != 1 || out.At != in.At {
		t.Fatalf("round trip: %s -> %+v", b, out)
	}
	// Strings with characters that need escaping stay valid JSON.
	e := ErrorMessage(Errorf(CodeUnknownType, "Unknown message type: %s", "a\"b\\c\n<\u2028>\x01"))
	var v map[string]any
	if err := json.Unmarshal(Encode(e), &v); err != nil {
		t.Fatalf("%s: %v", Encode(e), err)
	}
	m := &Message{Type: Type("we\"ird\x00"), From: "x\xffy"}
	if err := json.Unmarshal(Encode(m), &v); err != nil {
		t.Fatalf("%s: %v", Encode(m), err)
	}
}

func TestOffers(t *testing.T) {
	if !Offers(RolePC, "zzzz", RolePhone, "aaaa") || Offers(RolePhone, "aaaa", RolePC, "zzzz") {
		t.Fatal("the PC must offer to the phone")
	}
	if !Offers(RolePhone, "aaaa", RolePhone, "bbbb") || Offers(RolePhone, "bbbb", RolePhone, "aaaa") {
		t.Fatal("between equal roles the smaller client id offers")
	}
}

func TestNormalizeCandidate(t *testing.T) {
	c, err := NormalizeCandidate("a=candidate:842163049 1 udp 1677729535 1.2.3.4 3478 typ srflx raddr 0.0.0.0 rport 0")
	if err != nil || !strings.HasPrefix(c, "candidate:") {
		t.Fatalf("%q %v", c, err)
	}
	if c, err := NormalizeCandidate("a=end-of-candidates"); err != nil || c != "" {
		t.Fatalf("%q %v", c, err)
	}
}

// BenchmarkChordChangeHotPath measures decode, validate and encode of one
// chord change: the server's per-message work before fan-out.
func BenchmarkChordChangeHotPath(b *testing.B) {
	in := []byte(`{"type":"chord_change","data":{"chord":"F#m7"},"seq":12,"direct":["abcd1234"],"at":1718000000123.5}`)
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	for b.Loop() {
		m, err := Decode(in)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := Validate(m); err != nil {
			b.Fatal(err)
		}
		buf = Append(buf[:0], m)
	}
}
