// Unit tests of link.js's pure logic and of Link against a fake WebSocket.
// Run: node --test web/testdata/  (web_test.go runs them when node is installed).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  offers, closeAction, closeText, randomClientId, validChord,
  normalizeCandidate, candidateKind, explainP2P, explainError, wsURL, wsProtocols, Link,
} from '../static/link.js';

test('offerer rule mirrors protocol.Offers', () => {
  assert.equal(offers('pc', 'zz', 'phone', 'aa'), true);
  assert.equal(offers('phone', 'aa', 'pc', 'zz'), false);
  assert.equal(offers('pc', 'aa', 'pc', 'bb'), true);
  assert.equal(offers('pc', 'bb', 'pc', 'aa'), false);
  assert.equal(offers('phone', 'a', 'phone', 'b'), true);
  // Exactly one of each pair offers.
  for (const [r1, r2] of [['pc', 'phone'], ['pc', 'pc'], ['phone', 'phone']]) {
    assert.notEqual(offers(r1, 'x1', r2, 'x2'), offers(r2, 'x2', r1, 'x1'));
  }
});

test('close codes', () => {
  for (const c of [4100, 4101, 4102, 4103, 4104, 4199]) assert.equal(closeAction(c), 'terminal');
  // every terminal code the server sends (protocol/errors.go) has words of its own
  for (const c of [4100, 4101, 4102, 4103, 4104]) assert.ok(!closeText(c).startsWith('The server closed'), `${c}: ${closeText(c)}`);
  assert.match(closeText(4104), /removed this device.*[Pp]air it again/);
  assert.equal(closeText(4199, 'x'), 'The server closed the connection (code 4199: x): reload the page to connect again.');
  // every terminal message says what to do
  for (const c of [4100, 4101, 4102, 4103, 4104, 4199]) assert.match(closeText(c), /reload|pair it again|close another/i, `${c}: ${closeText(c)}`);
  for (const c of [1001, 4000, 4001]) assert.equal(closeAction(c), 'now');
  for (const c of [1000, 1006, 1008, 1011, 4099, 4200]) assert.equal(closeAction(c), 'backoff');
});

test('client ids are 16 alphanumerics', () => {
  const seen = new Set();
  for (let i = 0; i < 200; i++) {
    const id = randomClientId();
    assert.match(id, /^[A-Za-z0-9]{16}$/);
    seen.add(id);
  }
  assert.equal(seen.size, 200);
});

test('chord grammar mirrors protocol.ValidChord', () => {
  for (const c of ['C', 'F#m7', 'Bbmaj7', 'D/F#', 'Cm7b5', 'Gsus4', 'Am', 'B7', 'Bm']) assert.ok(validChord(c), c);
  for (const c of ['', 'H', 'C<script>', 'c', 'C/', 'Cmmmmm', 'C'.padEnd(30, '7'), null, 5]) assert.ok(!validChord(c), String(c));
});

test('candidates and explanations', () => {
  assert.equal(normalizeCandidate('a=candidate:1 1 udp 1 x.local 5000 typ host'), 'candidate:1 1 udp 1 x.local 5000 typ host');
  assert.equal(candidateKind('candidate:1 1 udp 2113937151 3f1c.local 54321 typ host generation 0'), 'mdns');
  assert.equal(candidateKind('candidate:1 1 udp 2113937151 192.168.1.4 54321 typ host'), 'host');
  assert.equal(candidateKind('candidate:2 1 udp 1 1.2.3.4 5 typ srflx raddr 0.0.0.0 rport 0'), 'srflx');
  assert.match(explainP2P('no-candidates'), /no local network candidates — the browser may hide its address \(mDNS\) or WebRTC is blocked/);
  assert.match(explainP2P('ice-failed'), /ICE failed — the devices cannot reach each other directly \(different networks, client isolation, firewall\)/);
  assert.equal(explainP2P(''), '');
});

test('server errors in words, each saying what to do', () => {
  assert.match(explainError({ code: 'rate_limited', message: 'Too many messages: at most 20 per second' }), /sent again by themselves/);
  assert.match(explainError({ code: 'unavailable' }), /sent again by itself/);
  assert.equal(explainError({ code: 'invalid_data', message: 'bad' }), 'The server refused a message (bad): reload the page if this keeps happening.');
  assert.match(explainError(), /no reason given/);
});

test('ws url', () => {
  // No token in the URL (it travels as a subprotocol); client_id only once known.
  assert.equal(wsURL({ protocol: 'http:', host: '192.168.1.2:8000' }, 'abc', 'id1'),
    'ws://192.168.1.2:8000/ws/guitar/abc/?client_id=id1');
  assert.equal(wsURL({ protocol: 'http:', host: 'h:1' }, 'abc', ''), 'ws://h:1/ws/guitar/abc/');
  assert.match(wsURL({ protocol: 'https:', host: 'h' }, 's', 'i'), /^wss:\/\/h\//);
  assert.deepEqual(wsProtocols('t.k'), ['virtutune.v1', 'virtutune.token.t.k']);
});

// ---------------------------------------------------------------- Link over a fake WebSocket

class FakeWS {
  static all = [];
  constructor(url, protocols) {
    this.url = url;
    this.protocols = protocols;
    this.readyState = 0;
    this.sent = [];
    FakeWS.all.push(this);
  }
  send(s) { this.sent.push(JSON.parse(s)); }
  close() { this.readyState = 3; }
  open() { this.readyState = 1; this.onopen && this.onopen({}); }
  recv(obj) { this.onmessage && this.onmessage({ data: JSON.stringify(obj) }); }
  drop(code) { this.readyState = 3; this.onclose && this.onclose({ code, reason: '' }); }
  types() { return this.sent.map((x) => x.type); }
}

function withFakes(fn) {
  return async () => {
    const saved = { WebSocket: globalThis.WebSocket, location: globalThis.location, RTC: globalThis.RTCPeerConnection };
    globalThis.WebSocket = FakeWS;
    globalThis.location = { protocol: 'http:', host: 'test:8000', search: '', hash: '' };
    delete globalThis.RTCPeerConnection;
    FakeWS.all = [];
    try { await fn(); } finally {
      globalThis.WebSocket = saved.WebSocket;
      globalThis.location = saved.location;
      if (saved.RTC) globalThis.RTCPeerConnection = saved.RTC;
    }
  };
}

test('the token travels as a subprotocol, the client id comes from the server', withFakes(async () => {
  const link = new Link({ sessionId: 'S9', token: 'tok.en.sig', role: 'phone' });
  link.connect();
  await waitFor(() => FakeWS.all.length === 1);
  const ws = FakeWS.all[0];
  assert.ok(!ws.url.includes('tok.en.sig') && !ws.url.includes('token='), ws.url);
  assert.ok(!ws.url.includes('client_id'), ws.url);
  assert.deepEqual(ws.protocols, ['virtutune.v1', 'virtutune.token.tok.en.sig']);
  ws.open();
  ws.recv({ type: 'connection_update', data: { status: 'connected', user_id: 1, client_id: 'bound-id-1', role: 'phone', last_seq: 0 } });
  assert.equal(link.clientId, 'bound-id-1');
  ws.drop(1006);
  await waitFor(() => FakeWS.all.length === 2, 5000);
  assert.match(FakeWS.all[1].url, /client_id=bound-id-1/);
  assert.ok(!FakeWS.all[1].url.includes('tok.en.sig'));
  link.close();
}));

const waitFor = async (cond, ms = 2000) => {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 5));
  }
};

test('Link: hello, state, dedupe across paths, resend and resume after reconnect', withFakes(async () => {
  const chords = [], practice = [], states = [];
  const link = new Link({
    sessionId: 'S1', token: 'T', role: 'pc', clientId: 'pcpcpcpcpcpcpcpc',
    onChord: (c, meta) => chords.push([c, meta.path]),
    onPractice: (s) => practice.push(s),
    onLinkState: (s) => states.push(s),
  });
  assert.equal(link.p2pOff, 'unsupported');
  link.connect();
  const ws = FakeWS.all[0];
  assert.match(ws.url, /^ws:\/\/test:8000\/ws\/guitar\/S1\/\?client_id=pcpcpcpcpcpcpcpc&p2p=0$/, "no WebRTC here: the others are told not to offer");
  // A message sent before the hello waits in the outbox.
  assert.equal(link.sendChord('G'), 1);
  assert.equal(link.sendChord('H'), 0, 'invalid chord spends no seq');
  ws.open();
  ws.recv({ type: 'connection_update', off: 1, data: { status: 'connected', user_id: 7, client_id: 'pcpcpcpcpcpcpcpc', role: 'pc', last_seq: 0 } });
  assert.deepEqual(ws.types().slice(0, 2), ['chord_change', 'ping']);
  assert.deepEqual({ ...ws.sent[0], at: 0 }, { type: 'chord_change', data: { chord: 'G' }, from: 'pcpcpcpcpcpcpcpc', seq: 1, at: 0 });
  ws.recv({ type: 'session_state', data: { session_id: 'S1', chord: 'Em', practice: { status: 'started', timestamp: 5 }, offset: 4,
    members: [{ client_id: 'pcpcpcpcpcpcpcpc', role: 'pc', user_id: 7, last_seq: 1 }, { client_id: 'phone1', role: 'phone', user_id: 7, last_seq: 4 }] } });
  assert.equal(link.snapshot().chord, 'Em');
  assert.equal(link.snapshot().members.length, 2);
  assert.equal(link.highestOff, 4);
  assert.equal(states.at(-1).ws, 'open');
  assert.equal(states.at(-1).path, 'relay');

  ws.recv({ type: 'chord_change', from: 'phone1', seq: 5, off: 5, data: { chord: 'Am' } });
  ws.recv({ type: 'chord_change', from: 'phone1', seq: 5, off: 5, data: { chord: 'Am' } });
  ws.recv({ type: 'chord_change', from: 'phone1', seq: 7, off: 7, data: { chord: 'D' } });
  ws.recv({ type: 'chord_change', from: 'phone1', seq: 6, off: 6, data: { chord: 'C' } });
  assert.deepEqual(chords, [['Am', 'relay'], ['C', 'relay'], ['D', 'relay']]);
  ws.recv({ type: 'practice_update', from: 'phone1', seq: 8, off: 8, data: { status: 'ended', timestamp: 9 } });
  assert.deepEqual(practice, ['ended']);

  // Sent while disconnected: kept and resent; the server had seq 1 already.
  ws.drop(4000);
  assert.equal(link.sendChord('F'), 2);
  assert.equal(link.snapshot().chord, 'F', 'an own chord is the current chord too (onState must not undo it)');
  await waitFor(() => FakeWS.all.length === 2);
  const ws2 = FakeWS.all[1];
  ws2.open();
  ws2.recv({ type: 'connection_update', data: { status: 'connected', user_id: 7, client_id: 'pcpcpcpcpcpcpcpc', role: 'pc', last_seq: 1 } });
  const t = ws2.types();
  assert.deepEqual(t.slice(0, 2), ['chord_change', 'resume']);
  assert.equal(ws2.sent[0].seq, 2);
  assert.deepEqual(ws2.sent[1].data, { since: 8, seen: { phone1: 8 } });
  // A replay of something already seen is dropped; the missed one is delivered.
  ws2.recv({ type: 'chord_change', from: 'phone1', seq: 7, off: 7, data: { chord: 'D' } });
  ws2.recv({ type: 'chord_change', from: 'phone1', seq: 9, off: 9, data: { chord: 'E' } });
  ws2.recv({ type: 'resumed', data: { recovered: true, count: 1, offset: 9 } });
  assert.deepEqual(chords.map((c) => c[0]), ['Am', 'C', 'D', 'E']);
  ws2.recv({ type: 'pong', data: { timestamp: 1, last_seq: 2 } });
  assert.equal(link.outbox.size, 0);

  // A snapshot that replaces history rebases the inbox.
  ws2.recv({ type: 'session_state', data: { chord: 'A', recovered: false, offset: 50, practice: { status: '' }, members: [] } });
  assert.equal(link.snapshot().chord, 'A');
  ws2.recv({ type: 'chord_change', from: 'phone1', seq: 30, off: 51, data: { chord: 'B7' } });
  assert.equal(chords.at(-1)[0], 'B7');

  // Terminal close: no reconnect, and the reason is reported.
  ws2.drop(4101);
  assert.equal(states.at(-1).ws, 'closed');
  assert.match(states.at(-1).reason, /session has ended/);
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(FakeWS.all.length, 2);
  link.close();
}));

test('Link: a page restarted with the id of an earlier run counts on after its seqs, what it sent before the first hello too', withFakes(async () => {
  const link = new Link({ sessionId: 'S1', token: 'T', role: 'phone', clientId: 'phphphphphphphph' });
  link.connect();
  const ws = FakeWS.all[0];
  assert.equal(link.sendChord('G'), 1, 'numbered before the server said where the count stands');
  ws.open();
  ws.recv({ type: 'connection_update', data: { status: 'connected', user_id: 7, client_id: 'phphphphphphphph', role: 'phone', last_seq: 7 } });
  const chords = () => ws.sent.filter((m) => m.type === 'chord_change').map((m) => [m.seq, m.data.chord, m.gap]);
  assert.deepEqual(chords(), [[8, 'G', undefined]], 'numbered again after the earlier run\'s 7');
  assert.equal(link.sendChord('Am'), 9);
  assert.deepEqual(chords(), [[8, 'G', undefined], [9, 'Am', undefined]]);
  link.close();
}));

test('Link: own practice is applied at once and its echo only once', withFakes(async () => {
  const practice = [];
  const link = new Link({ sessionId: 'S', token: 'T', role: 'phone', clientId: 'phphphphphphphph', onPractice: (s) => practice.push(s) });
  link.connect();
  const ws = FakeWS.all[0];
  ws.open();
  ws.recv({ type: 'connection_update', data: { status: 'connected', user_id: 1, client_id: 'phphphphphphphph', role: 'phone', last_seq: 0 } });
  const seq = link.practiceStart();
  assert.equal(seq, 1);
  const sent = ws.sent.find((x) => x.type === 'practice_start');
  assert.equal(typeof sent.data.timestamp, 'number');
  ws.recv({ type: 'practice_update', from: 'phphphphphphphph', seq: 1, off: 3, data: { status: 'started', timestamp: sent.data.timestamp } });
  ws.recv({ type: 'practice_update', from: 'phphphphphphphph', seq: 1, off: 3, data: { status: 'started', timestamp: sent.data.timestamp } });
  assert.deepEqual(practice, ['started']);
  link.close();
}));

test('Link: what the server processed but did not take is resent after a pong', withFakes(async () => {
  const link = new Link({ sessionId: 'S2', token: 'T', role: 'phone', clientId: 'phphphphphphphph' });
  link.connect();
  const ws = FakeWS.all[0];
  ws.open();
  ws.recv({ type: 'connection_update', data: { status: 'connected', user_id: 7, client_id: 'phphphphphphphph', role: 'phone', last_seq: 0 } });
  ws.recv({ type: 'session_state', data: { session_id: 'S2', offset: 0, practice: { status: '' }, members: [] } });
  for (const c of ['C', 'G', 'Am']) link.sendChord(c);
  ws.sent.length = 0;
  link._ping();
  const ping = ws.sent.at(-1);
  assert.equal(ping.type, 'ping');
  // the server took seq 1 only (its store was unreachable for 2 and 3)
  ws.recv({ type: 'pong', data: { timestamp: ping.data.timestamp, last_seq: 1 } });
  const resent = ws.sent.filter((m) => m.type === 'chord_change').map((m) => [m.seq, m.data.chord]);
  assert.deepEqual(resent, [[2, 'G'], [3, 'Am']]);
  assert.equal(link.outbox.size, 2);
  link.close();
}));

// ---------------------------------------------------------------- Link's data channels over fake WebRTC

class FakeDC {
  constructor(label, init) { this.label = label; this.init = init; this.readyState = 'connecting'; this.sent = []; this.bufferedAmount = 0; }
  send(s) { if (this.readyState !== 'open') throw new Error('not open'); this.sent.push(JSON.parse(s)); }
  close() { this.readyState = 'closed'; }
  open() { this.readyState = 'open'; this.onopen && this.onopen(); }
  recv(obj) { this.onmessage && this.onmessage({ data: JSON.stringify(obj) }); }
  types() { return this.sent.map((x) => x.type); }
}

class FakePC {
  static all = [];
  constructor(cfg) { this.cfg = cfg; this.dcs = []; this.signalingState = 'stable'; this.iceConnectionState = 'new'; this.connectionState = 'new'; FakePC.all.push(this); }
  createDataChannel(label, init) { const dc = new FakeDC(label, init); this.dcs.push(dc); return dc; }
  async createOffer() { return { type: 'offer', sdp: 'offer-sdp' }; }
  async createAnswer() { return { type: 'answer', sdp: 'answer-sdp' }; }
  async setLocalDescription(d) { this.localDescription = d; if (d.type === 'offer') this.signalingState = 'have-local-offer'; }
  async setRemoteDescription(d) { this.remoteDescription = d; this.signalingState = d.type === 'offer' ? 'have-remote-offer' : 'stable'; }
  async addIceCandidate() {}
  close() { this.closed = true; this.connectionState = 'closed'; }
}

const flush = () => new Promise((r) => setImmediate(r));

// advance moves the mocked clock by ms in 10 ms steps (a tick runs each due
// timer once, not the ones it schedules).
function advance(t, ms) { for (let i = 0; i < ms; i += 10) t.mock.timers.tick(10); }

// withRTC runs fn with fake WebSocket and RTCPeerConnection and mocked timers
// (setTimeout, setInterval, Date), so the heartbeat's 100 ms steps are exact.
function withRTC(fn) {
  return async (t) => {
    const saved = { WebSocket: globalThis.WebSocket, location: globalThis.location, RTC: globalThis.RTCPeerConnection };
    globalThis.WebSocket = FakeWS;
    globalThis.location = { protocol: 'http:', host: 'test:8000', search: '', hash: '' };
    globalThis.RTCPeerConnection = FakePC;
    FakeWS.all = [];
    FakePC.all = [];
    t.mock.timers.enable({ apis: ['setTimeout', 'setInterval', 'Date'], now: 1_000_000 });
    try { await fn(t); } finally {
      t.mock.timers.reset();
      globalThis.WebSocket = saved.WebSocket;
      globalThis.location = saved.location;
      if (saved.RTC) globalThis.RTCPeerConnection = saved.RTC; else delete globalThis.RTCPeerConnection;
    }
  };
}

// pcWithPhone: a PC link joined to a session with a phone; the offer made
// and answered, the channel open.
async function pcWithPhone(t, opts = {}) {
  const link = new Link({ sessionId: 'S', token: 'T', role: 'pc', clientId: 'pcpcpcpcpcpcpcpc', ...opts });
  link.connect();
  const ws = FakeWS.all[0];
  ws.open();
  ws.recv({ type: 'connection_update', data: { status: 'connected', user_id: 7, client_id: 'pcpcpcpcpcpcpcpc', role: 'pc', last_seq: 0 } });
  ws.recv({ type: 'session_state', data: { session_id: 'S', offset: 0, practice: { status: '' },
    members: [{ client_id: 'pcpcpcpcpcpcpcpc', role: 'pc', user_id: 7, last_seq: 0 }, { client_id: 'phone1', role: 'phone', user_id: 7, last_seq: 0 }] } });
  await flush();
  assert.equal(FakePC.all.length, 1, 'the PC offers to the phone');
  const offer = ws.sent.find((m) => m.type === 'rtc_offer');
  assert.ok(offer && offer.to === 'phone1' && Number.isInteger(offer.data.generation));
  ws.recv({ type: 'rtc_answer', from: 'phone1', data: { sdp: 'answer', generation: offer.data.generation } });
  await flush();
  const dc = FakePC.all[0].dcs[0];
  dc.open();
  return { link, ws, dc, gen: offer.data.generation };
}

test('Link: the channel is unordered and reliable, heartbeats every 100 ms, suspect then down when silent, up when heard', withRTC(async (t) => {
  const { link, ws, dc } = await pcWithPhone(t);
  assert.deepEqual(dc.init, { ordered: false });
  assert.equal(link.linkState().peers[0].state, 'up');
  assert.equal(link.path, 'p2p');
  assert.ok(ws.sent.some((m) => m.type === 'p2p_state' && m.data.up === true));
  const pings = () => dc.sent.filter((m) => m.type === 'ping').length;
  const p0 = pings();
  advance(t, 100);
  assert.equal(pings(), p0 + 1, 'a heartbeat each 100 ms');
  assert.equal(dc.sent.at(-1).data.last_seq, 0, 'the heartbeat carries what we have of the peer');
  advance(t, 100);
  assert.equal(link.linkState().peers[0].state, 'suspect', 'two silent intervals');
  assert.equal(link.path, 'p2p', 'suspect still carries');
  advance(t, 200);
  assert.equal(link.linkState().peers[0].state, 'down', 'four silent intervals');
  const st = link.linkState();
  assert.equal(st.path, 'relay');
  assert.equal(st.reasonCode, 'silent');
  assert.match(st.reason, /went silent/);
  assert.ok(ws.sent.some((m) => m.type === 'p2p_state' && m.data.up === false && m.data.reason === 'silent'));
  // the peer is heard again: up at once, and its ping answered
  dc.recv({ type: 'ping', from: 'phone1', data: { timestamp: 5, last_seq: 0 } });
  assert.equal(link.linkState().peers[0].state, 'up');
  assert.deepEqual(dc.sent.at(-1), { type: 'pong', from: 'pcpcpcpcpcpcpcpc', at: dc.sent.at(-1).at, data: { timestamp: 5, last_seq: 0 } });
  link.close();
}));

test('Link: a down channel gets a fresh attempt beside it; the new channel replaces the old', withRTC(async (t) => {
  const { link, ws, dc, gen } = await pcWithPhone(t);
  advance(t, 400);
  assert.equal(link.linkState().peers[0].state, 'down');
  advance(t, 500);
  await flush();
  assert.equal(FakePC.all.length, 2, 'a fresh attempt 0.5 s after down');
  const offers = ws.sent.filter((m) => m.type === 'rtc_offer');
  assert.equal(offers.length, 2);
  assert.notEqual(offers[1].data.generation, gen);
  assert.ok(!FakePC.all[0].closed, 'the silent channel is kept meanwhile');
  ws.recv({ type: 'rtc_answer', from: 'phone1', data: { sdp: 'a2', generation: offers[1].data.generation } });
  await flush();
  FakePC.all[1].dcs[0].open();
  assert.equal(link.linkState().peers[0].state, 'up');
  assert.equal(link.linkState().peers[0].generation, offers[1].data.generation);
  assert.ok(FakePC.all[0].closed && dc.readyState === 'closed', 'the old channel is closed');
  link.close();
}));

test('Link: a member that left takes its link with it at once', withRTC(async (t) => {
  const { link, ws } = await pcWithPhone(t);
  assert.equal(link.path, 'p2p');
  ws.recv({ type: 'connection_update', data: { status: 'disconnected', user_id: 7, client_id: 'phone1' } });
  assert.equal(link.peers.size, 0);
  assert.ok(FakePC.all[0].closed);
  assert.equal(link.path, 'relay');
  assert.equal(link.linkState().reasonCode, 'no-peer');
  assert.equal(link.memberList().filter((m) => !m.self).length, 0);
  link.close();
}));

test('Link: chords go over both paths; what the peer lacks is resent over the channel when its heartbeat says so', withRTC(async (t) => {
  const { link, ws, dc } = await pcWithPhone(t);
  assert.equal(link.sendChord('Am'), 1);
  assert.equal(dc.sent.filter((m) => m.type === 'chord_change').length, 1, 'over the channel');
  assert.equal(ws.sent.filter((m) => m.type === 'chord_change').length, 1, 'and over the WebSocket');
  assert.equal(ws.sent.find((m) => m.type === 'chord_change').direct, undefined, 'no direct: the server relays it');
  // the channel goes down; a chord meanwhile goes by the relay only
  advance(t, 400);
  assert.equal(link.linkState().peers[0].state, 'down');
  assert.equal(link.sendChord('G'), 2);
  assert.equal(dc.sent.filter((m) => m.type === 'chord_change').length, 1);
  ws.recv({ type: 'pong', data: { timestamp: 0, last_seq: 2 } }); // the server has both
  // the peer is heard again, and has only seq 1: seq 2 goes again over the channel
  dc.recv({ type: 'ping', from: 'phone1', data: { timestamp: 9, last_seq: 1 } });
  const resent = dc.sent.filter((m) => m.type === 'chord_change').map((m) => [m.seq, m.data.chord]);
  assert.deepEqual(resent, [[1, 'Am'], [2, 'G']]);
  assert.equal(link.outbox.size, 1, 'kept until the peer has it');
  dc.recv({ type: 'pong', from: 'phone1', data: { timestamp: -1, last_seq: 2 } });
  assert.equal(link.outbox.size, 0);
  link.close();
}));

test('Link: a peer that has more of this id than this page sent (an earlier run\'s, over the channel only) makes it count on after that, the next with the gap', withRTC(async (t) => {
  const { link, ws, dc } = await pcWithPhone(t);
  dc.recv({ type: 'ping', from: 'phone1', data: { timestamp: 9, last_seq: 5 } });
  assert.equal(link.sendChord('Am'), 6);
  assert.equal(link.sendChord('G'), 7);
  const of = (sent) => sent.filter((m) => m.type === 'chord_change').map((m) => [m.seq, m.gap]);
  assert.deepEqual(of(dc.sent), [[6, 5], [7, undefined]]);
  assert.deepEqual(of(ws.sent), [[6, 5], [7, undefined]]);
  link.close();
}));

test('Link: a channel copy without seq, or from someone else, is refused; the relay\'s copy is delivered once', withRTC(async (t) => {
  const chords = [];
  const { link, ws, dc } = await pcWithPhone(t, { onChord: (c, meta) => chords.push([c, meta.path]) });
  dc.recv({ type: 'chord_change', from: 'phone1', data: { chord: 'C' } });
  dc.recv({ type: 'chord_change', from: 'intruder', seq: 1, data: { chord: 'D' } });
  assert.equal(link.stats().refused, 2);
  assert.deepEqual(chords, []);
  ws.recv({ type: 'chord_change', from: 'phone1', seq: 1, off: 3, data: { chord: 'C' } });
  dc.recv({ type: 'chord_change', from: 'phone1', seq: 1, at: Date.now(), data: { chord: 'C' } });
  assert.deepEqual(chords, [['C', 'relay']]);
  assert.deepEqual(link.stats().copies, { p2p: 1, relay: 1 });
  link.close();
}));

test('Link: after a terminal close the open channel still carries chords; 4100 closes it', withRTC(async (t) => {
  const { link, ws, dc } = await pcWithPhone(t);
  ws.drop(4101);
  assert.equal(link.linkState().ws, 'closed');
  assert.match(link.linkState().reason, /session has ended/);
  assert.equal(link.sendChord('E'), 1, 'sent over the channel');
  assert.equal(dc.sent.filter((m) => m.type === 'chord_change').length, 1);
  advance(t, 1000);
  assert.equal(FakeWS.all.length, 1, 'no reconnect');
  link.close();

  FakePC.all = [];
  FakeWS.all = [];
  const second = await pcWithPhone(t);
  second.ws.drop(4100);
  assert.ok(FakePC.all[0].closed, 'replaced: the newer connection takes over');
  assert.equal(second.link.sendChord('E'), 0, 'no path left');
  second.link.close();
}));

// joined connects a Link of role and id to a fake server and tells it
// that it joined, and then that a member of otherRole and otherId did.
function joined(role, id, otherRole, otherId) {
  const link = new Link({ sessionId: 'S', token: 'T', role, clientId: id });
  link.connect();
  const ws = FakeWS.all.at(-1);
  ws.open();
  for (const [r, cid] of [[role, id], [otherRole, otherId]]) {
    ws.recv({ type: 'connection_update', data: { status: 'connected', user_id: 1, client_id: cid, role: r, last_seq: 0 } });
  }
  return { link, ws };
}

test('Link: the probe over the relay — a member no channel can tell about is probed, its answers make it live, its silence silent; its probes are answered', withFakes(async () => {
  const { link, ws } = joined('pc', 'pcpcpcpcpcpcpcpc', 'phone', 'phphphphphphphph');
  const verdict = () => link.linkState().liveness.find((l) => l.id === 'phphphphphphphph').verdict;
  const probes = () => ws.sent.filter((m) => m.type === 'probe' && m.to === 'phphphphphphphph' && m.data.n);
  // no RTCPeerConnection here: P2P is off, so the probe is the only word
  await waitFor(() => probes().length >= 1);
  assert.equal(verdict(), 'unknown'); // never answered: not judged yet
  ws.recv({ type: 'probe', from: 'phphphphphphphph', to: 'pcpcpcpcpcpcpcpc', data: { ack: probes().at(-1).data.n } });
  assert.equal(verdict(), 'live');
  // no more answers: silent within two intervals of the first probe unanswered
  await waitFor(() => verdict() === 'silent', 3000);
  ws.recv({ type: 'probe', from: 'phphphphphphphph', to: 'pcpcpcpcpcpcpcpc', data: { ack: probes().at(-1).data.n } });
  assert.equal(verdict(), 'live');
  // its probe is answered at once with the highest n asked
  ws.recv({ type: 'probe', from: 'phphphphphphphph', to: 'pcpcpcpcpcpcpcpc', data: { n: 7 } });
  assert.deepEqual(ws.sent.filter((m) => m.type === 'probe' && m.data.ack).at(-1), { type: 'probe', to: 'phphphphphphphph', data: { ack: 7 } });
  // a member that left is neither probed nor listed
  ws.recv({ type: 'connection_update', data: { status: 'disconnected', user_id: 1, client_id: 'phphphphphphphph', role: 'phone' } });
  assert.deepEqual(link.linkState().liveness, []);
  const n = probes().length;
  await new Promise((r) => setTimeout(r, 400));
  assert.equal(probes().length, n);
  link.close();
}));
