// delivery.js: the delivery rules of VirtuTune Link's browser client, as
// pure types (no DOM, no network, no clock of their own): the receiver's
// Inbox (dedupe and order), the sender's Outbox (confirmation and resend),
// the data channel link's state machine, the heartbeat's verdict and the
// backoff. The Go client (package peer) implements the same rules, and both
// are tested against one set of vectors, protocol/testdata/delivery.json;
// protocol/doc.go states them in words. link.js builds on these types and
// re-exports them.

/** The rules' constants (the same as the Go client's; the vectors hold them too). */
export const REORDER_WINDOW = 1024;
export const MAX_DEPARTED = 32;
export const MAX_SEEN = 32;
export const OUTBOX_MAX = 4096;
export const RESEND_AFTER_MS = 500;
export const RESEND_BATCH = 256;
export const HEARTBEAT_MS = 100;
export const HEARTBEAT_IDLE_MS = 1000;
export const IDLE_AFTER_MS = 60000;
export const QUIET_AFTER = 2;
export const SILENT_AFTER = 4;
export const WS_RETRY = Object.freeze({ min: 250, max: 10000 });
export const P2P_RETRY_KNOWN = Object.freeze({ min: 250, max: 1000 });
export const P2P_RETRY_NEW = Object.freeze({ min: 1000, max: 30000 });

/**
 * backoffDelay returns the wait in ms before retry number attempt (0-based):
 * exponential from min up to max, with "equal jitter" (half fixed, half
 * random).
 */
export function backoffDelay(attempt, { min = WS_RETRY.min, max = WS_RETRY.max, random = Math.random } = {}) {
  if (min <= 0) return 0;
  const cap = Math.min(max, min * 2 ** Math.min(Math.max(attempt, 0), 30));
  return Math.round(cap / 2 + random() * (cap / 2));
}

/**
 * heartbeatVerdict says what a silence of silentMs means for a link whose
 * heartbeat interval is intervalMs: 'ok', 'quiet' (suspect) or 'silent' (down).
 */
export function heartbeatVerdict(silentMs, intervalMs) {
  if (silentMs >= SILENT_AFTER * intervalMs) return 'silent';
  if (silentMs >= QUIET_AFTER * intervalMs) return 'quiet';
  return 'ok';
}

/** The states of a data channel link and the events that move it. */
export const LINK_STATES = Object.freeze(['idle', 'connecting', 'up', 'suspect', 'down', 'backoff', 'closed']);
export const LINK_EVENTS = Object.freeze(['attempt', 'open', 'quiet', 'silent', 'heard', 'lost', 'fail', 'ask', 'close']);

/** linkP2P tells whether a link in state carries messages directly (up or suspect). */
export const linkP2P = (state) => state === 'up' || state === 'suspect';

/**
 * nextLinkState returns the state after event in state, or null when the
 * event cannot happen there (the one transition rule; the Go client's
 * LinkState.next is the same):
 *
 *   attempt  idle, backoff, connecting -> connecting; up, suspect, down stay
 *   open     connecting, up, suspect, down -> up
 *   quiet    up -> suspect
 *   silent   up, suspect -> down
 *   heard    up, suspect, down -> up
 *   lost     up, suspect, down -> backoff
 *   fail     connecting -> backoff
 *   ask      backoff, idle -> idle
 *   close    any state but closed -> closed
 */
export function nextLinkState(state, event) {
  const open = state === 'up' || state === 'suspect' || state === 'down';
  switch (event) {
    case 'attempt':
      if (state === 'idle' || state === 'backoff' || state === 'connecting') return 'connecting';
      return open ? state : null;
    case 'open': return state === 'connecting' || open ? 'up' : null;
    case 'quiet': return state === 'up' ? 'suspect' : null;
    case 'silent': return state === 'up' || state === 'suspect' ? 'down' : null;
    case 'heard': return open ? 'up' : null;
    case 'lost': return open ? 'backoff' : null;
    case 'fail': return state === 'connecting' ? 'backoff' : null;
    case 'ask': return state === 'backoff' || state === 'idle' ? 'idle' : null;
    case 'close': return LINK_STATES.includes(state) && state !== 'closed' ? 'closed' : null;
    default: return null;
  }
}

/**
 * gapOf is the gap a message carries (how many of its sender's seqs right
 * before it were given up: dropped from the sender's full outbox), 0 if none
 * or not valid.
 */
export function gapOf(msg) {
  const g = msg && msg.gap;
  return Number.isInteger(g) && g > 0 && g < msg.seq ? g : 0;
}

/** prevSeq is the seq a message follows: seq-1, or seq-1-gap. */
const prevSeq = (msg) => msg.seq - 1 - gapOf(msg);

/**
 * Inbox delivers each sender's application messages once and in seq order,
 * whichever path brings them first. push returns what may be delivered now,
 * as [{msg, path}] in order:
 *
 *   - seq == last+1 is delivered, with whatever held messages follow it;
 *   - seq <= last, or a seq already held, is a duplicate: dropped;
 *   - seq > last+1 is held back, up to window messages per sender; beyond
 *     that the arrival is dropped (overrun): both paths carry every message
 *     and the sender resends what is not acknowledged, so it comes again;
 *   - unless it carries a gap that reaches back to last (seq-1-gap <= last):
 *     its sender gave up the seqs between (dropped from its full outbox),
 *     so what is held of them is delivered, in order, then it. A held
 *     message with such a gap is released alike once last reaches
 *     seq-1-gap.
 *
 * Where a sender's count starts comes from the server: each member's
 * last_seq in session_state and in a newcomer's connected notice
 * (baseline). Until then a data channel message is held back; a relayed
 * one, which the server orders after that word, starts the count itself
 * (both paths race, so it always comes).
 *
 * Nothing is released by a timer: every message of a sender arrives in the
 * end (both paths carry it, the sender resends what is not confirmed, a
 * reconnect resumes), however late — a Redis outage delays relayed copies by
 * many seconds — and skipping a gap would turn that delay into a loss.
 * Messages without from or seq (the server's own) are delivered as they come.
 */
export class Inbox {
  constructor({ window = REORDER_WINDOW } = {}) {
    this.window = window;
    this.senders = new Map(); // from -> {known, last, held: Map(seq -> {msg, path, t}), gaps: held messages with a gap}
    this.dropped = 0;
    this.overrun = 0;
    this.leaves = 0; // senders that left so far (orders them)
    this.departed = 0; // senders kept that left
  }

  _sender(from) {
    let s = this.senders.get(from);
    if (!s) this.senders.set(from, (s = { known: false, last: 0, held: new Map(), gaps: 0, leftAt: 0 }));
    return s;
  }

  _hold(s, msg, path, t) {
    if (s.held.has(msg.seq)) this.dropped++;
    else if (s.held.size >= this.window) this.overrun++;
    else { s.held.set(msg.seq, { msg, path, t }); if (gapOf(msg)) s.gaps++; }
  }

  _unhold(s, q) {
    const p = s.held.get(q);
    s.held.delete(q);
    if (p && gapOf(p.msg)) s.gaps--;
    return p;
  }

  _dropHeldUpTo(s, last) {
    for (const q of [...s.held.keys()]) if (q <= last) { this._unhold(s, q); this.dropped++; }
  }

  // _release appends the held messages that may now be delivered, in order:
  // the one that follows the last delivered, or one whose gap reaches back
  // to it (after what is held below it).
  _release(s, out) {
    for (;;) {
      let q = s.last + 1;
      if (!s.held.has(q)) {
        q = this._jump(s);
        if (!q) return out;
        this._drainBelow(s, q, out);
      }
      const p = this._unhold(s, q);
      s.last = q;
      out.push({ msg: p.msg, path: p.path });
    }
  }

  // _jump is the lowest held seq whose gap reaches back to the last delivered one (0 if none).
  _jump(s) {
    if (!s.gaps) return 0;
    let best = 0;
    for (const [q, p] of s.held) if (gapOf(p.msg) && prevSeq(p.msg) <= s.last && (!best || q < best)) best = q;
    return best;
  }

  // _drainBelow appends, in seq order, the held messages below seq, for a
  // message at seq whose gap reaches back to the last delivered one.
  _drainBelow(s, seq, out) {
    const qs = [...s.held.keys()].filter((q) => q < seq).sort((a, b) => a - b);
    for (const q of qs) {
      const p = this._unhold(s, q);
      s.last = q;
      out.push({ msg: p.msg, path: p.path });
    }
    return out;
  }

  /** push takes one message that arrived at now by path, and returns what to deliver now, in order. */
  push(msg, now, path = 'relay') {
    const from = msg && msg.from;
    const seq = msg && msg.seq;
    if (!from || !Number.isInteger(seq) || seq <= 0) return [{ msg, path }];
    const s = this._sender(from);
    this._back(s);
    if (!s.known) {
      if (path === 'p2p' && seq > 1) { this._hold(s, msg, path, now); return []; }
      s.known = true;
      s.last = seq - 1;
      this._dropHeldUpTo(s, s.last);
    }
    if (seq <= s.last) { this.dropped++; return []; }
    if (seq > s.last + 1 && prevSeq(msg) > s.last) { this._hold(s, msg, path, now); return []; }
    const out = seq > s.last + 1 ? this._drainBelow(s, seq, []) : []; // its gap reaches back to last
    out.push({ msg, path });
    s.last = seq;
    return this._release(s, out);
  }

  /** baseline sets where an unknown sender's count stands and returns what that releases. */
  baseline(from, last) {
    if (!from || !Number.isInteger(last) || last < 0) return [];
    const s = this._sender(from);
    this._back(s);
    if (s.known) return [];
    s.known = true;
    s.last = last;
    this._dropHeldUpTo(s, last);
    return this._release(s, []);
  }

  /**
   * leave notes that a sender left the session. Its count is kept, and what
   * is held of it: a member announced gone (its connection died and did not
   * come back within the server's grace) may come back with the same id and
   * resend what it had not confirmed, and its count must drop what arrived
   * before. At most MAX_DEPARTED senders that left are kept: beyond that the
   * one that left first is forgotten (what it held is dropped).
   */
  leave(from) {
    const s = this.senders.get(from);
    if (!s || s.leftAt) return;
    s.leftAt = ++this.leaves;
    if (++this.departed <= MAX_DEPARTED) return;
    let oldest = null;
    for (const [id, x] of this.senders) if (x.leftAt && (!oldest || x.leftAt < this.senders.get(oldest).leftAt)) oldest = id;
    this.dropped += this.senders.get(oldest).held.size;
    this.senders.delete(oldest);
    this.departed--;
  }

  _back(s) {
    if (s.leftAt) { s.leftAt = 0; this.departed--; }
  }

  /** lastSeq is the highest seq delivered from a sender (0 if none). */
  lastSeq(from) {
    const s = this.senders.get(from);
    return s ? s.last : 0;
  }

  /**
   * seen is resume's seen: for each of present (the other members still in
   * the session) whose count is known and above 0, its last delivered seq;
   * at most max of them, the smallest ids first.
   */
  seen(present, max = MAX_SEEN) {
    const out = {};
    let n = 0;
    for (const id of [...present].sort()) {
      if (n >= max) break;
      const s = this.senders.get(id);
      if (s && s.known && s.last > 0) { out[id] = s.last; n++; }
    }
    return out;
  }

  /** held counts the messages waiting for a gap to fill (or a baseline). */
  held() {
    let n = 0;
    for (const s of this.senders.values()) n += s.held.size;
    return n;
  }

  /** rebase forgets every sender: a fresh snapshot replaced the history. */
  rebase() { this.senders.clear(); this.departed = 0; }
}

/**
 * Outbox keeps the application messages a client sent until the server
 * confirmed them (pong's last_seq, the own connection_update's last_seq) and
 * until every peer with a data channel acknowledged them over it (the
 * last_seq of its heartbeat: the highest seq it delivered from this client,
 * by either path). unconfirmed() is what to send the server again after a
 * reconnect or a pong that shows a gap; resend(peer, now) what to send a
 * peer again over its channel: what it lacks that last went there
 * RESEND_AFTER_MS ago or more (or never), at most RESEND_BATCH. Bounded by
 * max: when full, add drops the oldest and returns its seq (a chord is
 * state: the newest matters most). A destination (the server, a peer) that
 * lacked a dropped message never gets it: the first message sent to it
 * after the drop carries a gap (the item's gap; wire(item) is what to send),
 * so that the server's sequence check accepts it and the receivers deliver
 * it without waiting for what never comes, still once each and in order.
 */
export class Outbox {
  constructor(max = OUTBOX_MAX) {
    this.max = max;
    this.items = []; // {seq, data, sent (ms, or null: never over a channel)}, in seq order
    this.server = 0;
    this.peers = new Map(); // peer -> acknowledged seq
    this.dropped = 0;
  }

  get size() { return this.items.length; }

  /** add keeps message seq (data: what to send again); direct: it also went over a channel at now. */
  add(seq, data, now, direct) {
    let dropped = 0;
    if (this.items.length >= this.max) { dropped = this.items.shift().seq; this.dropped++; }
    this.items.push({ seq, data, sent: direct ? now : null });
    return dropped;
  }

  _trim() {
    let floor = this.server;
    for (const a of this.peers.values()) floor = Math.min(floor, a);
    let i = 0;
    while (i < this.items.length && this.items[i].seq <= floor) i++;
    if (i) this.items.splice(0, i);
  }

  /** ackServer records that the server holds every seq up to last. */
  ackServer(last) {
    if (Number.isFinite(last) && last > this.server) { this.server = last; this._trim(); }
  }

  /** track keeps messages for peer until it acknowledges them (its channel opened); ack: what it has. */
  track(peer, ack) {
    const a = this.peers.get(peer);
    if (a === undefined || ack > a) this.peers.set(peer, ack);
    this._trim();
  }

  /** ackPeer records a tracked peer's acknowledgement (others are ignored). */
  ackPeer(peer, last) {
    const a = this.peers.get(peer);
    if (a !== undefined && Number.isFinite(last) && last > a) { this.peers.set(peer, last); this._trim(); }
  }

  /** tracked tells whether the outbox keeps messages for peer. */
  tracked(peer) { return this.peers.has(peer); }

  /** forget stops keeping messages for peer (it left). */
  forget(peer) {
    if (this.peers.delete(peer)) this._trim();
  }

  /**
   * unconfirmed returns, in order, the messages the server has not
   * confirmed, the first with the gap the server must be told of when the
   * outbox dropped messages it lacked.
   */
  unconfirmed() {
    let prev = this.server;
    const out = [];
    for (const it of this.items) {
      if (it.seq <= this.server) continue;
      out.push(it.seq > prev + 1 ? { ...it, gap: it.seq - 1 - prev } : it);
      prev = it.seq;
    }
    return out;
  }

  /**
   * resend returns (and marks sent at now) what to send peer again over its
   * channel, the first after its acknowledgement with the gap it must be
   * told of when the outbox dropped messages it lacked.
   */
  resend(peer, now) {
    const a = this.peers.get(peer);
    if (a === undefined) return [];
    const out = [];
    let prev = a;
    for (const it of this.items) {
      if (it.seq <= a) continue;
      const gap = it.seq - 1 - prev;
      prev = it.seq;
      if (it.sent !== null && now - it.sent < RESEND_AFTER_MS) continue;
      it.sent = now;
      out.push(gap > 0 ? { ...it, gap } : it);
      if (out.length === RESEND_BATCH) break;
    }
    return out;
  }
}

/** wire is what to send of an outbox item: its message, with the item's gap when it has one. */
export function wire(it) {
  return it.gap ? { ...it.data, gap: it.gap } : it.data;
}

/**
 * Counter numbers a client's application messages. The count belongs to
 * the client id, not to one page load: it counts on after the server's
 * last_seq of the id (server(), on every hello) and after what a peer's
 * heartbeat says it delivered from the id (peer()), so that a page
 * restarted with the id of an earlier run never reuses that run's seqs
 * (the server would ignore them as resends, the receivers drop them).
 * next() returns {seq, gap}: gap counts the seqs before it that no message
 * of this run carries (skipped to after a peer's word). The Go client's
 * counter is the same.
 */
export class Counter {
  constructor() {
    this.last = 0; // the last seq given out, or skipped to
    this.sent = 0; // the seq the next message follows: the last sent, or the server's last_seq
  }

  next() {
    const seq = ++this.last;
    const gap = seq - 1 - Math.min(this.sent, seq - 1);
    this.sent = seq;
    return { seq, gap };
  }

  /** server takes the last seq the server holds from this client id. */
  server(last) {
    if (!Number.isInteger(last) || last < 0) return;
    this.last = Math.max(this.last, last);
    this.sent = Math.max(this.sent, last);
  }

  /** peer takes a peer's acknowledgement: the highest seq it delivered from this client id. */
  peer(ack) {
    if (Number.isInteger(ack) && ack > this.last) this.last = ack;
  }
}
