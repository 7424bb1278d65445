package signaling

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/virtutune/link/protocol"
)

// redisPub is the compact encoding of a Publication in the stream and on
// pub/sub. Off and Seq of a Publish travel in the message header (the Lua
// script assigns them), not in this JSON.
type redisPub struct {
	T  protocol.Type      `json:"t"`
	D  json.RawMessage    `json:"d,omitempty"`
	F  string             `json:"f,omitempty"`
	Q  uint64             `json:"q,omitempty"`
	G  uint64             `json:"g,omitempty"`
	To string             `json:"to,omitempty"`
	At float64            `json:"at,omitempty"`
	C  string             `json:"c,omitempty"`
	P  *protocol.Practice `json:"p,omitempty"`
	S  string             `json:"s,omitempty"`
	I  string             `json:"i,omitempty"`
}

// encodePub encodes p as the redisPub JSON, by hand: the same bytes as
// json.Marshal(redisPub{...}) gives (TestRedisPubCodec), without reflection.
func encodePub(p *Publication) (string, error) {
	b := make([]byte, 0, 96+len(p.Data)+len(p.From)+len(p.Skip)+len(p.Instance)+len(p.Chord))
	b = append(b, `{"t":`...)
	b = protocol.AppendJSONString(b, string(p.Type))
	if len(p.Data) > 0 {
		b = append(b, `,"d":`...)
		b = append(b, p.Data...)
	}
	str := func(key, v string) {
		if v != "" {
			b = append(b, key...)
			b = protocol.AppendJSONString(b, v)
		}
	}
	str(`,"f":`, p.From)
	if p.Seq != 0 {
		b = append(b, `,"q":`...)
		b = strconv.AppendUint(b, p.Seq, 10)
	}
	if p.Gap != 0 {
		b = append(b, `,"g":`...)
		b = strconv.AppendUint(b, p.Gap, 10)
	}
	str(`,"to":`, p.To)
	if p.At != 0 {
		if math.IsInf(p.At, 0) || math.IsNaN(p.At) {
			return "", fmt.Errorf("signaling: encode publication: at %v", p.At)
		}
		b = append(b, `,"at":`...)
		b = appendJSONFloat(b, p.At)
	}
	str(`,"c":`, p.Chord)
	if p.Practice != nil {
		raw, err := json.Marshal(p.Practice)
		if err != nil {
			return "", fmt.Errorf("signaling: encode publication: %w", err)
		}
		b = append(b, `,"p":`...)
		b = append(b, raw...)
	}
	str(`,"s":`, p.Skip)
	str(`,"i":`, p.Instance)
	return string(append(b, '}')), nil
}

// appendJSONFloat formats f as encoding/json does.
func appendJSONFloat(b []byte, f float64) []byte {
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' { // e-09 → e-9, as encoding/json
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b
}

// decodePub decodes a redisPub: the encoding encodePub makes is read in one
// pass; anything else (escapes, a practice, another key order) by
// encoding/json.
func decodePub(raw string) (*Publication, error) {
	if p, ok := scanPub(raw); ok {
		return p, nil
	}
	var r redisPub
	if err := json.Unmarshal([]byte(raw), &r); err != nil {
		return nil, err
	}
	return &Publication{Type: r.T, Data: r.D, From: r.F, Seq: r.Q, Gap: r.G, To: r.To, At: r.At,
		Chord: r.C, Practice: r.P, Skip: r.S, Instance: r.I}, nil
}

// scanPub reads encodePub's own output: its keys in its order, strings
// without escapes; it reports false for anything else.
func scanPub(raw string) (*Publication, bool) {
	s := raw
	key := func(k string) bool {
		if strings.HasPrefix(s, k) {
			s = s[len(k):]
			return true
		}
		return false
	}
	str := func() (string, bool) {
		if len(s) == 0 || s[0] != '"' {
			return "", false
		}
		for i := 1; i < len(s); i++ {
			switch c := s[i]; {
			case c == '"':
				v := s[1:i]
				s = s[i+1:]
				return v, true
			case c == '\\' || c < 0x20:
				return "", false
			}
		}
		return "", false
	}
	num := func() string {
		i := 0
		for i < len(s) && (s[i] >= '0' && s[i] <= '9' || s[i] == '.' || s[i] == 'e' || s[i] == 'E' || s[i] == '-' || s[i] == '+') {
			i++
		}
		v := s[:i]
		s = s[i:]
		return v
	}
	p := &Publication{}
	if !key(`{"t":`) {
		return nil, false
	}
	t, ok := str()
	if !ok {
		return nil, false
	}
	p.Type = internType(protocol.Type(t))
	if key(`,"d":`) {
		// The data's extent: brackets outside strings (it is valid JSON: the
		// publisher's own canonical data).
		depth, in := 0, false
		end := -1
		for i := 0; i < len(s) && end < 0; i++ {
			c := s[i]
			switch {
			case in && c == '\\':
				i++
			case in:
				in = c != '"'
			case c == '"':
				in = true
			case c == '{' || c == '[':
				depth++
			case c == '}' || c == ']':
				if depth--; depth == 0 {
					end = i + 1
				}
			}
		}
		if end < 0 || s[0] != '{' {
			return nil, false
		}
		p.Data = json.RawMessage(s[:end])
		s = s[end:]
	}
	var err error
	if key(`,"f":`) {
		if p.From, ok = str(); !ok {
			return nil, false
		}
	}
	if key(`,"q":`) {
		if p.Seq, err = strconv.ParseUint(num(), 10, 64); err != nil {
			return nil, false
		}
	}
	if key(`,"g":`) {
		if p.Gap, err = strconv.ParseUint(num(), 10, 64); err != nil {
			return nil, false
		}
	}
	if key(`,"to":`) {
		if p.To, ok = str(); !ok {
			return nil, false
		}
	}
	if key(`,"at":`) {
		if p.At, err = strconv.ParseFloat(num(), 64); err != nil {
			return nil, false
		}
	}
	if key(`,"c":`) {
		if p.Chord, ok = str(); !ok {
			return nil, false
		}
	}
	if key(`,"s":`) {
		if p.Skip, ok = str(); !ok {
			return nil, false
		}
	}
	if key(`,"i":`) {
		if p.Instance, ok = str(); !ok {
			return nil, false
		}
	}
	if s != "}" {
		return nil, false
	}
	return p, true
}

// Publish implements Broker in one round trip (see the type's doc for the
// outage rule: PublishResult.Local with an error wrapping ErrUnavailable).
func (b *RedisBroker) Publish(ctx context.Context, sid string, p *Publication) (PublishResult, error) {
	if b.closed.Load() {
		return PublishResult{}, ErrBrokerClosed
	}
	p.Instance = b.cfg.Instance
	payload, err := encodePub(p)
	if err != nil {
		return PublishResult{}, err
	}
	var practice string
	if p.Practice != nil {
		raw, err := json.Marshal(p.Practice)
		if err != nil {
			return PublishResult{}, fmt.Errorf("signaling: encode practice: %w", err)
		}
		practice = string(raw)
	}
	var vals []int64
	if b.down.Load() {
		// Known down: the heartbeat probe notices its return. Do not make
		// every message wait for Redis to fail again.
		err = fmt.Errorf("%w: redis is down", ErrUnavailable)
	} else {
		rctx, cancel := b.opCtx(ctx)
		// (In a pipeline with other sessions' publishes: broker_redis_batch.go.)
		vals, err = b.runPublish(rctx, b.publishCommand(b.group(sid), sid, p, payload, practice))
		cancel()
		if err != nil {
			err = b.fail("publish", err)
		}
	}
	if err != nil {
		if errors.Is(err, ErrUnavailable) {
			p.Off = 0
			if g := b.group(sid); g != nil {
				g.mu.Lock()
				g.deliver(p)
				g.mu.Unlock()
			}
			return PublishResult{Seq: p.Seq, Local: true}, err
		}
		return PublishResult{}, err
	}
	b.markUp()
	switch vals[0] {
	case 1:
		return PublishResult{}, ErrSessionNotFound
	case 2:
		return PublishResult{Seq: uint64(vals[1]), Duplicate: true}, nil
	case 3:
		return PublishResult{Seq: uint64(vals[1])}, ErrBadSequence
	case 4:
		return PublishResult{Seq: uint64(vals[1])}, ErrTooManySenders
	}
	p.Off, p.Seq = uint64(vals[1]), uint64(vals[2])
	// The group now, not the one whose arguments went out: a session whose
	// last local member left and a new one came has a new group.
	if g := b.group(sid); g != nil {
		g.mu.Lock()
		gap := g.offer(p, b.log)
		g.mu.Unlock()
		if gap {
			b.requestRepair(g)
		}
	}
	return PublishResult{Off: p.Off, Seq: p.Seq}, nil
}

// publishKeys is how many keys lua/publish.lua takes.
const publishKeys = 4

// sessionArgs are a session's keys and channel prefix as publishCommand
// passes them, boxed once per session (a redisGroup keeps them).
type sessionArgs struct {
	keys       [publishKeys]any // sess, seqs (the earlier layout's), stream, members
	chanPrefix any
}

func (b *RedisBroker) sessionArgs(sid string) sessionArgs {
	return sessionArgs{
		keys:       [publishKeys]any{b.sessKey(sid), b.seqKey(sid), b.streamKey(sid), b.memberKey(sid)},
		chanPrefix: b.chanPrefix(sid),
	}
}

// publishArgs are the broker's own arguments of every publish, boxed once.
type publishArgs struct {
	sha, maxLen, maxSeq, retention, origin any
}

var emptyArg any = ""

// publishCommand is the whole EVALSHA of lua/publish.lua for p in sid
// (KEYS sess, seqs, stream, members; ARGV seq_from, seq, from, chord,
// practice, payload, max_len, now_ms, channel prefix, max_seq, retention_ms,
// gap, origin). The keys, the channel prefix and the broker's own arguments
// come boxed already (g's when this instance has a group of sid): what is
// boxed per publication is the publication's own.
func (b *RedisBroker) publishCommand(g *redisGroup, sid string, p *Publication, payload, practice string) []any {
	var sa sessionArgs
	if g != nil {
		sa = g.args
	} else {
		sa = b.sessionArgs(sid)
	}
	from := any(p.From)
	seqFrom := emptyArg
	if p.sequenced() {
		seqFrom = from
	}
	c := &b.pubArgs
	args := make([]any, 0, 3+publishKeys+13)
	args = append(args, "evalsha", c.sha, publishKeys)
	args = append(args, sa.keys[:]...)
	return append(args, seqFrom, p.Seq, from, p.Chord, practice, payload, c.maxLen, time.Now().UnixMilli(),
		sa.chanPrefix, c.maxSeq, c.retention, p.Gap, c.origin)
}

// Send implements Broker: this instance's subscribers get p at once, other
// instances over pub/sub, at most once; nothing is stored. While Redis is
// unreachable p reaches local subscribers only and Send returns an error
// wrapping ErrUnavailable.
func (b *RedisBroker) Send(ctx context.Context, sid string, p *Publication) error {
	if b.closed.Load() {
		return ErrBrokerClosed
	}
	p.Instance = b.cfg.Instance
	payload, err := encodePub(p)
	if err != nil {
		return err
	}
	if b.down.Load() {
		err = fmt.Errorf("%w: redis is down", ErrUnavailable)
	} else {
		rctx, cancel := b.opCtx(ctx)
		n, rerr := redisSendScript.Run(rctx, b.client, []string{b.sessKey(sid)},
			b.chanPrefix(sid), "e"+payload, b.cfg.Instance).Int()
		cancel()
		if rerr == nil && n == 0 {
			return ErrSessionNotFound
		}
		err = b.fail("send", rerr)
	}
	if err != nil && !errors.Is(err, ErrUnavailable) {
		return err
	}
	if err == nil {
		b.markUp()
	}
	if g := b.group(sid); g != nil {
		g.mu.Lock()
		g.deliver(p)
		g.mu.Unlock()
	}
	return err
}

// History implements Broker. History is exact to HistorySize messages and
// HistoryTTL even though the stream is trimmed approximately.
func (b *RedisBroker) History(ctx context.Context, sid string, since uint64) (HistoryResult, error) {
	if b.closed.Load() {
		return HistoryResult{}, ErrBrokerClosed
	}
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	pipe := b.client.TxPipeline()
	offCmd := pipe.HMGet(ctx, b.sessKey(sid), "exp", "off")
	rangeCmd := pipe.XRange(ctx, b.streamKey(sid), strconv.FormatUint(since+1, 10), "+")
	if _, err := pipe.Exec(ctx); err != nil {
		return HistoryResult{}, b.fail("history", err)
	}
	vals := offCmd.Val()
	if _, ok := redisInt(vals[0]); !ok {
		return HistoryResult{}, ErrSessionNotFound
	}
	offset, _ := redisInt(vals[1])
	res := HistoryResult{Offset: uint64(offset)}
	var floor uint64 // offsets <= floor are outside the HistorySize window
	if res.Offset > uint64(b.cfg.HistorySize) {
		floor = res.Offset - uint64(b.cfg.HistorySize)
	}
	res.Complete = since >= floor
	oldest := time.Now().Add(-b.cfg.HistoryTTL).UnixMilli()
	want := since + 1
	for _, e := range rangeCmd.Val() {
		p, at, err := redisEntry(e)
		if err != nil {
			b.log.Warn("undecodable history entry", "session", sid, "id", e.ID, "err", err)
			res.Complete = false
			continue
		}
		if p.Off < want {
			continue
		}
		if p.Off > want {
			res.Complete = false // trimmed
		}
		want = p.Off + 1
		if p.Off <= floor {
			continue
		}
		if at < oldest {
			res.Complete = false
			continue
		}
		res.Pubs = append(res.Pubs, p)
	}
	if want <= res.Offset {
		res.Complete = false
	}
	return res, nil
}

// redisEntry decodes a stream entry: the publication and its time (ms).
func redisEntry(e redis.XMessage) (*Publication, int64, error) {
	id, _, _ := strings.Cut(e.ID, "-")
	off, err := strconv.ParseUint(id, 10, 64)
	if err != nil {
		return nil, 0, err
	}
	d, _ := e.Values["d"].(string)
	p, err := decodePub(d)
	if err != nil {
		return nil, 0, err
	}
	p.Off = off
	if q, ok := redisInt(e.Values["q"]); ok {
		p.Seq = uint64(q)
	}
	at, _ := redisInt(e.Values["t"])
	return p, at, nil
}

// State implements Broker.
func (b *RedisBroker) State(ctx context.Context, sid string) (State, error) {
	if b.closed.Load() {
		return State{}, ErrBrokerClosed
	}
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	// One MULTI/EXEC: the senders' seqs (fields q:<id> of the session hash;
	// the earlier layout's seq hash for the senders it does not hold) are
	// read atomically with the offset.
	var stCmd, oldCmd *redis.MapStringStringCmd
	_, err := b.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		stCmd = p.HGetAll(ctx, b.sessKey(sid))
		oldCmd = p.HGetAll(ctx, b.seqKey(sid))
		return nil
	})
	if err != nil {
		return State{}, b.fail("state", err)
	}
	h := stCmd.Val()
	if _, ok := redisInt(h["exp"]); !ok {
		return State{}, ErrSessionNotFound
	}
	var st State
	off, _ := redisInt(h["off"])
	st.Offset = uint64(off)
	st.Chord = h["chord"]
	st.ChordFrom = h["chord_from"]
	st.Seqs = make(map[string]uint64)
	for id, v := range oldCmd.Val() {
		if n, ok := redisSeq(v); ok {
			st.Seqs[id] = n
		}
	}
	for f, v := range h {
		if id, ok := strings.CutPrefix(f, "q:"); ok {
			if n, ok := redisSeq(v); ok {
				st.Seqs[id] = n
			}
		}
	}
	if raw := h["practice"]; raw != "" {
		if err := json.Unmarshal([]byte(raw), &st.Practice); err != nil {
			return State{}, fmt.Errorf("signaling: redis state: practice: %w", err)
		}
	}
	return st, nil
}

// LastSeq implements Broker.
func (b *RedisBroker) LastSeq(ctx context.Context, sid, cid string) (uint64, error) {
	if b.closed.Load() {
		return 0, ErrBrokerClosed
	}
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	pipe := b.client.Pipeline()
	cmd := pipe.HMGet(ctx, b.sessKey(sid), "exp", "q:"+cid)
	oldCmd := pipe.HGet(ctx, b.seqKey(sid), cid)
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return 0, b.fail("last seq", err)
	}
	vals := cmd.Val()
	if len(vals) != 2 || vals[0] == nil {
		return 0, ErrSessionNotFound
	}
	if v, ok := vals[1].(string); ok {
		n, _ := redisSeq(v)
		return n, nil
	}
	n, _ := redisSeq(oldCmd.Val())
	return n, nil
}

// redisSeq reads a sender's seq: a bare seq (the session hash's q:<id>) or
// the earlier layout's "seq:ms".
func redisSeq(v string) (uint64, bool) {
	s, _, _ := strings.Cut(v, ":")
	n, err := strconv.ParseUint(s, 10, 64)
	return n, err == nil
}
