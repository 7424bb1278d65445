package signaling

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/virtutune/link/internal/testkit"
	"github.com/virtutune/link/protocol"
)

// The conformance suite against a MemoryBroker on a real bbolt file.
func TestDurableMemoryBrokerConformance(t *testing.T) {
	btNoLeaks(t)
	testBroker(t, func(t *testing.T, o brokerTestOptions) Broker {
		st, err := OpenBoltStore(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		b, err := OpenMemoryBroker(MemoryConfig{HistorySize: o.HistorySize, HistoryTTL: o.HistoryTTL,
			MaxSeqClients: o.MaxSeqClients, SeqRetention: o.SeqRetention}, st)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = b.Close()
			_ = st.Close()
		})
		return b
	}, false)
}

// openDurable opens a store and a broker on dir; close closes both, in order.
func openDurable(t *testing.T, dir string) (*MemoryBroker, *BoltStore, func()) {
	t.Helper()
	st, err := OpenBoltStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	b, err := OpenMemoryBroker(MemoryConfig{}, st)
	if err != nil {
		t.Fatal(err)
	}
	var closed bool
	return b, st, func() {
		if !closed {
			closed = true
			_ = b.Close()
			_ = st.Close()
		}
	}
}

// A restart on the same data directory keeps the secret, the sessions, the
// pairing, the devices and revocations, the state and (after a clean close)
// the history and each sender's seq; the file is private.
func TestBoltStoreRestart(t *testing.T) {
	btNoLeaks(t)
	ctx := testkit.Context(t, 20*time.Second)
	dir := filepath.Join(t.TempDir(), "data")
	b, st, closeAll := openDurable(t, dir)
	defer func() { closeAll() }()
	secret, generated, err := st.Secret()
	if err != nil || !generated || len(secret) < MinSecretLen {
		t.Fatalf("Secret = %q, %v, %v", secret, generated, err)
	}
	for path, want := range map[string]os.FileMode{dir: 0o700, filepath.Join(dir, BoltFile): 0o600} {
		fi, err := os.Stat(path)
		if err != nil || fi.Mode().Perm() != want {
			t.Fatalf("%s: mode %v, %v; want %v", path, fi.Mode().Perm(), err, want)
		}
	}
	// A second process cannot open the same directory.
	if _, err := OpenBoltStore(dir); !errors.Is(err, ErrStoreInUse) {
		t.Fatalf("second open: %v, want ErrStoreInUse", err)
	}

	sid := btSession(t, ctx, b)
	exp := time.Now().Add(time.Minute)
	p := Pairing{SessionID: sid, UserID: 42, CodeKey: "ck", PINKey: "pk", PINBase: 3, ExpiresAt: exp, ExpiresMS: exp.UnixMilli()}
	if err := b.PutPairing(ctx, p); err != nil {
		t.Fatal(err)
	}
	if err := b.AddDevice(ctx, sid, protocol.Device{ClientID: "phone-1", Role: "phone", PairedAt: time.Now()}, 8); err != nil {
		t.Fatal(err)
	}
	if _, err := b.RemoveDevice(ctx, sid, "phone-gone"); err != nil {
		t.Fatal(err)
	}
	for seq := uint64(1); seq <= 3; seq++ {
		btPublish(t, ctx, b, sid, btChord("phone-1", []string{"C", "G", "Am"}[seq-1], seq))
	}
	before, err := b.History(ctx, sid, 0)
	if err != nil || len(before.Pubs) != 3 {
		t.Fatalf("history before the restart: %+v, %v", before, err)
	}
	closeAll()

	// Clean restart: everything back, exactly.
	b, st, closeAll = openDurable(t, dir)
	if s2, generated, err := st.Secret(); err != nil || generated || string(s2) != string(secret) {
		t.Fatalf("Secret after restart = %q (generated %v, %v), want the first", s2, generated, err)
	}
	if _, err := b.Session(ctx, sid); err != nil {
		t.Fatalf("session after restart: %v", err)
	}
	if cur, err := b.CurrentPairing(ctx, sid); err != nil || cur.CodeKey != "ck" || cur.PINBase != 0 {
		t.Fatalf("pairing after restart: %+v, %v", cur, err)
	}
	if ds, _ := b.Devices(ctx, sid); len(ds) != 1 || ds[0].ClientID != "phone-1" {
		t.Fatalf("devices after restart: %+v", ds)
	}
	if rev, _ := b.Revoked(ctx, sid, "phone-gone"); !rev {
		t.Fatal("the revocation was lost")
	}
	stt, err := b.State(ctx, sid)
	if err != nil || stt.Chord != "Am" || stt.Offset != 3 || stt.Seqs["phone-1"] != 3 {
		t.Fatalf("state after restart: %+v, %v", stt, err)
	}
	h, err := b.History(ctx, sid, 0)
	if err != nil || !h.Complete || len(h.Pubs) != 3 || h.Pubs[2].Chord != "Am" {
		t.Fatalf("history after restart: %+v, %v", h, err)
	}
	// What a replay sends is what the members got before the restart.
	for i, p := range h.Pubs {
		if len(p.Wire) == 0 || !bytes.Equal(p.Wire, before.Pubs[i].Wire) {
			t.Fatalf("history[%d] after restart encodes as %s, before %s", i, p.Wire, before.Pubs[i].Wire)
		}
	}
	// A resend of seq 3 is a duplicate; the next seq goes on.
	if res, err := b.Publish(ctx, sid, btChord("phone-1", "Am", 3)); err != nil || !res.Duplicate {
		t.Fatalf("resend after restart: %+v, %v", res, err)
	}
	if res := btPublish(t, ctx, b, sid, btChord("phone-1", "F", 4)); res.Off != 4 {
		t.Fatalf("offset after restart: %d, want 4", res.Off)
	}
	closeAll()
	// A crash: the store holds the last checkpoint (no history, seq 4) and
	// was not closed cleanly (opening it marks it running).
	closeAll = func() {}
	st, err = OpenBoltStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.putSessions(nil, map[string]runtimeRecord{sid: {Chord: "F", ChordFrom: "phone-1", Offset: 4, Seqs: map[string]uint64{"phone-1": 4}}}, false); err != nil {
		t.Fatal(err)
	}
	st.Close()
	b, _, closeAll = openDurable(t, dir)
	stt, _ = b.State(ctx, sid)
	if stt.Offset <= 4+restartOffsetGap-1 || stt.Chord != "F" {
		t.Fatalf("state after a crash: %+v, want the checkpoint's (F) and an offset past 5", stt)
	}
	if h, _ := b.History(ctx, sid, 4); h.Complete {
		t.Fatal("history after a crash claims to reach back")
	}
	// The sender had seqs 5 and 6 confirmed by the old process: its next is 7.
	if res, err := b.Publish(ctx, sid, btChord("phone-1", "E", 7)); err != nil || res.Duplicate || res.Off <= restartOffsetGap {
		t.Fatalf("the next seq after a crash: %+v, %v", res, err)
	}
	if _, err := b.Publish(ctx, sid, btChord("phone-1", "E", 9)); !errors.Is(err, ErrBadSequence) {
		t.Fatalf("a gap after the first seq: %v, want ErrBadSequence", err)
	}
}
