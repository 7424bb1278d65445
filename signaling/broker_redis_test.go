package signaling

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/virtutune/link/internal/testkit"
	"github.com/virtutune/link/protocol"
)

// newTestRedisBroker returns a RedisBroker on srv, closed at t's cleanup.
func newTestRedisBroker(t *testing.T, srv *testRedisServer, cfg RedisConfig) *RedisBroker {
	t.Helper()
	cfg.URL = srv.url()
	if cfg.Prefix == "" {
		cfg.Prefix = "vttest:"
	}
	if cfg.Logger == nil {
		cfg.Logger = testkit.Logger(t, slog.LevelDebug)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	b, err := NewRedisBroker(ctx, cfg)
	if err != nil {
		t.Fatalf("NewRedisBroker: %v", err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func TestRedisBrokerConformance(t *testing.T) {
	btNoLeaks(t)
	srv := startTestRedis(t)
	testBroker(t, func(t *testing.T, o brokerTestOptions) Broker {
		return newTestRedisBroker(t, srv, RedisConfig{HistorySize: o.HistorySize, HistoryTTL: o.HistoryTTL,
			MaxSeqClients: o.MaxSeqClients, SeqRetention: o.SeqRetention})
	}, true)
}

func TestRedisBrokerConfig(t *testing.T) {
	for _, c := range []RedisConfig{
		{},
		{URL: "http://localhost:6379"},
		{URL: "redis://localhost:1", Prefix: "a{b"},
		{URL: "redis://localhost:1", Instance: "a,b"},
		{URL: "redis://localhost:1", HistorySize: -1},
		{URL: "redis://localhost:1", PresenceTTL: time.Millisecond},
	} {
		if err := c.Validate(); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("Validate(%+v) = %v", c, err)
		}
	}
	for _, u := range []string{
		"redis://localhost:6379/0", "rediss://u:p@localhost:6380/1", "unix:///tmp/redis.sock?db=2",
		"redis://h1:7000?addr=h2:7001&addr=h3:7002", "redis://h1:7000?cluster=true",
		"redis://s1:26379?master_name=mymaster&addr=s2:26379",
	} {
		c, err := newRedisClient(u)
		if err != nil {
			t.Errorf("newRedisClient(%s): %v", u, err)
			continue
		}
		_ = c.Close()
	}
	if _, err := newRedisClient("redis://h1:7000?cluster=maybe"); err == nil {
		t.Error("cluster=maybe accepted")
	}
	// The buffers: the broker's sizes, the URL's pipeline buffers kept.
	c, err := newRedisClient("redis://localhost:6379/0?pipeline_write_buffer_size=65536")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	o := c.(*redis.Client).Options()
	if o.ReadBufferSize != redisConnBuffer || o.WriteBufferSize != redisConnBuffer ||
		o.PipelineReadBufferSize != redisPipelineBuffer || o.PipelineWriteBufferSize != 65536 {
		t.Errorf("buffers: read %d, write %d, pipeline read %d, write %d", o.ReadBufferSize, o.WriteBufferSize,
			o.PipelineReadBufferSize, o.PipelineWriteBufferSize)
	}
	cc, err := newRedisClient("redis://h1:7000?addr=h2:7001")
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	if co := cc.(*redis.ClusterClient).Options(); co.ReadBufferSize != redisConnBuffer || co.PipelineReadBufferSize != 0 {
		t.Errorf("cluster buffers: read %d, pipeline read %d", co.ReadBufferSize, co.PipelineReadBufferSize)
	}
}

func TestRedisBrokerUnreachable(t *testing.T) {
	btNoLeaks(t)
	srv := startTestRedis(t)
	srv.kill(t) // a port nobody listens on now
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := NewRedisBroker(ctx, RedisConfig{URL: srv.url(), Logger: testkit.Logger(t, slog.LevelDebug)})
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("NewRedisBroker without Redis: %v", err)
	}
}

// TestRedisBrokerGhostPresence: the members of an instance that stops
// heartbeating disappear after PresenceTTL; those of a closed instance at once.
func TestRedisBrokerGhostPresence(t *testing.T) {
	btNoLeaks(t)
	srv := startTestRedis(t)
	ctx := testkit.Context(t, 20*time.Second)
	cfg := RedisConfig{PresenceTTL: 300 * time.Millisecond}
	alive := newTestRedisBroker(t, srv, cfg)
	dying := newTestRedisBroker(t, srv, cfg)
	closing := newTestRedisBroker(t, srv, cfg)
	sid := btSession(t, ctx, alive)
	now := time.Now()
	for _, j := range []struct {
		b  *RedisBroker
		id string
	}{{alive, "pc"}, {dying, "phone"}, {closing, "tablet"}} {
		if err := j.b.Join(ctx, sid, protocol.Member{ClientID: j.id, Since: now}); err != nil {
			t.Fatal(err)
		}
	}
	members := func() []string {
		return btMembers(t, ctx, alive, sid, func(m protocol.Member) string { return m.ClientID + "@" + m.Instance })
	}
	// Wait past a TTL: heartbeats keep every live instance's members listed.
	deadline := time.Now().Add(2 * cfg.PresenceTTL)
	testkit.Eventually(ctx, t, "two presence TTLs", func() bool { return time.Now().After(deadline) })
	if got := members(); len(got) != 3 {
		t.Fatalf("members while all instances live: %v", got)
	}
	if err := closing.Close(); err != nil {
		t.Fatal(err)
	}
	if got := members(); len(got) != 2 {
		t.Fatalf("members after an instance closed: %v", got)
	}
	dying.stopHeartbeat()
	testkit.Eventually(ctx, t, "the ghost member to disappear", func() bool { return len(members()) == 1 })
	if got := members(); got[0] != "pc@"+alive.Instance() {
		t.Fatalf("members = %v", got)
	}
}

// TestRedisBrokerOutage kills redis-server mid-stream: local delivery goes on,
// Ready fails, and after redis-server restarts on the same port cross-instance
// delivery resumes without restarting the brokers.
func TestRedisBrokerOutage(t *testing.T) {
	btNoLeaks(t)
	// Production Redis persists: with AOF fsynced on every write the session
	// survives the crash.
	srv := startTestRedis(t, "--appendonly", "yes", "--appendfsync", "always")
	ctx := testkit.Context(t, 40*time.Second)
	a := newTestRedisBroker(t, srv, RedisConfig{})
	b := newTestRedisBroker(t, srv, RedisConfig{})
	sid := btSession(t, ctx, a)
	ra, _ := btSubscribe(t, ctx, a, sid)
	ra2, _ := btSubscribe(t, ctx, a, sid) // a second member on instance A
	rb, _ := btSubscribe(t, ctx, b, sid)

	btPublish(t, ctx, a, sid, btChord("phone", "C", 1))
	btPublish(t, ctx, b, sid, btChord("pc", "G", 1))
	for _, r := range []*btRecorder{ra, ra2, rb} {
		btCheckOffsets(t, r.wait(t, ctx, 2), 1)
	}

	srv.kill(t)
	testkit.Eventually(ctx, t, "Ready to report the outage", func() bool {
		return errors.Is(a.Ready(ctx), ErrUnavailable)
	})
	if err := b.Ready(ctx); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Ready of B during the outage: %v", err)
	}
	// The phone keeps talking to the PC on the same instance.
	p := btChord("phone", "D", 2)
	res, err := a.Publish(ctx, sid, p)
	if !errors.Is(err, ErrUnavailable) || !res.Local || res.Seq != 2 || res.Off != 0 {
		t.Fatalf("Publish during the outage = %+v, %v", res, err)
	}
	for _, r := range []*btRecorder{ra, ra2} {
		got := r.wait(t, ctx, 3)
		if got[2].Chord != "D" || got[2].Off != 0 || got[2].Seq != 2 {
			t.Fatalf("local delivery during the outage: %s", btDescribe(got))
		}
	}
	if err := a.Send(ctx, sid, &Publication{Type: protocol.TypeRTCOffer, From: "phone", To: "pc"}); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Send during the outage: %v", err)
	}
	ra.wait(t, ctx, 4)
	if _, err := a.History(ctx, sid, 0); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("History during the outage: %v", err)
	}
	if n := len(rb.all()); n != 2 {
		t.Fatalf("instance B got %d publications during the outage", n)
	}

	srv.start(t)
	for _, br := range []*RedisBroker{a, b} {
		testkit.Eventually(ctx, t, "Ready after the restart", func() bool { return br.Ready(ctx) == nil })
	}
	// A call begun while Redis was down (a gap repair) may still time out
	// after the restart (its deadline is redisDegradedTimeout) and mark its
	// broker down again until the next probe: on a loaded machine that made
	// the publishes below fail. Wait until both have been up for longer
	// than such a call can last.
	var upSince time.Time
	testkit.Eventually(ctx, t, "both brokers up for longer than a degraded call lasts", func() bool {
		if a.down.Load() || b.down.Load() {
			upSince = time.Time{}
			_, _ = a.Ready(ctx), b.Ready(ctx)
			return false
		}
		if upSince.IsZero() {
			upSince = time.Now()
		}
		return time.Since(upSince) > 2*redisDegradedTimeout
	})
	// The phone's client resends what was only delivered locally.
	testkit.Eventually(ctx, t, "the resend to be accepted", func() bool {
		res, err = a.Publish(ctx, sid, btChord("phone", "D", 2))
		return err == nil
	})
	if res.Off != 3 || res.Seq != 2 || res.Duplicate {
		t.Fatalf("resend after recovery = %+v", res)
	}
	btPublish(t, ctx, b, sid, btChord("pc", "Em", 2))
	btPublish(t, ctx, a, sid, btChord("phone", "A", 3))
	got := rb.wait(t, ctx, 5)
	btCheckOffsets(t, got, 1)
	if got[2].Chord != "D" || got[3].Chord != "Em" || got[4].Chord != "A" {
		t.Fatalf("instance B after recovery: %s", btDescribe(got))
	}
	// A's members got the resend again with its offset; their dedupe by
	// (from, seq) drops it.
	gotA := ra.wait(t, ctx, 7)
	if gotA[4].Off != 3 || gotA[4].Seq != 2 || gotA[5].Off != 4 || gotA[6].Off != 5 {
		t.Fatalf("instance A after recovery: %s", btDescribe(gotA))
	}
	h, err := b.History(ctx, sid, 0)
	if err != nil || !h.Complete || len(h.Pubs) != 5 {
		t.Fatalf("history after recovery: %+v, %v", h, err)
	}
}

// btPublishUnseen stores a publication like Publish does but announces it on a
// channel nobody listens to: subscribers can only get it from the stream.
func btPublishUnseen(t *testing.T, ctx context.Context, b *RedisBroker, sid string, p *Publication) {
	t.Helper()
	payload, err := encodePub(p)
	if err != nil {
		t.Fatal(err)
	}
	err = redisPublishScript.Run(ctx, b.client, []string{b.sessKey(sid), b.seqKey(sid), b.streamKey(sid), b.memberKey(sid)},
		"", 0, p.From, "", "", payload, b.cfg.HistorySize, time.Now().UnixMilli(), b.cfg.Prefix+"nowhere:",
		b.cfg.MaxSeqClients, b.cfg.SeqRetention.Milliseconds(), 0, b.cfg.Instance).Err()
	if err != nil {
		t.Fatal(err)
	}
}

// TestRedisBrokerGapRepair: a publication pub/sub never delivered is read
// from the stream, both when a later one reveals the gap and when the PubSub
// connection is re-established.
func TestRedisBrokerGapRepair(t *testing.T) {
	btNoLeaks(t)
	srv := startTestRedis(t)
	ctx := testkit.Context(t, 20*time.Second)
	a := newTestRedisBroker(t, srv, RedisConfig{})
	b := newTestRedisBroker(t, srv, RedisConfig{})
	sid := btSession(t, ctx, a)
	rb, _ := btSubscribe(t, ctx, b, sid)
	ra, _ := btSubscribe(t, ctx, a, sid)
	btPublish(t, ctx, a, sid, btChord("x", "C", 0))
	rb.wait(t, ctx, 1)

	// Offsets 2 and 3 never reach pub/sub; 4 does and reveals the gap.
	btPublishUnseen(t, ctx, a, sid, &Publication{Type: protocol.TypeConnectionUpdate, Data: []byte(`{"n":2}`)})
	btPublishUnseen(t, ctx, a, sid, &Publication{Type: protocol.TypeConnectionUpdate, Data: []byte(`{"n":3}`)})
	btPublish(t, ctx, a, sid, btChord("x", "D", 0))
	btCheckOffsets(t, rb.wait(t, ctx, 4), 1)
	btCheckOffsets(t, ra.wait(t, ctx, 4), 1) // the publisher's own fast path too

	// Offset 5 is stored while nobody hears of it; then every PubSub
	// connection is killed: the resubscription catches up from the stream.
	btPublishUnseen(t, ctx, a, sid, &Publication{Type: protocol.TypeConnectionUpdate, Data: []byte(`{"n":5}`)})
	if err := a.client.ClientKillByFilter(ctx, "TYPE", "pubsub").Err(); err != nil {
		t.Fatal(err)
	}
	btCheckOffsets(t, rb.wait(t, ctx, 5), 1)
	btCheckOffsets(t, ra.wait(t, ctx, 5), 1)
	btPublish(t, ctx, a, sid, btChord("x", "E", 0))
	for _, r := range []*btRecorder{ra, rb} {
		btCheckOffsets(t, r.wait(t, ctx, 6), 1)
		if n := len(r.all()); n != 6 {
			t.Fatalf("delivered %d, want 6 (exactly once)", n)
		}
	}
}

// twoRedisInstances begins a test of two instances sharing one Redis
// (no goroutine may be left at its end): a context (20 s), the brokers
// inst-a and inst-b, and a session on them.
func twoRedisInstances(t *testing.T) (ctx context.Context, a, b *RedisBroker, sid string) {
	t.Helper()
	btNoLeaks(t)
	srv := startTestRedis(t)
	ctx = testkit.Context(t, 20*time.Second)
	a = newTestRedisBroker(t, srv, RedisConfig{Instance: "inst-a"})
	b = newTestRedisBroker(t, srv, RedisConfig{Instance: "inst-b"})
	return ctx, a, b, btSession(t, ctx, a)
}

// TestRedisBrokerNoEcho: a publication goes over pub/sub to the other
// instances listening to its session, never back to the publisher's own
// (it delivers from the script's reply), for Publish and Send alike; an
// instance that stopped listening gets nothing more, and a listener entry
// left over by an instance that is gone costs a PUBLISH nobody reads and
// disturbs nobody.
func TestRedisBrokerNoEcho(t *testing.T) {
	ctx, a, b, sid := twoRedisInstances(t)
	// A raw subscriber to every channel of the session: it sees which
	// instances each message is published to.
	spy := a.client.PSubscribe(ctx, a.chanPrefix(sid)+"*")
	defer spy.Close()
	if _, err := spy.Receive(ctx); err != nil { // the psubscribe confirmation
		t.Fatal(err)
	}
	next := func() string {
		t.Helper()
		m, err := spy.ReceiveMessage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		inst, _ := strings.CutPrefix(m.Channel, a.chanPrefix(sid))
		return inst + " " + m.Payload[:1]
	}
	ra, _ := btSubscribe(t, ctx, a, sid)
	rb, unsubB := btSubscribe(t, ctx, b, sid)

	btPublish(t, ctx, a, sid, btChord("x", "C", 0))
	if got := next(); got != "inst-b p" {
		t.Fatalf("A's publication went to %q, want inst-b only", got)
	}
	if err := a.Send(ctx, sid, &Publication{Type: protocol.TypeRTCOffer, Data: []byte(`{}`), From: "x", To: "y"}); err != nil {
		t.Fatal(err)
	}
	if got := next(); got != "inst-b e" {
		t.Fatalf("A's Send went to %q, want inst-b only", got)
	}
	btPublish(t, ctx, b, sid, btChord("y", "D", 0))
	if got := next(); got != "inst-a p" {
		t.Fatalf("B's publication went to %q, want inst-a only", got)
	}
	// Each instance delivered each of the three exactly once, the two
	// publications in order (Send is not ordered with them).
	for _, r := range []*btRecorder{ra, rb} {
		var pubs []Publication
		offers := 0
		for _, p := range r.wait(t, ctx, 3) {
			if p.Type == protocol.TypeRTCOffer {
				offers++
			} else {
				pubs = append(pubs, p)
			}
		}
		if offers != 1 || len(pubs) != 2 || pubs[0].Off != 1 || pubs[1].Off != 2 {
			t.Fatalf("delivered %s, want C and D in order and the offer", btDescribe(r.all()))
		}
	}

	// B stops listening; an instance that died listening is left in the set.
	unsubB()
	ls, err := a.client.HGet(ctx, a.sessKey(sid), "ls").Result()
	if err != nil {
		t.Fatal(err)
	}
	if err := a.client.HSet(ctx, a.sessKey(sid), "ls", ls+",inst-gone").Err(); err != nil {
		t.Fatal(err)
	}
	btPublish(t, ctx, a, sid, btChord("x", "E", 0))
	if got := next(); got != "inst-gone p" {
		t.Fatalf("after B left, A's publication went to %q, want only the leftover inst-gone", got)
	}
	if got := ra.wait(t, ctx, 4); got[3].Off != 3 {
		t.Fatalf("A delivered %s, want E at offset 3 last", btDescribe(got))
	}
	if n := len(rb.all()); n != 3 {
		t.Fatalf("B got %d publications, want the 3 before it stopped listening", n)
	}
	if ls, err := a.client.HGet(ctx, a.sessKey(sid), "ls").Result(); err != nil || ls != "inst-a,inst-gone" {
		t.Fatalf("listeners %q (%v), want inst-a and the leftover", ls, err)
	}
}

// TestRedisBrokerListenersRestored: a Redis that lost a session's listeners
// (a restart that lost its last writes) gets it back when the PubSub
// connections are re-established: each instance adds itself again before
// it catches up from the stream, so cross-instance delivery resumes.
func TestRedisBrokerListenersRestored(t *testing.T) {
	ctx, a, b, sid := twoRedisInstances(t)
	rb, _ := btSubscribe(t, ctx, b, sid)
	btSubscribe(t, ctx, a, sid)
	btPublish(t, ctx, a, sid, btChord("x", "C", 0))
	rb.wait(t, ctx, 1)

	if err := a.client.HDel(ctx, a.sessKey(sid), "ls").Err(); err != nil {
		t.Fatal(err)
	}
	if err := a.client.ClientKillByFilter(ctx, "TYPE", "pubsub").Err(); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(ctx, t, "both instances listening again", func() bool {
		ls, err := a.client.HGet(ctx, a.sessKey(sid), "ls").Result()
		return err == nil && len(strings.Split(ls, ",")) == 2
	})
	btPublish(t, ctx, a, sid, btChord("x", "D", 0))
	btCheckOffsets(t, rb.wait(t, ctx, 2), 1)
}

// TestRedisBrokerScriptsLost: after Redis lost its scripts (SCRIPT FLUSH, as
// a restart or failover does), publishes load the script again and go
// through, one at a time and in pipelines alike.
func TestRedisBrokerScriptsLost(t *testing.T) {
	ctx, a, b, sid := twoRedisInstances(t)
	rb, _ := btSubscribe(t, ctx, b, sid)
	if err := a.client.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	btPublish(t, ctx, a, sid, btChord("x", "C", 0))
	if err := a.client.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	// Concurrent senders: more publishes than slots, so some wait and go
	// out as pipelines.
	const senders, each = 8, 5
	errs := make(chan error, senders)
	for i := range senders {
		go func() {
			var err error
			for range each {
				if _, e := a.Publish(ctx, sid, btChord(fmt.Sprintf("s%d", i), "D", 0)); e != nil && err == nil {
					err = e
				}
			}
			errs <- err
		}()
	}
	for range senders {
		if err := <-errs; err != nil {
			t.Fatalf("Publish after SCRIPT FLUSH: %v", err)
		}
	}
	got := rb.wait(t, ctx, 1+senders*each)
	for i, p := range got {
		if p.Off != uint64(i+1) {
			t.Fatalf("delivery %d has offset %d, want %d (in order, exactly once)", i, p.Off, i+1)
		}
	}
}
