// Unit tests of what the pages say (static/ui.js): everything comes from the
// link's status (Link.linkState()), and an error stays only while its cause
// does.
// Run: node --test web/testdata/  (web_test.go runs them when node is installed).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { latencyView, peerView, fmtMs, showError, clearErrors, renderLinkState } from '../static/ui.js';

const status = (over = {}) => ({
  ws: 'open', path: 'relay', reason: '', reasonCode: 'no-peer', rttP2P: null, rttRelay: null,
  chordP2P: null, chordRelay: null, p2p: true, peers: [], ...over,
});

test('latency: the path chords take, its median round trip and one-way chord latency', () => {
  let v = latencyView(status({ path: 'p2p', rttP2P: 6.04, rttRelay: 23.4, chordP2P: 3.16, chordRelay: 12 }));
  assert.equal(v.text, 'P2P · chords arrive in 3.2 ms · round trip 6.0 ms (relay: 23 ms)');
  assert.deepEqual([v.path, v.rtt, v.chord], ['p2p', '6', '3.2']);
  // On the relay the relay's figures are the ones shown, the direct path's beside them.
  v = latencyView(status({ path: 'relay', rttP2P: 6, rttRelay: 23.4, chordP2P: 3, chordRelay: 12.2 }));
  assert.equal(v.text, 'Relay · chords arrive in 12 ms · round trip 23 ms (P2P: 6.0 ms)');
  assert.deepEqual([v.rtt, v.chord], ['23.4', '12.2']);
  // Nothing measured yet: no chord figure, the round trip unknown.
  v = latencyView(status());
  assert.equal(v.text, 'Relay · round trip –');
  assert.deepEqual([v.rtt, v.chord], ['', '']);
  assert.equal(fmtMs(0.04), '0.0 ms');
  assert.equal(fmtMs(120.6), '121 ms');
});

test('a peer as the status API says: connected, answering late, not responding, gone', () => {
  const m = { client_id: 'ph', role: 'phone' };
  const since = 1_000_000;
  assert.deepEqual(peerView(undefined, undefined), { connected: false, responding: false, link: '', live: '', text: 'not connected' });
  assert.equal(peerView(m, { state: 'up', since }).text, 'connected · P2P');
  assert.equal(peerView(m, { state: 'suspect', since }, 'live').text, 'connected · P2P (answering late)');
  // suspect and the probe unanswered too: not responding before the link is down
  assert.equal(peerView(m, { state: 'suspect', since }, 'silent').text, 'not responding');
  // The link down: the probe over the relay says whether it answers.
  let v = peerView(m, { state: 'down', since }, 'silent');
  assert.deepEqual([v.connected, v.responding, v.link, v.live, v.text], [true, false, 'down', 'silent', 'not responding']);
  v = peerView(m, { state: 'down', since }, 'live');
  assert.deepEqual([v.responding, v.text], [true, 'connected · relay (the direct link is lost)']);
  assert.equal(peerView(m, { state: 'down', since }, 'late').text, 'connected · relay (answering late)');
  // Down and no probe can tell (this page's own WebSocket is down): not responding.
  assert.equal(peerView(m, { state: 'down', since }, '').responding, false);
  for (const state of ['idle', 'connecting', 'backoff', 'closed']) {
    assert.equal(peerView(m, { state, since }, 'live').text, 'connected · relay', state);
    assert.equal(peerView(m, { state, since }, 'silent').text, 'not responding', state);
  }
  // No data channel (P2P off): the probe alone tells.
  assert.equal(peerView(m, undefined, 'live').text, 'connected · relay');
  assert.equal(peerView(m, undefined, 'late').text, 'connected · relay (answering late)');
  assert.equal(peerView(m, undefined, 'silent').text, 'not responding');
  // Never answered, never a channel (a client of the original protocol): not judged.
  assert.equal(peerView(m, undefined, 'unknown').text, 'connected · relay');
});

// A minimal document: the elements the helpers write.
function fakeDOM() {
  const els = {};
  for (const id of ['error', 'ws-state', 'path', 'path-text', 'latency', 'p2p-reason']) els[id] = { id, textContent: '', dataset: {}, title: '' };
  globalThis.document = { getElementById: (id) => els[id] || null };
  return els;
}

test('errors: one per cause, the latest shown, each cleared by its cause', async () => {
  const els = fakeDOM();
  try {
    showError('Could not make a new pairing code', 'pairing');
    showError('Could not remove the device', 'devices');
    assert.equal(els.error.textContent, 'Could not remove the device');
    assert.equal(els.error.dataset.cause, 'devices');
    showError('', 'devices');
    assert.equal(els.error.textContent, 'Could not make a new pairing code', 'the other cause is still there');
    showError('', 'pairing');
    assert.equal(els.error.textContent, '');
    // A message about a moment clears itself.
    showError('Too many messages', 'message', 30);
    assert.equal(els.error.textContent, 'Too many messages');
    await new Promise((r) => setTimeout(r, 80));
    assert.equal(els.error.textContent, '');
    // The relay ended for good: shown while the link says closed, gone when it is open again.
    renderLinkState(status({ ws: 'closed', reason: 'The session has ended.' }));
    assert.equal(els.error.textContent, 'The session has ended.');
    renderLinkState(status({ ws: 'connecting', reason: 'Reconnecting…' }));
    assert.equal(els.error.textContent, '');
    showError('x', 'a');
    showError('y', 'b', 10_000);
    clearErrors();
    assert.equal(els.error.textContent, '');
  } finally {
    clearErrors();
    delete globalThis.document;
  }
});

test('the link state shown is the status API\'s', () => {
  const els = fakeDOM();
  try {
    renderLinkState(status({ path: 'p2p', reasonCode: '', rttP2P: 4, rttRelay: 20, chordP2P: 2.5 }));
    assert.equal(els.path.dataset.path, 'p2p');
    assert.equal(els.path.textContent, 'P2P');
    assert.equal(els['ws-state'].textContent, 'connected');
    assert.equal(els.latency.dataset.ms, '4');
    assert.equal(els.latency.dataset.chordMs, '2.5');
    assert.equal(els['p2p-reason'].textContent, '');
    renderLinkState(status({ path: 'relay', reasonCode: 'silent', reason: 'the direct connection went silent', rttRelay: 20, chordRelay: 9 }));
    assert.equal(els.path.dataset.path, 'relay');
    assert.equal(els.latency.dataset.ms, '20');
    assert.equal(els.latency.dataset.chordMs, '9');
    assert.equal(els['p2p-reason'].textContent, 'the direct connection went silent');
  } finally {
    clearErrors();
    delete globalThis.document;
  }
});
