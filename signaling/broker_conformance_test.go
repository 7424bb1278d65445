package signaling

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/virtutune/link/internal/testkit"
	"github.com/virtutune/link/protocol"
)

// brokerTestOptions are the settings a conformance test asks of a broker.
// Zero values mean the implementation's defaults.
type brokerTestOptions struct {
	HistorySize   int
	HistoryTTL    time.Duration
	MaxSeqClients int
	SeqRetention  time.Duration
}

// brokerFactory returns a new broker instance, closed at t's cleanup. When
// shared is true, every broker it returns within one top-level test shares
// its backing (several instances of one deployment).
type brokerFactory func(t *testing.T, o brokerTestOptions) Broker

func TestMemoryBrokerConformance(t *testing.T) {
	btNoLeaks(t)
	testBroker(t, func(t *testing.T, o brokerTestOptions) Broker {
		b, err := NewMemoryBroker(MemoryConfig{HistorySize: o.HistorySize, HistoryTTL: o.HistoryTTL,
			MaxSeqClients: o.MaxSeqClients, SeqRetention: o.SeqRetention})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = b.Close() })
		return b
	}, false)
}

// btNoLeaks checks, after every other cleanup of t has run, that t left no
// goroutine behind.
func btNoLeaks(t *testing.T) {
	opt := goleak.IgnoreCurrent()
	t.Cleanup(func() {
		// goleak retries for about half a second; a client's goroutines
		// that are ending (go-redis's sentinel and pool loops) may need
		// longer on a loaded machine (a make test run at load 9-14 found
		// one still there). A goroutine that stays for 5 s is a leak.
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
			if goleak.Find(opt) == nil {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
		goleak.VerifyNone(t, opt)
	})
}

// btRecorder records what a Handler receives.
type btRecorder struct {
	mu     sync.Mutex
	pubs   []Publication
	notify chan struct{}
}

func newRecorder() *btRecorder { return &btRecorder{notify: make(chan struct{}, 1)} }

func (r *btRecorder) handle(p *Publication) {
	r.mu.Lock()
	r.pubs = append(r.pubs, *p)
	r.mu.Unlock()
	select {
	case r.notify <- struct{}{}:
	default:
	}
}

func (r *btRecorder) all() []Publication {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.pubs)
}

// wait returns the first n publications once they arrived.
func (r *btRecorder) wait(t *testing.T, ctx context.Context, n int) []Publication {
	t.Helper()
	for {
		if got := r.all(); len(got) >= n {
			return got[:n]
		}
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %d publications; got %d: %s", n, len(r.all()), btDescribe(r.all()))
		case <-r.notify:
		}
	}
}

func btDescribe(ps []Publication) string {
	var b bytes.Buffer
	for _, p := range ps {
		fmt.Fprintf(&b, "[%s off=%d from=%s seq=%d] ", p.Type, p.Off, p.From, p.Seq)
	}
	return b.String()
}

func btID(prefix string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// btSession registers a fresh session on b for ten minutes.
func btSession(t *testing.T, ctx context.Context, b Broker) string {
	t.Helper()
	id := btID("s-")
	now := time.Now().Truncate(time.Millisecond)
	if err := b.CreateSession(ctx, SessionInfo{ID: id, UserID: 42, CreatedAt: now, ExpiresAt: now.Add(10 * time.Minute)}); err != nil {
		t.Fatalf("CreateSession: %v", err)
	}
	return id
}

// start begins a conformance subtest: a context that bounds it (10 s), a
// fresh broker with o, and a session on it.
func (newBroker brokerFactory) start(t *testing.T, o brokerTestOptions) (context.Context, Broker, string) {
	t.Helper()
	ctx := testkit.Context(t, 10*time.Second)
	b := newBroker(t, o)
	return ctx, b, btSession(t, ctx, b)
}

// btMembers returns the members of sid on b, each as f says.
func btMembers(t *testing.T, ctx context.Context, b Broker, sid string, f func(protocol.Member) string) []string {
	t.Helper()
	ms, err := b.Members(ctx, sid)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range ms {
		out = append(out, f(m))
	}
	return out
}

func btSubscribe(t *testing.T, ctx context.Context, b Broker, sid string) (*btRecorder, func()) {
	t.Helper()
	r := newRecorder()
	unsub, err := b.Subscribe(ctx, sid, r.handle)
	if err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	t.Cleanup(unsub)
	return r, unsub
}

func btChord(from, chord string, seq uint64) *Publication {
	data, _ := json.Marshal(map[string]string{"chord": chord})
	return &Publication{Type: protocol.TypeChordChange, Data: data, From: from, Seq: seq, Chord: chord, Skip: from}
}

func btPublish(t *testing.T, ctx context.Context, b Broker, sid string, p *Publication) PublishResult {
	t.Helper()
	res, err := b.Publish(ctx, sid, p)
	if err != nil {
		t.Fatalf("Publish %s from %q seq %d: %v", p.Type, p.From, p.Seq, err)
	}
	return res
}

// btCheckOffsets checks ps carry offsets first, first+1, ...
func btCheckOffsets(t *testing.T, ps []Publication, first uint64) {
	t.Helper()
	for i, p := range ps {
		if p.Off != first+uint64(i) {
			t.Fatalf("publication %d has off %d, want %d: %s", i, p.Off, first+uint64(i), btDescribe(ps))
		}
	}
}

// testBroker is the conformance suite every Broker passes. shared says
// whether two brokers from newBroker share their backing (then the
// cross-instance cases run too).
func testBroker(t *testing.T, newBroker brokerFactory, shared bool) {
	testPairingStore(t, newBroker)
	t.Run("Session", func(t *testing.T) {
		ctx := testkit.Context(t, 10*time.Second)
		b := newBroker(t, brokerTestOptions{})
		now := time.Now().Truncate(time.Millisecond)
		info := SessionInfo{ID: btID("s-"), UserID: 7, CreatedAt: now, ExpiresAt: now.Add(time.Minute)}
		if err := b.CreateSession(ctx, info); err != nil {
			t.Fatal(err)
		}
		got, err := b.Session(ctx, info.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.ID != info.ID || got.UserID != 7 || !got.ExpiresAt.Equal(info.ExpiresAt) || !got.CreatedAt.Equal(info.CreatedAt) {
			t.Fatalf("Session = %+v, want %+v", got, info)
		}
		if _, err := b.Session(ctx, "nope"); !errors.Is(err, ErrSessionNotFound) {
			t.Fatalf("unknown session: err = %v", err)
		}
		later := now.Add(time.Hour)
		if err := b.ExtendSession(ctx, info.ID, later); err != nil {
			t.Fatal(err)
		}
		if err := b.ExtendSession(ctx, info.ID, now.Add(time.Second)); err != nil { // never shortens
			t.Fatal(err)
		}
		if got, _ := b.Session(ctx, info.ID); !got.ExpiresAt.Equal(later) {
			t.Fatalf("ExpiresAt = %v, want %v", got.ExpiresAt, later)
		}
		if err := b.ExtendSession(ctx, "nope", later); !errors.Is(err, ErrSessionNotFound) {
			t.Fatalf("extend unknown: err = %v", err)
		}

		short := SessionInfo{ID: btID("s-"), UserID: 8, CreatedAt: now, ExpiresAt: time.Now().Add(150 * time.Millisecond)}
		if err := b.CreateSession(ctx, short); err != nil {
			t.Fatal(err)
		}
		if _, err := b.Session(ctx, short.ID); err != nil {
			t.Fatalf("fresh session: %v", err)
		}
		testkit.Eventually(ctx, t, "the session to expire", func() bool {
			_, err := b.Session(ctx, short.ID)
			return errors.Is(err, ErrSessionNotFound)
		})
		if _, err := b.Publish(ctx, short.ID, btChord("a", "C", 0)); !errors.Is(err, ErrSessionNotFound) {
			t.Fatalf("publish to expired session: err = %v", err)
		}
		if _, err := b.Subscribe(ctx, short.ID, func(*Publication) {}); !errors.Is(err, ErrSessionNotFound) {
			t.Fatalf("subscribe to expired session: err = %v", err)
		}
	})

	t.Run("UseOnce", func(t *testing.T) {
		ctx := testkit.Context(t, 10*time.Second)
		b := newBroker(t, brokerTestOptions{})
		k := btID("k-")
		for i, want := range []bool{true, false, false} {
			ok, err := b.UseOnce(ctx, k, time.Minute)
			if err != nil || ok != want {
				t.Fatalf("UseOnce #%d = %v, %v; want %v", i, ok, err, want)
			}
		}
		if ok, _ := b.UseOnce(ctx, k+"x", time.Minute); !ok {
			t.Fatal("another key is not used")
		}
		short := btID("k-")
		if ok, _ := b.UseOnce(ctx, short, 100*time.Millisecond); !ok {
			t.Fatal("first use refused")
		}
		testkit.Eventually(ctx, t, "the key to be forgotten", func() bool {
			ok, err := b.UseOnce(ctx, short, time.Minute)
			return err == nil && ok
		})
	})

	t.Run("PublishSubscribeOrder", func(t *testing.T) {
		ctx, b, sid := newBroker.start(t, brokerTestOptions{})
		r, _ := btSubscribe(t, ctx, b, sid)
		const n = 30
		for i := range n {
			var p *Publication
			if i%3 == 0 {
				p = &Publication{Type: protocol.TypeConnectionUpdate, Data: json.RawMessage(`{"status":"connected","user_id":1}`)}
			} else {
				p = btChord("a", "G", 0)
			}
			res := btPublish(t, ctx, b, sid, p)
			if res.Off != uint64(i+1) || p.Off != res.Off || res.Duplicate || res.Local {
				t.Fatalf("publish %d: result %+v, p.Off %d", i, res, p.Off)
			}
		}
		got := r.wait(t, ctx, n)
		btCheckOffsets(t, got, 1)
		var seq uint64
		for _, p := range got {
			if p.Instance == "" {
				t.Fatalf("publication without instance: %+v", p)
			}
			if p.From == "a" {
				seq++
				if p.Seq != seq {
					t.Fatalf("seq %d, want %d", p.Seq, seq)
				}
			}
		}
	})

	t.Run("Passthrough", func(t *testing.T) {
		ctx, b, sid := newBroker.start(t, brokerTestOptions{})
		r, _ := btSubscribe(t, ctx, b, sid)
		want := Publication{Type: protocol.TypeChordChange, Data: json.RawMessage(`{"chord":"Am7/G","extra":[1,2.5e3,"x"]}`),
			From: "phone-1", Seq: 1, To: "", At: 1700000000123.5, Chord: "Am7/G",
			Skip: "phone-1"}
		p := want
		btPublish(t, ctx, b, sid, &p)
		sig := Publication{Type: protocol.TypeRTCOffer, Data: json.RawMessage(`{"sdp":"v=0"}`), From: "phone-1", To: "pc-1"}
		if err := b.Send(ctx, sid, &sig); err != nil {
			t.Fatal(err)
		}
		got := r.wait(t, ctx, 2)
		h, err := b.History(ctx, sid, 0)
		if err != nil || len(h.Pubs) != 1 {
			t.Fatalf("History = %+v, %v", h, err)
		}
		for _, g := range []Publication{got[0], *h.Pubs[0]} {
			if g.Type != want.Type || !btJSONEqual(g.Data, want.Data) || g.From != want.From || g.Seq != 1 || g.Off != 1 ||
				g.At != want.At || g.Skip != want.Skip || g.Chord != want.Chord {
				t.Fatalf("publication = %+v, want %+v", g, want)
			}
		}
		if g := got[1]; g.Type != sig.Type || g.To != "pc-1" || g.From != "phone-1" || !btJSONEqual(g.Data, sig.Data) || g.Off != 0 {
			t.Fatalf("send = %+v", g)
		}
		practice := &protocol.Practice{Status: "started", Timestamp: json.RawMessage(`1700000000000`)}
		p2 := Publication{Type: protocol.TypePracticeUpdate, Data: json.RawMessage(`{"status":"started","timestamp":1700000000000}`),
			From: "phone-1", Practice: practice}
		btPublish(t, ctx, b, sid, &p2)
		got = r.wait(t, ctx, 3)
		if g := got[2]; g.Practice == nil || g.Practice.Status != "started" || string(g.Practice.Timestamp) != "1700000000000" ||
			string(g.Data) != `{"status":"started","timestamp":1700000000000}` {
			t.Fatalf("practice publication = %+v (data %s)", g, g.Data)
		}
	})

	t.Run("SequenceRules", func(t *testing.T) {
		ctx, b, sid := newBroker.start(t, brokerTestOptions{})
		r, _ := btSubscribe(t, ctx, b, sid)
		if res := btPublish(t, ctx, b, sid, btChord("a", "C", 0)); res.Seq != 1 {
			t.Fatalf("assigned seq %d, want 1", res.Seq)
		}
		if res := btPublish(t, ctx, b, sid, btChord("a", "D", 2)); res.Seq != 2 || res.Off != 2 {
			t.Fatalf("explicit seq: %+v", res)
		}
		for _, seq := range []uint64{1, 2} {
			res, err := b.Publish(ctx, sid, btChord("a", "E", seq))
			if err != nil || !res.Duplicate || res.Off != 0 {
				t.Fatalf("resend of seq %d: %+v, %v", seq, res, err)
			}
		}
		if _, err := b.Publish(ctx, sid, btChord("a", "F", 5)); !errors.Is(err, ErrBadSequence) {
			t.Fatalf("skip ahead: err = %v", err)
		}
		// Another sender counts on its own; server messages and signaling are not sequenced.
		if res := btPublish(t, ctx, b, sid, btChord("b", "G", 1)); res.Seq != 1 || res.Off != 3 {
			t.Fatalf("second sender: %+v", res)
		}
		if res := btPublish(t, ctx, b, sid, &Publication{Type: protocol.TypeConnectionUpdate, Data: json.RawMessage(`{}`), From: "a", Seq: 99}); res.Off != 4 {
			t.Fatalf("unsequenced: %+v", res)
		}
		got := r.wait(t, ctx, 4)
		btCheckOffsets(t, got, 1)
		if got[1].Chord != "D" || got[2].From != "b" {
			t.Fatalf("delivered %s", btDescribe(got))
		}
		if st, _ := b.State(ctx, sid); st.Chord != "G" {
			t.Fatalf("duplicate or refused message changed the state: %+v", st)
		}
		for cid, want := range map[string]uint64{"a": 2, "b": 1, "zzz": 0} {
			if n, err := b.LastSeq(ctx, sid, cid); err != nil || n != want {
				t.Fatalf("LastSeq(%s) = %d, %v; want %d", cid, n, err, want)
			}
		}
		if _, err := b.LastSeq(ctx, "nope", "a"); !errors.Is(err, ErrSessionNotFound) {
			t.Fatalf("LastSeq of unknown session: %v", err)
		}
		if n := len(r.all()); n != 4 {
			t.Fatalf("delivered %d publications, want 4", n)
		}
	})

	t.Run("SequenceGap", func(t *testing.T) {
		// A sender that gave up seqs (dropped from its full outbox) says so
		// with gap: a seq past the next is taken when its gap reaches back
		// to the last accepted, and subscribers and history get the gap.
		ctx := testkit.Context(t, 10*time.Second)
		b := newBroker(t, brokerTestOptions{})
		sid := btSession(t, ctx, b)
		r, _ := btSubscribe(t, ctx, b, sid)
		btPublish(t, ctx, b, sid, btChord("a", "C", 1))
		btPublish(t, ctx, b, sid, btChord("a", "D", 2))
		gapped := func(chord string, seq, gap uint64) *Publication {
			p := btChord("a", chord, seq)
			p.Gap = gap
			return p
		}
		if _, err := b.Publish(ctx, sid, gapped("E", 9, 5)); !errors.Is(err, ErrBadSequence) {
			t.Fatalf("a gap that does not reach back (9 after 3, last 2): err = %v", err)
		}
		// 9 after 1: the broker holds more than the sender knew
		if res := btPublish(t, ctx, b, sid, gapped("E", 9, 7)); res.Seq != 9 || res.Duplicate {
			t.Fatalf("a gap that reaches back: %+v", res)
		}
		if res, err := b.Publish(ctx, sid, gapped("F", 9, 6)); err != nil || !res.Duplicate {
			t.Fatalf("the same seq again: %+v, %v", res, err)
		}
		if _, err := b.Publish(ctx, sid, btChord("a", "F", 11)); !errors.Is(err, ErrBadSequence) {
			t.Fatalf("skip ahead after the gap: err = %v", err)
		}
		btPublish(t, ctx, b, sid, btChord("a", "G", 10))
		got := r.wait(t, ctx, 4)
		h, err := b.History(ctx, sid, 0)
		if err != nil || len(h.Pubs) != 4 {
			t.Fatalf("History = %+v, %v", h, err)
		}
		for _, ps := range [][]Publication{got, {*h.Pubs[0], *h.Pubs[1], *h.Pubs[2], *h.Pubs[3]}} {
			var seqs, gaps []uint64
			for _, p := range ps {
				seqs, gaps = append(seqs, p.Seq), append(gaps, p.Gap)
			}
			if fmt.Sprint(seqs, gaps) != "[1 2 9 10] [0 0 7 0]" {
				t.Fatalf("seqs %v, gaps %v; want [1 2 9 10] [0 0 7 0]", seqs, gaps)
			}
		}
		if m, e := protocol.Decode(protocol.Encode(got[2].Message())); e != nil || m.Gap != 7 {
			t.Fatalf("the wire message of seq 9: %+v, %v", m, e)
		}
		if n, err := b.LastSeq(ctx, sid, "a"); err != nil || n != 10 {
			t.Fatalf("LastSeq = %d, %v; want 10", n, err)
		}
	})

	t.Run("State", func(t *testing.T) {
		ctx, b, sid := newBroker.start(t, brokerTestOptions{})
		st, err := b.State(ctx, sid)
		if err != nil || st.Chord != "" || st.Offset != 0 || st.Practice.Status != "" {
			t.Fatalf("fresh state %+v, %v", st, err)
		}
		btPublish(t, ctx, b, sid, btChord("phone", "Am", 0))
		pr := &protocol.Practice{Status: "started", Timestamp: json.RawMessage(`"2024-01-01T10:00:00Z"`)}
		btPublish(t, ctx, b, sid, &Publication{Type: protocol.TypePracticeUpdate, Data: json.RawMessage(`{}`), From: "pc", Practice: pr})
		btPublish(t, ctx, b, sid, &Publication{Type: protocol.TypeConnectionUpdate, Data: json.RawMessage(`{}`)})
		st, err = b.State(ctx, sid)
		if err != nil || st.Chord != "Am" || st.ChordFrom != "phone" || st.Practice.Status != "started" ||
			string(st.Practice.Timestamp) != `"2024-01-01T10:00:00Z"` || st.Offset != 3 {
			t.Fatalf("state %+v, %v", st, err)
		}
		btPublish(t, ctx, b, sid, &Publication{Type: protocol.TypePracticeUpdate, Data: json.RawMessage(`{}`), From: "pc",
			Practice: &protocol.Practice{Status: "ended"}})
		if st, _ = b.State(ctx, sid); st.Practice.Status != "ended" || st.Chord != "Am" || st.Offset != 4 {
			t.Fatalf("state %+v", st)
		}
		if _, err := b.State(ctx, "nope"); !errors.Is(err, ErrSessionNotFound) {
			t.Fatalf("State of unknown session: %v", err)
		}
	})

	t.Run("History", func(t *testing.T) {
		ctx, b, sid := newBroker.start(t, brokerTestOptions{HistorySize: 8})
		if h, err := b.History(ctx, sid, 0); err != nil || !h.Complete || len(h.Pubs) != 0 || h.Offset != 0 {
			t.Fatalf("empty history %+v, %v", h, err)
		}
		for range 5 {
			btPublish(t, ctx, b, sid, btChord("a", "C", 0))
		}
		for _, c := range []struct {
			since uint64
			n     int
		}{{0, 5}, {3, 2}, {5, 0}, {9, 0}} {
			h, err := b.History(ctx, sid, c.since)
			if err != nil || !h.Complete || len(h.Pubs) != c.n || h.Offset != 5 {
				t.Fatalf("History(%d) = %+v, %v; want %d complete", c.since, h, err, c.n)
			}
			for i, p := range h.Pubs {
				if p.Off != c.since+uint64(i)+1 || p.Seq != p.Off || p.From != "a" {
					t.Fatalf("History(%d)[%d] = %+v", c.since, i, p)
				}
			}
		}
		for range 15 {
			btPublish(t, ctx, b, sid, btChord("a", "C", 0))
		}
		for _, c := range []struct {
			since    uint64
			complete bool
			first    uint64
		}{{0, false, 13}, {11, false, 13}, {12, true, 13}, {15, true, 16}} {
			h, err := b.History(ctx, sid, c.since)
			if err != nil || h.Complete != c.complete || h.Offset != 20 || len(h.Pubs) != int(21-c.first) || h.Pubs[0].Off != c.first {
				t.Fatalf("History(%d) after trim = complete %v, %d pubs, offset %d, %v; want complete %v from %d",
					c.since, h.Complete, len(h.Pubs), h.Offset, err, c.complete, c.first)
			}
		}
		if _, err := b.History(ctx, "nope", 0); !errors.Is(err, ErrSessionNotFound) {
			t.Fatalf("History of unknown session: %v", err)
		}
	})

	t.Run("HistoryTTL", func(t *testing.T) {
		ctx, b, sid := newBroker.start(t, brokerTestOptions{HistoryTTL: 150 * time.Millisecond})
		btPublish(t, ctx, b, sid, btChord("a", "C", 0))
		testkit.Eventually(ctx, t, "the history entry to age out", func() bool {
			h, err := b.History(ctx, sid, 0)
			return err == nil && !h.Complete && len(h.Pubs) == 0 && h.Offset == 1
		})
	})

	t.Run("Presence", func(t *testing.T) {
		ctx, b, sid := newBroker.start(t, brokerTestOptions{})
		t0 := time.Now().Truncate(time.Millisecond)
		for _, m := range []protocol.Member{
			{ClientID: "a", UserID: 1, Role: "pc", Since: t0},
			{ClientID: "b", UserID: 1, Role: "phone", Since: t0.Add(time.Second)},
			{ClientID: "c", UserID: 1, Role: "phone", Since: t0.Add(-time.Second)},
			{ClientID: "d", UserID: 1, Role: "phone", Since: t0}, // same Since as a: by client id
		} {
			if err := b.Join(ctx, sid, m); err != nil {
				t.Fatal(err)
			}
		}
		ids := func() []string {
			return btMembers(t, ctx, b, sid, func(m protocol.Member) string {
				if m.Instance == "" || m.UserID != 1 {
					t.Fatalf("member %+v", m)
				}
				return m.ClientID + "/" + m.Role
			})
		}
		if got := ids(); !slices.Equal(got, []string{"c/phone", "a/pc", "d/phone", "b/phone"}) {
			t.Fatalf("Members = %v", got)
		}
		if err := b.Join(ctx, sid, protocol.Member{ClientID: "a", UserID: 1, Role: "phone", Since: t0}); err != nil {
			t.Fatal(err)
		}
		// Leave of an older connection of "a" (another since) leaves the newer one.
		if gone, err := b.Leave(ctx, sid, protocol.Member{ClientID: "a", UserID: 1, Role: "pc", Since: t0.Add(-time.Hour)}); err != nil || gone {
			t.Fatalf("Leave of a stale connection: %v %v", gone, err)
		}
		mb := memberOf(t, b, ctx, sid, "b")
		if gone, err := b.Leave(ctx, sid, mb); err != nil || !gone {
			t.Fatalf("Leave b: %v %v", gone, err)
		}
		if gone, err := b.Leave(ctx, sid, protocol.Member{ClientID: "never-joined"}); err != nil || gone {
			t.Fatalf("Leave never-joined: %v %v", gone, err)
		}
		if got := ids(); !slices.Equal(got, []string{"c/phone", "a/phone", "d/phone"}) {
			t.Fatalf("Members after re-join and leave = %v", got)
		}
		if err := b.Join(ctx, "nope", protocol.Member{ClientID: "x"}); !errors.Is(err, ErrSessionNotFound) {
			t.Fatalf("Join unknown session: %v", err)
		}
		if _, err := b.Members(ctx, "nope"); !errors.Is(err, ErrSessionNotFound) {
			t.Fatalf("Members of unknown session: %v", err)
		}
	})

	t.Run("AdmitPerRole", func(t *testing.T) {
		ctx, b, sid := newBroker.start(t, brokerTestOptions{})
		t0 := time.Now().Truncate(time.Millisecond)
		admit := func(id, role string, limit int) error {
			return b.Admit(ctx, sid, protocol.Member{ClientID: id, UserID: 1, Role: role, Since: t0}, limit)
		}
		for _, id := range []string{"p1", "p2"} {
			if err := admit(id, "phone", 2); err != nil {
				t.Fatalf("%s: %v", id, err)
			}
		}
		if err := admit("p3", "phone", 2); !errors.Is(err, ErrSessionFull) {
			t.Fatalf("a third phone with 2 slots: %v, want ErrSessionFull", err)
		}
		if err := admit("p1", "phone", 2); err != nil {
			t.Fatalf("a present member comes back: %v", err)
		}
		if err := admit("pc", "pc", 1); err != nil {
			t.Fatalf("the PC with the phones full: %v", err)
		}
		if err := admit("pc2", "pc", 1); !errors.Is(err, ErrSessionFull) {
			t.Fatalf("a second PC with 1 slot: %v", err)
		}
		if err := b.Admit(ctx, "nosuchsession0", protocol.Member{ClientID: "x", Role: "pc"}, 1); !errors.Is(err, ErrSessionNotFound) {
			t.Fatalf("unknown session: %v", err)
		}
		if ms, err := b.Members(ctx, sid); err != nil || len(ms) != 3 {
			t.Fatalf("members %+v %v", ms, err)
		}
	})

	t.Run("SequenceStateBounded", func(t *testing.T) {
		ctx := testkit.Context(t, 20*time.Second)
		const retention = 300 * time.Millisecond
		b := newBroker(t, brokerTestOptions{MaxSeqClients: 4, SeqRetention: retention})
		sid := btSession(t, ctx, b)
		if err := b.Join(ctx, sid, protocol.Member{ClientID: "pc", UserID: 1, Role: "pc", Since: time.Now()}); err != nil {
			t.Fatal(err)
		}
		btPublish(t, ctx, b, sid, btChord("pc", "C", 1))
		for _, id := range []string{"gone-a", "gone-b", "gone-c"} { // never present
			btPublish(t, ctx, b, sid, btChord(id, "G", 1))
		}
		// Full, and nobody long gone: a new sender is refused, the others
		// keep their counts.
		if _, err := b.Publish(ctx, sid, btChord("new-d", "D", 1)); !errors.Is(err, ErrTooManySenders) {
			t.Fatalf("a fifth sender while the other four are recent: %v, want ErrTooManySenders", err)
		}
		btPublish(t, ctx, b, sid, btChord("pc", "Am", 2))
		<-time.After(retention / 2) // gone-a's next message is clearly the newest
		btPublish(t, ctx, b, sid, btChord("gone-a", "Am", 2))
		// Once the absent ones sent nothing for the retention, one of them
		// (the oldest) makes room; the PC, present, is never forgotten, even
		// when its last message is older still.
		start := time.Now()
		for {
			_, err := b.Publish(ctx, sid, btChord("new-d", "D", 1))
			if err == nil {
				break
			}
			if !errors.Is(err, ErrTooManySenders) || time.Since(start) > 10*time.Second {
				t.Fatalf("new sender after the retention: %v", err)
			}
			<-time.After(50 * time.Millisecond) // the broker's clock has to pass the retention
		}
		st, err := b.State(ctx, sid)
		if err != nil {
			t.Fatal(err)
		}
		if len(st.Seqs) != 4 || st.Seqs["pc"] != 2 || st.Seqs["new-d"] != 1 || st.Seqs["gone-a"] != 2 {
			t.Fatalf("seqs %v: want pc 2, gone-a 2, new-d 1 and one more, 4 in all", st.Seqs)
		}
		if _, gb := st.Seqs["gone-b"]; gb {
			if _, gc := st.Seqs["gone-c"]; gc {
				t.Fatalf("seqs %v: neither gone-b nor gone-c was forgotten", st.Seqs)
			}
		}
		btPublish(t, ctx, b, sid, btChord("pc", "F", 3))
		if n, err := b.LastSeq(ctx, sid, "pc"); err != nil || n != 3 {
			t.Fatalf("pc's last seq %d %v", n, err)
		}
	})

	t.Run("SendNotStored", func(t *testing.T) {
		ctx, b, sid := newBroker.start(t, brokerTestOptions{})
		r, _ := btSubscribe(t, ctx, b, sid)
		for i := range 3 {
			p := &Publication{Type: protocol.TypeRTCCandidate, Data: json.RawMessage(fmt.Sprintf(`{"candidate":"c%d"}`, i)), From: "a", To: "b"}
			if err := b.Send(ctx, sid, p); err != nil {
				t.Fatal(err)
			}
		}
		got := r.wait(t, ctx, 3)
		for i, p := range got {
			if p.Off != 0 || string(p.Data) != fmt.Sprintf(`{"candidate":"c%d"}`, i) {
				t.Fatalf("send %d delivered as %+v", i, p)
			}
		}
		h, err := b.History(ctx, sid, 0)
		if err != nil || len(h.Pubs) != 0 || h.Offset != 0 {
			t.Fatalf("History after Send = %+v, %v", h, err)
		}
		if st, _ := b.State(ctx, sid); st.Offset != 0 {
			t.Fatalf("State after Send = %+v", st)
		}
		if err := b.Send(ctx, "nope", &Publication{Type: protocol.TypeRTCOffer, To: "b"}); !errors.Is(err, ErrSessionNotFound) {
			t.Fatalf("Send to unknown session: %v", err)
		}
	})

	t.Run("Unsubscribe", func(t *testing.T) {
		ctx, b, sid := newBroker.start(t, brokerTestOptions{})
		r1, unsub1 := btSubscribe(t, ctx, b, sid)
		r2, unsub2 := btSubscribe(t, ctx, b, sid)
		btPublish(t, ctx, b, sid, btChord("a", "C", 0))
		r1.wait(t, ctx, 1)
		r2.wait(t, ctx, 1)
		unsub1()
		unsub1() // idempotent
		btPublish(t, ctx, b, sid, btChord("a", "D", 0))
		r2.wait(t, ctx, 2)
		if n := len(r1.all()); n != 1 {
			t.Fatalf("unsubscribed handler got %d publications", n)
		}
		unsub2()
		btPublish(t, ctx, b, sid, btChord("a", "E", 0))
		r3, _ := btSubscribe(t, ctx, b, sid)
		btPublish(t, ctx, b, sid, btChord("a", "F", 0))
		got := r3.wait(t, ctx, 1)
		if got[0].Off != 4 || got[0].Chord != "F" {
			t.Fatalf("new subscriber got %s", btDescribe(got))
		}
		if n1, n2 := len(r1.all()), len(r2.all()); n1 != 1 || n2 != 2 {
			t.Fatalf("after unsubscribe: %d and %d publications", n1, n2)
		}
	})

	t.Run("ConcurrentPublishers", func(t *testing.T) {
		ctx := testkit.Context(t, 30*time.Second)
		b := newBroker(t, brokerTestOptions{HistorySize: 2048})
		sid := btSession(t, ctx, b)
		recs := []*btRecorder{}
		r, _ := btSubscribe(t, ctx, b, sid)
		recs = append(recs, r)
		if shared {
			b2 := newBroker(t, brokerTestOptions{HistorySize: 2048})
			r2, _ := btSubscribe(t, ctx, b2, sid)
			recs = append(recs, r2)
		}
		const senders, each = 10, 100
		var wg sync.WaitGroup
		errs := make(chan error, senders)
		for s := range senders {
			wg.Go(func() {
				for i := range each {
					from := fmt.Sprintf("c%d", s)
					if _, err := b.Publish(ctx, sid, btChord(from, "C", 0)); err != nil {
						errs <- fmt.Errorf("sender %d message %d: %w", s, i, err)
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		for ri, r := range recs {
			got := r.wait(t, ctx, senders*each)
			btCheckOffsets(t, got, 1)
			last := map[string]uint64{}
			for _, p := range got {
				if p.Seq != last[p.From]+1 {
					t.Fatalf("recorder %d: %s seq %d after %d", ri, p.From, p.Seq, last[p.From])
				}
				last[p.From] = p.Seq
			}
		}
		if h, _ := b.History(ctx, sid, 0); len(h.Pubs) != senders*each || !h.Complete {
			t.Fatalf("history holds %d, complete %v", len(h.Pubs), h.Complete)
		}
	})

	t.Run("Isolation", func(t *testing.T) {
		ctx := testkit.Context(t, 10*time.Second)
		b := newBroker(t, brokerTestOptions{})
		sa, sb := btSession(t, ctx, b), btSession(t, ctx, b)
		ra, _ := btSubscribe(t, ctx, b, sa)
		rb, _ := btSubscribe(t, ctx, b, sb)
		for range 3 {
			btPublish(t, ctx, b, sa, btChord("a", "C", 0))
		}
		if err := b.Send(ctx, sa, &Publication{Type: protocol.TypeRTCOffer, From: "a", To: "b"}); err != nil {
			t.Fatal(err)
		}
		if err := b.Join(ctx, sa, protocol.Member{ClientID: "a", Since: time.Now()}); err != nil {
			t.Fatal(err)
		}
		btPublish(t, ctx, b, sb, btChord("z", "G", 0))
		ra.wait(t, ctx, 4)
		got := rb.wait(t, ctx, 1)
		if got[0].From != "z" || got[0].Off != 1 {
			t.Fatalf("B got %s", btDescribe(got))
		}
		// A's traffic was all delivered to A before this B message was
		// published; a second B message proves nothing of A is queued for B.
		btPublish(t, ctx, b, sb, btChord("z", "A", 0))
		if got := rb.wait(t, ctx, 2); len(rb.all()) != 2 || got[1].Off != 2 {
			t.Fatalf("B got %s", btDescribe(rb.all()))
		}
		st, _ := b.State(ctx, sb)
		h, _ := b.History(ctx, sb, 0)
		ms, _ := b.Members(ctx, sb)
		n, _ := b.LastSeq(ctx, sb, "a")
		if st.Chord != "A" || st.Offset != 2 || len(h.Pubs) != 2 || len(ms) != 0 || n != 0 {
			t.Fatalf("B sees A: state %+v, history %d, members %v, last seq of a %d", st, len(h.Pubs), ms, n)
		}
	})

	if !shared {
		return
	}

	t.Run("CrossInstance", func(t *testing.T) {
		ctx := testkit.Context(t, 10*time.Second)
		b1, b2 := newBroker(t, brokerTestOptions{}), newBroker(t, brokerTestOptions{})
		sid := btSession(t, ctx, b1)
		if _, err := b2.Session(ctx, sid); err != nil {
			t.Fatalf("session of instance 1 on instance 2: %v", err)
		}
		r1, _ := btSubscribe(t, ctx, b1, sid)
		r2, _ := btSubscribe(t, ctx, b2, sid)
		const n = 50
		for i := range n {
			bb := b1
			if i%5 == 4 {
				bb = b2
			}
			btPublish(t, ctx, bb, sid, btChord("a", "C", 0))
		}
		for _, r := range []*btRecorder{r1, r2} {
			got := r.wait(t, ctx, n)
			btCheckOffsets(t, got, 1)
		}
		if err := b1.Send(ctx, sid, &Publication{Type: protocol.TypeRTCOffer, From: "a", To: "b"}); err != nil {
			t.Fatal(err)
		}
		if got := r2.wait(t, ctx, n+1); got[n].Type != protocol.TypeRTCOffer {
			t.Fatalf("send across instances: %+v", got[n])
		}
		if got := r1.wait(t, ctx, n+1); got[n].Type != protocol.TypeRTCOffer {
			t.Fatalf("send on its own instance: %+v", got[n])
		}
		if err := b1.Join(ctx, sid, protocol.Member{ClientID: "a", Role: "pc", Since: time.Now()}); err != nil {
			t.Fatal(err)
		}
		ms, err := b2.Members(ctx, sid)
		if err != nil || len(ms) != 1 || ms[0].ClientID != "a" || ms[0].Instance == "" {
			t.Fatalf("members seen by instance 2: %+v, %v", ms, err)
		}
		st, _ := b2.State(ctx, sid)
		if st.Offset != n || st.Chord != "C" {
			t.Fatalf("state on instance 2: %+v", st)
		}
		if n1, n2 := len(r1.all()), len(r2.all()); n1 != n+1 || n2 != n+1 {
			t.Fatalf("delivered %d and %d, want %d each (exactly once)", n1, n2, n+1)
		}
	})
}

func btJSONEqual(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	xa, _ := json.Marshal(x)
	ya, _ := json.Marshal(y)
	return bytes.Equal(xa, ya)
}

// memberOf returns the stored presence of client id cid.
func memberOf(t *testing.T, b Broker, ctx context.Context, sid, cid string) protocol.Member {
	t.Helper()
	ms, err := b.Members(ctx, sid)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if m.ClientID == cid {
			return m
		}
	}
	t.Fatalf("%s is not present", cid)
	return protocol.Member{}
}
