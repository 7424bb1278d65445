// pc.js: the PC page. Creates a session (or resumes the one kept in
// localStorage), shows the pairing — a QR code of a short link and a 6-digit
// code, always live — and folds it away once a phone is paired; then the
// current chord with its finger diagram, strings that sound, the practice
// timer, the paired devices (each can be removed) and the state of the link.
import { createSession, Link } from './link.js';
import { STRING_NAMES, playString, strum, unlockAudio } from './chords.js';
import { $, showError, clearErrors, renderChord, renderPractice, renderLinkState, peerView, fmtMs, p2pAllowed } from './ui.js';
import { newPairing, pairingStatus, devices, removeDevice, sessionGone, formatPIN, store } from './pairing.js';

const KEY = 'vt.pc';
/** QR pixels per module: unfolded before pairing, and when opened after. */
const QR_SCALE = 6;
const QR_SCALE_PAIRED = 5;
/** How often the PC asks whether its pairing is still live while it is shown. */
const STATUS_EVERY_MS = 3000;

let link = null;
let session = null;
let chord = '';
let expiryTimer = 0;
let statusTimer = 0;
let refreshing = null;
let paired = []; // devices paired with the session
let members = []; // the link's member list
let folded = false;

// ------------------------------------------------------------ strings

function buildStrings() {
  const box = $('strings');
  // Drawn as the player sees the neck: string 6 (low E) on top.
  for (let i = 0; i < 6; i++) {
    const n = 6 - i; // guitar string number
    const b = document.createElement('button');
    b.type = 'button';
    b.className = 'string';
    b.dataset.string = String(n);
    // The accessible name is the visible text ("6 E") plus "string".
    b.innerHTML = `<span class="label">${n} ${STRING_NAMES[i]}</span><span class="line" style="--w:${1 + (5 - i) * 0.6}px"></span><span class="sr-only"> string</span>`;
    b.addEventListener('click', () => pluck(n));
    box.appendChild(b);
  }
}

function pluck(n) {
  playString(chord, 6 - n);
  const b = document.querySelector(`.string[data-string="${n}"]`);
  if (b) { b.classList.remove('plucked'); void b.offsetWidth; b.classList.add('plucked'); }
}

function doStrum() {
  strum(chord);
  for (let n = 1; n <= 6; n++) {
    const b = document.querySelector(`.string[data-string="${n}"]`);
    if (b) { b.classList.remove('plucked'); void b.offsetWidth; b.classList.add('plucked'); }
  }
  document.body.dataset.strums = String(Number(document.body.dataset.strums || 0) + 1);
}

const typing = (t) => t && (t.tagName === 'INPUT' || t.tagName === 'TEXTAREA' || t.isContentEditable);

// Space always strums, whatever button has the focus (a focused string
// button would otherwise be plucked again); Enter strums unless it activates
// a focused control; 1-6 pluck.
document.addEventListener('keydown', (e) => {
  if (e.altKey || e.ctrlKey || e.metaKey || typing(e.target)) return;
  if (e.key === ' ' || e.code === 'Space') {
    e.preventDefault();
    if (!e.repeat) doStrum();
    return;
  }
  if (e.repeat) return;
  if (e.key >= '1' && e.key <= '6') { pluck(Number(e.key)); e.preventDefault(); return; }
  const t = e.target;
  if (e.key === 'Enter' && !(t && (t.tagName === 'BUTTON' || t.tagName === 'A' || t.tagName === 'SUMMARY'))) {
    doStrum();
    e.preventDefault();
  }
}, true);
// A button's own Space activation happens on keyup: stop it too.
document.addEventListener('keyup', (e) => {
  if ((e.key === ' ' || e.code === 'Space') && !typing(e.target)) e.preventDefault();
}, true);

// ------------------------------------------------------------ pairing

function showPairing(p) {
  const qr = $('qr');
  const n = p.pairing_qr_modules || 0;
  qr.src = p.pairing_qr || '';
  qr.dataset.modules = String(n);
  sizeQR();
  const a = $('pairing-url');
  a.textContent = p.pairing_url || '';
  a.href = p.pairing_url || '#';
  $('pin').textContent = formatPIN(p.pairing_pin);
  $('pin').dataset.pin = p.pairing_pin || '';
  $('pin').setAttribute('aria-label', '6-digit code: ' + (p.pairing_pin || '').split('').join(' '));
  try { $('phone-url').textContent = new URL(p.pairing_url).origin + '/phone'; } catch { $('phone-url').textContent = '/phone'; }
  clearInterval(expiryTimer);
  const exp = Date.parse(p.pairing_expires_at);
  const tick = () => {
    const left = Math.ceil((exp - Date.now()) / 1000);
    const el = $('pairing-expiry');
    if (!Number.isFinite(exp)) { el.textContent = ''; return; }
    if (left > 0) {
      el.textContent = `The code works once and for ${Math.floor(left / 60)}:${String(left % 60).padStart(2, '0')} more; then a new one appears.`;
    } else {
      el.textContent = 'This code has expired: making a new one…';
      clearInterval(expiryTimer);
      refreshPairing();
    }
  };
  tick();
  expiryTimer = setInterval(tick, 1000);
}

// sizeQR draws the QR code with whole pixels per module, large enough to
// scan from across a room.
function sizeQR() {
  const qr = $('qr');
  const n = Number(qr.dataset.modules) || 0;
  if (!n) return;
  const px = n * (folded ? QR_SCALE_PAIRED : QR_SCALE);
  qr.style.width = qr.style.height = px + 'px';
  qr.width = qr.height = px;
}

// refreshPairing shows a fresh pairing of the same session (ending the
// older; a phone already paired stays paired). When the session is gone it
// starts a new one.
function refreshPairing() {
  if (!session) return Promise.resolve();
  if (refreshing) return refreshing;
  const s = session;
  refreshing = newPairing(s.session_id, s.token).then((p) => {
    if (session !== s) return;
    Object.assign(s, p);
    store.set(KEY, s);
    showPairing(s);
    showError('', 'pairing');
  }, (e) => {
    if (session !== s) return;
    if (sessionGone(e)) { store.del(KEY); start({ fresh: true }); } else showError('Could not make a new pairing code (' + e.message + ') It tries again by itself; or press “New code”.', 'pairing');
  }).finally(() => { refreshing = null; });
  return refreshing;
}

// checkPairing asks whether the code on screen is still live (not used by a
// phone, expired, or its 6-digit code retired after wrong guesses elsewhere)
// and still the session's pairing (a different expiry: replaced), and shows
// a fresh one when not. A live code stays: replacing it would void the one a
// phone may be scanning.
async function checkPairing() {
  if (!session) return;
  const s = session;
  const shown = s.pairing_expires_at;
  try {
    const st = await pairingStatus(s.session_id, s.token);
    // (an answer about the code before a fresh one that came meanwhile is stale)
    if (session !== s || s.pairing_expires_at !== shown) return;
    const same = Date.parse(st.pairing_expires_at) === Date.parse(shown);
    if (!st.live || !st.pin_live || !same) await refreshPairing();
    else showError('', 'pairing'); // the code on screen works
  } catch (e) {
    if (session === s && sessionGone(e)) { store.del(KEY); start({ fresh: true }); }
  }
}

// watchPairing checks the pairing while it is shown.
function watchPairing() {
  clearInterval(statusTimer);
  statusTimer = setInterval(() => {
    if (!session || !$('pairing').open || document.hidden) return;
    checkPairing();
  }, STATUS_EVERY_MS);
}

function fold(on) {
  folded = on;
  if (on) showError('', 'pairing'); // no code on screen: nothing that may not work (checked again when opened)
  $('pairing').open = !on;
  sizeQR();
}

// ------------------------------------------------------------ devices

async function refreshDevices() {
  if (!session) return;
  const s = session;
  try {
    const ds = await devices(s.session_id, s.token);
    if (session !== s) return;
    paired = ds;
    showError('', 'devices');
  } catch (e) {
    if (session === s && sessionGone(e)) { store.del(KEY); start({ fresh: true }); }
    return;
  }
  renderDevices();
}

function when(t) {
  const d = t ? new Date(t) : null;
  return d && !Number.isNaN(d.getTime()) ? d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' }) : '';
}

// renderDevices lists this PC, every paired phone (connected or not, with a
// Remove button) and any other member connected with a token of its own,
// each as the status API says (ui.js's peerView: its data channel link's
// state, or while none can tell the probe over the relay: a phone not
// responding, a phone gone), and sums it up in
// #link-status with what to do.
function renderDevices() {
  const ul = $('members');
  ul.textContent = '';
  const live = new Map(members.map((m) => [m.client_id, m]));
  const ls = link ? link.linkState() : { peers: [], liveness: [] };
  const links = new Map(ls.peers.map((p) => [p.id, p]));
  const verdicts = new Map(ls.liveness.map((l) => [l.id, l.verdict]));
  const rows = [];
  for (const m of members) if (m.self) rows.push({ m, name: 'This PC' });
  for (const d of paired) rows.push({ d, m: live.get(d.client_id), name: d.name || 'Phone' });
  for (const m of members) if (!m.self && !paired.some((d) => d.client_id === m.client_id)) rows.push({ m, name: m.role === 'phone' ? 'Phone' : m.role === 'pc' ? 'PC' : 'Device' });
  let phonesOn = 0, phonesSilent = 0;
  for (const { m, d, name } of rows) {
    const li = document.createElement('li');
    const role = (m && m.role) || (d && d.role) || '';
    const id = (m && m.client_id) || (d && d.client_id) || '';
    li.dataset.role = m ? role : 'offline-' + role;
    li.dataset.clientId = id;
    li.dataset.connected = m ? 'true' : 'false';
    const text = document.createElement('span');
    text.className = 'dev-text';
    let line = name;
    if (m && !m.self) {
      const v = peerView(m, links.get(id), verdicts.get(id) || '');
      li.dataset.link = v.link;
      li.dataset.live = v.live;
      li.dataset.responding = String(v.responding);
      line += ' · ' + v.text;
      if (role === 'phone') { if (v.responding) phonesOn++; else phonesSilent++; }
    } else if (!m) {
      line += ' · not connected' + (d && d.paired_at ? ` (paired ${when(d.paired_at)})` : '');
    }
    text.textContent = line;
    li.appendChild(text);
    if (d) {
      const b = document.createElement('button');
      b.type = 'button';
      b.className = 'remove';
      b.textContent = 'Remove';
      b.setAttribute('aria-label', `Remove ${name}`);
      b.addEventListener('click', () => remove(d));
      li.appendChild(b);
    }
    ul.appendChild(li);
  }
  const st = $('link-status');
  let say;
  if (phonesOn > 0) say = phonesOn === 1 ? 'Phone connected.' : `${phonesOn} phones connected.`;
  if (phonesSilent > 0) {
    const one = phonesSilent === 1;
    const what = (one ? 'The phone is' : `${phonesSilent} phones are`) + ' not responding';
    say = (say ? say + ' ' + (one ? 'Another phone is' : `${phonesSilent} more are`) + ' not responding' : what) +
      ` — check that ${one ? 'its screen is on and VirtuTune is open on it' : 'their screens are on and VirtuTune is open on them'}; ${one ? 'it carries' : 'each carries'} on by itself once it answers.`;
  }
  if (!say) {
    say = paired.length > 0 ? 'No phone connected — open VirtuTune on the paired phone (it reconnects by itself).'
      : 'No phone paired yet — scan the QR code with your phone.';
  }
  st.textContent = say;
  st.dataset.phones = String(phonesOn);
  st.dataset.silent = String(phonesSilent);
  $('pairing-title').textContent = paired.length > 0 ? 'Pair another phone' : 'Pair your phone';
  $('pairing-hint').textContent = paired.length > 0 ? '(show the QR code and the 6-digit code)' : '';
}

async function remove(d) {
  if (!session) return;
  try {
    await removeDevice(session.session_id, session.token, d.client_id);
    paired = paired.filter((x) => x.client_id !== d.client_id);
    showError('', 'devices');
    renderDevices();
  } catch (e) {
    showError('Could not remove the device (' + e.message + ') Press Remove again.', 'devices');
  }
}

// ------------------------------------------------------------ session

async function start({ fresh = false } = {}) {
  clearErrors();
  let s = fresh ? null : store.get(KEY);
  const kept = !!s;
  if (!s) {
    try {
      s = await createSession();
    } catch (e) {
      showError(e.message, 'session');
      $('ws-state').dataset.state = 'closed';
      $('ws-state').textContent = 'disconnected';
      $('new-session').hidden = false;
      return;
    }
    store.set(KEY, s);
  }
  session = s;
  paired = [];
  members = [];
  fold(false);
  $('session-id').textContent = s.session_id || '';
  showPairing(s);
  watchPairing();
  if (kept) { refreshPairing(); refreshDevices(); }
  if (link) link.close();
  let phonesSeen = 0;
  let peerStates = '';
  link = new Link({
    sessionId: s.session_id,
    token: s.token,
    clientId: s.client_id || undefined,
    role: 'pc',
    userId: s.user_id,
    p2p: p2pAllowed(),
    log: (...a) => console.debug('[link]', ...a),
    onChord(name, meta) {
      chord = name;
      renderChord(name, { flash: true });
      // The path this chord came by first (both race), and that path's
      // one-way latency as the status API smooths it (the median).
      const st = link.linkState();
      const med = meta.path === 'p2p' ? st.chordP2P : st.chordRelay;
      const who = meta.from ? (paired.find((d) => d.client_id === meta.from) || {}).name || 'the phone' : '';
      $('chord-meta').textContent = `${who ? 'from ' + who + ' ' : ''}via ${meta.path === 'p2p' ? 'P2P' : 'relay'}${med == null ? '' : ' · ' + fmtMs(med)}`;
      $('chord-meta').dataset.path = meta.path;
    },
    onPractice: renderPractice,
    onState(st) {
      if (st.chord !== chord) { chord = st.chord; renderChord(chord); }
      renderPractice(st.practice.status, st.practice.timestamp);
    },
    onMembers(list) {
      members = list;
      const phones = list.filter((m) => !m.self && m.role === 'phone').length;
      if (phones > phonesSeen) {
        // A phone arrived: the code on screen was (most likely) just used,
        // and it is now paired: fold the pairing away, fetch the list.
        refreshPairing();
        refreshDevices();
        fold(true);
      }
      phonesSeen = phones;
      renderDevices();
    },
    onLinkState(st) {
      renderLinkState(st);
      if (st.ws === 'closed' && st.reason) $('new-session').hidden = false;
      // a peer's link or liveness changed: the device list says so at once
      const now = st.peers.map((p) => p.id + ':' + p.state).join(',') + '|' + st.liveness.map((l) => l.id + ':' + l.verdict).join(',');
      if (now !== peerStates) { peerStates = now; renderDevices(); }
    },
    // A refused message (a rate limit, a chord name) is about a moment; the
    // relay ended for good is the link state's error (ui.js).
    onError(msg) { if (link && !link.relayGone) showError(msg, 'message', 8000); },
  });
  link.connect();
  renderDevices();
}

$('copy-url').addEventListener('click', async () => {
  const url = $('pairing-url').textContent;
  try {
    if (navigator.clipboard && window.isSecureContext) await navigator.clipboard.writeText(url);
    else {
      const r = document.createRange();
      r.selectNodeContents($('pairing-url'));
      const sel = getSelection();
      sel.removeAllRanges();
      sel.addRange(r);
      document.execCommand('copy');
    }
    $('copy-url').textContent = 'Copied';
    setTimeout(() => { $('copy-url').textContent = 'Copy link'; }, 1500);
  } catch {
    $('copy-url').textContent = 'Select the link and copy it';
  }
});
$('new-qr').addEventListener('click', () => refreshPairing());
$('pairing').addEventListener('toggle', () => { sizeQR(); if ($('pairing').open) checkPairing(); });
$('new-session').addEventListener('click', () => { store.del(KEY); $('new-session').hidden = true; start({ fresh: true }); });
$('strum').addEventListener('click', doStrum);

buildStrings();
unlockAudio();
renderChord('');
start();

// window.__vt is a read-only hook for the browser tests (web/e2e_test.go)
// and for debugging from the console: the page's live Link.
Object.defineProperty(window, '__vt', { value: Object.freeze({ get link() { return link; } }) });
