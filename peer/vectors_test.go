package peer

import (
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"testing"
	"time"

	"github.com/virtutune/link/protocol"
)

// vectors is protocol/testdata/delivery.json: the delivery rules both
// clients follow. web/testdata/delivery.test.mjs runs the same file against
// link.js.
type vectors struct {
	Constants struct {
		ReorderWindow   int   `json:"reorder_window"`
		MaxDeparted     int   `json:"max_departed"`
		MaxSeen         int   `json:"max_seen"`
		OutboxMax       int   `json:"outbox_max"`
		ResendAfterMS   int64 `json:"resend_after_ms"`
		ResendBatch     int   `json:"resend_batch"`
		HeartbeatMS     int64 `json:"heartbeat_ms"`
		HeartbeatIdleMS int64 `json:"heartbeat_idle_ms"`
		IdleAfterMS     int64 `json:"idle_after_ms"`
		QuietAfter      int   `json:"quiet_after"`
		SilentAfter     int   `json:"silent_after"`
		Backoff         map[string]struct {
			Min int64 `json:"min"`
			Max int64 `json:"max"`
		} `json:"backoff"`
	} `json:"constants"`
	Inbox []struct {
		Name    string    `json:"name"`
		Window  int       `json:"window"`
		Steps   []vecStep `json:"steps"`
		Dropped uint64    `json:"dropped"`
		Overrun uint64    `json:"overrun"`
		Held    int       `json:"held"`
	} `json:"inbox"`
	Seen []struct {
		Name      string            `json:"name"`
		Delivered map[string]uint64 `json:"delivered"`
		Present   []string          `json:"present"`
		Want      map[string]uint64 `json:"want"`
	} `json:"seen"`
	Outbox []struct {
		Name  string    `json:"name"`
		Max   int       `json:"max"`
		Steps []vecStep `json:"steps"`
	} `json:"outbox"`
	Count []struct {
		Name  string    `json:"name"`
		Steps []vecStep `json:"steps"`
	} `json:"count"`
	Backoff []struct {
		Attempt int     `json:"attempt"`
		Min     int64   `json:"min"`
		Max     int64   `json:"max"`
		Random  float64 `json:"random"`
		Want    int64   `json:"want"`
	} `json:"backoff"`
	Heartbeat []struct {
		SilentMS   int64  `json:"silent_ms"`
		IntervalMS int64  `json:"interval_ms"`
		Want       string `json:"want"`
	} `json:"heartbeat"`
	LinkState struct {
		States []string                      `json:"states"`
		Events []string                      `json:"events"`
		Table  map[string]map[string]*string `json:"table"`
	} `json:"link_state"`
}

type vecStep struct {
	Op      string          `json:"op"`
	From    json.RawMessage `json:"from"`
	Seq     uint64          `json:"seq"`
	Gap     uint64          `json:"gap"`
	Path    string          `json:"path"`
	T       int64           `json:"t"`
	Last    uint64          `json:"last"`
	Deliver [][]any         `json:"deliver"`
	Direct  bool            `json:"direct"`
	Dropped uint64          `json:"dropped"`
	Want    json.RawMessage `json:"want"`
	Peer    string          `json:"peer"`
	Ack     uint64          `json:"ack"`
	To      uint64          `json:"to"`
	First   uint64          `json:"first"`
	Final   uint64          `json:"final"`
	// Gaps lists [seq, gap] of what unconfirmed or resend returns with a
	// gap; every other item must have none.
	Gaps [][2]uint64 `json:"gaps"`
}

// readVectors decodes protocol/testdata/name into v.
func readVectors(t *testing.T, name string, v any) {
	t.Helper()
	b, err := os.ReadFile("../protocol/testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatal(err)
	}
}

func loadVectors(t *testing.T) *vectors {
	t.Helper()
	var v vectors
	readVectors(t, "delivery.json", &v)
	return &v
}

var vecBase = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func vecTime(ms int64) time.Time { return vecBase.Add(time.Duration(ms) * time.Millisecond) }

func ms(n int64) time.Duration { return time.Duration(n) * time.Millisecond }

// TestVectorConstants: the constants the vectors state are this package's.
func TestVectorConstants(t *testing.T) {
	v := loadVectors(t)
	c := v.Constants
	check := func(name string, got, want any) {
		t.Helper()
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: peer has %v, the vectors say %v", name, got, want)
		}
	}
	check("reorder_window", DefaultReorderWindow, c.ReorderWindow)
	check("max_departed", maxDeparted, c.MaxDeparted)
	check("max_seen", protocol.MaxSeen, c.MaxSeen)
	check("outbox_max", DefaultOutbox, c.OutboxMax)
	check("resend_after_ms", resendAfter, ms(c.ResendAfterMS))
	check("resend_batch", resendBatch, c.ResendBatch)
	check("heartbeat_ms", DefaultHeartbeat, ms(c.HeartbeatMS))
	check("heartbeat_idle_ms", heartbeatIdle, ms(c.HeartbeatIdleMS))
	check("idle_after_ms", idleAfter, ms(c.IdleAfterMS))
	check("quiet_after", quietAfter, c.QuietAfter)
	check("silent_after", silentAfter, c.SilentAfter)
	check("backoff.ws", [2]time.Duration{DefaultBackoffMin, DefaultBackoffMax}, [2]time.Duration{ms(c.Backoff["ws"].Min), ms(c.Backoff["ws"].Max)})
	check("backoff.p2p_known", [2]time.Duration{p2pBackoffKnownMin, p2pBackoffKnownMax}, [2]time.Duration{ms(c.Backoff["p2p_known"].Min), ms(c.Backoff["p2p_known"].Max)})
	check("backoff.p2p_new", [2]time.Duration{p2pBackoffNewMin, p2pBackoffNewMax}, [2]time.Duration{ms(c.Backoff["p2p_new"].Min), ms(c.Backoff["p2p_new"].Max)})
}

func TestVectorInbox(t *testing.T) {
	for _, tc := range loadVectors(t).Inbox {
		t.Run(tc.Name, func(t *testing.T) {
			d := newDedupe(tc.Window)
			for i, st := range tc.Steps {
				var from string
				_ = json.Unmarshal(st.From, &from)
				var got []Delivery
				switch st.Op {
				case "arrive":
					m := &protocol.Message{Type: protocol.TypeChordChange, From: from, Seq: st.Seq, Gap: st.Gap}
					got = d.accept(m, st.Path, vecTime(st.T), nil)
				case "baseline":
					got = d.baseline(from, st.Last, nil)
				case "leave":
					d.leave(from)
				case "rebase":
					d.rebase()
					continue
				default:
					t.Fatalf("step %d: unknown op %q", i, st.Op)
				}
				want := fmt.Sprint(st.Deliver)
				var g [][]any
				for _, dl := range got {
					g = append(g, []any{dl.Msg.From, float64(dl.Msg.Seq), dl.Path})
				}
				if fmt.Sprint(g) != want && !(len(g) == 0 && len(st.Deliver) == 0) {
					t.Fatalf("step %d (%s %s %d %s t=%d): delivered %v, want %v", i, st.Op, from, st.Seq, st.Path, st.T, g, want)
				}
			}
			if d.dropped != tc.Dropped || d.overrun != tc.Overrun || d.heldCount() != tc.Held {
				t.Fatalf("dropped %d overrun %d held %d; want %d %d %d",
					d.dropped, d.overrun, d.heldCount(), tc.Dropped, tc.Overrun, tc.Held)
			}
		})
	}
}

func TestVectorSeen(t *testing.T) {
	for _, tc := range loadVectors(t).Seen {
		t.Run(tc.Name, func(t *testing.T) {
			d := newDedupe(16)
			for id, last := range tc.Delivered {
				d.baseline(id, last, nil)
			}
			got := d.seen(tc.Present, protocol.MaxSeen)
			if !reflect.DeepEqual(got, tc.Want) {
				t.Fatalf("seen %v, want %v", got, tc.Want)
			}
		})
	}
}

func TestVectorOutbox(t *testing.T) {
	for _, tc := range loadVectors(t).Outbox {
		t.Run(tc.Name, func(t *testing.T) {
			o := newOutbox(tc.Max)
			seqs := func(items []outItem) []uint64 {
				out := []uint64{}
				for _, it := range items {
					out = append(out, it.seq)
				}
				return out
			}
			gaps := func(i int, st vecStep, items []outItem) {
				got := [][2]uint64{}
				for _, it := range items {
					if it.gap != 0 {
						got = append(got, [2]uint64{it.seq, it.gap})
					}
				}
				want := st.Gaps
				if want == nil {
					want = [][2]uint64{}
				}
				if !reflect.DeepEqual(got, want) {
					t.Fatalf("step %d (%s): gaps %v, want %v", i, st.Op, got, want)
				}
			}
			for i, st := range tc.Steps {
				want := func() []uint64 {
					var w []uint64
					if err := json.Unmarshal(st.Want, &w); err != nil {
						t.Fatalf("step %d: want: %v", i, err)
					}
					if w == nil {
						w = []uint64{}
					}
					return w
				}
				switch st.Op {
				case "add":
					if got := o.add(st.Seq, []byte("x"), vecTime(st.T), st.Direct); got != st.Dropped {
						t.Fatalf("step %d: add %d dropped %d, want %d", i, st.Seq, got, st.Dropped)
					}
				case "add_range":
					var from uint64
					_ = json.Unmarshal(st.From, &from)
					for s := from; s <= st.To; s++ {
						o.add(s, []byte("x"), vecTime(st.T), st.Direct)
					}
				case "ack_server":
					o.ackServer(st.Last)
				case "track":
					o.track(st.Peer, st.Ack)
				case "ack_peer":
					o.ackPeer(st.Peer, st.Last)
				case "forget":
					o.forget(st.Peer)
				case "size":
					var w int
					_ = json.Unmarshal(st.Want, &w)
					if o.size() != w {
						t.Fatalf("step %d: size %d, want %d", i, o.size(), w)
					}
				case "unconfirmed":
					items := o.unconfirmed()
					if got := seqs(items); !reflect.DeepEqual(got, want()) {
						t.Fatalf("step %d: unconfirmed %v, want %v", i, got, want())
					}
					gaps(i, st, items)
					if o.unconfirmedCount() != len(items) {
						t.Fatalf("step %d: unconfirmedCount %d, unconfirmed %d", i, o.unconfirmedCount(), len(items))
					}
				case "resend_count":
					got := seqs(o.resend(st.Peer, vecTime(st.T)))
					var w int
					_ = json.Unmarshal(st.Want, &w)
					if len(got) != w || got[0] != st.First || got[len(got)-1] != st.Final {
						t.Fatalf("step %d: resend to %s: %d messages %d..%d, want %d, %d..%d", i, st.Peer,
							len(got), got[0], got[len(got)-1], w, st.First, st.Final)
					}
				case "resend":
					items := o.resend(st.Peer, vecTime(st.T))
					if got := seqs(items); !reflect.DeepEqual(got, want()) {
						t.Fatalf("step %d: resend to %s at %d: %v, want %v", i, st.Peer, st.T, got, want())
					}
					gaps(i, st, items)
				default:
					t.Fatalf("step %d: unknown op %q", i, st.Op)
				}
			}
		})
	}
}

func TestVectorCount(t *testing.T) {
	for _, tc := range loadVectors(t).Count {
		t.Run(tc.Name, func(t *testing.T) {
			var c counter
			for i, st := range tc.Steps {
				switch st.Op {
				case "next":
					var w [2]uint64
					if err := json.Unmarshal(st.Want, &w); err != nil {
						t.Fatalf("step %d: want: %v", i, err)
					}
					if seq, gap := c.next(); [2]uint64{seq, gap} != w {
						t.Fatalf("step %d: next %d gap %d, want %d gap %d", i, seq, gap, w[0], w[1])
					}
				case "server":
					c.server(st.Last)
				case "peer":
					c.peer(st.Ack)
				default:
					t.Fatalf("step %d: unknown op %q", i, st.Op)
				}
			}
		})
	}
}

func TestVectorBackoff(t *testing.T) {
	for _, tc := range loadVectors(t).Backoff {
		if got := backoffDelay(tc.Attempt, ms(tc.Min), ms(tc.Max), tc.Random); got != ms(tc.Want) {
			t.Errorf("backoff(%d, %d..%d ms, %v) = %v, want %d ms", tc.Attempt, tc.Min, tc.Max, tc.Random, got, tc.Want)
		}
	}
}

func TestVectorHeartbeat(t *testing.T) {
	names := map[linkEvent]string{evUnknown: "ok", evQuiet: "quiet", evSilent: "silent"}
	for _, tc := range loadVectors(t).Heartbeat {
		if got := names[hbVerdict(ms(tc.SilentMS), ms(tc.IntervalMS))]; got != tc.Want {
			t.Errorf("silent %d ms at %d ms: %s, want %s", tc.SilentMS, tc.IntervalMS, got, tc.Want)
		}
	}
}

func TestVectorLinkState(t *testing.T) {
	ls := loadVectors(t).LinkState
	if len(ls.States) != int(LinkClosed) || len(ls.Events) != int(evClose) {
		t.Fatalf("the vectors name %d states and %d events; peer has %d and %d", len(ls.States), len(ls.Events), LinkClosed, evClose)
	}
	for _, sn := range ls.States {
		s := parseLinkState(sn)
		if s == LinkUnknown || s.String() != sn {
			t.Fatalf("state %q unknown to peer", sn)
		}
		for _, en := range ls.Events {
			e := parseLinkEvent(en)
			if e == evUnknown || e.String() != en {
				t.Fatalf("event %q unknown to peer", en)
			}
			to, err := s.next(e)
			want := ls.Table[sn][en]
			switch {
			case want == nil && err == nil:
				t.Errorf("%s + %s -> %s, want refused", sn, en, to)
			case want != nil && err != nil:
				t.Errorf("%s + %s refused, want %s", sn, en, *want)
			case want != nil && to.String() != *want:
				t.Errorf("%s + %s -> %s, want %s", sn, en, to, *want)
			}
		}
	}
	if _, err := LinkUnknown.next(evAttempt); err == nil {
		t.Error("the zero state accepts an event")
	}
}

// TestOutItemWire: an item with a gap goes out with it, the rest of the
// message unchanged; one without goes out as it was sent.
func TestOutItemWire(t *testing.T) {
	m := &protocol.Message{Type: protocol.TypeChordChange, Data: protocol.ChordData("Am"), From: "phone123", Seq: 90, At: 1.5}
	data := protocol.Encode(m)
	if got := (outItem{seq: 90, data: data}).wire(); string(got) != string(data) {
		t.Fatalf("without a gap: %s, want %s", got, data)
	}
	got, err := protocol.Decode(outItem{seq: 90, data: data, gap: 84}.wire())
	if err != nil || got.Gap != 84 || got.Seq != 90 || got.From != m.From || string(got.Data) != string(m.Data) || got.At != m.At {
		t.Fatalf("with gap 84: %+v, %v", got, err)
	}
	if _, e := protocol.Validate(got); e != nil {
		t.Fatalf("with gap 84: %v", e)
	}
}
