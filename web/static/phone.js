// phone.js: the phone page. A phone that is not paired shows how to pair:
// scan the PC's QR code (its short link, /p/<code>, opens this page, which
// trades the code) or type the 6-digit code the PC shows. Once paired it
// keeps its credentials in localStorage (until the session's expiry), so a
// reload, a closed tab or a browser restart reconnects without pairing
// again; it sends chord changes and practice start/stop.
import { Link, closeText } from './link.js';
import { GRID } from './chords.js';
import { $, showError, clearErrors, renderChord, renderPractice, renderLinkState, p2pAllowed } from './ui.js';
import { pair, codeFromPath, normalizePIN, store } from './pairing.js';

const KEY = 'vt.phone';
let link = null;
let creds = null;
let practice = '';
let wakeLock = null;

function status(text) { $('status').textContent = text; }

// showPC says whether the PC is here and answering: the members (the
// snapshot), and while no data channel can tell, the probe over the relay
// (linkState().liveness: 'silent' is not responding).
function showPC() {
  if (!link) return;
  const pcs = link.snapshot().members.filter((m) => !m.self && m.role === 'pc');
  const live = new Map(link.linkState().liveness.map((l) => [l.id, l.verdict]));
  const silent = pcs.length > 0 && pcs.every((m) => live.get(m.client_id) === 'silent');
  $('status').dataset.pc = pcs.length === 0 ? 'none' : silent ? 'silent' : 'here';
  if (pcs.length === 0) status('Paired. Open VirtuTune Link on the PC to play.');
  else if (silent) status('The PC is not responding — check that VirtuTune Link is still open on it (and the PC awake); chords are sent once it answers.');
  else status('');
}

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
  if (!link) return;
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

// ------------------------------------------------------------ views

// showPairView shows how to pair (and why, when a pairing ended).
function showPairView(why = '') {
  if (link) { link.close(); link = null; }
  $('play-view').hidden = true;
  $('pair-view').hidden = false;
  document.body.dataset.view = 'pair';
  $('pair-status').textContent = why;
  $('ws-state').dataset.state = 'closed';
  $('ws-state').textContent = 'not paired';
  $('path').hidden = true;
  clearErrors();
}

function showPlayView() {
  $('pair-view').hidden = true;
  $('play-view').hidden = false;
  $('path').hidden = false;
  document.body.dataset.view = 'play';
}

// connect starts the link with the kept credentials.
function connect() {
  showPlayView();
  clearErrors();
  status('Connecting…');
  if (link) link.close();
  const c = creds;
  link = new Link({
    sessionId: c.session_id,
    token: c.token,
    clientId: c.client_id || undefined,
    role: 'phone',
    probeRoles: ['pc'], // the phone shows the PC's state, not the other phones'
    userId: c.user_id,
    p2p: p2pAllowed(),
    log: (...a) => console.debug('[link]', ...a),
    onChord(name) { markChord(name); },
    onPractice,
    onState(st) {
      markChord(st.chord);
      if (st.practice.status !== practice || st.practice.status === 'started') onPractice(st.practice.status, st.practice.timestamp);
      showPC();
    },
    onLinkState(st) {
      renderLinkState(st);
      showPC();
      if (st.ws !== 'closed' || !st.reason || creds !== c) return;
      if (st.reason === closeText(4100)) return; // another tab of this phone took over: still paired
      // Removed by the PC, session over, or access expired: pairing again is the way.
      store.del(KEY);
      creds = null;
      showPairView('This phone is no longer paired (the PC removed it, or the session ended). Pair it again: scan the QR code on the PC or type its 6-digit code.');
    },
    // A refused message (a rate limit, a chord name) is about a moment; the
    // relay ended for good is the link state's error (ui.js).
    onError(msg) { if (link && !link.relayGone) showError(msg, 'message', 8000); },
  });
  link.connect();
}

async function pairWith(what) {
  const prev = creds;
  $('pair-status').textContent = 'Pairing…';
  try {
    creds = await pair({ ...what, previousToken: prev ? prev.token : '' });
  } catch (e) {
    creds = prev;
    throw e;
  }
  store.set(KEY, creds);
  return creds;
}

// ------------------------------------------------------------ start

async function start() {
  buildGrid();
  markChord('');
  $('practice-toggle').addEventListener('click', () => {
    if (!link) return;
    if (practice === 'started') link.practiceEnd(); else link.practiceStart();
  });
  $('pin-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const pin = normalizePIN($('pin').value);
    if (!pin) { $('pair-status').textContent = 'Type the 6 digits shown on the PC.'; return; }
    $('pin-submit').disabled = true;
    try {
      await pairWith({ pin });
      $('pin').value = '';
      connect();
    } catch (err) {
      $('pair-status').textContent = err.message;
    } finally {
      $('pin-submit').disabled = false;
    }
  });

  creds = store.get(KEY);
  const code = codeFromPath(location.pathname);
  const keep = /nop2p=1/.test(location.search + location.hash) ? '?nop2p=1' : '';
  let stale = '';
  if (code) {
    // The code works once: drop it from the address (a reload, a bookmark).
    history.replaceState(null, '', '/phone/' + keep);
    try {
      await pairWith({ code });
    } catch (e) {
      if (!creds) { showPairView(e.message); return; }
      stale = 'The pairing link you opened did not work, but this phone is still paired from before: nothing to do.';
    }
  }
  if (!creds) { showPairView(''); return; }
  connect();
  if (stale) showError(stale, 'pair', 10000);
}

start();

// window.__vt is a read-only hook for the browser tests (web/e2e_test.go)
// and for debugging from the console: the page's live Link.
Object.defineProperty(window, '__vt', { value: Object.freeze({ get link() { return link; } }) });
