// link.js: VirtuTune Link's browser client, shared by the PC and phone pages.
//
// It mirrors the Go peer client (package peer): one WebSocket to the server
// (the relay and the signaling channel) and, per other member of the session,
// a WebRTC data channel labelled "virtutune" when the browser and the network
// allow one. Application messages (chord_change, practice_start, practice_end)
// carry a per-client seq and go over both paths at once: the paths race, and a
// receiver delivers each (from, seq) once and in order, whichever path brought
// it first. See protocol/doc.go for the wire protocol and the delivery rules,
// signaling/doc.go for the HTTP contract.
//
// The pure logic (delivery.js's Inbox, Outbox, link state machine, heartbeat
// verdict and backoff; offers, closeAction, validChord, ...) is exported and
// touches no DOM, so Node's test runner can import this module
// (web/testdata/*.test.mjs), and the shared vectors of
// protocol/testdata/delivery.json keep it in agreement with the Go client.
// WebSocket, RTCPeerConnection, fetch and window are only used inside Link's
// methods and the API helpers.
//
// Works on plain http:// (not a secure context): it uses crypto.getRandomValues
// (available everywhere), never crypto.subtle or a service worker.

import {
  Inbox, Outbox, Counter, backoffDelay, heartbeatVerdict, nextLinkState, linkP2P, wire, gapOf,
  HEARTBEAT_MS, HEARTBEAT_IDLE_MS, IDLE_AFTER_MS, WS_RETRY, P2P_RETRY_KNOWN, P2P_RETRY_NEW, MAX_SEEN,
} from './delivery.js';
import { Liveness, probeInterval, PROBE_MS } from './liveness.js';

export { Liveness, probeInterval, PROBE_MS, PROBE_BUDGET, ANSWER_GAP_MS, MAX_OUTSTANDING } from './liveness.js';
export {
  Inbox, Outbox, backoffDelay, heartbeatVerdict, nextLinkState, linkP2P, LINK_STATES, LINK_EVENTS,
  REORDER_WINDOW, OUTBOX_MAX, HEARTBEAT_MS,
} from './delivery.js';

// ---------------------------------------------------------------- constants

/** Types that carry a seq and travel over the data channel too. */
export const APP_TYPES = Object.freeze(['chord_change', 'practice_start', 'practice_end']);
/** Label of the one data channel between two members. */
export const DC_LABEL = 'virtutune';
/**
 * How the data channel carries messages, as the Go client's (see
 * peer/link.go): unordered, so a lost packet never holds back the ones after
 * it (the Inbox orders), and reliable, so SCTP resends it at once (a fast
 * retransmit, the heartbeat's traffic making the duplicate
 * acknowledgements). The relay carries a copy of everything meanwhile, and
 * what a peer lacks after a channel died is resent over the new one from
 * the Outbox (its heartbeat says what it has).
 */
export const DC_INIT = Object.freeze({ ordered: false });

const WS_PING_MS = 5000; // relay RTT probe and liveness
const WS_STALE_MS = 12000; // nothing received for this long: the socket is dead (sleep, Wi-Fi change)
const WS_WAKE_CHECK_MS = 4000; // after a wake-up event, an answer must come this fast
const LATENCY_REPORT_EVERY = 3; // ws ping ticks between latency_report messages
const P2P_CONNECT_MS = 4000; // an attempt's data channel must open within this time (as the Go client's)
const P2P_NO_OFFER_MS = 8000; // an answerer without an offer this long asks (again) with rtc_restart
const RESTART_AFTER_MS = 500; // a link down this long gets a fresh attempt beside the silent channel
const MAX_BUFFERED = 64 * 1024; // a channel holding more unsent is stalled: the relay carries the chord
const SAMPLES = 16; // recent measurements a median is taken of
const PROBE_TICK_MS = PROBE_MS / 2; // how often the probes due are looked at (liveness.js)

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
    case 4100: return 'This page was replaced by a newer connection (the session is open in another tab or device): use that one, or reload this page to play here.';
    case 4101: return 'The session has ended or expired. Reload the PC page to start a new one and scan its QR code.';
    case 4102: return 'Your access expired. Reload the PC page and scan the new QR code.';
    case 4103: return 'The session is full: too many devices are connected. Close another tab or device and reload.';
    case 4104: return 'The PC removed this device from the session. Pair it again: scan the QR code on the PC or type its 6-digit code.';
    default: return `The server closed the connection (code ${code}${reason ? ': ' + reason : ''}): reload the page to connect again.`;
  }
}

/**
 * explainError turns the data of the server's error message ({code,
 * message}: a message it refused) into words a user can act on. What it
 * refused for a moment is resent by the link by itself (see the pong's
 * last_seq).
 */
export function explainError(d = {}) {
  switch (d.code) {
    case 'rate_limited': return 'Too many messages at once: the server held some back, and they are sent again by themselves (tap a little slower).';
    case 'unavailable': return 'The server could not pass a message on just now: it is sent again by itself.';
    default: return `The server refused a message (${d.message || d.code || 'no reason given'}): reload the page if this keeps happening.`;
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
    case 'silent': return 'the direct connection went silent (Wi-Fi trouble, a firewall, or the other device asleep) — chords go through the server meanwhile.';
    case 'late-heartbeat': return '';
    case 'connecting': return 'connecting directly…';
    case 'no-peer': return '';
    case 'relay-ended': return '';
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

/**
 * wsURL builds the WebSocket URL of a session on the page's own host. The
 * token is not in it (see wsProtocols): a URL ends up in proxies' logs.
 * client_id goes only once the server gave one (it binds the id to the
 * token and refuses any other).
 */
export function wsURL(loc, sessionId, clientId, noP2P = false) {
  const scheme = loc.protocol === 'https:' ? 'wss:' : 'ws:';
  const q = new URLSearchParams();
  if (clientId) q.set('client_id', clientId);
  if (noP2P) q.set('p2p', '0'); // tells the others not to offer a data channel
  const qs = q.toString();
  return `${scheme}//${loc.host}/ws/guitar/${encodeURIComponent(sessionId)}/${qs ? '?' + qs : ''}`;
}

/**
 * wsProtocols carries the token on the WebSocket (a browser cannot set
 * Authorization there): the server answers with 'virtutune.v1' and reads the
 * token from the second subprotocol, never echoing it.
 */
export function wsProtocols(token) {
  return ['virtutune.v1', 'virtutune.token.' + token];
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
    case 401: throw new ApiError('This server needs an API key to create sessions: open VirtuTune Link from the VirtuTune application instead.', 401, data.code);
    case 429: throw new ApiError('Too many sessions created — wait a moment and reload.', 429, data.code);
    case 503: throw new ApiError('The server is busy or restarting — reload in a moment.', 503, data.code);
    default: throw new ApiError(`Could not create a session (${data.error || 'HTTP ' + res.status}): reload in a moment.`, res.status, data.code);
  }
}

// ---------------------------------------------------------------- Link

const noop = () => {};
const now = () => Date.now();
const preciseNow = () => (globalThis.performance && performance.timeOrigin
  ? performance.timeOrigin + performance.now() : Date.now());

/** Samples keeps the last few measurements; median smooths them (null if none). */
export class Samples {
  constructor(n = SAMPLES) { this.n = n; this.v = []; }
  add(x) { if (Number.isFinite(x)) { this.v.push(x); if (this.v.length > this.n) this.v.shift(); } }
  median() {
    if (!this.v.length) return null;
    const c = [...this.v].sort((a, b) => a - b);
    return c[Math.floor(c.length / 2)];
  }
}

/**
 * Offsets estimates a peer's clock offset (its clock minus ours, ms) from
 * ping/pong exchanges: the one with the shortest round trip among the recent.
 */
export class Offsets {
  constructor(n = SAMPLES) { this.n = n; this.v = []; }
  add(rtt, off) { this.v.push([rtt, off]); if (this.v.length > this.n) this.v.shift(); }
  get() {
    if (!this.v.length) return null;
    let best = this.v[0];
    for (const x of this.v) if (x[0] < best[0]) best = x;
    return best[1];
  }
}

/**
 * Link is one member's connection to a session: the WebSocket relay, the
 * data channels to the other members, dedupe, resend and resume.
 *
 *   const link = new Link({sessionId, token, role: 'pc', onChord(ch, meta) {...}});
 *   link.connect();
 *   link.sendChord('Am');
 *
 * Callbacks (constructor options or assigned properties): onChord(chord,
 * {from, path, latencyMs, measured, seq, at}), onPractice(status, timestamp),
 * onMembers(list), onState(snapshot), onLinkState(linkState()),
 * onError(message). All are called from the page's event loop.
 * onLinkState is called whenever the WebSocket's state, the path or why, a
 * link's state, or a latency median may have changed (a new round trip or
 * one-way sample), so a page that shows it is never behind.
 *
 * Each data channel link is in one state at a time (idle, connecting, up,
 * suspect, down, backoff, closed; delivery.js's nextLinkState is the one
 * rule that moves it): a heartbeat every 100 ms over the channel (every
 * second in an idle session) makes it suspect after two silent intervals and
 * down after four; a down link gets a fresh attempt beside it after 0.5 s
 * and comes back by itself if the peer is heard again.
 */
export class Link {
  constructor(opts = {}) {
    this.sessionId = opts.sessionId;
    this.token = opts.token;
    this.role = opts.role || 'pc';
    this.userId = opts.userId;
    // The server binds the client id to the token and says it in the first
    // connection_update (adopted in _onHello); until then it is unknown.
    this.clientId = opts.clientId || '';
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
    // the last chord that arrived by each path, and data channel messages
    // refused (no seq, another sender's from, an invalid chord).
    this.counts = { copies: { p2p: 0, relay: 0 }, first: { p2p: 0, relay: 0 }, lastChord: { p2p: '', relay: '' }, refused: 0 };
    this.count = new Counter(); // numbers the application messages
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
    this.hbTimer = null;
    this.lastHb = 0;
    this.ticks = 0;
    this.lastRx = 0;
    this.wsRtt = new Samples();
    this.chordLat = { p2p: new Samples(), relay: new Samples() };
    this.terminal = ''; // why the server ended the relay for good
    this.relayGone = false;
    this.closed = false;
    this.reason = '';
    this.lastApp = now();
    this.hbIdle = false;
    // generations of our offers: unique across this page's links
    this.genNext = 1 + Math.floor(Math.random() * 0xffff);

    // The probe over the relay (liveness.js): per other member, whether its
    // client runs, while no data channel can tell; probeRoles limits it to
    // the members whose state the page shows (the phone: the PC).
    this.live = new Map(); // client_id -> Liveness
    this.probeRoles = Array.isArray(opts.probeRoles) ? opts.probeRoles : null;
    this.probed = 0;
    this.probeTimer = null;
    this.liveSig = '';
    this.members = new Map(); // client_id -> {client_id, user_id, role, since, no_p2p}
    this.peers = new Map(); // client_id -> data channel link record
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
    if (!this.hbTimer) this.hbTimer = setTimeout(() => this._hb(), HEARTBEAT_MS);
    if (!this.probeTimer) this.probeTimer = setTimeout(() => this._probeTick(), PROBE_TICK_MS);
  }

  /** close ends the link for good: WebSocket, data channels and timers. */
  close() {
    this.closed = true;
    clearTimeout(this.reconnectTimer);
    clearInterval(this.pingTimer);
    clearTimeout(this.wakeTimer);
    clearTimeout(this.hbTimer);
    this.hbTimer = null;
    clearTimeout(this.probeTimer);
    this.probeTimer = null;
    if (globalThis.removeEventListener) {
      removeEventListener('online', this._onWake);
      removeEventListener('pageshow', this._onWake);
      removeEventListener('focus', this._onWake);
      if (globalThis.document) document.removeEventListener('visibilitychange', this._onWake);
    }
    for (const p of [...this.peers.values()]) this._closePeer(p, 'closed');
    const ws = this.ws;
    this.ws = null;
    if (ws) try { ws.close(1000, 'bye'); } catch { /* already closed */ }
    this._setWS('closed', '');
  }

  /** sendChord sends chord_change; it returns the seq, or 0 when the chord is invalid or no path is left. */
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

  /** path is 'p2p' while every other member is reached over a channel that is up or suspect, else 'relay'. */
  get path() { return this._path()[0]; }

  /** snapshot is the session state as this client knows it. */
  snapshot() {
    return {
      ...this.state,
      practice: { ...this.state.practice },
      members: this.memberList(),
      self: { clientId: this.clientId, role: this.role, userId: this.userId },
    };
  }

  /** memberList lists the connected members, self first-class with self:true; link is the data channel's state. */
  memberList() {
    return [...this.members.values()].map((m) => {
      const p = this.peers.get(m.client_id);
      return { ...m, self: m.client_id === this.clientId, path: p && linkP2P(p.state) ? 'p2p' : 'relay', link: p ? p.state : '' };
    });
  }

  /**
   * stats counts what arrived: copies of the others' application messages
   * per path (duplicates included), deliveries per path that brought them
   * first, the last chord that came by each path, refused channel messages,
   * and the receive side's counters.
   */
  stats() {
    const c = this.counts;
    return {
      copies: { ...c.copies }, first: { ...c.first }, lastChord: { ...c.lastChord }, refused: c.refused,
      duplicates: this.inbox.dropped, overrun: this.inbox.overrun,
      unconfirmed: this.outbox.unconfirmed().length, outboxDropped: this.outbox.dropped,
    };
  }

  /**
   * linkState is what onLinkState reports (the Go client's Status has the
   * same fields): ws ('connecting', 'open', 'closed'); path ('p2p' or
   * 'relay') and, on the relay, why: reasonCode (a code: 'disabled',
   * 'no-peer', 'peer-no-p2p', 'connecting', 'silent', 'ice-failed', ...) and
   * reason (words for the user); rttP2P and rttRelay (ms, medians of recent
   * round trips: heartbeats over the channel, pings to the server);
   * chordP2P and chordRelay (ms, medians of the measured one-way latencies of
   * what each path delivered first); p2p (WebRTC allowed here); peers (each
   * data channel link: id, role, state, reason, rttMs, generation, since);
   * liveness (each other member: id, role, verdict: whether its client runs
   * as the probe over the relay says while no data channel can tell — ''
   * not probed, 'unknown', 'live', 'late', 'silent'; see liveness.js).
   */
  linkState() {
    const [path, code] = this._path();
    let reason = this.reason;
    if (!reason && path !== 'p2p') {
      const p = code && [...this.peers.values()].find((x) => x.reason === code);
      reason = explainP2P(code, { mdns: !!(p && p.mdns) });
    }
    const rttP2P = this._rttP2P();
    return {
      ws: this.wsState, path, reason, reasonCode: path === 'p2p' ? '' : code,
      rttP2P, rttRelay: this.wsRtt.median(),
      chordP2P: this.chordLat.p2p.median(), chordRelay: this.chordLat.relay.median(),
      p2p: !this.p2pOff,
      peers: [...this.peers.values()].map((p) => ({
        id: p.id, role: p.role, state: p.state, reason: p.reason, rttMs: p.rtt.median(),
        generation: p.cur ? p.cur.gen : (p.next ? p.next.gen : 0), since: p.since,
      })),
      liveness: this._liveness(),
    };
  }

  _liveness() {
    const t = now();
    const iv = probeInterval(this.probed);
    const out = [];
    for (const m of this.members.values()) {
      if (m.client_id === this.clientId) continue;
      const x = this.live.get(m.client_id);
      out.push({ id: m.client_id, role: m.role || '', verdict: x ? x.verdict(t, iv) : '' });
    }
    return out.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }

  _liveOf(id) {
    let x = this.live.get(id);
    if (!x) { x = new Liveness(); this.live.set(id, x); }
    return x;
  }

  // _liveChanged tells the page when a member's verdict changed.
  _liveChanged() {
    const sig = this._liveness().map((l) => l.id + ':' + l.verdict).join(',');
    if (sig === this.liveSig) return;
    this.liveSig = sig;
    this._emitLink();
  }

  // _probeTick probes every member no data channel can tell about (none up
  // to it, or P2P off on either side) while the WebSocket is up, each every
  // probeInterval, and tells the page when a verdict changed.
  _probeTick() {
    this.probeTimer = null;
    if (this.closed) return;
    const t = now();
    for (const id of [...this.live.keys()]) if (!this.members.has(id)) this.live.delete(id);
    const up = this.hello && !!this.ws && this.ws.readyState === 1;
    const due = [];
    for (const m of this.members.values()) {
      if (m.client_id === this.clientId) continue;
      const x = this._liveOf(m.client_id);
      const p = this.peers.get(m.client_id);
      if (p && p.everUp) x.markKnown(); // a client that answers
      if (!up || (p && p.state === 'up') || (this.probeRoles && !this.probeRoles.includes(m.role))) { x.stop(); continue; }
      due.push([m.client_id, x]);
    }
    this.probed = due.length;
    const iv = probeInterval(this.probed);
    for (const [id, x] of due) {
      if (x.due(t, iv - PROBE_TICK_MS / 2)) this._send({ type: 'probe', to: id, data: { n: x.send(t) } });
    }
    this._liveChanged();
    this.probeTimer = setTimeout(() => this._probeTick(), PROBE_TICK_MS);
  }

  // _onProbe answers a member's probe at once (at most once per
  // ANSWER_GAP_MS) and takes its answers to ours.
  _onProbe(msg, d) {
    const from = msg.from;
    if (!from || from === this.clientId || !this.members.has(from)) return;
    const x = this._liveOf(from);
    if (Number.isInteger(d.n) && d.n > 0) {
      const ack = x.asked(d.n, now());
      if (ack) this._send({ type: 'probe', to: from, data: { ack } });
    }
    if (Number.isInteger(d.ack) && d.ack > 0 && x.answer(d.ack)) this._liveChanged();
  }

  _path() {
    if (this.p2pOff) return ['relay', this.p2pOff];
    let n = 0;
    for (const m of [...this.members.values()].sort((a, b) => (a.client_id < b.client_id ? -1 : 1))) {
      if (m.client_id === this.clientId) continue;
      n++;
      const p = this.peers.get(m.client_id);
      if (!p) return ['relay', m.no_p2p ? 'peer-no-p2p' : 'connecting'];
      if (!linkP2P(p.state)) return ['relay', (p.state === 'connecting' && !p.everUp) || !p.reason ? p.state : p.reason];
    }
    return n ? ['p2p', ''] : ['relay', 'no-peer'];
  }

  _rttP2P() {
    for (const id of [...this.peers.keys()].sort()) {
      const p = this.peers.get(id);
      if (linkP2P(p.state)) return p.rtt.median();
    }
    return null;
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

  _openChannels() {
    const out = [];
    for (const p of this.peers.values()) {
      const dc = p.cur && p.cur.dc;
      if (linkP2P(p.state) && dc && dc.readyState === 'open') out.push(dc);
    }
    return out;
  }

  // _sendApp sends an application message over every channel that is up and
  // over the WebSocket, and keeps it in the outbox. After the server ended
  // the relay for good, it still goes over the channels that are open.
  _sendApp(type, data) {
    const dcs = this._openChannels();
    if (this.closed || (this.relayGone && dcs.length === 0)) {
      this.onError(this.terminal || 'The link is closed.');
      return 0;
    }
    const { seq, gap } = this.count.next();
    const msg = { type, data, from: this.clientId, seq, at: preciseNow() };
    if (gap) msg.gap = gap; // after seqs of an earlier run a peer delivered (_peerAck)
    const text = JSON.stringify(msg);
    let direct = false;
    for (const dc of dcs) {
      if (dc.bufferedAmount > MAX_BUFFERED) continue; // stalled: the relay's copy carries it
      try { dc.send(text); direct = true; } catch (e) { this.log('dc send', e); }
    }
    const dropped = this.outbox.add(msg.seq, msg, now(), direct);
    if (dropped) this.log('outbox full: dropped seq', dropped);
    if (this.hello) this._send(msg);
    this._active();
    return msg.seq;
  }

  // _active notes an application message: an idle session gets its fast heartbeat back at once.
  _active() {
    const idle = now() - this.lastApp >= IDLE_AFTER_MS;
    this.lastApp = now();
    if (idle && this.hbTimer && !this.closed) {
      clearTimeout(this.hbTimer);
      this.hbTimer = setTimeout(() => this._hb(), 0);
    }
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
    if (this.closed || this.relayGone || this.ws) return;
    const WS = globalThis.WebSocket;
    this.hello = false;
    this._setWS('connecting', this.everConnected ? 'Reconnecting…' : '');
    let ws;
    try {
      ws = new WS(wsURL(location, this.sessionId, this.clientId, !!this.p2pOff), wsProtocols(this.token));
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
      this._relayEnded(closeText(code, reason), code === 4100);
      return;
    }
    if (!ws.opened) {
      this.failedOpens++;
      if (this.failedOpens % 3 === 0) this._probe();
    }
    this._scheduleReconnect(action);
  }

  // _relayEnded: the server ended the relay for good (a terminal close, or
  // it refuses the token or knows no such session). No reconnect; the data
  // channels that are open carry on, both ways, until they end — except
  // after 4100 (replaced by a newer connection of this client id, which
  // takes over): then they close at once.
  _relayEnded(why, replaced) {
    this.terminal = why;
    this.relayGone = true;
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    for (const p of [...this.peers.values()]) {
      if (replaced || !p.cur) this._closePeer(p, 'relay-ended');
      else if (p.next) { this._closeAttempt(p.next); p.next = null; }
    }
    this._setWS('closed', why);
    this.onError(why);
  }

  _scheduleReconnect(action) {
    if (this.closed || this.relayGone || this.reconnectTimer) return;
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
      const res = await fetch(`/ws/guitar/${encodeURIComponent(this.sessionId)}/`,
        { cache: 'no-store', headers: { Authorization: 'Bearer ' + this.token } });
      let msg = '';
      if (res.status === 401) msg = 'Your access to this session is no longer valid (expired or revoked) — reload the PC page and scan the new QR code.';
      if (res.status === 404) msg = 'This session has ended or does not exist — reload the PC page and scan its new QR code.';
      if (msg && !this.closed && !this.hello && !this.relayGone) this._relayEnded(msg, false);
    } catch { /* offline: keep retrying */ }
  }

  _onWake(ev) {
    if (this.closed || this.relayGone) return;
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
    for (const p of this.peers.values()) if (p.state === 'backoff') p.retryAt = 0; // retry at the next heartbeat
  }

  _ping() {
    const ts = preciseNow();
    // Remember the highest seq sent before this ping: if the pong's last_seq
    // is lower, the server processed those messages without taking them
    // (rate limit, its store unreachable) and they are resent.
    if (!this.pingUpto) this.pingUpto = new Map();
    if (this.pingUpto.size > 16) this.pingUpto.clear();
    this.pingUpto.set(ts, this.count.sent);
    this._send({ type: 'ping', data: { timestamp: ts } });
  }

  _tick() {
    if (!this.ws) return;
    if (now() - this.lastRx > WS_STALE_MS) { this._drop('nothing received for ' + WS_STALE_MS / 1000 + ' s'); return; }
    this._ping();
    if (++this.ticks % LATENCY_REPORT_EVERY === 0) this._reportLatency();
  }

  // _reportLatency sends the server the one-way latency per path: the
  // measured median where there is one, else half the round trip.
  _reportLatency() {
    const st = this.linkState();
    const p2p = st.chordP2P ?? (st.rttP2P == null ? null : st.rttP2P / 2);
    const relay = st.chordRelay ?? (st.rttRelay == null ? null : st.rttRelay / 2);
    if (relay != null) this._send({ type: 'latency_report', data: { path: 'relay', us: Math.min(60e6, relay * 1000) } });
    if (p2p != null) this._send({ type: 'latency_report', data: { path: 'p2p', us: Math.min(60e6, p2p * 1000) } });
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
        if (typeof d.timestamp === 'number') this.wsRtt.add(Math.max(0, preciseNow() - d.timestamp));
        if (Number.isFinite(d.last_seq)) {
          this.outbox.ackServer(d.last_seq);
          const upto = this.pingUpto && this.pingUpto.get(d.timestamp);
          if (this.pingUpto) this.pingUpto.delete(d.timestamp);
          // again at once while resends make progress, else at most once a
          // second (while the server cannot take them, resending at every
          // pong only multiplies the copies it delivers on its own instance)
          const progress = d.last_seq > (this.resendFloor ?? -1);
          if (Number.isFinite(upto) && d.last_seq < upto && (progress || now() - (this.lastResend || 0) >= 1000)) {
            this.lastResend = now();
            this.resendFloor = d.last_seq;
            for (const it of this.outbox.unconfirmed()) this._send(wire(it));
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
        this.log('server error:', d.code, d.message);
        this.onError(explainError(d));
        break;
      case 'rtc_offer': case 'rtc_answer': case 'rtc_candidate': case 'rtc_restart':
        this._onSignal(msg, d);
        break;
      case 'probe':
        this._onProbe(msg, d);
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
      for (const m of this.inbox.baseline(d.client_id, d.last_seq)) this._deliver(m);
      const old = this.members.get(d.client_id);
      this.members.set(d.client_id, { client_id: d.client_id, user_id: d.user_id, role: d.role || (old && old.role) || '', since: (old && old.since) || new Date().toISOString(), no_p2p: !!d.no_p2p });
      const p = this.peers.get(d.client_id);
      if (p && d.no_p2p) this._closePeer(p, 'peer-no-p2p');
      this._ensurePeer(this.members.get(d.client_id));
    } else if (d.status === 'disconnected') {
      // The member left: its link goes at once (the page must not show p2p
      // to a phone that is gone); its count stays (it may come back).
      this.members.delete(d.client_id);
      this.inbox.leave(d.client_id);
      const p = this.peers.get(d.client_id);
      if (p) this._closePeer(p, 'peer-left');
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
    if (!this.everConnected && lastSeq > 0) {
      // Sent before the first hello (so over no path yet) by a page that
      // restarted with the id of an earlier run: numbered again, after its
      // seqs, which the server holds (it would ignore these as resends).
      this.count = new Counter();
      this.count.server(lastSeq);
      for (const it of this.outbox.items) { it.seq = this.count.next().seq; it.data = { ...it.data, seq: it.seq }; }
    }
    this.count.server(lastSeq);
    this.outbox.ackServer(lastSeq);
    const me = this.members.get(this.clientId);
    this.members.set(this.clientId, { client_id: this.clientId, user_id: this.userId, role: this.role, since: (me && me.since) || new Date().toISOString() });
    for (const p of this.peers.values()) if (linkP2P(p.state)) this._send({ type: 'p2p_state', data: { peer: p.id, up: true } });
    for (const it of this.outbox.unconfirmed()) this._send(wire(it));
    if (this.everConnected) {
      this.resuming = true;
      const present = [...this.members.keys()].filter((id) => id !== this.clientId);
      this._send({ type: 'resume', data: { since: this.highestOff, seen: this.inbox.seen(present, MAX_SEEN) } });
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
          for (const r of this.inbox.baseline(m.client_id, m.last_seq)) this._deliver(r);
        }
        const old = this.members.get(m.client_id);
        next.set(m.client_id, { client_id: m.client_id, user_id: m.user_id, role: m.role || '', since: m.since || (old && old.since) || new Date().toISOString(), no_p2p: !!m.no_p2p });
      }
      if (!next.has(this.clientId)) next.set(this.clientId, this.members.get(this.clientId) || { client_id: this.clientId, user_id: this.userId, role: this.role, since: new Date().toISOString() });
      this.members = next;
      for (const p of [...this.peers.values()]) if (!next.has(p.id)) this._closePeer(p, 'peer-left');
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
    this._active();
    for (const m of this.inbox.push(msg, now(), path)) this._deliver(m);
  }

  _deliver({ msg, path }) {
    if (path in this.counts.first) this.counts.first[path]++;
    this._apply(msg, path);
  }

  // _latency is a delivery's one-way latency in ms: from the sender's at and
  // its clock offset measured over the channel (measured), or else an
  // estimate from the round trips (half the channel's, or the relay's).
  _latency(msg, path) {
    const p = msg.from && this.peers.get(msg.from);
    const off = p ? p.offset.get() : null;
    if (off != null && Number.isFinite(msg.at)) {
      const ms = Math.max(0, preciseNow() - (msg.at - off));
      this.chordLat[path === 'p2p' ? 'p2p' : 'relay'].add(ms);
      return { latencyMs: ms, measured: true };
    }
    const rtt = path === 'p2p' ? (p ? p.rtt.median() : null) : this.wsRtt.median();
    return { latencyMs: rtt == null ? null : (path === 'p2p' ? rtt / 2 : rtt), measured: false };
  }

  _apply(msg, path, own = false) {
    const d = msg.data && typeof msg.data === 'object' ? msg.data : {};
    if (Number.isInteger(msg.off)) this.state.offset = Math.max(this.state.offset, msg.off);
    if (msg.type === 'chord_change') {
      if (typeof d.chord !== 'string') return;
      this.state.chord = d.chord;
      this.state.chordFrom = msg.from || '';
      const lat = own ? { latencyMs: null, measured: false } : this._latency(msg, path);
      try { this.onChord(d.chord, { from: msg.from || '', path, ...lat, seq: msg.seq, at: msg.at }); } catch (e) { this.log('onChord', e); }
      if (lat.measured) this._emitLink(); // chordP2P or chordRelay moved
    } else {
      let status = d.status;
      if (msg.type === 'practice_start') status = 'started';
      if (msg.type === 'practice_end') status = 'ended';
      if (status !== 'started' && status !== 'ended') return;
      const ts = d.timestamp ?? null;
      const cur = this.state.practice;
      if (own && cur.status === status && cur.timestamp === ts) return;
      this.state.practice = { status, timestamp: ts };
      // practice changes count in the one-way latencies too (as the Go client's)
      if (!own && this._latency(msg, path).measured) this._emitLink();
      try { this.onPractice(status, ts); } catch (e) { this.log('onPractice', e); }
    }
    this._emitState();
  }

  // ------------------------------------------------------------ WebRTC

  // A link record: the state machine's state, and at most two attempts: cur,
  // whose channel opened (up, suspect or down), and next, one under way.
  _newPeer(id, role, offerer) {
    const p = {
      id, role, offerer, state: 'idle', since: now(), reason: '', cur: null, next: null, making: false,
      retryAt: offerer ? 0 : now() + P2P_NO_OFFER_MS, fails: 0, everUp: false, heard: 0, mdns: false, acked: false,
      pings: new Map(), rtt: new Samples(), offset: new Offsets(), lastGen: 0,
    };
    this.peers.set(id, p);
    return p;
  }

  // _setState applies event to p (through nextLinkState, the one rule) and
  // does what entering the new state means: p2p_state to the server when the
  // direct path comes or goes, the pages told.
  _setState(p, event, reason = '') {
    const to = nextLinkState(p.state, event);
    if (to === null) { this.log('link event ignored:', event, 'in', p.state, p.id); return false; }
    const from = p.state;
    if (to === from) return true;
    p.state = to;
    p.since = now();
    if (linkP2P(to)) p.reason = '';
    else if (reason) p.reason = reason;
    if (linkP2P(to) && !linkP2P(from)) this._send({ type: 'p2p_state', data: { peer: p.id, up: true } });
    if (linkP2P(from) && !linkP2P(to)) {
      this._send({ type: 'p2p_state', data: { peer: p.id, up: false, last_seq: this.inbox.lastSeq(p.id), reason: p.reason } });
      this.log('p2p down:', p.id, p.reason);
    }
    this._emitLink();
    this._emitMembers();
    return true;
  }

  _ensurePeer(m) {
    if (this.p2pOff || this.relayGone || !m || !m.client_id || m.client_id === this.clientId || !this.hello) return;
    if (m.no_p2p) return; // it said it cannot take part: no futile offers
    let p = this.peers.get(m.client_id);
    const offerer = offers(this.role, this.clientId, m.role || '', m.client_id);
    if (!p) p = this._newPeer(m.client_id, m.role || '', offerer);
    else if (m.role && p.role !== m.role) { p.role = m.role; p.offerer = offerer; }
    if (p.offerer && p.state === 'idle' && !p.next && !p.making) this._startOffer(p);
  }

  _closePeer(p, reason) {
    for (const a of [p.cur, p.next]) if (a) this._closeAttempt(a);
    p.cur = null;
    p.next = null;
    if (p.state !== 'closed') this._setState(p, 'close', reason);
    this.outbox.forget(p.id);
    if (this.peers.get(p.id) === p) this.peers.delete(p.id);
    this._emitLink();
  }

  _closeAttempt(a) {
    a.closed = true;
    if (a.dc) try { a.dc.close(); } catch { /* ignore */ }
    if (a.pc) try { a.pc.close(); } catch { /* ignore */ }
  }

  _signal(type, p, data) { return this._send({ type, to: p.id, data }); }

  _attemptOf(p, gen) {
    for (const a of [p.next, p.cur]) if (a && a.gen === gen) return a;
    return null;
  }

  _p2pBackoff(p) { return backoffDelay(p.fails, p.everUp ? P2P_RETRY_KNOWN : P2P_RETRY_NEW); }

  // _newAttempt creates the peer connection of generation gen and wires its events.
  _newAttempt(p, gen) {
    const pc = new RTCPeerConnection({ iceServers: this.iceServers });
    const a = {
      gen, pc, dc: null, remoteSet: false, pending: [], startedAt: now(), closed: false,
      timeout: P2P_CONNECT_MS,
      local: { total: 0, host: 0, mdns: 0, srflx: 0, relay: 0 }, remote: { total: 0, host: 0, mdns: 0, srflx: 0, relay: 0 },
      endSent: false, remoteEnded: false, lastMid: '0', lastIndex: 0,
    };
    const live = () => !a.closed && (p.cur === a || p.next === a);
    pc.onicecandidate = (e) => {
      if (!live()) return;
      const c = e.candidate;
      if (c && c.candidate) {
        const k = candidateKind(c.candidate);
        a.local.total++;
        if (k in a.local) a.local[k]++;
        if (c.sdpMid != null) a.lastMid = c.sdpMid;
        if (c.sdpMLineIndex != null) a.lastIndex = c.sdpMLineIndex;
        this._signal('rtc_candidate', p, {
          candidate: c.candidate, sdpMid: c.sdpMid, sdpMLineIndex: c.sdpMLineIndex,
          usernameFragment: c.usernameFragment, generation: gen,
        });
      } else if (!a.endSent) {
        a.endSent = true;
        this._signal('rtc_candidate', p, { candidate: '', sdpMid: a.lastMid, sdpMLineIndex: a.lastIndex, generation: gen });
      }
    };
    pc.oniceconnectionstatechange = () => {
      if (!live()) return;
      const s = pc.iceConnectionState;
      if (s === 'failed') this._attemptEnded(p, a, this._failReason(a, 'ice-failed'));
      else if (s === 'disconnected' && p.cur === a && linkP2P(p.state)) this._setState(p, 'silent', 'ice-disconnected');
    };
    pc.onconnectionstatechange = () => {
      if (live() && pc.connectionState === 'failed') this._attemptEnded(p, a, this._failReason(a, 'ice-failed'));
    };
    pc.ondatachannel = (e) => { if (live() && e.channel.label === DC_LABEL) this._wireDC(p, a, e.channel); };
    return a;
  }

  _failReason(a, fallback) {
    if (a.local.total === 0) return 'no-candidates';
    if (a.remoteSet && a.remote.total === 0 && a.remoteEnded) return 'no-remote-candidates';
    return fallback;
  }

  async _startOffer(p) {
    if (!this.hello || this.relayGone || this.peers.get(p.id) !== p || p.next || p.making) return;
    p.making = true;
    const gen = this.genNext++;
    let a;
    try {
      a = this._newAttempt(p, gen);
      this._wireDC(p, a, a.pc.createDataChannel(DC_LABEL, { ...DC_INIT }));
      p.next = a;
      this._setState(p, 'attempt');
      const offer = await a.pc.createOffer();
      if (p.next !== a) return;
      await a.pc.setLocalDescription(offer);
      if (p.next !== a) return;
      this._signal('rtc_offer', p, { sdp: a.pc.localDescription.sdp, generation: gen });
    } catch (e) {
      this.log('offer failed', e);
      if (a) this._attemptEnded(p, a, 'error');
      else { p.retryAt = now() + this._p2pBackoff(p); p.fails++; }
    } finally {
      p.making = false;
    }
  }

  async _onSignal(msg, d) {
    const from = msg.from;
    if (this.p2pOff || this.relayGone || !from || from === this.clientId) return;
    let p = this.peers.get(from);
    if (!p) {
      const m = this.members.get(from);
      const offerer = m ? offers(this.role, this.clientId, m.role || '', from) : msg.type !== 'rtc_offer';
      p = this._newPeer(from, (m && m.role) || '', offerer);
    }
    const gen = Number.isInteger(d.generation) ? d.generation : 0;
    let a = null;
    try {
      switch (msg.type) {
        case 'rtc_offer': {
          if (p.offerer || typeof d.sdp !== 'string') return;
          if (d.restart && p.cur && gen === p.cur.gen) a = p.cur; // an ICE restart of the open channel
          else if ((p.cur && gen === p.cur.gen) || (p.next && gen === p.next.gen)) return; // a duplicate
          else {
            if (p.next) this._closeAttempt(p.next);
            a = this._newAttempt(p, gen);
            p.next = a;
            this._setState(p, 'attempt');
          }
          await a.pc.setRemoteDescription({ type: 'offer', sdp: d.sdp });
          if (a.closed) return;
          a.remoteSet = true;
          await this._flushCandidates(a);
          const answer = await a.pc.createAnswer();
          if (a.closed) return;
          await a.pc.setLocalDescription(answer);
          if (a.closed) return;
          this._signal('rtc_answer', p, { sdp: a.pc.localDescription.sdp, generation: gen });
          break;
        }
        case 'rtc_answer': {
          a = this._attemptOf(p, gen);
          if (!p.offerer || !a || typeof d.sdp !== 'string' || a.pc.signalingState !== 'have-local-offer') return;
          await a.pc.setRemoteDescription({ type: 'answer', sdp: d.sdp });
          if (a.closed) return;
          a.remoteSet = true;
          await this._flushCandidates(a);
          break;
        }
        case 'rtc_candidate': {
          a = this._attemptOf(p, gen);
          if (!a) return; // another generation's (or no connection yet)
          const cand = normalizeCandidate(d.candidate);
          if (cand) {
            const k = candidateKind(cand);
            a.remote.total++;
            if (k in a.remote) a.remote[k]++;
            if (k === 'mdns') p.mdns = true;
          } else a.remoteEnded = true;
          const init = { candidate: cand, sdpMid: d.sdpMid ?? null, sdpMLineIndex: d.sdpMLineIndex ?? null };
          if (init.sdpMid == null && init.sdpMLineIndex == null) init.sdpMLineIndex = 0;
          if (d.usernameFragment) init.usernameFragment = d.usernameFragment;
          if (!a.remoteSet) a.pending.push(init);
          else await this._addCandidate(a.pc, init);
          break;
        }
        case 'rtc_restart': {
          // the answering side asks for a new attempt; one under way covers it
          if (p.offerer && !p.next && !p.making) this._startOffer(p);
          break;
        }
        default: break;
      }
    } catch (e) {
      this.log(msg.type, 'failed', e);
      if (a) this._attemptEnded(p, a, 'error');
    }
  }

  async _flushCandidates(a) {
    const list = a.pending;
    a.pending = [];
    for (const c of list) if (!a.closed) await this._addCandidate(a.pc, c);
  }

  async _addCandidate(pc, init) {
    try {
      await pc.addIceCandidate(init.candidate ? init : { ...init, candidate: '' });
    } catch (e) {
      // End-of-candidates and mDNS names are not understood by every browser: not fatal.
      this.log('addIceCandidate', e && e.message);
    }
  }

  _wireDC(p, a, dc) {
    dc.onopen = () => this._channelOpen(p, a, dc);
    dc.onclose = () => this._attemptEnded(p, a, 'closed');
    dc.onerror = (e) => this.log('data channel error', e && e.error && e.error.message);
    dc.onmessage = (e) => { if (typeof e.data === 'string') this._onDCMessage(p, a, e.data); };
  }

  // _channelOpen: attempt a's channel opened: it becomes the link's (the one
  // it replaces is closed) and the link is up.
  _channelOpen(p, a, dc) {
    if (a.closed || this.closed || this.peers.get(p.id) !== p || (p.next !== a && p.cur !== a)) { this._closeAttempt(a); return; }
    if (p.next === a) {
      if (p.cur) this._closeAttempt(p.cur);
      p.cur = a;
      p.next = null;
    }
    a.dc = dc;
    p.heard = now();
    p.fails = 0;
    p.everUp = true;
    p.acked = false;
    p.pings.clear();
    // keep what we send for the peer until its heartbeat says it has it
    if (!this.outbox.tracked(p.id)) this.outbox.track(p.id, 0);
    this._setState(p, 'open');
    this._hbPing(p); // the first heartbeat at once: it carries what we have of the peer
  }

  // _attemptEnded: attempt a's channel closed or its connection failed. If
  // it was the link's channel the link is lost (an attempt under way carries
  // on); if it was the attempt under way, the link retries after backoff.
  _attemptEnded(p, a, reason) {
    if (a.closed) return;
    this._closeAttempt(a);
    if (this.peers.get(p.id) !== p || p.state === 'closed') return;
    if (p.cur === a) {
      p.cur = null;
      this._setState(p, 'lost', reason);
      if (p.next) { this._setState(p, 'attempt'); return; }
    } else if (p.next === a) {
      p.next = null;
      if (p.state === 'connecting') this._setState(p, 'fail', reason);
      else if (!p.cur) return;
    } else return;
    p.retryAt = now() + this._p2pBackoff(p);
    p.fails++;
  }

  _dcSend(dc, obj) {
    if (!dc || dc.readyState !== 'open') return false;
    try { dc.send(typeof obj === 'string' ? obj : JSON.stringify(obj)); return true; } catch { return false; }
  }

  _onDCMessage(p, a, text) {
    let msg;
    try { msg = JSON.parse(text); } catch { return; }
    if (!msg || typeof msg !== 'object') return;
    if (p.cur === a) {
      p.heard = now();
      if (p.state === 'suspect' || p.state === 'down') this._setState(p, 'heard');
    }
    const d = msg.data && typeof msg.data === 'object' ? msg.data : {};
    if (msg.type === 'ping') {
      this._dcSend(a.dc, { type: 'pong', from: this.clientId, at: preciseNow(), data: { timestamp: d.timestamp, last_seq: this.inbox.lastSeq(p.id) } });
      this._peerAck(p, a, d.last_seq);
    } else if (msg.type === 'pong') {
      const sent = p.pings.get(d.timestamp);
      if (sent !== undefined) {
        p.pings.delete(d.timestamp);
        const t = preciseNow();
        const rtt = Math.max(0, t - sent);
        p.rtt.add(rtt);
        if (Number.isFinite(msg.at)) p.offset.add(rtt, msg.at - (sent + rtt / 2));
        this._emitLink();
      }
      this._peerAck(p, a, d.last_seq);
    } else if (APP_TYPES.includes(msg.type)) {
      // from and seq are required on a channel's copy: without them it
      // cannot be told from the relay's, which will bring it
      if (msg.from !== p.id || !Number.isInteger(msg.seq) || msg.seq <= 0 ||
        (msg.gap !== undefined && msg.gap !== 0 && !gapOf(msg)) ||
        (msg.type === 'chord_change' && !validChord(d.chord))) { this.counts.refused++; return; }
      this._receive(msg, 'p2p');
    }
  }

  // _peerAck takes the peer's acknowledgement (the last_seq of its
  // heartbeat: the highest seq it delivered from us, by either path) and
  // resends over the channel what it lacks.
  _peerAck(p, a, last) {
    if (!Number.isFinite(last) || p.cur !== a || !a.dc) return;
    p.acked = true; // from now on the tick resends what it lacks, too
    // Above what this page sent, the peer's word names an earlier run's
    // seqs (a page restarted with the same id) that went over the channel
    // only, which the server's last_seq did not count: the count goes on.
    this.count.peer(last);
    if (!this.outbox.tracked(p.id)) this.outbox.track(p.id, last);
    else this.outbox.ackPeer(p.id, last);
    for (const it of this.outbox.resend(p.id, now())) this._dcSend(a.dc, wire(it));
  }

  _hbPing(p) {
    const dc = p.cur && p.cur.dc;
    if (!dc || dc.readyState !== 'open') return;
    const ts = preciseNow();
    if (p.pings.size > 64) p.pings.clear();
    p.pings.set(ts, ts);
    this._dcSend(dc, { type: 'ping', from: this.clientId, data: { timestamp: ts, last_seq: this.inbox.lastSeq(p.id) } });
  }

  // _hb drives every link's timers from one timer: the heartbeat over each
  // open channel, the verdict on silence (suspect, down), a fresh attempt
  // beside a down channel, attempt timeouts, retries after backoff, and
  // resends a peer lacks. The interval is HEARTBEAT_MS while
  // the session is active, HEARTBEAT_IDLE_MS after IDLE_AFTER_MS without an
  // application message; the verdict uses the interval the timer really
  // kept (a hidden page's timers run at most once a second).
  _hb() {
    this.hbTimer = null;
    if (this.closed) return;
    const t = now();
    const idle = t - this.lastApp >= IDLE_AFTER_MS;
    const interval = idle ? HEARTBEAT_IDLE_MS : HEARTBEAT_MS;
    if (this.hbIdle && !idle) for (const p of this.peers.values()) p.heard = t; // back from the idle rate
    this.hbIdle = idle;
    const kept = this.lastHb ? Math.max(interval, t - this.lastHb) : interval;
    this.lastHb = t;
    for (const p of [...this.peers.values()]) {
      if (p.state === 'closed') continue;
      const dc = p.cur && p.cur.dc;
      if (dc && dc.readyState === 'open') {
        this._hbPing(p);
        const v = heartbeatVerdict(t - p.heard, kept);
        if (v === 'quiet' && p.state === 'up') this._setState(p, 'quiet', 'late-heartbeat');
        else if (v === 'silent' && linkP2P(p.state)) this._setState(p, 'silent', 'silent');
        if (linkP2P(p.state) && p.acked) for (const it of this.outbox.resend(p.id, t)) this._dcSend(dc, wire(it));
      }
      if (p.next && t - p.next.startedAt >= p.next.timeout) this._attemptEnded(p, p.next, this._failReason(p.next, 'timeout'));
      if (this.relayGone || !this.hello || !this.members.has(p.id) || p.next || p.making || t < p.retryAt) continue;
      if (p.state === 'backoff' || p.state === 'idle' || (p.state === 'down' && t - p.since >= RESTART_AFTER_MS)) {
        p.retryAt = t + Math.max(this._p2pBackoff(p), RESTART_AFTER_MS);
        if (p.offerer) this._startOffer(p);
        else {
          this._signal('rtc_restart', p, { reason: p.reason || 'no-offer' });
          if (p.state === 'backoff') this._setState(p, 'ask');
          if (p.state === 'idle') p.retryAt = t + P2P_NO_OFFER_MS; // asked: wait for the offer
        }
      }
    }
    this.hbTimer = setTimeout(() => this._hb(), interval);
  }
}
