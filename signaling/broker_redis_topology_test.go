package signaling

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/virtutune/link/internal/testkit"
	"github.com/virtutune/link/protocol"
	"github.com/virtutune/link/signaling/redistest"
)

// These tests run the RedisBroker against real Sentinel and Cluster
// deployments (redis-server processes on free ports of 127.0.0.1, see package
// redistest), through the URL forms RedisConfig.URL documents. They skip when
// redis-server or redis-cli is missing, unless CI is "true".

// newURLRedisBroker returns a RedisBroker on url with key prefix prefix,
// closed at t's cleanup.
func newURLRedisBroker(t *testing.T, url, prefix string, o brokerTestOptions) *RedisBroker {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := NewRedisBroker(ctx, RedisConfig{URL: url, Prefix: prefix, HistorySize: o.HistorySize,
		HistoryTTL: o.HistoryTTL, MaxSeqClients: o.MaxSeqClients, SeqRetention: o.SeqRetention, Logger: testkit.Logger(t, slog.LevelDebug)})
	if err != nil {
		t.Fatalf("NewRedisBroker(%s): %v", url, err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// deadAddr is an address of 127.0.0.1 where nothing listens (a seed or
// sentinel that is down).
func deadAddr(t *testing.T) string {
	t.Helper()
	srv := startTestRedis(t)
	addr := srv.Addr()
	srv.kill(t)
	return addr
}

// TestRedisBrokerSentinel: a master behind one Sentinel, reached through
// redis://sentinel/0?master_name=mymaster. The whole conformance suite runs
// against it (two brokers share it), the data lands on the master, and a URL
// whose first sentinel is down finds the master through addr=.
func TestRedisBrokerSentinel(t *testing.T) {
	btNoLeaks(t)
	start := time.Now()
	master := startTestRedis(t)
	sentinel := redistest.NewSentinel(t, "mymaster", master.Server)
	url := sentinel.SentinelURL("mymaster")
	t.Logf("master %s, sentinel %s, up in %v; URL %s", master.Addr(), sentinel.Addr(), time.Since(start), url)

	testBroker(t, func(t *testing.T, o brokerTestOptions) Broker {
		return newURLRedisBroker(t, url, "vtsent:", o)
	}, true)

	t.Run("DataOnMaster", func(t *testing.T) {
		ctx := testkit.Context(t, 10*time.Second)
		b := newURLRedisBroker(t, url, "vtsent:", brokerTestOptions{})
		sid := btSession(t, ctx, b)
		btPublish(t, ctx, b, sid, btChord("a", "C", 0))
		for _, k := range []string{b.sessKey(sid), b.streamKey(sid)} {
			if v, err := master.Do(ctx, "EXISTS", k); err != nil || v != int64(1) {
				t.Fatalf("EXISTS %s on the master = %v, %v", k, v, err)
			}
		}
		if v, err := sentinel.Do(ctx, "EXISTS", b.sessKey(sid)); err == nil {
			t.Fatalf("the sentinel answered EXISTS (%v): the broker may be talking to it as a data node", v)
		}
	})

	t.Run("FirstSentinelDown", func(t *testing.T) {
		ctx := testkit.Context(t, 10*time.Second)
		u := fmt.Sprintf("redis://%s/0?master_name=mymaster&addr=%s", deadAddr(t), sentinel.Addr())
		b1 := newURLRedisBroker(t, u, "vtsent:", brokerTestOptions{})
		b2 := newURLRedisBroker(t, url, "vtsent:", brokerTestOptions{})
		sid := btSession(t, ctx, b1)
		r2, _ := btSubscribe(t, ctx, b2, sid)
		btPublish(t, ctx, b1, sid, btChord("a", "C", 0))
		btCheckOffsets(t, r2.wait(t, ctx, 1), 1)
	})
}

// TestRedisBrokerCluster: three masters in a Redis Cluster, reached through
// redis://p1?addr=p2&addr=p3. The whole conformance suite runs against it;
// then many sessions, spread over every node, are driven by two brokers whose
// single PubSub connections each sit on one node; and the single-seed
// (?cluster=true) and seed-down forms reach the same cluster.
func TestRedisBrokerCluster(t *testing.T) {
	btNoLeaks(t)
	start := time.Now()
	cl := redistest.NewCluster(t, 3)
	url := cl.URL()
	t.Logf("cluster up in %v; URL %s", time.Since(start), url)

	testBroker(t, func(t *testing.T, o brokerTestOptions) Broker {
		b := newURLRedisBroker(t, url, "vtclu:", o)
		if _, ok := b.client.(*redis.ClusterClient); !ok {
			t.Fatalf("URL %s gave a %T, not a cluster client", url, b.client)
		}
		return b
	}, true)

	t.Run("SpreadAcrossNodes", func(t *testing.T) {
		ctx := testkit.Context(t, 20*time.Second)
		const prefix = "vtspread:"
		b1 := newURLRedisBroker(t, url, prefix, brokerTestOptions{})
		b2 := newURLRedisBroker(t, url, prefix, brokerTestOptions{})
		const sessions, rounds = 48, 10
		sids := make([]string, sessions)
		recs := make([][2]*btRecorder, sessions)
		for i := range sids {
			owner := b1
			if i%2 == 1 {
				owner = b2
			}
			sids[i] = btSession(t, ctx, owner)
			r1, _ := btSubscribe(t, ctx, b1, sids[i])
			r2, _ := btSubscribe(t, ctx, b2, sids[i])
			recs[i] = [2]*btRecorder{r1, r2}
			if err := b2.Join(ctx, sids[i], protocol.Member{ClientID: "pc", Role: "pc", Since: time.Now()}); err != nil {
				t.Fatal(err)
			}
		}
		// Interleave the sessions; most publications come from b1, every
		// third from b2, so both directions cross instances.
		for r := range rounds {
			for i, sid := range sids {
				bb := b1
				if (r+i)%3 == 2 {
					bb = b2
				}
				btPublish(t, ctx, bb, sid, btChord("phone", "C"+strconv.Itoa(r), 0))
			}
		}
		for i, sid := range sids {
			for side, rec := range recs[i] {
				got := rec.wait(t, ctx, rounds)
				btCheckOffsets(t, got, 1)
				for j, p := range got {
					if p.Seq != uint64(j+1) || p.Chord != "C"+strconv.Itoa(j) {
						t.Fatalf("session %d broker %d: publication %d is %+v", i, side+1, j, p)
					}
				}
			}
			st, err := b1.State(ctx, sid)
			if err != nil || st.Offset != rounds || st.Chord != "C"+strconv.Itoa(rounds-1) || st.Seqs["phone"] != rounds {
				t.Fatalf("state of session %d on broker 1: %+v, %v", i, st, err)
			}
			if h, err := b2.History(ctx, sid, 0); err != nil || !h.Complete || len(h.Pubs) != rounds {
				t.Fatalf("history of session %d on broker 2: %d pubs, complete %v, %v", i, len(h.Pubs), h.Complete, err)
			}
			if ms, err := b1.Members(ctx, sid); err != nil || len(ms) != 1 || ms[0].Instance != b2.Instance() {
				t.Fatalf("members of session %d on broker 1: %+v, %v", i, ms, err)
			}
		}
		for i := range sids {
			for side, rec := range recs[i] {
				if n := len(rec.all()); n != rounds {
					t.Fatalf("session %d broker %d got %d publications, want %d (exactly once)", i, side+1, n, rounds)
				}
			}
		}

		// Where the keys live: every session's keys on one node (its hash
		// tag), and the sessions on every node.
		nodeOf := map[string]string{}
		for _, n := range cl.Nodes {
			v, err := n.Do(ctx, "KEYS", prefix+"{*")
			if err != nil {
				t.Fatal(err)
			}
			keys, _ := v.([]any)
			for _, k := range keys {
				nodeOf[k.(string)] = n.Addr()
			}
		}
		perNode := map[string]int{}
		sessNode := map[string]string{}
		for _, sid := range sids {
			home := nodeOf[b1.sessKey(sid)]
			for _, k := range []string{b1.sessKey(sid), b1.streamKey(sid), b1.memberKey(sid)} {
				if nodeOf[k] != home || home == "" {
					t.Fatalf("key %s is on node %q, the session hash on %q", k, nodeOf[k], home)
				}
			}
			perNode[home]++
			sessNode[sid] = home
		}
		if len(perNode) != len(cl.Nodes) {
			t.Fatalf("sessions on %d nodes, want all %d: %v", len(perNode), len(cl.Nodes), perNode)
		}
		// Each broker's PubSub connection is on one node, yet it got the
		// publications of sessions stored on the others.
		subNode := map[string]int{} // node -> subscribed channels of ours
		crossed := 0
		for _, n := range cl.Nodes {
			v, err := n.Do(ctx, "PUBSUB", "CHANNELS", prefix+"{*")
			if err != nil {
				t.Fatal(err)
			}
			chans, _ := v.([]any)
			subNode[n.Addr()] = len(chans)
			for _, c := range chans {
				if sid, ok := b1.sidOf(c.(string)); ok && sessNode[sid] != n.Addr() {
					crossed++
				}
			}
		}
		if crossed == 0 {
			t.Fatalf("no session was received on a node other than its own: channels per node %v", subNode)
		}
		t.Logf("sessions per node %v; subscribed channels per node %v", perNode, subNode)
	})

	t.Run("SingleSeedAndSeedDown", func(t *testing.T) {
		ctx := testkit.Context(t, 10*time.Second)
		single := "redis://" + cl.Nodes[1].Addr() + "?cluster=true"
		down := "redis://" + deadAddr(t) + "?addr=" + cl.Nodes[2].Addr()
		bs := newURLRedisBroker(t, single, "vtclu:", brokerTestOptions{})
		bd := newURLRedisBroker(t, down, "vtclu:", brokerTestOptions{})
		b := newURLRedisBroker(t, url, "vtclu:", brokerTestOptions{})
		for _, x := range []*RedisBroker{bs, bd} {
			if _, ok := x.client.(*redis.ClusterClient); !ok {
				t.Fatalf("got a %T, not a cluster client", x.client)
			}
		}
		// Sessions on several slots, each published on by one broker and read by the others.
		for i := range 9 {
			sid := btSession(t, ctx, b)
			pubBy := []*RedisBroker{b, bs, bd}[i%3]
			var recs []*btRecorder
			for _, x := range []*RedisBroker{b, bs, bd} {
				if x != pubBy {
					r, _ := btSubscribe(t, ctx, x, sid)
					recs = append(recs, r)
				}
			}
			btPublish(t, ctx, pubBy, sid, btChord("a", "C", 0))
			btPublish(t, ctx, pubBy, sid, btChord("a", "D", 0))
			for _, r := range recs {
				btCheckOffsets(t, r.wait(t, ctx, 2), 1)
			}
		}
	})
}

// TestRedisBrokerSentinelFailover: a master with one replica behind a
// Sentinel. Two brokers share a session; the master crashes and the sentinel
// promotes the replica; once each broker can write again (it follows the new
// master), the session goes on where it was: same offsets, same state, and
// both brokers' subscribers get every publication once, in order, from before
// and after (their PubSub connections, lost with the master, are re-dialled
// to the new one).
//
// (A SENTINEL FAILOVER of a live master is not used: until Sentinel demotes
// the old master, 10 s or more later, a client that has not yet seen
// +switch-master may still write there, and those writes are lost when it
// resyncs: Sentinel's documented split-brain window, which no client can
// close; min-replicas-to-write on the master narrows it.)
func TestRedisBrokerSentinelFailover(t *testing.T) {
	btNoLeaks(t)
	ctx := testkit.Context(t, 25*time.Second)
	setup := time.Now()
	master := startTestRedis(t, "--repl-diskless-sync-delay", "0") // the default waits 5s for more replicas
	replica := startTestRedis(t, "--replicaof", "127.0.0.1", strconv.Itoa(master.Port))
	testkit.Eventually(ctx, t, "the replica to sync", func() bool {
		v, err := replica.Do(ctx, "INFO", "replication")
		s, _ := v.(string)
		return err == nil && strings.Contains(s, "master_link_status:up")
	})
	sentinel := redistest.NewSentinel(t, "mymaster", master.Server)
	// A replica the sentinel has not yet heard INFO from is no candidate
	// (NOGOODSLAVE), and a failed failover is retried only after
	// failover-timeout (3 minutes): wait until it is one.
	testkit.Eventually(ctx, t, "the sentinel to see the replica as a candidate", func() bool {
		v, err := sentinel.Do(ctx, "SENTINEL", "replicas", "mymaster")
		rs, _ := v.([]any)
		if err != nil || len(rs) != 1 {
			return false
		}
		kv := map[string]string{}
		fields, _ := rs[0].([]any)
		for i := 0; i+1 < len(fields); i += 2 {
			k, _ := fields[i].(string)
			kv[k], _ = fields[i+1].(string)
		}
		refresh, err := strconv.Atoi(kv["info-refresh"])
		return kv["flags"] == "slave" && kv["master-link-status"] == "ok" && err == nil && refresh < 5000
	})
	t.Logf("master, replica and sentinel ready after %v", time.Since(setup))
	url := sentinel.SentinelURL("mymaster")
	b1 := newURLRedisBroker(t, url, "vtfo:", brokerTestOptions{})
	b2 := newURLRedisBroker(t, url, "vtfo:", brokerTestOptions{})
	sid := btSession(t, ctx, b1)
	r1, _ := btSubscribe(t, ctx, b1, sid)
	r2, _ := btSubscribe(t, ctx, b2, sid)
	const n = 5
	for range n {
		btPublish(t, ctx, b1, sid, btChord("a", "C", 0))
	}
	r1.wait(t, ctx, n)
	r2.wait(t, ctx, n)
	// Wait for the replica to hold everything, so that the failover loses nothing.
	testkit.Eventually(ctx, t, "the replica to catch up", func() bool {
		v, err := replica.Do(ctx, "HGET", b1.sessKey(sid), "off")
		return err == nil && v == strconv.Itoa(n)
	})

	// The master crashes; the sentinel notices (down-after-milliseconds 1000)
	// and promotes the replica.
	start := time.Now()
	master.kill(t)
	testkit.Eventually(ctx, t, "the sentinel to report the replica as master", func() bool {
		v, err := sentinel.Do(ctx, "SENTINEL", "get-master-addr-by-name", "mymaster")
		a, _ := v.([]any)
		return err == nil && len(a) == 2 && a[1] == strconv.Itoa(replica.Port)
	})
	switched := time.Since(start)
	for i, b := range []*RedisBroker{b1, b2} {
		// Ready (like the broker's own probe, every 250ms while down) clears
		// the broker's outage state; Publish fails fast until then. With the
		// old master dead, a PING can only reach the new one.
		testkit.Eventually(ctx, t, fmt.Sprintf("broker %d to reach the new master", i+1), func() bool {
			return b.Ready(ctx) == nil
		})
	}
	t.Logf("sentinel switched master %v after the crash; both brokers writing after %v", switched, time.Since(start))
	if st, err := b2.State(ctx, sid); err != nil || st.Offset != n || st.Seqs["a"] != n {
		t.Fatalf("state after the failover: %+v, %v", st, err)
	}
	for i := range 2 * n {
		bb := b1
		if i%2 == 1 {
			bb = b2
		}
		if res := btPublish(t, ctx, bb, sid, btChord("a", "D", 0)); res.Off != uint64(n+i+1) || res.Local {
			t.Fatalf("publish %d after the failover: %+v", i, res)
		}
	}
	for i, r := range []*btRecorder{r1, r2} {
		got := r.wait(t, ctx, 3*n)
		btCheckOffsets(t, got, 1)
		if len(r.all()) != 3*n {
			t.Fatalf("broker %d delivered %d, want %d: %s", i+1, len(r.all()), 3*n, btDescribe(r.all()))
		}
	}
	if v, err := replica.Do(ctx, "HGET", b1.sessKey(sid), "off"); err != nil || v != strconv.Itoa(3*n) {
		t.Fatalf("offset on the new master: %v, %v", v, err)
	}
}
