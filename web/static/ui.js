// ui.js: DOM helpers shared by the PC and phone pages (chord, practice timer,
// link state, errors). Each looks elements up by id and does nothing when one
// is missing.
import { diagramSVG } from './chords.js';
import { parseTimestamp } from './link.js';

export const $ = (id) => document.getElementById(id);

/** formatElapsed formats ms as mm:ss (h:mm:ss past an hour). */
export function formatElapsed(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  const p = (n) => String(n).padStart(2, '0');
  return h ? `${h}:${p(m)}:${p(r)}` : `${p(m)}:${p(r)}`;
}

/** showError shows msg in #error ('' clears it). */
export function showError(msg) {
  const el = $('error');
  if (el) el.textContent = msg || '';
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

/** renderLinkState shows onLinkState's report in #ws-state, #path, #latency and #p2p-reason. */
export function renderLinkState(st) {
  const ws = $('ws-state');
  if (ws) { ws.dataset.state = st.ws; ws.textContent = WS_TEXT[st.ws] || st.ws; }
  const path = $('path');
  if (path) {
    path.dataset.path = st.path;
    path.textContent = st.path === 'p2p' ? 'P2P' : 'Relay';
    path.title = st.path === 'p2p' ? 'Direct connection between the devices (p2p)' : 'Through the server (relay)';
  }
  const pt = $('path-text');
  if (pt) pt.textContent = st.path === 'p2p' ? 'P2P (direct between the devices)' : 'Relay (through the server)';
  const lat = $('latency');
  if (lat) {
    const ms = (v) => (v == null ? '–' : v < 10 ? v.toFixed(1) : Math.round(v)) + (v == null ? '' : ' ms');
    const active = st.path === 'p2p' ? st.rttP2P : st.rttRelay;
    lat.dataset.ms = active == null ? '' : String(Math.round(active * 10) / 10);
    lat.textContent = `round trip: P2P ${ms(st.rttP2P)} · Relay ${ms(st.rttRelay)}`;
  }
  const r = $('p2p-reason');
  if (r) r.textContent = st.path === 'p2p' ? '' : st.reason || '';
  if (st.ws === 'closed' && st.reason) showError(st.reason);
}

/** storage wraps sessionStorage, which may be missing or throw (private modes). */
export const storage = {
  get(k) { try { const v = sessionStorage.getItem(k); return v ? JSON.parse(v) : null; } catch { return null; } },
  set(k, v) { try { sessionStorage.setItem(k, JSON.stringify(v)); } catch { /* not kept */ } },
  del(k) { try { sessionStorage.removeItem(k); } catch { /* ignore */ } },
};

/** p2pAllowed reads ?nop2p=1 (in the query or the fragment). */
export function p2pAllowed() {
  return !/[?&#]nop2p=1\b/.test(location.search + '&' + location.hash);
}
