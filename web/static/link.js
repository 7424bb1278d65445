// link.js: VirtuTune Link's browser client, shared by the PC and phone pages.
//
// It mirrors the Go peer client (package peer): one WebSocket to the server
// (the relay and the signaling channel) and, per other member of the session,
// a WebRTC data channel labelled "virtutune" when the browser and the network
// allow one. Application messages (chord_change, practice_start, practice_end)
// carry a per-client seq; a receiver delivers each (from, seq) once and in
// order, whichever path brought it first. See protocol/doc.go for the wire
// protocol, signaling/doc.go for the HTTP contract.
//
// The pure logic (Inbox, Outbox, offers, backoffDelay, closeAction, validChord,
// ...) is exported and touches no DOM, so Node's test runner can import this
// module (web/testdata/*.test.mjs). WebSocket, RTCPeerConnection, fetch and
// window are only used inside Link's methods and the two API helpers.
//
// Works on plain http:// (not a secure context): it uses crypto.getRandomValues
// (available everywhere), never crypto.subtle or a service worker.

// ---------------------------------------------------------------- constants

/** Types that carry a seq and travel over the data channel too. */
export const APP_TYPES = Object.freeze(['chord_change', 'practice_start', 'practice_end']);
/** Label of the one data channel between two members. */
export const DC_LABEL = 'virtutune';
/** Bound of the outbox: application messages kept until the server confirms them. */
export const OUTBOX_MAX = 1024;
/** Bound of the reorder buffer, per sender. */
export const INBOX_MAX_BUFFERED = 256;
/** A gap in a sender's seq older than this is skipped (the server failed to fill it). */
export const INBOX_GAP_MS = 10000;

const WS_PING_MS = 5000; // relay RTT probe and liveness
const WS_STALE_MS = 12000; // nothing received for this long: the socket is dead (sleep, Wi-Fi change)
const WS_WAKE_CHECK_MS = 4000; // after a wake-up event, an answer must come this fast
const DC_PING_MS = 2000; // direct RTT probe
const LATENCY_REPORT_EVERY = 3; // ws ping ticks between latency_report messages
const P2P_CONNECT_MS = 15000; // a data channel must open within this time
const P2P_DISCONNECTED_MS = 6000; // ICE "disconnected" for this long counts as failed
const P2P_NO_OFFER_MS = 8000; // an answerer without an offer this long asks with rtc_restart
const P2P_RETRY = { min: 1000, max: 30000 };
const WS_RETRY = { min: 250, max: 10000 };

// ---------------------------------------------------------------- pure logic

const ID_ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';

/**
 * randomClientId returns n characters of [A-Za-z0-9] drawn with
 * crypto.getRandomValues (rejection sampling, no modulo bias).
 */
export function randomClientId(n = 16, cryptoObj = globalThis.crypto) {
  let out = '';
  const buf = new Uint8Array(n * 2);
  while (out.length < n) {
    cryptoObj.getRandomValues(buf);
    for (const b of buf) {
      if (b < 248 && out.length < n) out += ID_ALPHABET[b % 62];
    }
  }
  return out;
}

/**
 * offers reports whether (selfRole, selfId) makes the WebRTC offer to
 * (peerRole, peerId): the PC offers to a phone; between equal roles the
 * smaller client id offers. Same rule as protocol.Offers.
 */
export function offers(selfRole, selfId, peerRole, peerId) {
  if (selfRole !== peerRole) return selfRole === 'pc';
  return selfId < peerId;
}

/**
 * backoffDelay returns the wait in ms before retry number attempt (0-based):
 * exponential from min up to max, with "equal jitter" (half fixed, half random).
 */
export function backoffDelay(attempt, { min = WS_RETRY.min, max = WS_RETRY.max, random = Math.random } = {}) {
  const cap = Math.min(max, min * 2 ** Math.min(Math.max(attempt, 0), 30));
  return Math.round(cap / 2 + random() * (cap / 2));
}

/**
 * closeAction says what to do after the WebSocket closed with code:
 * 'terminal' (4100-4199: stop and say why), 'now' (1001, 4000, 4001: the
 * server asked for a reconnect) or 'backoff' (anything else).
 */
export function closeAction(code) {
  if (code >= 4100 && code <= 4199) return 'terminal';
  if (code === 1001 || code === 4000 || code === 4001) return 'now';
  return 'backoff';
}

/** closeText explains a terminal close code in words a user can act on. */
export function closeText(code, reason = '') {
  switch (code) {
    case 4100: return 'This page was replaced by a newer connection (the session is open in another tab or device).';
    case 4101: return 'The session has ended or expired. Reload the PC page to start a new one and scan its QR code.';
    case 4102: return 'Your access expired. Reload the PC page and scan the new QR code.';
    case 4103: return 'The session is full: too many devices are connected. Close another tab or device and reload.';
    case 4104: return 'The PC removed this device from the session. Pair it again: scan the QR code on the PC or type its 6-digit code.';
    default: return `The server closed the connection (code ${code}${reason ? ': ' + reason : ''}).`;
  }
}

/** explainP2P turns a direct-path failure reason into words a user can act on. */
export function explainP2P(reason, info = {}) {
  switch (reason) {
    case '': case undefined: case null: return '';
    case 'disabled': return 'Direct connection turned off (?nop2p=1) — using the relay through the server.';
    case 'unsupported': return 'This browser has no WebRTC — using the relay through the server.';
    case 'no-candidates': return 'no local network candidates — the browser may hide its address (mDNS) or WebRTC is blocked; using the relay.';
    case 'no-remote-candidates': return 'the other device sent no network candidates — its browser may block WebRTC; using the relay.';
    case 'ice-failed':
      return 'ICE failed — the devices cannot reach each other directly (different networks, client isolation, firewall)' +
        (info.mdns ? ', or their hidden .local (mDNS) addresses could not be resolved' : '') + '; using the relay.';
    case 'timeout': return 'the direct connection did not come up in time (different networks, client isolation or a firewall?); using the relay.';
    case 'ice-disconnected': return 'the direct connection dropped (network change or sleep) — retrying; using the relay meanwhile.';
    case 'closed': return 'the direct connection closed — retrying; using the relay meanwhile.';
    case 'peer-left': return '';
    case 'peer-no-p2p': return 'the other device has the direct connection turned off or no WebRTC — using the relay through the server.';
    default: return `direct connection unavailable (${reason}); using the relay.`;
  }
}

const CHORD_TOKENS = [
  'maj13', 'maj11', 'maj9', 'maj7', 'add13', 'add11', 'add9', 'add2', 'add4',
  'dim7', 'sus2', 'sus4', 'min', 'maj', 'dim', 'aug', 'sus',
  'm7', 'm9', 'm6', '69', '13', '11',
  'b5', '#5', 'b9', '#9', '#11', 'b13', '-5', '+5',
  'M7', 'M9', 'm', 'M', '+', '5', '6', '7', '9', 'ø', '°',
];

/** validChord mirrors protocol.ValidChord, so the client never spends a seq on a chord the server refuses. */
export function validChord(s) {
  if (typeof s !== 'string' || s.length === 0 || new TextEncoder().encode(s).length > 24) return false;
  const note = (i) => {
    if (i >= s.length || s[i] < 'A' || s[i] > 'G') return -1;
    i++;
    if (i < s.length && (s[i] === '#' || s[i] === 'b')) i++;
    return i;
  };
  let i = note(0);
  if (i < 0) return false;
  for (let n = 0; i < s.length && s[i] !== '/'; n++) {
    if (n === 4) return false;
    let best = i;
    for (const t of CHORD_TOKENS) if (s.startsWith(t, i) && i + t.length > best) best = i + t.length;
    if (best === i) return false;
    i = best;
  }
  if (i === s.length) return true;
  return note(i + 1) === s.length;
}

/** parseTimestamp turns a protocol timestamp (ms number or RFC 3339 string) into ms since the epoch, or NaN. */
export function parseTimestamp(ts) {
  if (typeof ts === 'number') return ts;
  if (typeof ts === 'string') return Date.parse(ts);
  return NaN;
}

/** normalizeCandidate strips the "a=" prefix some stacks put on candidate lines. */
export function normalizeCandidate(c) {
  if (typeof c !== 'string') return '';
  c = c.trim();
  return c.startsWith('a=') ? c.slice(2) : c;
}

/** candidateKind classifies a candidate line: 'host', 'mdns', 'srflx', 'prflx', 'relay' or ''. */
export function candidateKind(line) {
  const m = / typ (\w+)/.exec(line || '');
  if (!m) return '';
  if (m[1] === 'host') {
    const addr = line.split(' ')[4] || '';
    return addr.endsWith('.local') ? 'mdns' : 'host';
  }
  return m[1];
}

/** wsURL builds the WebSocket URL of a session on the page's own host. */
export function wsURL(loc, sessionId, token, clientId, noP2P = false) {
  const scheme = loc.protocol === 'https:' ? 'wss:' : 'ws:';
  const q = new URLSearchParams({ token, client_id: clientId });
  if (noP2P) q.set('p2p', '0'); // tells the others not to offer a data channel
  return `${scheme}//${loc.host}/ws/guitar/${encodeURIComponent(sessionId)}/?${q}`;
}

/**
 * Inbox delivers each sender's application messages once and in seq order.
 * Per sender (from): seq == last+1 is delivered (with whatever it unblocks
 * from the buffer), seq <= last is a duplicate and dropped, seq > last+1 waits
 * in a bounded buffer. Where a sender's count starts comes from the server:
 * each member's last_seq in session_state and in a newcomer's connected
 * notice (baseline). Until then a data channel message waits (an earlier
 * message of the same sender may still be on the relay); a relayed one,
 * which the server orders after that word, sets the baseline itself.
 * Messages without from or seq (the server's own) are delivered as they come.
 */
export class Inbox {
  constructor({ maxBuffered = INBOX_MAX_BUFFERED } = {}) {
    this.maxBuffered = maxBuffered;
    this.last = new Map(); // from -> last delivered seq
    this.buf = new Map(); // from -> Map(seq -> {msg, t})
    this.gaps = 0; // gaps skipped (buffer overflow or expiry)
    this.paths = new WeakMap(); // buffered msg -> the path that brought it
  }

  /** pathOf tells which path brought a message that was held back. */
  pathOf(msg, dflt) { return this.paths.get(msg) || dflt; }

  /** baseline sets where an unknown sender's count stands and returns what that releases. */
  baseline(from, last) {
    if (!from || !Number.isInteger(last) || last < 0 || this.last.has(from)) return [];
    this.last.set(from, last);
    return this._drain(from);
  }

  /** lastSeq is the highest seq delivered from a sender (0 if none). */
  lastSeq(from) { return this.last.get(from) || 0; }

  /** seen maps each known sender (but exclude) to its last delivered seq: resume's "seen". */
  seen(exclude) {
    const out = {};
    for (const [k, v] of this.last) if (k !== exclude) out[k] = v;
    return out;
  }

  /** push takes one received message and returns the messages to deliver now, in order. */
  push(msg, now = Date.now(), path = 'relay') {
    const from = msg && msg.from;
    const seq = msg && msg.seq;
    if (!from || !Number.isInteger(seq) || seq <= 0) return [msg];
    if (!this.last.has(from)) {
      if (path === 'p2p' && seq > 1) {
        let b = this.buf.get(from);
        if (!b) this.buf.set(from, (b = new Map()));
        if (!b.has(seq)) { b.set(seq, { msg, t: now }); this.paths.set(msg, path); }
        if (b.size > this.maxBuffered) return this.flush(from);
        return [];
      }
      this.last.set(from, seq);
      return [msg, ...this._drain(from)];
    }
    const last = this.last.get(from);
    if (seq <= last) return [];
    if (seq === last + 1) {
      this.last.set(from, seq);
      return [msg, ...this._drain(from)];
    }
    let b = this.buf.get(from);
    if (!b) this.buf.set(from, (b = new Map()));
    if (!b.has(seq)) { b.set(seq, { msg, t: now }); this.paths.set(msg, path); }
    if (b.size > this.maxBuffered) return this.flush(from);
    return [];
  }

  _drain(from) {
    const b = this.buf.get(from);
    const out = [];
    if (!b) return out;
    let last = this.last.get(from);
    for (const s of [...b.keys()]) if (s <= last) b.delete(s);
    while (b.has(last + 1)) {
      out.push(b.get(last + 1).msg);
      b.delete(last + 1);
      last++;
    }
    this.last.set(from, last);
    if (b.size === 0) this.buf.delete(from);
    return out;
  }

  /** flush gives up waiting for a sender's gap: delivers its buffer in order. */
  flush(from) {
    const b = this.buf.get(from);
    if (!b || b.size === 0) return [];
    this.gaps++;
    const seqs = [...b.keys()].sort((a, c) => a - c);
    const out = seqs.map((s) => b.get(s).msg);
    this.last.set(from, seqs[seqs.length - 1]);
    this.buf.delete(from);
    return out;
  }

  /** expire flushes every sender whose oldest buffered message waited longer than maxAge ms. */
  expire(now = Date.now(), maxAge = INBOX_GAP_MS) {
    const out = [];
    for (const [from, b] of [...this.buf]) {
      let oldest = Infinity;
      for (const e of b.values()) oldest = Math.min(oldest, e.t);
      if (now - oldest > maxAge) out.push(...this.flush(from));
    }
    return out;
  }

  /** buffered counts the messages waiting for a gap to fill. */
  buffered() {
    let n = 0;
    for (const b of this.buf.values()) n += b.size;
    return n;
  }

  /** rebase forgets every sender: a fresh snapshot replaced the history. */
  rebase() { this.last.clear(); this.buf.clear(); }
}

/**
 * Outbox keeps the application messages a client sent until the server
 * confirms them (pong's last_seq, the own connection_update's last_seq), so a
 * reconnect can resend what the server never got. Bounded: when full, the
 * oldest message is dropped (and returned by add).
 */
export class Outbox {
  constructor(max = OUTBOX_MAX) { this.max = max; this.items = []; }
  get size() { return this.items.length; }
  add(msg) {
    this.items.push(msg);
    return this.items.length > this.max ? this.items.shift() : null;
  }
  ack(lastSeq) {
    if (!Number.isFinite(lastSeq)) return;
    let i = 0;
    while (i < this.items.length && this.items[i].seq <= lastSeq) i++;
    if (i) this.items.splice(0, i);
  }
  after(lastSeq) { return this.items.filter((m) => m.seq > lastSeq); }
}

// ---------------------------------------------------------------- HTTP API

/** ApiError is a failed API call; message is meant for the user, status is the HTTP status (0: network). */
export class ApiError extends Error {
  constructor(message, status = 0, code = '') {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
  }
}

async function postJSON(url, body, headers = {}) {
  let res;
  try {
    res = await fetch(url, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', ...headers },
      body: JSON.stringify(body || {}),
      cache: 'no-store',
    });
  } catch (e) {
    throw new ApiError('Cannot reach the VirtuTune server — check the network (phone and PC on the same Wi-Fi?) and try again.', 0);
  }
  let data = null;
  try { data = await res.json(); } catch { /* not JSON */ }
  return { res, data: data || {} };
}

/**
 * createSession asks the server for a new session (POST /api/sessions) and
 * resolves to its JSON: session_id, user_id, token, ws_url, pairing_url,
 * pairing_qr (a data: PNG URL), pairing_expires_at, expires_at.
 */
export async function createSession({ apiKey = '', userId } = {}) {
  const headers = apiKey ? { Authorization: 'Bearer ' + apiKey } : {};
  const { res, data } = await postJSON('/api/sessions', userId ? { user_id: userId } : {}, headers);
  if (res.status === 201 || res.ok) return data;
  switch (res.status) {
    case 401: throw new ApiError('This server needs an API key to create sessions.', 401, data.code);
    case 429: throw new ApiError('Too many sessions created — wait a moment and reload.', 429, data.code);
    case 503: throw new ApiError('The server is busy or restarting — reload in a moment.', 503, data.code);
    default: throw new ApiError(`Could not create a session (${data.error || 'HTTP ' + res.status}).`, res.status, data.code);
  }
}

/**
 * pair trades a single-use pairing token for the phone's token (POST
 * /api/pair): {session_id, user_id, role:"phone", token, ws_url, expires_at}.
 * It rejects with an ApiError whose message says what to do.
 */
export async function pair(pairingToken) {
  if (!pairingToken) throw new ApiError('This page needs a pairing link — scan the QR code shown on your PC.', 400);
  const { res, data } = await postJSON('/api/pair', { pairing_token: pairingToken });
  if (res.ok) return data;
  switch (res.status) {
    case 410: throw new ApiError('This pairing link was already used — scan the new QR code on your PC (reload the PC page to get one).', 410, data.code);
    case 401: throw new ApiError('This pairing link has expired — scan the new QR code on your PC', 401, data.code);
    case 404: throw new ApiError('This session no longer exists — reload the PC page and scan its new QR code.', 404, data.code);
    default: throw new ApiError(`Pairing failed (${data.error || 'HTTP ' + res.status}) — scan the QR code on your PC again.`, res.status, data.code);
  }
}

/**
 * newPairing asks for a fresh single-use pairing link of an existing session
 * (POST /api/sessions/{id}/pairing, the PC's token as Bearer) and resolves to
 * {session_id, pairing_url, pairing_qr, pairing_expires_at}. A phone already
 * paired stays paired. It rejects with an ApiError; status 401, 403 or 404
 * means the session is gone (start a new one).
 */
export async function newPairing(sessionId, pcToken) {
  const { res, data } = await postJSON(`/api/sessions/${encodeURIComponent(sessionId)}/pairing`, {},
    { Authorization: 'Bearer ' + pcToken });
  if (res.status === 201 || res.ok) return data;
  switch (res.status) {
    case 401: case 403: case 404:
      throw new ApiError('This session has ended — starting a new one.', res.status, data.code);
    default: throw new ApiError(`Could not make a new QR code (${data.error || 'HTTP ' + res.status}).`, res.status, data.code);
  }
}

// ---------------------------------------------------------------- Link

const noop = () => {};
const now = () => Date.now();
const preciseNow = () => (globalThis.performance && performance.timeOrigin
  ? performance.timeOrigin + performance.now() : Date.now());

/**
 * Link is one member's connection to a session: the WebSocket relay, the
 * data channels to the other members, dedupe, resend and resume.
 *
 *   const link = new Link({sessionId, token, role: 'pc', onChord(ch, meta) {...}});
 *   link.connect();
 *   link.sendChord('Am');
 *
 * Callbacks (constructor options or assigned properties): onChord(chord,
 * {from, path, latencyMs}), onPractice(status, timestamp), onMembers(list),
 * onState(snapshot), onLinkState({ws, path, rttP2P, rttRelay, reason}),
 * onError(message). All are called from the page's event loop.
 */
export class Link {
  constructor(opts = {}) {
    this.sessionId = opts.sessionId;
    this.token = opts.token;
    this.role = opts.role || 'pc';
    this.userId = opts.userId;
    this.clientId = opts.clientId || randomClientId();
    this.iceServers = opts.iceServers || [];
    this.log = opts.log || noop;
    for (const k of ['onChord', 'onPractice', 'onMembers', 'onState', 'onLinkState', 'onError']) {
      this[k] = typeof opts[k] === 'function' ? opts[k] : noop;
    }
    // P2P: off with ?nop2p=1, p2p:false, or without RTCPeerConnection.
    let p2p = opts.p2p !== false;
    this.p2pOff = '';
    const search = (globalThis.location && location.search) || '';
    const hash = (globalThis.location && location.hash) || '';
    if (!p2p || /[?&#]nop2p=1\b/.test(search + '&' + hash)) this.p2pOff = 'disabled';
    else if (typeof globalThis.RTCPeerConnection !== 'function') this.p2pOff = 'unsupported';

    this.inbox = new Inbox();
    this.outbox = new Outbox();
    // Copies of the others' application messages received per path
    // (duplicates included: both paths race), deliveries per path that won,
    // and the last chord that arrived by each path.
    this.counts = { copies: { p2p: 0, relay: 0 }, first: { p2p: 0, relay: 0 }, lastChord: { p2p: '', relay: '' } };
    this.nextSeq = 1;
    this.selfEchoSeq = 0; // highest own practice_update seq applied
    this.highestOff = 0;

    this.ws = null;
    this.wsState = 'closed';
    this.hello = false; // own connection_update received on the current socket
    this.everConnected = false;
    this.attempt = 0;
    this.failedOpens = 0;
    this.reconnectTimer = null;
    this.pingTimer = null;
    this.wakeTimer = null;
    this.ticks = 0;
    this.lastRx = 0;
    this.rttRelay = null;
    this.terminal = '';
    this.closed = false;
    this.reason = '';

    this.members = new Map(); // client_id -> {client_id, user_id, role, since}
    this.peers = new Map(); // client_id -> peer record (WebRTC)
    this.state = { sessionId: this.sessionId, chord: '', chordFrom: '', practice: { status: '', timestamp: null }, offset: 0 };
    this._onWake = this._onWake.bind(this);
  }

  // ------------------------------------------------------------ public API

  /** connect opens the WebSocket (and keeps it open until close()). */
  connect() {
    if (this.closed || this.ws) return;
    if (globalThis.addEventListener) {
      addEventListener('online', this._onWake);
      addEventListener('pageshow', this._onWake);
      addEventListener('focus', this._onWake);
      if (globalThis.document) document.addEventListener('visibilitychange', this._onWake);
    }
    this._open();
  }

  /** close ends the link for good: WebSocket, data channels and timers. */
  close() {
    this.closed = true;
    clearTimeout(this.reconnectTimer);
    clearInterval(this.pingTimer);
    clearTimeout(this.wakeTimer);
    if (globalThis.removeEventListener) {
      removeEventListener('online', this._onWake);
      removeEventListener('pageshow', this._onWake);
      removeEventListener('focus', this._onWake);
      if (globalThis.document) document.removeEventListener('visibilitychange', this._onWake);
    }
    for (const p of [...this.peers.values()]) this._dropPeer(p);
    const ws = this.ws;
    this.ws = null;
    if (ws) try { ws.close(1000, 'bye'); } catch { /* already closed */ }
    this._setWS('closed', '');
  }

  /** sendChord sends chord_change; it returns the seq, or 0 when the chord is invalid or the link is over. */
  sendChord(chord) {
    if (!validChord(chord)) { this.onError(`"${String(chord).slice(0, 24)}" is not a chord name.`); return 0; }
    const seq = this._sendApp('chord_change', { chord });
    if (seq) {
      // Our own chord is the session's current chord too: a later onState
      // (practice start, a member joining) must not show the previous one.
      this.state.chord = chord;
      this.state.chordFrom = this.clientId;
      this._emitState();
    }
    return seq;
  }

  /** practiceStart sends practice_start with Date.now() as its timestamp (applied locally at once). */
  practiceStart() { return this._practice('practice_start', 'started'); }

  /** practiceEnd sends practice_end with Date.now() as its timestamp (applied locally at once). */
  practiceEnd() { return this._practice('practice_end', 'ended'); }

  /** path is 'p2p' while a data channel to some member is open, else 'relay'. */
  get path() {
    for (const p of this.peers.values()) if (p.up) return 'p2p';
    return 'relay';
  }

  /** snapshot is the session state as this client knows it. */
  snapshot() {
    return {
      ...this.state,
      practice: { ...this.state.practice },
      members: this.memberList(),
      self: { clientId: this.clientId, role: this.role, userId: this.userId },
    };
  }

  /** memberList lists the connected members, self first-class with self:true. */
  memberList() {
    return [...this.members.values()].map((m) => {
      const p = this.peers.get(m.client_id);
      return { ...m, self: m.client_id === this.clientId, path: p && p.up ? 'p2p' : 'relay' };
    });
  }

  /**
   * stats counts what arrived: copies of the others' application messages
   * per path (duplicates included), deliveries per path that brought them
   * first, and the last chord that came by each path.
   */
  stats() {
    const c = this.counts;
    return { copies: { ...c.copies }, first: { ...c.first }, lastChord: { ...c.lastChord } };
  }

  /** linkState is what onLinkState reports. */
  linkState() {
    let rttP2P = null;
    let reason = this.reason;
    for (const p of this.peers.values()) {
      if (p.up && p.rtt != null) rttP2P = rttP2P == null ? p.rtt : Math.min(rttP2P, p.rtt);
      if (!p.up && p.reason && !reason) reason = explainP2P(p.reason, { mdns: p.local.mdns > 0 || p.remote.mdns > 0 });
    }
    if (!reason && this.p2pOff) reason = explainP2P(this.p2pOff);
    if (!reason && rttP2P == null) {
      for (const m of this.members.values()) if (m.client_id !== this.clientId && m.no_p2p) reason = explainP2P('peer-no-p2p');
    }
    return { ws: this.wsState, path: this.path, rttP2P, rttRelay: this.rttRelay, reason, p2p: !this.p2pOff };
  }

  // ------------------------------------------------------------ sending

  _practice(type, status) {
    const timestamp = Date.now();
    const seq = this._sendApp(type, { timestamp });
    if (seq) {
      this.state.practice = { status, timestamp };
      this.onPractice(status, timestamp);
      this._emitState();
    }
    return seq;
  }

  _sendApp(type, data) {
    if (this.closed || this.terminal) {
      this.onError(this.terminal || 'The link is closed.');
      return 0;
    }
    const msg = { type, data, from: this.clientId, seq: this.nextSeq++, at: Date.now() };
    const text = JSON.stringify(msg);
    // Both paths race: the WebSocket copy goes whether or not a data channel
    // took one, and the receiver keeps whichever arrives first.
    for (const p of this.peers.values()) {
      if (p.up && p.dc && p.dc.readyState === 'open') {
        try { p.dc.send(text); } catch (e) { this.log('dc send', e); }
      }
    }
    const dropped = this.outbox.add(msg);
    if (dropped) this.log('outbox full: dropped seq', dropped.seq);
    if (this.hello) this._send(msg);
    return msg.seq;
  }

  _send(obj) {
    const ws = this.ws;
    if (!ws || ws.readyState !== 1) return false;
    try { ws.send(JSON.stringify(obj)); return true; } catch { return false; }
  }

  // ------------------------------------------------------------ WebSocket

  _setWS(state, reason) {
    this.wsState = state;
    if (reason !== undefined) this.reason = reason;
    this._emitLink();
  }

  _emitLink() { try { this.onLinkState(this.linkState()); } catch (e) { this.log('onLinkState', e); } }
  _emitState() { try { this.onState(this.snapshot()); } catch (e) { this.log('onState', e); } }
  _emitMembers() { try { this.onMembers(this.memberList()); } catch (e) { this.log('onMembers', e); } }

  _open() {
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    if (this.closed || this.terminal || this.ws) return;
    const WS = globalThis.WebSocket;
    this.hello = false;
    this._setWS('connecting', this.everConnected ? 'Reconnecting…' : '');
    let ws;
    try {
      ws = new WS(wsURL(location, this.sessionId, this.token, this.clientId, !!this.p2pOff));
    } catch (e) {
      this._scheduleReconnect('backoff');
      return;
    }
    this.ws = ws;
    ws.opened = false;
    ws.onopen = () => { if (ws === this.ws) { ws.opened = true; this.lastRx = now(); } };
    ws.onmessage = (ev) => { if (ws === this.ws) this._onWSMessage(ev.data); };
    ws.onerror = noop; // a close event follows
    ws.onclose = (ev) => { if (ws === this.ws) this._onWSClose(ws, ev.code, ev.reason); };
  }

  _onWSClose(ws, code, reason) {
    this.ws = null;
    this.hello = false;
    clearInterval(this.pingTimer);
    this.pingTimer = null;
    if (this.closed) return;
    const action = closeAction(code);
    if (action === 'terminal') {
      this.terminal = closeText(code, reason);
      for (const p of [...this.peers.values()]) this._dropPeer(p);
      this._setWS('closed', this.terminal);
      this.onError(this.terminal);
      return;
    }
    if (!ws.opened) {
      this.failedOpens++;
      if (this.failedOpens % 3 === 0) this._probe();
    }
    this._scheduleReconnect(action);
  }

  _scheduleReconnect(action) {
    if (this.closed || this.terminal || this.reconnectTimer) return;
    const delay = action === 'now' ? Math.round(Math.random() * 200) : backoffDelay(this.attempt++, WS_RETRY);
    this._setWS('connecting', `Connection lost — reconnecting in ${Math.max(1, Math.round(delay / 1000))} s…`);
    this.reconnectTimer = setTimeout(() => { this.reconnectTimer = null; this._open(); }, delay);
  }

  // _drop abandons the current socket at once (dead after sleep or a network change).
  _drop(why) {
    const ws = this.ws;
    if (!ws) return;
    this.log('dropping websocket:', why);
    this.ws = null;
    try { ws.close(4001, why); } catch { /* ignore */ }
    this._onWSClose({ opened: true }, 4001, why);
  }

  // _probe asks over plain HTTP why the WebSocket keeps failing: the server
  // refuses a bad token (401) or an unknown session (404) before the upgrade.
  async _probe() {
    if (typeof fetch !== 'function') return;
    try {
      const q = new URLSearchParams({ token: this.token, client_id: this.clientId });
      const res = await fetch(`/ws/guitar/${encodeURIComponent(this.sessionId)}/?${q}`, { cache: 'no-store' });
      let msg = '';
      if (res.status === 401) msg = 'Your access to this session is no longer valid (expired or revoked) — reload the PC page and scan the new QR code.';
      if (res.status === 404) msg = 'This session has ended or does not exist — reload the PC page and scan its new QR code.';
      if (msg && !this.closed && !this.hello) {
        this.terminal = msg;
        clearTimeout(this.reconnectTimer);
        this.reconnectTimer = null;
        this._setWS('closed', msg);
        this.onError(msg);
      }
    } catch { /* offline: keep retrying */ }
  }

  _onWake(ev) {
    if (this.closed || this.terminal) return;
    if (ev && ev.type === 'visibilitychange' && globalThis.document && document.visibilityState !== 'visible') return;
    if (!this.ws) {
      this.attempt = 0;
      this._open();
      return;
    }
    if (!this.hello) return;
    // The socket may be dead after sleep without knowing it: ask, and drop it if no answer.
    const before = this.lastRx;
    this._ping();
    clearTimeout(this.wakeTimer);
    this.wakeTimer = setTimeout(() => {
      if (this.ws && this.lastRx === before) this._drop('no answer after wake-up');
    }, WS_WAKE_CHECK_MS);
    for (const p of this.peers.values()) if (p.offerer && !p.pc && p.timer) this._retryNow(p);
  }

  _ping() {
    const ts = preciseNow();
    // Remember the highest seq sent before this ping: if the pong's last_seq
    // is lower, the server processed those messages without taking them
    // (rate limit, its store unreachable) and they are resent.
    if (!this.pingUpto) this.pingUpto = new Map();
    if (this.pingUpto.size > 16) this.pingUpto.clear();
    this.pingUpto.set(ts, this.nextSeq - 1);
    this._send({ type: 'ping', data: { timestamp: ts } });
  }

  _tick() {
    if (!this.ws) return;
    if (now() - this.lastRx > WS_STALE_MS) { this._drop('nothing received for ' + WS_STALE_MS / 1000 + ' s'); return; }
    this._ping();
    for (const m of this.inbox.expire()) this._apply(m, 'relay');
    if (++this.ticks % LATENCY_REPORT_EVERY === 0) this._reportLatency();
  }

  _reportLatency() {
    const st = this.linkState();
    if (st.rttRelay != null) this._send({ type: 'latency_report', data: { path: 'relay', us: Math.min(60e6, st.rttRelay * 500) } });
    if (st.rttP2P != null) this._send({ type: 'latency_report', data: { path: 'p2p', us: Math.min(60e6, st.rttP2P * 500) } });
  }

  _onWSMessage(text) {
    this.lastRx = now();
    let msg;
    try { msg = JSON.parse(text); } catch { return; }
    if (!msg || typeof msg !== 'object' || typeof msg.type !== 'string') return;
    if (Number.isInteger(msg.off) && msg.off > this.highestOff) this.highestOff = msg.off;
    const d = msg.data && typeof msg.data === 'object' ? msg.data : {};
    switch (msg.type) {
      case 'connection_update': this._onConnectionUpdate(d); break;
      case 'session_state': this._onSnapshot(d); break;
      case 'chord_change':
      case 'practice_update':
      case 'practice_start':
      case 'practice_end':
        this._receive(msg, 'relay');
        break;
      case 'pong':
        if (typeof d.timestamp === 'number') this.rttRelay = Math.max(0, preciseNow() - d.timestamp);
        if (Number.isFinite(d.last_seq)) {
          this.outbox.ack(d.last_seq);
          const upto = this.pingUpto && this.pingUpto.get(d.timestamp);
          if (this.pingUpto) this.pingUpto.delete(d.timestamp);
          if (Number.isFinite(upto) && d.last_seq < upto && now() - (this.lastResend || 0) > 1000) {
            this.lastResend = now();
            for (const m of this.outbox.after(d.last_seq)) this._send(m);
          }
        }
        this._emitLink();
        break;
      case 'resumed':
        this.log('resumed', d);
        if (d.recovered === false) this._emitState();
        break;
      case 'error':
        if (d.code === 'invalid_target') { this.log('signal to a member who left:', d.message); break; }
        this.onError(d.message || 'The server reported an error.');
        break;
      case 'rtc_offer': case 'rtc_answer': case 'rtc_candidate': case 'rtc_restart':
        this._onSignal(msg, d);
        break;
      default: break; // forward compatible: unknown types are ignored
    }
  }

  _onConnectionUpdate(d) {
    if (!this.hello && d.status === 'connected' && (!d.client_id || d.client_id === this.clientId || !this.everConnected)) {
      this._onHello(d);
      return;
    }
    if (!d.client_id || d.client_id === this.clientId) return;
    if (d.status === 'connected') {
      for (const m of this.inbox.baseline(d.client_id, d.last_seq)) this._apply(m, this.inbox.pathOf(m, 'relay'));
      const old = this.members.get(d.client_id);
      this.members.set(d.client_id, { client_id: d.client_id, user_id: d.user_id, role: d.role || (old && old.role) || '', since: (old && old.since) || new Date().toISOString(), no_p2p: !!d.no_p2p });
      this._ensurePeer(this.members.get(d.client_id));
    } else if (d.status === 'disconnected') {
      this.members.delete(d.client_id);
      const p = this.peers.get(d.client_id);
      // A data channel that is still open outlives the peer's WebSocket (it may be reconnecting).
      if (p && !p.up) this._dropPeer(p);
    }
    this._emitMembers();
    this._emitState();
    this._emitLink();
  }

  _onHello(d) {
    if (d.client_id && d.client_id !== this.clientId) this.clientId = d.client_id;
    if (d.role) this.role = d.role;
    if (d.user_id != null) this.userId = d.user_id;
    this.hello = true;
    this.attempt = 0;
    this.failedOpens = 0;
    const lastSeq = Number.isFinite(d.last_seq) ? d.last_seq : 0;
    if (lastSeq >= this.nextSeq) this.nextSeq = lastSeq + 1;
    this.outbox.ack(lastSeq);
    const me = this.members.get(this.clientId);
    this.members.set(this.clientId, { client_id: this.clientId, user_id: this.userId, role: this.role, since: (me && me.since) || new Date().toISOString() });
    for (const p of this.peers.values()) if (p.up) this._send({ type: 'p2p_state', data: { peer: p.id, up: true } });
    for (const m of this.outbox.after(lastSeq)) this._send(m);
    if (this.everConnected) {
      this.resuming = true;
      this._send({ type: 'resume', data: { since: this.highestOff, seen: this.inbox.seen(this.clientId) } });
    }
    this.everConnected = true;
    clearInterval(this.pingTimer);
    this.pingTimer = setInterval(() => this._tick(), WS_PING_MS);
    this._ping();
    this._setWS('open', '');
    for (const m of this.members.values()) this._ensurePeer(m);
  }

  _onSnapshot(d) {
    const replace = d.recovered === false || !this.resuming;
    this.resuming = false;
    // A snapshot that replaces history we can no longer get: forget every
    // sender's count; the snapshot's last_seq values start them again.
    if (d.recovered === false) this.inbox.rebase();
    if (Array.isArray(d.members)) {
      const next = new Map();
      for (const m of d.members) {
        if (!m || !m.client_id) continue;
        if (m.client_id !== this.clientId && Number.isInteger(m.last_seq)) {
          for (const r of this.inbox.baseline(m.client_id, m.last_seq)) this._apply(r, this.inbox.pathOf(r, 'relay'));
        }
        const old = this.members.get(m.client_id);
        next.set(m.client_id, { client_id: m.client_id, user_id: m.user_id, role: m.role || '', since: m.since || (old && old.since) || new Date().toISOString(), no_p2p: !!m.no_p2p });
      }
      if (!next.has(this.clientId)) next.set(this.clientId, this.members.get(this.clientId) || { client_id: this.clientId, user_id: this.userId, role: this.role, since: new Date().toISOString() });
      this.members = next;
      for (const p of [...this.peers.values()]) if (!next.has(p.id) && !p.up) this._dropPeer(p);
    }
    if (replace) {
      // A first snapshot, or one that replaces history we can no longer get.
      this.state.chord = d.chord || '';
      this.state.chordFrom = d.chord_from || '';
      const pr = d.practice || {};
      this.state.practice = { status: pr.status || '', timestamp: pr.timestamp ?? null };
      if (Number.isInteger(d.offset)) this.highestOff = d.offset;
      this.state.offset = this.highestOff;
    }
    if (d.session_id) this.state.sessionId = d.session_id;
    for (const m of this.members.values()) this._ensurePeer(m);
    this._emitMembers();
    this._emitState();
    this._emitLink();
  }

  // ------------------------------------------------------------ delivery

  _receive(msg, path) {
    if (!APP_TYPES.includes(msg.type) && msg.type !== 'practice_update') return;
    if (msg.from && msg.from === this.clientId) {
      // Our own practice_update coming back: already applied locally; apply again only if new.
      if (Number.isInteger(msg.seq)) {
        if (msg.seq <= this.selfEchoSeq) return;
        this.selfEchoSeq = msg.seq;
      }
      this._apply(msg, path, true);
      return;
    }
    if (path in this.counts.copies) {
      this.counts.copies[path]++;
      if (msg.type === 'chord_change' && msg.data) this.counts.lastChord[path] = String(msg.data.chord);
    }
    for (const m of this.inbox.push(msg, Date.now(), path)) {
      const p = this.inbox.pathOf(m, path);
      if (p in this.counts.first) this.counts.first[p]++;
      this._apply(m, p);
    }
  }

  _apply(msg, path, own = false) {
    const d = msg.data && typeof msg.data === 'object' ? msg.data : {};
    if (Number.isInteger(msg.off)) this.state.offset = Math.max(this.state.offset, msg.off);
    if (msg.type === 'chord_change') {
      if (typeof d.chord !== 'string') return;
      this.state.chord = d.chord;
      this.state.chordFrom = msg.from || '';
      const p = msg.from && this.peers.get(msg.from);
      const rtt = path === 'p2p' ? (p && p.rtt) : this.rttRelay;
      const latencyMs = rtt == null ? null : (path === 'p2p' ? rtt / 2 : rtt);
      try { this.onChord(d.chord, { from: msg.from || '', path, latencyMs, seq: msg.seq, at: msg.at }); } catch (e) { this.log('onChord', e); }
    } else {
      let status = d.status;
      if (msg.type === 'practice_start') status = 'started';
      if (msg.type === 'practice_end') status = 'ended';
      if (status !== 'started' && status !== 'ended') return;
      const ts = d.timestamp ?? null;
      const cur = this.state.practice;
      if (own && cur.status === status && cur.timestamp === ts) return;
      this.state.practice = { status, timestamp: ts };
      try { this.onPractice(status, ts); } catch (e) { this.log('onPractice', e); }
    }
    this._emitState();
  }

  // ------------------------------------------------------------ WebRTC

  _newPeerRecord(id, role, offerer) {
    const p = {
      id, role, offerer, gen: 0, pc: null, dc: null, up: false, rtt: null,
      attempt: 0, timer: null, connectTimer: null, discTimer: null, pingTimer: null,
      remoteSet: false, pending: [], local: {}, remote: {}, reason: '', startedAt: 0,
      lastMid: '0', lastIndex: 0,
    };
    this.peers.set(id, p);
    return p;
  }

  _ensurePeer(m) {
    if (this.p2pOff || !m || !m.client_id || m.client_id === this.clientId || !this.hello) return;
    if (m.no_p2p) return; // it said it cannot take part: no futile offers
    let p = this.peers.get(m.client_id);
    const offerer = offers(this.role, this.clientId, m.role || '', m.client_id);
    if (!p) p = this._newPeerRecord(m.client_id, m.role || '', offerer);
    else if (m.role && p.role !== m.role) { p.role = m.role; p.offerer = offerer; }
    if (p.pc || p.timer) return;
    if (p.offerer) this._startOffer(p);
    else p.timer = setTimeout(() => { p.timer = null; if (!p.pc) this._askRestart(p, 'no-offer'); }, P2P_NO_OFFER_MS);
  }

  _askRestart(p, reason) {
    if (this.peers.get(p.id) !== p || !this.members.has(p.id)) return;
    this._send({ type: 'rtc_restart', to: p.id, data: { reason } });
  }

  _signal(type, p, data) { return this._send({ type, to: p.id, data }); }

  _newPC(p, gen) {
    const pc = new RTCPeerConnection({ iceServers: this.iceServers });
    p.pc = pc;
    p.gen = gen;
    p.remoteSet = false;
    p.pending = [];
    p.local = { total: 0, host: 0, mdns: 0, srflx: 0, relay: 0 };
    p.remote = { total: 0, host: 0, mdns: 0, srflx: 0, relay: 0 };
    p.startedAt = now();
    p.endSent = false;
    pc.onicecandidate = (e) => {
      if (p.pc !== pc) return;
      const c = e.candidate;
      if (c && c.candidate) {
        const k = candidateKind(c.candidate);
        p.local.total++;
        if (k in p.local) p.local[k]++;
        if (c.sdpMid != null) p.lastMid = c.sdpMid;
        if (c.sdpMLineIndex != null) p.lastIndex = c.sdpMLineIndex;
        this._signal('rtc_candidate', p, {
          candidate: c.candidate, sdpMid: c.sdpMid, sdpMLineIndex: c.sdpMLineIndex,
          usernameFragment: c.usernameFragment, generation: gen,
        });
      } else if (!p.endSent) {
        p.endSent = true;
        this._signal('rtc_candidate', p, { candidate: '', sdpMid: p.lastMid, sdpMLineIndex: p.lastIndex, generation: gen });
      }
    };
    pc.oniceconnectionstatechange = () => {
      if (p.pc !== pc) return;
      const s = pc.iceConnectionState;
      if (s === 'failed') this._fail(p, gen, this._failReason(p));
      else if (s === 'disconnected') {
        clearTimeout(p.discTimer);
        p.discTimer = setTimeout(() => {
          if (p.pc === pc && pc.iceConnectionState === 'disconnected') this._fail(p, gen, 'ice-disconnected');
        }, P2P_DISCONNECTED_MS);
      }
    };
    pc.onconnectionstatechange = () => {
      if (p.pc === pc && pc.connectionState === 'failed') this._fail(p, gen, this._failReason(p));
    };
    pc.ondatachannel = (e) => { if (p.pc === pc && e.channel.label === DC_LABEL) this._wireDC(p, e.channel); };
    clearTimeout(p.connectTimer);
    p.connectTimer = setTimeout(() => { if (p.pc === pc && !p.up) this._fail(p, gen, this._failReason(p, 'timeout')); }, P2P_CONNECT_MS);
    return pc;
  }

  _failReason(p, fallback = 'ice-failed') {
    if (p.local.total === 0) return 'no-candidates';
    if (p.remoteSet && p.remote.total === 0 && p.remoteEnded) return 'no-remote-candidates';
    return fallback;
  }

  async _startOffer(p) {
    clearTimeout(p.timer);
    p.timer = null;
    if (!this.hello || this.peers.get(p.id) !== p) return;
    this._closePC(p);
    const gen = p.gen + 1;
    let pc;
    try {
      pc = this._newPC(p, gen);
      this._wireDC(p, pc.createDataChannel(DC_LABEL, { ordered: true }));
      const offer = await pc.createOffer();
      if (p.pc !== pc) return;
      await pc.setLocalDescription(offer);
      if (p.pc !== pc) return;
      this._signal('rtc_offer', p, { sdp: pc.localDescription.sdp, generation: gen });
    } catch (e) {
      this.log('offer failed', e);
      if (pc && p.pc === pc) this._fail(p, gen, 'error');
    }
  }

  async _onSignal(msg, d) {
    const from = msg.from;
    if (this.p2pOff || !from || from === this.clientId) return;
    let p = this.peers.get(from);
    if (!p) {
      const m = this.members.get(from);
      const offerer = m ? offers(this.role, this.clientId, m.role || '', from) : msg.type !== 'rtc_offer';
      p = this._newPeerRecord(from, (m && m.role) || '', offerer);
    }
    const gen = Number.isInteger(d.generation) ? d.generation : 0;
    try {
      switch (msg.type) {
        case 'rtc_offer': {
          if (p.offerer || typeof d.sdp !== 'string') return;
          if (gen < p.gen) return; // an older connection's offer
          clearTimeout(p.timer);
          p.timer = null;
          let pc = p.pc;
          if (!(d.restart && pc && gen === p.gen)) {
            this._closePC(p);
            pc = this._newPC(p, gen);
          }
          await pc.setRemoteDescription({ type: 'offer', sdp: d.sdp });
          if (p.pc !== pc) return;
          p.remoteSet = true;
          await this._flushCandidates(p, pc);
          const answer = await pc.createAnswer();
          if (p.pc !== pc) return;
          await pc.setLocalDescription(answer);
          if (p.pc !== pc) return;
          this._signal('rtc_answer', p, { sdp: pc.localDescription.sdp, generation: gen });
          break;
        }
        case 'rtc_answer': {
          const pc = p.pc;
          if (!p.offerer || !pc || gen !== p.gen || typeof d.sdp !== 'string') return;
          if (pc.signalingState !== 'have-local-offer') return;
          await pc.setRemoteDescription({ type: 'answer', sdp: d.sdp });
          if (p.pc !== pc) return;
          p.remoteSet = true;
          await this._flushCandidates(p, pc);
          break;
        }
        case 'rtc_candidate': {
          if (!p.pc || gen !== p.gen) return; // older generation (or no connection yet)
          const cand = normalizeCandidate(d.candidate);
          if (cand) {
            const k = candidateKind(cand);
            p.remote.total++;
            if (k in p.remote) p.remote[k]++;
          } else p.remoteEnded = true;
          const init = { candidate: cand, sdpMid: d.sdpMid ?? null, sdpMLineIndex: d.sdpMLineIndex ?? null };
          if (init.sdpMid == null && init.sdpMLineIndex == null) init.sdpMLineIndex = 0;
          if (d.usernameFragment) init.usernameFragment = d.usernameFragment;
          if (!p.remoteSet) p.pending.push(init);
          else await this._addCandidate(p.pc, init);
          break;
        }
        case 'rtc_restart': {
          if (!p.offerer) return;
          if (p.timer || (p.pc && !p.up && now() - p.startedAt < 2000)) return; // already on it
          this._retryNow(p);
          break;
        }
        default: break;
      }
    } catch (e) {
      this.log(msg.type, 'failed', e);
      if (p.pc) this._fail(p, p.gen, 'error');
    }
  }

  async _flushCandidates(p, pc) {
    const list = p.pending;
    p.pending = [];
    for (const c of list) if (p.pc === pc) await this._addCandidate(pc, c);
  }

  async _addCandidate(pc, init) {
    try {
      await pc.addIceCandidate(init.candidate ? init : { ...init, candidate: '' });
    } catch (e) {
      // End-of-candidates and mDNS names are not understood by every browser: not fatal.
      this.log('addIceCandidate', e && e.message);
    }
  }

  _wireDC(p, dc) {
    p.dc = dc;
    dc.onopen = () => {
      if (p.dc !== dc) return;
      p.up = true;
      p.attempt = 0;
      p.reason = '';
      clearTimeout(p.connectTimer);
      this._send({ type: 'p2p_state', data: { peer: p.id, up: true } });
      clearInterval(p.pingTimer);
      p.pingTimer = setInterval(() => this._dcSend(p, { type: 'ping', from: this.clientId, data: { timestamp: preciseNow() } }), DC_PING_MS);
      this._dcSend(p, { type: 'ping', from: this.clientId, data: { timestamp: preciseNow() } });
      this._emitLink();
      this._emitMembers();
    };
    dc.onclose = () => { if (p.dc === dc) this._fail(p, p.gen, 'closed'); };
    dc.onerror = (e) => this.log('data channel error', e && e.error && e.error.message);
    dc.onmessage = (e) => { if (p.dc === dc && typeof e.data === 'string') this._onDCMessage(p, e.data); };
  }

  _dcSend(p, obj) {
    if (!p.dc || p.dc.readyState !== 'open') return false;
    try { p.dc.send(JSON.stringify(obj)); return true; } catch { return false; }
  }

  _onDCMessage(p, text) {
    let msg;
    try { msg = JSON.parse(text); } catch { return; }
    if (!msg || typeof msg !== 'object') return;
    if (msg.from && msg.from !== p.id) return; // a peer speaks only for itself
    msg.from = p.id;
    const d = msg.data && typeof msg.data === 'object' ? msg.data : {};
    if (msg.type === 'ping') this._dcSend(p, { type: 'pong', from: this.clientId, data: { timestamp: d.timestamp } });
    else if (msg.type === 'pong') {
      if (typeof d.timestamp === 'number') {
        p.rtt = Math.max(0, preciseNow() - d.timestamp);
        this._emitLink();
      }
    } else if (APP_TYPES.includes(msg.type)) {
      if (msg.type === 'chord_change' && !validChord(d.chord)) return;
      this._receive(msg, 'p2p');
    }
  }

  // _fail ends the current attempt of a pair and schedules the next one.
  _fail(p, gen, reason) {
    if (p.gen !== gen || (!p.pc && !p.dc)) return;
    const wasUp = p.up;
    const mdns = p.local.mdns > 0 || p.remote.mdns > 0;
    this._closePC(p);
    p.reason = reason;
    this.log('p2p down:', p.id, reason, wasUp ? '(was up)' : '');
    this._send({ type: 'p2p_state', data: { peer: p.id, up: false, last_seq: this.inbox.lastSeq(p.id), reason } });
    if (this.peers.get(p.id) === p && this.members.has(p.id) && !this.closed && !this.terminal) {
      const delay = backoffDelay(p.attempt++, P2P_RETRY);
      clearTimeout(p.timer);
      p.timer = setTimeout(() => {
        p.timer = null;
        if (p.offerer) this._startOffer(p);
        else this._askRestart(p, reason);
      }, delay);
    } else if (!this.members.has(p.id)) {
      this._dropPeer(p);
    }
    this.reason = '';
    const st = this.linkState();
    if (!st.reason) st.reason = explainP2P(reason, { mdns });
    try { this.onLinkState(st); } catch (e) { this.log('onLinkState', e); }
    this._emitMembers();
  }

  _retryNow(p) {
    clearTimeout(p.timer);
    p.timer = null;
    if (p.offerer) this._startOffer(p);
    else this._askRestart(p, 'retry');
  }

  // _closePC closes a pair's connection without letting its handlers react.
  _closePC(p) {
    const { pc, dc } = p;
    p.pc = null;
    p.dc = null;
    p.up = false;
    clearInterval(p.pingTimer);
    clearTimeout(p.connectTimer);
    clearTimeout(p.discTimer);
    p.rtt = null;
    if (dc) try { dc.close(); } catch { /* ignore */ }
    if (pc) try { pc.close(); } catch { /* ignore */ }
  }

  _dropPeer(p) {
    clearTimeout(p.timer);
    p.timer = null;
    this._closePC(p);
    if (this.peers.get(p.id) === p) this.peers.delete(p.id);
  }
}
