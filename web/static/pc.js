// pc.js: the PC page. Creates a session (or resumes the one of this tab),
// shows the pairing QR code and link, then the current chord with its finger
// diagram, strings that sound, the practice timer and the state of the link.
import { createSession, newPairing, Link } from './link.js';
import { STRING_NAMES, playString, strum, unlockAudio } from './chords.js';
import { $, showError, renderChord, renderPractice, renderLinkState, storage, p2pAllowed } from './ui.js';

const KEY = 'vt.pc.session';
let link = null;
let session = null;
let chord = '';
let expiryTimer = 0;
let phonesSeen = 0;
let refreshing = null;

function buildStrings() {
  const box = $('strings');
  // Drawn as the player sees the neck: string 6 (low E) on top.
  for (let i = 0; i < 6; i++) {
    const n = 6 - i; // guitar string number
    const b = document.createElement('button');
    b.type = 'button';
    b.className = 'string';
    b.dataset.string = String(n);
    b.setAttribute('aria-label', `String ${n} (${STRING_NAMES[i]})`);
    b.innerHTML = `<span class="label">${n} ${STRING_NAMES[i]}</span><span class="line" style="--w:${1 + (5 - i) * 0.6}px"></span>`;
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
}

document.addEventListener('keydown', (e) => {
  if (e.altKey || e.ctrlKey || e.metaKey || e.repeat) return;
  const t = e.target;
  if (t && (t.tagName === 'INPUT' || t.tagName === 'TEXTAREA' || t.isContentEditable)) return;
  if (e.key >= '1' && e.key <= '6') { pluck(Number(e.key)); e.preventDefault(); return; }
  if ((e.key === ' ' || e.key === 'Enter') && !(t && t.tagName === 'BUTTON')) {
    doStrum();
    e.preventDefault();
  }
});

function showPairing(s) {
  const qr = $('qr');
  qr.src = s.pairing_qr || '';
  const a = $('pairing-url');
  a.textContent = s.pairing_url || '';
  a.href = s.pairing_url || '#';
  $('session-id').textContent = s.session_id || '';
  clearInterval(expiryTimer);
  const exp = Date.parse(s.pairing_expires_at);
  const tick = () => {
    const left = Math.round((exp - Date.now()) / 1000);
    const el = $('pairing-expiry');
    if (!Number.isFinite(exp)) { el.textContent = ''; return; }
    if (left > 0) {
      el.textContent = `This QR code works once and expires in ${Math.floor(left / 60)}:${String(left % 60).padStart(2, '0')}.`;
      $('new-qr').hidden = true;
      $('pairing').classList.remove('expired');
    } else {
      el.textContent = 'This QR code has expired.';
      $('new-qr').hidden = false;
      $('pairing').classList.add('expired');
      clearInterval(expiryTimer);
    }
  };
  tick();
  expiryTimer = setInterval(tick, 1000);
}

async function start({ fresh = false } = {}) {
  showError('');
  let s = fresh ? null : storage.get(KEY);
  if (s && !(Date.parse(s.expires_at) > Date.now() + 5000)) s = null;
  // A session kept from before a reload: its pairing link may have been used
  // or have expired meanwhile, so ask for a fresh one once connected.
  const kept = !!s;
  if (!s) {
    try {
      s = await createSession();
    } catch (e) {
      showError(e.message);
      $('ws-state').dataset.state = 'closed';
      $('ws-state').textContent = 'disconnected';
      const b = $('new-session');
      b.hidden = false;
      return;
    }
    storage.set(KEY, s);
  }
  session = s;
  phonesSeen = 0;
  showPairing(s);
  if (kept) refreshPairing();
  if (link) link.close();
  link = new Link({
    sessionId: s.session_id,
    token: s.token,
    role: 'pc',
    userId: s.user_id,
    p2p: p2pAllowed(),
    log: (...a) => console.debug('[link]', ...a),
    onChord(name, meta) {
      chord = name;
      renderChord(name, { flash: true });
      const who = meta.from ? 'from the phone' : '';
      const lat = meta.latencyMs == null ? '' : `, ~${meta.latencyMs < 10 ? meta.latencyMs.toFixed(1) : Math.round(meta.latencyMs)} ms`;
      $('chord-meta').textContent = `${who} via ${meta.path === 'p2p' ? 'P2P' : 'relay'}${lat}`;
      $('chord-meta').dataset.path = meta.path;
    },
    onPractice: renderPractice,
    onState(st) {
      if (st.chord !== chord) { chord = st.chord; renderChord(chord); }
      renderPractice(st.practice.status, st.practice.timestamp);
    },
    onMembers: renderMembers,
    onLinkState(st) {
      renderLinkState(st);
      if (st.ws === 'closed' && st.reason) $('new-session').hidden = false;
    },
    onError: showError,
  });
  link.connect();
}

// refreshPairing replaces the QR code and link with a fresh single-use pairing
// link of the same session (a phone already paired stays paired). When the
// session is gone, it starts a new one.
function refreshPairing() {
  if (!session) return Promise.resolve();
  if (refreshing) return refreshing;
  const s = session;
  refreshing = newPairing(s.session_id, s.token).then((p) => {
    if (session !== s) return;
    Object.assign(s, { pairing_url: p.pairing_url, pairing_qr: p.pairing_qr, pairing_expires_at: p.pairing_expires_at });
    storage.set(KEY, s);
    showPairing(s);
  }, (e) => {
    if (session !== s) return;
    if (e.status === 401 || e.status === 403 || e.status === 404) { storage.del(KEY); start({ fresh: true }); } else showError(e.message);
  }).finally(() => { refreshing = null; });
  return refreshing;
}

function renderMembers(list) {
  const ul = $('members');
  ul.textContent = '';
  const others = list.filter((m) => !m.self);
  for (const m of list) {
    const li = document.createElement('li');
    li.dataset.role = m.role || '';
    li.dataset.clientId = m.client_id;
    const since = m.since ? new Date(m.since) : null;
    const when = since && !Number.isNaN(since.getTime()) ? since.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' }) : '';
    li.textContent = `${m.role === 'phone' ? 'Phone' : m.role === 'pc' ? 'PC' : m.role || 'Device'}${m.self ? ' (this page)' : ''}` +
      `${when ? ' · since ' + when : ''}${m.self ? '' : ' · ' + (m.path === 'p2p' ? 'P2P' : 'relay')}`;
    ul.appendChild(li);
  }
  const phones = others.filter((m) => m.role === 'phone').length;
  // A phone joined: the QR code on screen was (most likely) just used, and a
  // pairing link works once. Show a fresh one for the next device.
  if (phones > phonesSeen) refreshPairing();
  phonesSeen = phones;
  $('pairing').classList.toggle('compact', phones > 0);
  $('pairing-title').textContent = phones > 0 ? 'Phone connected. Pair another device:' : 'Scan with your phone';
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
$('new-session').addEventListener('click', () => { storage.del(KEY); $('new-session').hidden = true; start({ fresh: true }); });
$('strum').addEventListener('click', doStrum);

buildStrings();
unlockAudio();
renderChord('');
start();

// window.__vt is a read-only hook for the browser tests (web/e2e_test.go)
// and for debugging from the console: the page's live Link.
Object.defineProperty(window, '__vt', { value: Object.freeze({ get link() { return link; } }) });
