package test

// Faults with real processes: Redis crashing and coming back, an instance
// crashing, an instance draining on SIGTERM. Each test counts the chord
// changes sent and received and shows that none is lost, duplicated or
// reordered across the fault. The peers use the relay only, so that a data
// channel cannot carry what the servers would have lost.

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/virtutune/link/internal/peertest"
	"github.com/virtutune/link/internal/testkit"
	"github.com/virtutune/link/peer"
	"github.com/virtutune/link/protocol"
)

// TestRedisRestart: Redis is killed (SIGKILL) mid-session and restarted on
// the same port; it persists to an append-only file (fsync always), as
// production Redis must for sessions to survive a restart. The PC and the
// phone on instance A keep talking during the outage (local delivery), both
// instances report degraded on /readyz, the phone's sends are answered
// `unavailable` and stay in its outbox; after the restart /readyz is ok again
// and cross-instance delivery resumes with no restart of anything: the
// phone's outbox resends what the outage held back, and every member ends
// with every chord exactly once, in order (the outage rule of RedisBroker).
func TestRedisRestart(t *testing.T) {
	ctx := testkit.Context(t, 60*time.Second)
	log := testkit.Logger(t, slog.LevelWarn)
	rd, a, b := twoInstances(t, true, "")

	info := createSession(ctx, t, a.url)
	pc := dialPeer(ctx, t, peerConfig(log, protocol.RolePC, true), a.url, info.SessionID, info.Token)
	phone := dialPeer(ctx, t, peerConfig(log, protocol.RolePhone, true), a.url, info.SessionID, pairPhone(ctx, t, info.PairingURL).Token)
	far := dialPeer(ctx, t, peerConfig(log, protocol.RolePhone, true), b.url, info.SessionID,
		pairPhone(ctx, t, newPairing(ctx, t, a.url, info)).Token)
	atPC, atPhone, atFar := peertest.RecordT(t, pc), peertest.RecordT(t, phone), peertest.RecordT(t, far)
	if instanceOf(pc) != "A" || instanceOf(phone) != "A" || instanceOf(far) != "B" {
		t.Fatalf("instances: PC %q phone %q far %q; want A A B", instanceOf(pc), instanceOf(phone), instanceOf(far))
	}

	// 50 chords a second from each sender: far more than a guitarist plays.
	const pace = 20 * time.Millisecond
	sPhone := peertest.StartSender(ctx, phone, 1_000_000, pace)
	sFar := peertest.StartSender(ctx, far, 1_000_000, pace)
	defer sPhone.Stop()
	defer sFar.Stop()
	testkit.Eventually(ctx, t, "50 chords across before the fault", func() bool {
		return atFar.CountFrom(phone.ClientID()) >= 50 && atPhone.CountFrom(far.ClientID()) >= 50
	})

	sentBefore := sPhone.Count()
	if err := rd.Kill(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	waitReadyz(ctx, t, "degraded", http.StatusServiceUnavailable, a, b)
	degradedAfter := time.Since(killed)
	// Members of one instance keep talking: the PC gets the phone's chords
	// sent during the outage at once.
	atPCDown := atPC.CountFrom(phone.ClientID())
	farDown := atFar.CountFrom(phone.ClientID())
	testkit.Eventually(ctx, t, "the PC to get 20 chords of the phone during the outage", func() bool {
		return atPC.CountFrom(phone.ClientID()) >= atPCDown+20
	})
	if got := atFar.CountFrom(phone.ClientID()); got != farDown {
		t.Fatalf("instance B delivered %d chords of the phone while Redis was down", got-farDown)
	}
	if st, code := readyStatus(ctx, a.url); st != "degraded" || code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz during the outage: %d %q", code, st)
	}
	sentDuring := sPhone.Count() - sentBefore
	outage := time.Since(killed)
	var localLat []time.Duration // phone->PC on A while Redis was down
	for _, d := range atPC.ChordsFrom(phone.ClientID())[atPCDown:] {
		localLat = append(localLat, d.At.Sub(time.UnixMicro(int64(d.Msg.At*1000))))
	}
	slices.Sort(localLat)

	rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
	if err := rd.Restart(rctx); err != nil {
		t.Fatal(err)
	}
	rcancel()
	restarted := time.Now()
	waitReadyz(ctx, t, "ok", http.StatusOK, a, b)
	readyAfter := time.Since(restarted)
	// Cross-instance delivery resumes by itself: the far member catches up.
	testkit.Eventually(ctx, t, "the far member to get the phone's chords of the outage", func() bool {
		return atFar.CountFrom(phone.ClientID()) >= sentBefore+sentDuring
	})
	resumedAfter := time.Since(restarted)
	// A little more traffic after the recovery, then stop and count.
	n1 := sPhone.Count()
	testkit.Eventually(ctx, t, "50 more chords after recovery", func() bool { return sPhone.Count() >= n1+50 })
	nPhone, nFar := peertest.StopPair(ctx, t, sPhone, "phone", sFar, "far")
	testkit.Eventually(ctx, t, "every chord everywhere", func() bool {
		return atPC.CountFrom(phone.ClientID()) >= nPhone && atFar.CountFrom(phone.ClientID()) >= nPhone &&
			atPC.CountFrom(far.ClientID()) >= nFar && atPhone.CountFrom(far.ClientID()) >= nFar
	})
	settle(ctx, t, pc, phone, far)
	peertest.CheckChords(t, "phone->PC (same instance)", atPC.ChordsFrom(phone.ClientID()), 1, nPhone)
	peertest.CheckChords(t, "phone->far (across)", atFar.ChordsFrom(phone.ClientID()), 1, nPhone)
	peertest.CheckChords(t, "far->PC (across)", atPC.ChordsFrom(far.ClientID()), 1, nFar)
	peertest.CheckChords(t, "far->phone (across)", atPhone.ChordsFrom(far.ClientID()), 1, nFar)

	if codes := atPhone.ErrorCodes(); codes[string(protocol.CodeUnavailable)] == 0 {
		t.Errorf("the phone got no unavailable error during the outage (errors %v)", codes)
	}
	for name, c := range map[string]*peer.Client{"PC": pc, "phone": phone, "far": far} {
		if st := c.Stats(); st.OutboxDropped != 0 || st.Reconnects != 0 {
			t.Errorf("%s: %d outbox drops, %d reconnects", name, st.OutboxDropped, st.Reconnects)
		}
	}
	t.Logf("Redis down %v (degraded on /readyz after %v); %d chords sent by the phone before, %d during the outage, of which %d reached the PC on A during it "+
		"(latency median %v, max %v: each Publish waits for Redis to fail); "+
		"ready %v after the restart, far member caught up %v after it; totals: phone %d, far %d chords, each received exactly once and in order by every other member; "+
		"errors at phone %v, at far %v; duplicates dropped PC %d far %d phone %d",
		outage.Round(time.Millisecond), degradedAfter.Round(time.Millisecond), sentBefore, sentDuring,
		len(localLat), localLat[len(localLat)/2].Round(time.Millisecond), localLat[len(localLat)-1].Round(time.Millisecond),
		readyAfter.Round(time.Millisecond), resumedAfter.Round(time.Millisecond), nPhone, nFar,
		atPhone.ErrorCodes(), atFar.ErrorCodes(), pc.Stats().Duplicates, far.Stats().Duplicates, phone.Stats().Duplicates)
}

// lossTest is the body of the instance fault tests: PC and phone on
// different instances behind nginx exchange chords (relay only, 200 a
// second each way) while fault takes the phone's instance away; the phone
// reconnects through nginx to the other instance and resumes. Every chord
// arrives exactly once and in order, both ways.
func lossTest(t *testing.T, name string, fault func(victim *instance) string) {
	ctx := testkit.Context(t, 60*time.Second)
	a, b, ng := behindNginx(t)
	info, pc, phone := joinApart(ctx, t, ng.url, true)
	atPC, atPhone := peertest.RecordT(t, pc), peertest.RecordT(t, phone)
	events := peertest.LogEventsT(t, phone)
	victim, survivor := a, b
	if instanceOf(phone) == "B" {
		victim, survivor = b, a
	}
	const pace = 5 * time.Millisecond
	sPhone, sPC := peertest.StartSender(ctx, phone, 1_000_000, pace), peertest.StartSender(ctx, pc, 1_000_000, pace)
	defer sPhone.Stop()
	defer sPC.Stop()
	testkit.Eventually(ctx, t, "100 chords each way before the fault", func() bool {
		return atPC.CountFrom(phone.ClientID()) >= 100 && atPhone.CountFrom(pc.ClientID()) >= 100
	})

	beforePhone, beforePC := sPhone.Count(), sPC.Count()
	detail := fault(victim)
	testkit.Eventually(ctx, t, "the phone to be back, on the other instance", func() bool {
		return phone.State() == peer.StateConnected && instanceOf(phone) == survivor.name
	})
	n1, n2 := sPhone.Count(), sPC.Count()
	testkit.Eventually(ctx, t, "100 more chords each way after the fault", func() bool {
		return sPhone.Count() >= n1+100 && sPC.Count() >= n2+100 &&
			atPC.CountFrom(phone.ClientID()) >= n1 && atPhone.CountFrom(pc.ClientID()) >= n2
	})
	nPhone, nPC := peertest.StopPair(ctx, t, sPhone, "phone", sPC, "pc")
	testkit.Eventually(ctx, t, "every chord both ways", func() bool {
		return atPC.CountFrom(phone.ClientID()) >= nPhone && atPhone.CountFrom(pc.ClientID()) >= nPC
	})
	settle(ctx, t, pc, phone)
	peertest.CheckChords(t, "phone->PC", atPC.ChordsFrom(phone.ClientID()), 1, nPhone)
	peertest.CheckChords(t, "PC->phone", atPhone.ChordsFrom(pc.ClientID()), 1, nPC)
	if st := phone.Stats(); st.OutboxDropped != 0 || st.Reconnects != 1 {
		t.Errorf("phone: %d outbox drops, %d reconnects (want 0, 1)", st.OutboxDropped, st.Reconnects)
	}
	if st := pc.Stats(); st.Reconnects != 0 {
		t.Errorf("PC on the surviving instance reconnected %d times", st.Reconnects)
	}
	relay := func(up bool) func(peer.Event) bool {
		return func(e peer.Event) bool { return e.Kind == peer.EventRelay && e.Up == up }
	}
	downs, ups := events.Matching(relay(false)), events.Matching(relay(true))
	if len(downs) != 1 || len(ups) != 2 { // up at the first connection, down, up again
		t.Fatalf("phone saw the WebSocket go down %d times and up %d times, want 1 and 2: %+v", len(downs), len(ups), append(downs, ups...))
	}
	if name == "SIGTERM drain" && !strings.Contains(downs[0].Reason, "1001") {
		t.Errorf("phone's WebSocket ended with %q, want close 1001", downs[0].Reason)
	}
	gap := ups[1].At.Sub(downs[0].At)
	// The PC's last word about the phone is that it is connected (a drained
	// instance announces the phone's departure; its return follows).
	if cus := atPC.ConnUpdates(phone.ClientID()); len(cus) > 0 && cus[len(cus)-1].Status != protocol.StatusConnected {
		t.Errorf("the PC's last connection_update about the phone is %+v", cus[len(cus)-1])
	}
	// Presence: a newcomer sees both members, on the surviving instance.
	tok := pairPhone(ctx, t, newPairing(ctx, t, ng.url, info)).Token
	rc := dialRaw(ctx, t, ng.url, info.SessionID, tok, "")
	st := decodeState(t, rc.wait(ctx, "session_state", isType(protocol.TypeSessionState, nil)))
	wantMembers(t, "newcomer after the fault", st, map[string]string{pc.ClientID(): survivor.name, phone.ClientID(): survivor.name, rc.id: survivor.name})
	rc.close()
	t.Logf("%s: %s; the phone's WebSocket dropped (%s) and was up again on instance %s through nginx %v later; "+
		"chords sent before the fault: phone %d, PC %d; totals phone %d, PC %d, each received exactly once and in order; duplicates dropped PC %d phone %d",
		name, detail, downs[0].Reason, survivor.name, gap.Round(time.Millisecond), beforePhone, beforePC, nPhone, nPC, pc.Stats().Duplicates, phone.Stats().Duplicates)
}

// TestInstanceKilled: the phone's instance is killed (SIGKILL) mid-session
// behind nginx; the phone reconnects through nginx to the other instance
// and resumes from history; the PC never notices.
func TestInstanceKilled(t *testing.T) {
	lossTest(t, "instance killed", func(victim *instance) string {
		victim.kill()
		return "instance " + victim.name + " killed with SIGKILL"
	})
}

// TestSIGTERMDrain: the phone's instance gets SIGTERM behind nginx: the
// phone's WebSocket is closed with 1001 (going away), the phone reconnects
// at once through nginx to the other instance and resumes, and the process
// exits 0 promptly.
func TestSIGTERMDrain(t *testing.T) {
	lossTest(t, "SIGTERM drain", func(victim *instance) string {
		took, code := victim.terminate(10 * time.Second)
		if code != 0 {
			t.Errorf("instance %s exited with %d after SIGTERM, want 0", victim.name, code)
		}
		if !victim.logContains("closing clients with 1001") {
			t.Errorf("instance %s did not log its drain", victim.name)
		}
		return fmt.Sprintf("instance %s got SIGTERM and exited %d after %v", victim.name, code, took.Round(time.Millisecond))
	})
}
