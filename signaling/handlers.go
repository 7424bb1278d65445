package signaling

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/virtutune/link/protocol"
)

// handle acts on one message from the client.
func (c *client) handle(ctx context.Context, b []byte) {
	m, perr := protocol.Decode(b)
	if perr != nil {
		c.sendError(perr)
		return
	}
	v, perr := protocol.Validate(m)
	if perr != nil {
		c.sendError(perr)
		return
	}
	if m.Type == protocol.TypeChordChange {
		c.mChordIn.Inc()
	} else {
		c.s.metrics.message(m.Type, "in", "ws").Inc()
	}
	if m.From != "" && m.From != c.id {
		c.sendError(protocol.Errorf(protocol.CodeInvalidSequence, "from must be your own client id"))
		return
	}
	switch m.Type {
	case protocol.TypeChordChange:
		c.publishApp(ctx, m, &Publication{Type: protocol.TypeChordChange, Data: protocol.ChordData(v.Chord), Chord: v.Chord, Skip: c.id})
	case protocol.TypePracticeStart, protocol.TypePracticeEnd:
		status := protocol.PracticeStarted
		if m.Type == protocol.TypePracticeEnd {
			status = protocol.PracticeEnded
		}
		ts := timestampOrNow(v.Timestamp)
		data, _ := json.Marshal(protocol.PracticeUpdate{Status: status, Timestamp: ts})
		c.publishApp(ctx, m, &Publication{Type: protocol.TypePracticeUpdate, Data: data,
			Practice: &protocol.Practice{Status: status, Timestamp: ts}})
	case protocol.TypePing:
		ts := timestampOrNow(v.Timestamp)
		last := c.lastSeq.Load()
		c.enqueueMsg(protocol.MustMarshal(protocol.TypePong, protocol.Timestamped{Timestamp: ts, LastSeq: &last}))
	case protocol.TypeRTCOffer, protocol.TypeRTCAnswer, protocol.TypeRTCCandidate, protocol.TypeRTCRestart, protocol.TypeProbe:
		c.signal(ctx, m, v)
	case protocol.TypeP2PState:
		c.p2pState(v.P2P)
	case protocol.TypeResume:
		c.resume(ctx, v.Resume)
	case protocol.TypeLatency:
		// Bounded (0-60 s, protocol.Validate) and rate-limited: one member
		// moves the latency metrics by at most its share of reports.
		if !c.latencyRate.take(time.Now()) {
			c.s.metrics.latencyDropped.Inc()
			return
		}
		c.s.metrics.peerLatency.WithLabelValues(v.Latency.Path).Observe(v.Latency.Micros / 1e6)
	}
}

// timestampOrNow is the client's timestamp, or the server's time when it
// sent none (the original's practice and ping messages may omit it).
func timestampOrNow(ts json.RawMessage) json.RawMessage {
	if ts != nil {
		return ts
	}
	b, _ := json.Marshal(time.Now().UTC().Format(time.RFC3339Nano))
	return b
}

// publishApp publishes an application message with the sender's identity.
func (c *client) publishApp(ctx context.Context, m *protocol.Message, p *Publication) {
	p.From, p.Seq, p.Gap, p.At = c.id, m.Seq, m.Gap, m.At
	res, err := c.publish(ctx, p)
	switch {
	case errors.Is(err, ErrBadSequence):
		c.sendError(protocol.Errorf(protocol.CodeInvalidSequence,
			"seq %d (gap %d) skips ahead: the next expected is %d", m.Seq, m.Gap, c.lastSeq.Load()+1))
	case errors.Is(err, ErrTooManySenders):
		c.sendError(protocol.Errorf(protocol.CodeRateLimited,
			"Message not delivered: this session already counts the messages of too many other devices; try again in a few minutes"))
	case err != nil && res.Local:
		// Delivered on this instance only; the client keeps it and resends.
		c.sendError(protocol.Errorf(protocol.CodeUnavailable, "Delivered on this server only: the session store is unreachable; resend later"))
	case err != nil:
		c.logger().Warn("publish", "err", err)
		c.sendError(protocol.Errorf(protocol.CodeUnavailable, "Message not delivered: the session store is unreachable; resend later"))
	case !res.Duplicate:
		for {
			cur := c.lastSeq.Load()
			if res.Seq <= cur || c.lastSeq.CompareAndSwap(cur, res.Seq) {
				break
			}
		}
	}
}

// signal relays a signaling message (rtc_*, probe) to its one target,
// within the sender's signaling rate.
func (c *client) signal(ctx context.Context, m *protocol.Message, v protocol.Validated) {
	if m.To == c.id {
		c.sendError(protocol.Errorf(protocol.CodeInvalidTarget, "%s cannot be addressed to yourself", m.Type))
		return
	}
	if !c.signalRate.take(time.Now()) {
		c.sendError(protocol.Errorf(protocol.CodeRateLimited, "Too many signaling messages from you: at most %g per second", c.s.cfg.Limits.SignalRate))
		return
	}
	if !c.room.present(ctx, m.To) {
		if m.Type == protocol.TypeProbe {
			return // the asker stops when it learns the member left
		}
		c.sendError(protocol.Errorf(protocol.CodeInvalidTarget, "No member %s in this session", m.To))
		return
	}
	var data any
	switch m.Type {
	case protocol.TypeRTCOffer, protocol.TypeRTCAnswer:
		data = v.Desc
	case protocol.TypeRTCCandidate:
		data = v.Candidate
	case protocol.TypeRTCRestart:
		data = v.Restart
	case protocol.TypeProbe:
		data = v.Probe
	}
	d, _ := json.Marshal(data)
	err := c.s.broker.Send(ctx, c.sid, &Publication{Type: m.Type, Data: d, From: c.id, To: m.To})
	if err != nil && m.Type == protocol.TypeProbe {
		// A probe not passed on is not the sender's error: the answer that
		// does not come says it (and one every 250 ms would flood it).
		return
	}
	if err != nil {
		c.sendError(protocol.Errorf(protocol.CodeUnavailable, "Signaling message not delivered: %s", errText(err)))
	}
}

// p2pState counts a client's report of its data channel from a peer, for
// the metrics (why direct paths fail). Nothing else depends on it: every
// message is relayed whether or not it also went over a data channel, so a
// channel that goes down has nothing to replay.
func (c *client) p2pState(st protocol.P2PState) {
	state := "down"
	if st.Up {
		state = "up"
	}
	c.s.metrics.p2pStates.WithLabelValues(state, reasonLabel(st.Reason)).Inc()
}

// resume replays what a reconnecting client missed: every publication after
// since up to its join snapshot, plus each seen peer's application messages
// after the given seq. Later ones reach it live.
func (c *client) resume(ctx context.Context, r protocol.Resume) {
	h, err := c.s.broker.History(ctx, c.sid, 0)
	if err != nil {
		// The client reconnects with backoff and asks again.
		c.sendError(protocol.Errorf(protocol.CodeUnavailable, "Could not resume: %s", errText(err)))
		c.kill(protocol.CloseReconnect, "resume unavailable, reconnect and resume")
		return
	}
	// No lock is held across a broker call: the room's lock is taken only
	// to read the join offset and, below, to queue what is sent.
	rm := c.room
	rm.mu.Lock()
	upto := c.joinOff
	rm.mu.Unlock()
	complete := h.Complete || r.Since >= upto
	if complete && r.Since < upto {
		// History must reach back to since+1 (or to each seen peer's next seq).
		first := uint64(0)
		if len(h.Pubs) > 0 {
			first = h.Pubs[0].Off
		}
		if first > r.Since+1 {
			complete = false
		}
	}
	if !complete {
		st, err1 := c.s.broker.State(ctx, c.sid)
		ms, err2 := c.s.broker.Members(ctx, c.sid)
		if err := errors.Join(err1, err2); err != nil {
			c.sendError(protocol.Errorf(protocol.CodeUnavailable, "Could not resume: %s", errText(err)))
			c.kill(protocol.CloseReconnect, "resume unavailable, reconnect and resume")
			return
		}
		snap := snapshot(c.sid, st, ms)
		f := false
		snap.Recovered = &f
		rm.mu.Lock()
		c.enqueueMsg(protocol.MustMarshal(protocol.TypeSessionState, snap))
		c.enqueueMsg(protocol.MustMarshal(protocol.TypeResumed, protocol.Resumed{Recovered: false, Offset: upto}))
		rm.mu.Unlock()
		return
	}
	// The replay goes out at the pace the connection drains (the outbox's
	// backlog), after the live frames, so a resume that history can serve
	// completes however long it is; live deliveries meanwhile are never
	// crowded out of the send queue.
	frames := make([][]byte, 0, len(h.Pubs)+1)
	n := 0
	for _, p := range h.Pubs {
		if p.Off > upto || p.To != "" {
			continue
		}
		want := p.Off > r.Since
		if s, ok := r.Seen[p.From]; ok && p.sequenced() {
			want = p.Seq > s
		}
		if !want || p.Skip == c.id {
			continue
		}
		b := p.Wire
		if b == nil {
			b = protocol.Encode(p.Message())
		}
		frames = append(frames, b)
		n++
	}
	frames = append(frames, protocol.Encode(protocol.MustMarshal(protocol.TypeResumed, protocol.Resumed{Recovered: true, Count: n, Offset: upto})))
	if len(frames) > maxReplay || !c.out.pushBacklog(frames) {
		c.sendError(protocol.Errorf(protocol.CodeRateLimited, "A resume is still being sent: wait for its resumed"))
	}
}

func errText(err error) string {
	if errors.Is(err, ErrUnavailable) {
		return "the session store is unreachable"
	}
	if errors.Is(err, ErrSessionNotFound) {
		return "the session has ended"
	}
	return "internal error"
}

// reasonLabel bounds the metric label's values.
func reasonLabel(r string) string {
	switch r {
	case "", "closed", "ice-failed", "no-candidates", "timeout", "disabled", "unsupported", "dtls-failed":
		return r
	}
	return "other"
}
