package peer

import (
	"slices"
	"sort"
	"time"

	"github.com/virtutune/link/protocol"
)

// Outbox defaults (link.js uses the same).
const (
	// resendAfter: an application message a peer has not acknowledged is
	// sent to it again over the data channel this long after it last went
	// there (the heartbeat, every 100 ms, carries the acknowledgements):
	// longer than SCTP's own retransmission (at most 200 ms), so it resends
	// what a channel that died, or the WebSocket, did not bring.
	resendAfter = 500 * time.Millisecond
	// resendBatch bounds the messages resent to one peer at a time (a 15 s
	// blackout at 10 chords per second is 150).
	resendBatch = 256
)

// outItem is an application message kept until it is confirmed.
type outItem struct {
	seq  uint64
	data []byte
	sent time.Time // when it last went over a data channel (zero: never)
	// gap is set on what unconfirmed and resend return: how many seqs right
	// before seq the destination lacks and will never get (dropped from the
	// full outbox); the message goes out with it (wire).
	gap uint64
}

// wire is the message to send: data, with the item's gap when it has one.
func (it outItem) wire() []byte {
	if it.gap == 0 {
		return it.data
	}
	m, err := protocol.Decode(it.data)
	if err != nil {
		return it.data // (never: data is this client's own encoding)
	}
	m.Gap = it.gap
	return protocol.Encode(m)
}

// outbox keeps the application messages this client sent until the server
// confirmed them (the last_seq of a pong, or of the client's own
// connection_update) and until every peer with a data channel has
// acknowledged them over it (the last_seq of its heartbeat: the highest seq
// it delivered from this client, by either path). It answers what to send
// again: to the server after a reconnect or a pong that shows a gap
// (unconfirmed), to a peer over its channel when the peer's heartbeat shows
// it lacks something (resend). A pure type: no I/O, no clock of its own, not
// safe for concurrent use (Client.mu guards it); link.js's Outbox is the same
// type, and both are tested against protocol/testdata/delivery.json.
//
// Bounded by max messages: when full, add drops the oldest (counted in
// dropped): a chord is state, the newest matters most. A destination (the
// server, a peer) that lacked a dropped message never gets it: the first
// message sent to it after the drop carries a gap (how many seqs before it
// were given up), so that the server's sequence check accepts it and the
// receivers deliver it, without waiting for what never comes, and still
// once each and in order.
type outbox struct {
	max     int
	items   []outItem // in seq order
	server  uint64    // highest seq the server confirmed
	peers   map[string]uint64
	dropped uint64
}

func newOutbox(max int) *outbox {
	return &outbox{max: max, peers: make(map[string]uint64)}
}

// add keeps message seq (data is its encoding). direct says it also went
// over a data channel at now. It returns the seq of a message dropped
// because the outbox was full, or 0.
func (o *outbox) add(seq uint64, data []byte, now time.Time, direct bool) (dropped uint64) {
	if len(o.items) >= o.max {
		dropped = o.items[0].seq
		o.items = slices.Delete(o.items, 0, 1)
		o.dropped++
	}
	it := outItem{seq: seq, data: data}
	if direct {
		it.sent = now
	}
	o.items = append(o.items, it)
	return dropped
}

// ackServer records that the server holds every seq up to last.
func (o *outbox) ackServer(last uint64) {
	if last > o.server {
		o.server = last
		o.trim()
	}
}

// track starts keeping messages for peer until it acknowledges them over its
// data channel (its channel opened); ack is what it acknowledged so far.
func (o *outbox) track(peer string, ack uint64) {
	if a, ok := o.peers[peer]; !ok || ack > a {
		o.peers[peer] = ack
	}
	o.trim()
}

// ackPeer records peer's acknowledgement (the highest seq it delivered from
// this client). A peer not tracked is ignored.
func (o *outbox) ackPeer(peer string, last uint64) {
	if a, ok := o.peers[peer]; ok && last > a {
		o.peers[peer] = last
		o.trim()
	}
}

// peerAck is what peer acknowledged, and whether it is tracked.
func (o *outbox) peerAck(peer string) (uint64, bool) {
	a, ok := o.peers[peer]
	return a, ok
}

// forget stops keeping messages for peer (it left, or its link closed).
func (o *outbox) forget(peer string) {
	if _, ok := o.peers[peer]; ok {
		delete(o.peers, peer)
		o.trim()
	}
}

// trim drops what the server and every tracked peer confirmed.
func (o *outbox) trim() {
	floor := o.server
	for _, a := range o.peers {
		floor = min(floor, a)
	}
	i := sort.Search(len(o.items), func(i int) bool { return o.items[i].seq > floor })
	if i > 0 {
		o.items = append(o.items[:0], o.items[i:]...)
	}
}

// unconfirmed returns, in order, the messages the server has not confirmed,
// the first with the gap the server must be told of when the outbox dropped
// messages it lacked (the server holds every seq up to what it confirmed).
func (o *outbox) unconfirmed() []outItem {
	i := sort.Search(len(o.items), func(i int) bool { return o.items[i].seq > o.server })
	items := o.items[i:]
	prev := o.server
	var out []outItem // a copy, once an item needs a gap
	for j, it := range items {
		if it.seq > prev+1 {
			if out == nil {
				out = slices.Clone(items)
			}
			out[j].gap = it.seq - 1 - prev
		}
		prev = it.seq
	}
	if out == nil {
		return items
	}
	return out
}

// unconfirmedCount is len(unconfirmed()).
func (o *outbox) unconfirmedCount() int {
	i := sort.Search(len(o.items), func(i int) bool { return o.items[i].seq > o.server })
	return len(o.items) - i
}

// resend returns, in order, at most resendBatch messages to send peer again
// over its data channel at now: those after its acknowledgement that last
// went over a channel resendAfter ago or more (or never did), the first
// after the acknowledgement with the gap the peer must be told of when the
// outbox dropped messages it lacked. It marks them sent at now. Nothing for
// a peer that is not tracked.
func (o *outbox) resend(peer string, now time.Time) []outItem {
	a, ok := o.peers[peer]
	if !ok {
		return nil
	}
	var out []outItem
	prev := a
	for i := range o.items {
		it := &o.items[i]
		if it.seq <= a {
			continue
		}
		gap := it.seq - 1 - min(prev, it.seq-1)
		prev = it.seq
		if !it.sent.IsZero() && now.Sub(it.sent) < resendAfter {
			continue
		}
		it.sent = now
		r := *it
		r.gap = gap
		out = append(out, r)
		if len(out) == resendBatch {
			break
		}
	}
	return out
}

// size is the number of messages kept.
func (o *outbox) size() int { return len(o.items) }

// counter numbers this client's application messages. The count belongs
// to the client id, not to one run of the client: it counts on after the
// server's last_seq of the id (server: on every connection) and after what
// a peer's heartbeat says it delivered from the id (peer), so that a client
// restarted with the id of an earlier run never reuses that run's seqs
// (the server would ignore them as resends, the receivers drop them). next
// returns the next seq and its gap: the seqs before it that no message of
// this run carries (skipped to after a peer's word). A pure type, guarded
// by Client.mu; link.js's Counter is the same, and both are tested against
// protocol/testdata/delivery.json.
type counter struct {
	last uint64 // the last seq given out, or skipped to
	sent uint64 // the seq the next message follows: the last sent, or the server's last_seq
}

func (c *counter) next() (seq, gap uint64) {
	c.last++
	gap = c.last - 1 - min(c.sent, c.last-1)
	c.sent = c.last
	return c.last, gap
}

// server takes the last seq the server holds from this client id.
func (c *counter) server(last uint64) {
	c.last, c.sent = max(c.last, last), max(c.sent, last)
}

// peer takes a peer's acknowledgement: the highest seq it delivered from
// this client id, by either path.
func (c *counter) peer(ack uint64) {
	c.last = max(c.last, ack)
}
