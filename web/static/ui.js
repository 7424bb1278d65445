// ui.js: DOM helpers shared by the PC and phone pages (chord, practice timer,
// link state, errors), and the pure functions that turn the link's status
// (Link.linkState(): the same fields as the Go peer's Status) into what the
// pages say, so that everything shown comes from it (Node tests them,
// web/testdata/ui.test.mjs). Each DOM helper looks elements up by id and does
// nothing when one is missing.
import { diagramSVG } from './chords.js';
import { parseTimestamp, linkP2P } from './link.js';

export const $ = (id) => document.getElementById(id);

/** formatElapsed formats ms as mm:ss (h:mm:ss past an hour). */
export function formatElapsed(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  const p = (n) => String(n).padStart(2, '0');
  return h ? `${h}:${p(m)}:${p(r)}` : `${p(m)}:${p(r)}`;
}

// The errors shown, one per cause: each is set by what went wrong and
// cleared by what shows it is over (the WebSocket open again, a pairing code
// made, the device list fetched), so #error never says what is no longer
// true. The latest one set is shown.
const errors = new Map(); // cause -> {msg, timer}

function renderError() {
  const el = $('error');
  if (!el) return;
  const last = [...errors.entries()].at(-1);
  el.textContent = last ? last[1].msg : '';
  el.dataset.cause = last ? last[0] : '';
}

/**
 * showError shows msg in #error as the error of cause ('' clears that
 * cause's). With ttl (ms), a message about a moment (a refused message, a
 * link that did not work) clears itself after that long.
 */
export function showError(msg, cause = 'page', ttl = 0) {
  const old = errors.get(cause);
  if (old) clearTimeout(old.timer);
  errors.delete(cause);
  if (msg) {
    const e = { msg, timer: 0 };
    if (ttl > 0) e.timer = setTimeout(() => { if (errors.get(cause) === e) { errors.delete(cause); renderError(); } }, ttl);
    errors.set(cause, e);
  }
  renderError();
}

/** clearErrors clears every cause's error (a fresh start of the page's link). */
export function clearErrors() {
  for (const e of errors.values()) clearTimeout(e.timer);
  errors.clear();
  renderError();
}

/** renderChord shows a chord name in #chord and its diagram in #diagram. */
export function renderChord(name, { flash = false } = {}) {
  const el = $('chord');
  if (!el) return;
  const changed = el.textContent !== (name || '');
  el.textContent = name || '';
  el.dataset.chord = name || '';
  const d = $('diagram');
  if (d && (changed || !d.firstChild)) d.innerHTML = name ? diagramSVG(name) : '';
  if (flash) {
    el.classList.remove('flash');
    void el.offsetWidth; // restart the animation
    el.classList.add('flash');
  }
}

let timerHandle = 0;
let practiceStart = NaN;

/** renderPractice shows the practice status in #practice (data-status) and runs #timer. */
export function renderPractice(status, timestamp) {
  const el = $('practice');
  if (el) el.dataset.status = status || '';
  const label = el && el.querySelector('.state');
  if (label) label.textContent = status === 'started' ? 'started' : status === 'ended' ? 'ended' : 'not started';
  clearInterval(timerHandle);
  timerHandle = 0;
  const t = parseTimestamp(timestamp);
  practiceStart = Number.isFinite(t) ? Math.min(t, Date.now()) : Date.now();
  const timer = $('timer');
  if (status === 'started') {
    const tick = () => { if (timer) timer.textContent = formatElapsed(Date.now() - practiceStart); };
    tick();
    timerHandle = setInterval(tick, 250);
  }
  const toggle = $('practice-toggle');
  if (toggle) {
    toggle.textContent = status === 'started' ? 'Stop practice' : 'Start practice';
    toggle.setAttribute('aria-pressed', status === 'started' ? 'true' : 'false');
  }
}

const WS_TEXT = { connecting: 'connecting', open: 'connected', closed: 'disconnected' };
const PATH_NAME = { p2p: 'P2P', relay: 'Relay' };

/** fmtMs formats a latency in ms ("3.2 ms", "41 ms"; "–" when unknown). */
export function fmtMs(v) {
  return v == null ? '–' : (v < 10 ? v.toFixed(1) : String(Math.round(v))) + ' ms';
}

const tenth = (v) => (v == null ? '' : String(Math.round(v * 10) / 10));

/**
 * latencyView is what #latency shows, from linkState() st alone: the path
 * chords take (st.path), its smoothed round trip (the median of recent
 * samples: rttP2P or rttRelay), the one-way latency of the chords it
 * delivered (the median of the measured ones: chordP2P or chordRelay; not
 * shown before any was measured), and the other path's round trip beside
 * them. The data-* values are the same figures in ms (to a tenth).
 */
export function latencyView(st) {
  const p2p = st.path === 'p2p';
  const rtt = p2p ? st.rttP2P : st.rttRelay;
  const chord = p2p ? st.chordP2P : st.chordRelay;
  const other = p2p ? st.rttRelay : st.rttP2P;
  let text = PATH_NAME[st.path] || st.path;
  if (chord != null) text += ` · chords arrive in ${fmtMs(chord)}`;
  text += ` · round trip ${fmtMs(rtt)}`;
  if (other != null) text += ` (${p2p ? 'relay' : 'P2P'}: ${fmtMs(other)})`;
  return { text, path: st.path, rtt: tenth(rtt), chord: tenth(chord) };
}

/**
 * peerView is what a page says of one other member m (a memberList() entry,
 * or undefined when it is not connected), from its data channel link in the
 * status API (peer: linkState().peers' entry, or undefined) and, while no
 * channel can tell, the probe over the relay (live: its linkState().liveness
 * verdict, see liveness.js):
 *
 *   not connected   it left (or never came)
 *   up, suspect     connected, chords direct (suspect: its last heartbeat is late)
 *   silent          not responding (suspect too): a probe unanswered for two intervals (a
 *                   phone asleep, its page frozen in the background, or its
 *                   network gone); the same while the link is down and no
 *                   probe can tell (this page's own WebSocket is down)
 *   late            connected, on the relay, answering late
 *   anything else   connected, on the relay (no direct link, or one on its
 *                   way, or the direct link lost while it answers by the relay)
 *
 * It returns {connected, responding, link (the link's state), live, text}.
 */
export function peerView(m, peer, live = '') {
  if (!m) return { connected: false, responding: false, link: '', live: '', text: 'not connected' };
  const link = peer ? peer.state : '';
  if (linkP2P(link) && !(link === 'suspect' && live === 'silent')) {
    return { connected: true, responding: true, link, live, text: 'connected · P2P' + (link === 'suspect' ? ' (answering late)' : '') };
  }
  if (live === 'silent' || (link === 'down' && (live === '' || live === 'unknown'))) {
    return { connected: true, responding: false, link, live, text: 'not responding' };
  }
  let text = 'connected · relay';
  if (live === 'late') text += ' (answering late)';
  else if (link === 'down') text += ' (the direct link is lost)';
  return { connected: true, responding: true, link, live, text };
}

/** renderLinkState shows onLinkState's report in #ws-state, #path, #latency and #p2p-reason. */
export function renderLinkState(st) {
  const ws = $('ws-state');
  if (ws) { ws.dataset.state = st.ws; ws.textContent = WS_TEXT[st.ws] || st.ws; }
  const path = $('path');
  if (path) {
    path.dataset.path = st.path;
    path.textContent = PATH_NAME[st.path] || st.path;
    path.title = st.path === 'p2p' ? 'Chords go directly between the devices (p2p)' : 'Chords go through the server (relay)';
  }
  const pt = $('path-text');
  if (pt) pt.textContent = st.path === 'p2p' ? 'P2P (direct between the devices)' : 'Relay (through the server)';
  const lat = $('latency');
  if (lat) {
    const v = latencyView(st);
    lat.textContent = v.text;
    lat.dataset.path = v.path;
    lat.dataset.ms = v.rtt;
    lat.dataset.chordMs = v.chord;
  }
  const r = $('p2p-reason');
  if (r) r.textContent = st.path === 'p2p' ? '' : st.reason || '';
  // A relay the server ended for good is an error until the page starts again.
  showError(st.ws === 'closed' && st.reason ? st.reason : '', 'link');
}

/** p2pAllowed reads ?nop2p=1 (in the query or the fragment). */
export function p2pAllowed() {
  return !/[?&#]nop2p=1\b/.test(location.search + '&' + location.hash);
}
