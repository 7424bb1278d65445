package peer

import (
	"encoding/json"
	"testing"
	"time"
)

// livenessVectors is protocol/testdata/liveness.json: the probe's logic both
// clients follow. web/testdata/liveness.test.mjs runs the same file against
// liveness.js.
type livenessVectors struct {
	Constants struct {
		ProbeMS        int64 `json:"probe_ms"`
		ProbeBudget    int   `json:"probe_budget"`
		AnswerGapMS    int64 `json:"answer_gap_ms"`
		MaxOutstanding int   `json:"max_outstanding"`
	} `json:"constants"`
	Interval []struct {
		Probed int   `json:"probed"`
		Want   int64 `json:"want"`
	} `json:"interval"`
	Cases []struct {
		Name     string `json:"name"`
		Interval int64  `json:"interval"`
		Steps    []struct {
			Op   string          `json:"op"`
			T    int64           `json:"t"`
			N    uint64          `json:"n"`
			Ack  uint64          `json:"ack"`
			Want json.RawMessage `json:"want"`
		} `json:"steps"`
	} `json:"cases"`
}

func TestVectorLiveness(t *testing.T) {
	var v livenessVectors
	readVectors(t, "liveness.json", &v)
	ms := func(x int64) time.Duration { return time.Duration(x) * time.Millisecond }
	c := v.Constants
	if ms(c.ProbeMS) != probeEvery || c.ProbeBudget != probeBudget || ms(c.AnswerGapMS) != answerGap || c.MaxOutstanding != maxOutstanding {
		t.Fatalf("constants %+v differ from the package's", c)
	}
	if len(v.Interval) == 0 || len(v.Cases) == 0 {
		t.Fatal("no vectors")
	}
	for _, iv := range v.Interval {
		if got := probeInterval(iv.Probed); got != ms(iv.Want) {
			t.Errorf("probeInterval(%d) = %v, want %d ms", iv.Probed, got, iv.Want)
		}
	}
	for _, tc := range v.Cases {
		x := newLiveness()
		iv := ms(tc.Interval)
		for i, s := range tc.Steps {
			var got any
			switch s.Op {
			case "send":
				got = x.send(ms(s.T))
			case "answer":
				got = x.answer(s.Ack)
			case "due":
				got = x.due(ms(s.T), iv)
			case "verdict":
				got = x.verdict(ms(s.T), iv)
			case "asked":
				got = x.asked(s.N, ms(s.T))
			case "known":
				x.known = true
				continue
			case "stop":
				x.stop()
				continue
			default:
				t.Fatalf("%s: unknown op %q", tc.Name, s.Op)
			}
			if g, _ := json.Marshal(got); string(g) != string(s.Want) {
				t.Errorf("%s: step %d (%s): got %s, want %s", tc.Name, i, s.Op, g, s.Want)
			}
		}
	}
}
