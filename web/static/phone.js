// phone.js: the phone page. Pairs with the token in the link's fragment
// (#s=<session>&p=<pairing token>), keeps the phone token in sessionStorage so
// a reload reconnects without the single-use pairing link, and sends chord
// changes and practice start/stop.
import { pair, Link } from './link.js';
import { GRID } from './chords.js';
import { $, showError, renderChord, renderPractice, renderLinkState, storage, p2pAllowed } from './ui.js';

let link = null;
let practice = '';
let wakeLock = null;

function params() {
  const h = new URLSearchParams(location.hash.replace(/^#/, ''));
  return { sid: h.get('s') || '', ptoken: h.get('p') || '' };
}

function status(text) { $('status').textContent = text; }

function buildGrid() {
  const grid = $('grid');
  for (const name of GRID) {
    const b = document.createElement('button');
    b.type = 'button';
    b.className = 'chord';
    b.dataset.chord = name;
    b.textContent = name;
    b.setAttribute('aria-pressed', 'false');
    b.addEventListener('click', () => choose(name));
    grid.appendChild(b);
  }
}

function markChord(name) {
  renderChord(name);
  for (const b of document.querySelectorAll('button.chord')) b.setAttribute('aria-pressed', b.dataset.chord === name ? 'true' : 'false');
}

function choose(name) {
  if (!link) { showError('Not connected yet — scan the QR code on your PC.'); return; }
  if (link.sendChord(name)) {
    markChord(name);
    if (navigator.vibrate) try { navigator.vibrate(8); } catch { /* not allowed */ }
  }
}

// ------------------------------------------------------------ wake lock

async function keepAwake(on) {
  const note = $('wake-note');
  if (!('wakeLock' in navigator) || !navigator.wakeLock) {
    note.hidden = !on;
    note.textContent = 'This browser cannot keep the screen on here (it needs https): set a longer screen timeout while practising.';
    return;
  }
  try {
    if (on && !wakeLock) {
      wakeLock = await navigator.wakeLock.request('screen');
      wakeLock.addEventListener('release', () => { wakeLock = null; });
    } else if (!on && wakeLock) {
      const w = wakeLock;
      wakeLock = null;
      await w.release();
    }
    note.hidden = true;
  } catch (e) {
    note.hidden = !on;
    note.textContent = 'Could not keep the screen on (' + (e && e.message ? e.message : 'refused') + ').';
  }
}

document.addEventListener('visibilitychange', () => {
  if (document.visibilityState === 'visible' && practice === 'started') keepAwake(true);
});

function onPractice(st, ts) {
  practice = st;
  renderPractice(st, ts);
  keepAwake(st === 'started');
}

// ------------------------------------------------------------ start

async function start() {
  buildGrid();
  markChord('');
  $('practice-toggle').addEventListener('click', () => {
    if (!link) { showError('Not connected yet — scan the QR code on your PC.'); return; }
    if (practice === 'started') link.practiceEnd(); else link.practiceStart();
  });

  const { sid, ptoken } = params();
  const key = (id) => 'vt.phone.' + id;
  let creds = sid ? storage.get(key(sid)) : null;
  if (creds && !(Date.parse(creds.expires_at) > Date.now() + 5000)) { storage.del(key(sid)); creds = null; }
  if (!creds) {
    if (!ptoken) {
      status('');
      showError(sid ? 'This pairing link has expired — scan the new QR code on your PC'
        : 'Scan the QR code shown on your PC to connect this phone.');
      $('ws-state').dataset.state = 'closed';
      $('ws-state').textContent = 'disconnected';
      return;
    }
    status('Pairing…');
    try {
      creds = await pair(ptoken);
    } catch (e) {
      status('');
      showError(e.message);
      $('ws-state').dataset.state = 'closed';
      $('ws-state').textContent = 'disconnected';
      return;
    }
    storage.set(key(creds.session_id), creds);
  }
  // The pairing token is single use: drop it from the address so a reload or a
  // bookmark does not try it again (sessionStorage holds the phone token).
  const keep = location.hash.match(/nop2p=1/) ? '&nop2p=1' : '';
  history.replaceState(null, '', location.pathname + location.search + '#s=' + encodeURIComponent(creds.session_id) + keep);
  status('');

  link = new Link({
    sessionId: creds.session_id,
    token: creds.token,
    role: 'phone',
    userId: creds.user_id,
    p2p: p2pAllowed(),
    log: (...a) => console.debug('[link]', ...a),
    onChord(name) { markChord(name); },
    onPractice,
    onState(st) {
      markChord(st.chord);
      if (st.practice.status !== practice || st.practice.status === 'started') onPractice(st.practice.status, st.practice.timestamp);
      const pcs = st.members.filter((m) => !m.self && m.role === 'pc').length;
      status(pcs ? '' : 'Waiting for the PC page…');
    },
    onLinkState(st) {
      renderLinkState(st);
      if (st.ws === 'closed' && st.reason) storage.del(key(creds.session_id));
    },
    onError: showError,
  });
  link.connect();
}

start();

// window.__vt is a read-only hook for the browser tests (web/e2e_test.go)
// and for debugging from the console: the page's live Link.
Object.defineProperty(window, '__vt', { value: Object.freeze({ get link() { return link; } }) });
