package signaling

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/virtutune/link/internal/testkit"
	"github.com/virtutune/link/protocol"
)

// testPairingStore is the conformance suite of the Store's pairing, counter,
// device and revocation methods (run by testBroker for every broker).
func testPairingStore(t *testing.T, newBroker brokerFactory) {
	t.Run("PairingSingleUse", func(t *testing.T) {
		ctx, b, sid := newBroker.start(t, brokerTestOptions{})
		exp := time.Now().Add(time.Minute)
		p := Pairing{SessionID: sid, UserID: 7, CodeKey: btID("c"), PINKey: btID("p"), ExpiresAt: exp, ExpiresMS: exp.UnixMilli()}
		if err := b.PutPairing(ctx, p); err != nil {
			t.Fatal(err)
		}
		if cur, err := b.CurrentPairing(ctx, sid); err != nil || cur.CodeKey != p.CodeKey {
			t.Fatalf("CurrentPairing = %+v, %v", cur, err)
		}
		// Twenty racers, by both codes: exactly one wins.
		var wg sync.WaitGroup
		var mu sync.Mutex
		wins, used := 0, 0
		for i := range 20 {
			wg.Go(func() {
				kind, key := PairByCode, p.CodeKey
				if i%2 == 1 {
					kind, key = PairByPIN, p.PINKey
				}
				got, err := b.TakePairing(ctx, kind, key, time.Now())
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil && got.SessionID == sid && got.UserID == 7:
					wins++
				case errors.Is(err, ErrPairingUsed):
					used++
				default:
					t.Errorf("TakePairing: %+v, %v", got, err)
				}
			})
		}
		wg.Wait()
		if wins != 1 || used != 19 {
			t.Fatalf("%d takes won, %d saw it used; want 1 and 19", wins, used)
		}
		if _, err := b.CurrentPairing(ctx, sid); !errors.Is(err, ErrPairingNotFound) {
			t.Fatalf("CurrentPairing after the take: %v", err)
		}
		if _, err := b.TakePairing(ctx, PairByCode, "nosuchkey", time.Now()); !errors.Is(err, ErrPairingNotFound) {
			t.Fatalf("unknown key: %v", err)
		}
	})
	t.Run("PairingReplacedAndExpired", func(t *testing.T) {
		ctx, b, sid := newBroker.start(t, brokerTestOptions{})
		exp := time.Now().Add(time.Minute)
		old := Pairing{SessionID: sid, CodeKey: btID("c"), PINKey: btID("p"), ExpiresAt: exp, ExpiresMS: exp.UnixMilli()}
		if err := b.PutPairing(ctx, old); err != nil {
			t.Fatal(err)
		}
		newer := Pairing{SessionID: sid, CodeKey: btID("c"), PINKey: btID("p"), ExpiresAt: exp, ExpiresMS: exp.UnixMilli()}
		if err := b.PutPairing(ctx, newer); err != nil {
			t.Fatal(err)
		}
		for _, k := range []struct {
			kind PairKind
			key  string
		}{{PairByCode, old.CodeKey}, {PairByPIN, old.PINKey}} {
			if _, err := b.TakePairing(ctx, k.kind, k.key, time.Now()); !errors.Is(err, ErrPairingNotFound) {
				t.Fatalf("the replaced pairing's %v: %v, want not found", k.kind, err)
			}
		}
		// Another session cannot take a PIN that is live.
		other := btSession(t, ctx, b)
		clash := Pairing{SessionID: other, CodeKey: btID("c"), PINKey: newer.PINKey, ExpiresAt: exp, ExpiresMS: exp.UnixMilli()}
		if err := b.PutPairing(ctx, clash); !errors.Is(err, ErrPINTaken) {
			t.Fatalf("a live PIN twice: %v, want ErrPINTaken", err)
		}
		// Exactly at its expiry it no longer works, and stays unused.
		if _, err := b.TakePairing(ctx, PairByPIN, newer.PINKey, newer.ExpiresAt); !errors.Is(err, ErrPairingExpired) {
			t.Fatalf("at its expiry: %v, want ErrPairingExpired", err)
		}
		if _, err := b.TakePairing(ctx, PairByPIN, newer.PINKey, newer.ExpiresAt.Add(-time.Millisecond)); err != nil {
			t.Fatalf("a millisecond before its expiry: %v", err)
		}
	})
	t.Run("Count", func(t *testing.T) {
		ctx := testkit.Context(t, 10*time.Second)
		b := newBroker(t, brokerTestOptions{})
		key := btID("k")
		if n, err := b.Count(ctx, key, 0, time.Second); err != nil || n != 0 {
			t.Fatalf("fresh counter: %d, %v", n, err)
		}
		for i := int64(1); i <= 3; i++ {
			if n, err := b.Count(ctx, key, 1, 300*time.Millisecond); err != nil || n != i {
				t.Fatalf("count %d: %d, %v", i, n, err)
			}
		}
		testkit.Eventually(ctx, t, "the window to end", func() bool {
			n, err := b.Count(ctx, key, 0, 300*time.Millisecond)
			return err == nil && n == 0
		})
		forever := btID("k")
		_, _ = b.Count(ctx, forever, 5, 0)
		if n, _ := b.Count(ctx, forever, 0, 0); n != 5 {
			t.Fatalf("counter without a window: %d, want 5", n)
		}
	})
	t.Run("DevicesAndRevocation", func(t *testing.T) {
		ctx, b, sid := newBroker.start(t, brokerTestOptions{})
		t0 := time.Now().UTC().Truncate(time.Millisecond)
		for i, cid := range []string{"phone-a", "phone-b"} {
			if err := b.AddDevice(ctx, sid, protocol.Device{ClientID: cid, Role: "phone", Name: "P", PairedAt: t0.Add(time.Duration(i) * time.Second)}, 2); err != nil {
				t.Fatal(err)
			}
		}
		if err := b.AddDevice(ctx, sid, protocol.Device{ClientID: "phone-c", Role: "phone", PairedAt: t0}, 2); !errors.Is(err, ErrTooManyDevices) {
			t.Fatalf("a third device with max 2: %v", err)
		}
		if err := b.AddDevice(ctx, sid, protocol.Device{ClientID: "phone-a", Role: "phone", Name: "again", PairedAt: t0}, 2); err != nil {
			t.Fatalf("the same device again: %v", err)
		}
		ds, err := b.Devices(ctx, sid)
		if err != nil || len(ds) != 2 || ds[0].ClientID != "phone-a" || ds[0].Name != "again" || ds[1].ClientID != "phone-b" {
			t.Fatalf("Devices = %+v, %v", ds, err)
		}
		if rev, _ := b.Revoked(ctx, sid, "phone-a"); rev {
			t.Fatal("revoked before removal")
		}
		if known, err := b.RemoveDevice(ctx, sid, "phone-a"); err != nil || !known {
			t.Fatalf("RemoveDevice = %v, %v", known, err)
		}
		if known, err := b.RemoveDevice(ctx, sid, "never-paired"); err != nil || known {
			t.Fatalf("RemoveDevice of a stranger = %v, %v", known, err)
		}
		for _, cid := range []string{"phone-a", "never-paired"} {
			if rev, err := b.Revoked(ctx, sid, cid); err != nil || !rev {
				t.Fatalf("Revoked(%s) = %v, %v", cid, rev, err)
			}
		}
		if rev, _ := b.Revoked(ctx, sid, "phone-b"); rev {
			t.Fatal("the other device was revoked too")
		}
		if ds, _ := b.Devices(ctx, sid); len(ds) != 1 || ds[0].ClientID != "phone-b" {
			t.Fatalf("Devices after removal = %+v", ds)
		}
		if err := b.AddDevice(ctx, "nosuchsession1", protocol.Device{ClientID: "x"}, 2); !errors.Is(err, ErrSessionNotFound) {
			t.Fatalf("AddDevice to no session: %v", err)
		}
	})
}
