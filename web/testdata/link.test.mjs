// Unit tests of link.js's pure logic and of Link against a fake WebSocket.
// Run: node --test web/testdata/  (web_test.go runs them when node is installed).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  Inbox, Outbox, offers, backoffDelay, closeAction, closeText, randomClientId, validChord,
  normalizeCandidate, candidateKind, explainP2P, wsURL, Link,
} from '../static/link.js';

const m = (from, seq, chord = 'C') => ({ type: 'chord_change', from, seq, data: { chord } });
const seqs = (list) => list.map((x) => x.seq);

test('inbox delivers in order, drops duplicates, buffers gaps', () => {
  const ib = new Inbox();
  assert.deepEqual(seqs(ib.push(m('a', 1))), [1]);
  assert.deepEqual(seqs(ib.push(m('a', 1))), [], 'duplicate dropped');
  assert.deepEqual(seqs(ib.push(m('a', 3))), [], 'gap buffered');
  assert.deepEqual(seqs(ib.push(m('a', 3))), [], 'duplicate in buffer');
  assert.deepEqual(seqs(ib.push(m('a', 4))), []);
  assert.equal(ib.buffered(), 2);
  assert.deepEqual(seqs(ib.push(m('a', 2))), [2, 3, 4], 'gap filled releases the buffer');
  assert.equal(ib.lastSeq('a'), 4);
  assert.deepEqual(seqs(ib.push(m('a', 2))), []);
  assert.equal(ib.buffered(), 0);
});

test('inbox keeps senders apart and passes server messages through', () => {
  const ib = new Inbox();
  assert.deepEqual(seqs(ib.push(m('a', 1))), [1]);
  assert.deepEqual(seqs(ib.push(m('b', 1))), [1]);
  const srv = { type: 'connection_update', data: {} };
  assert.deepEqual(ib.push(srv), [srv]);
  assert.deepEqual(ib.seen('b'), { a: 1 });
});

test('inbox baselines an unknown sender at its first seq', () => {
  const ib = new Inbox();
  assert.deepEqual(seqs(ib.push(m('a', 11))), [11]);
  assert.deepEqual(seqs(ib.push(m('a', 12))), [12]);
  ib.rebase();
  assert.deepEqual(seqs(ib.push(m('a', 40))), [40]);
});

test('inbox bounds its buffer and expires old gaps', () => {
  const ib = new Inbox({ maxBuffered: 3 });
  ib.push(m('a', 1));
  assert.deepEqual(seqs(ib.push(m('a', 3))), []);
  assert.deepEqual(seqs(ib.push(m('a', 4))), []);
  assert.deepEqual(seqs(ib.push(m('a', 5))), []);
  assert.deepEqual(seqs(ib.push(m('a', 6))), [3, 4, 5, 6], 'overflow skips the gap');
  assert.equal(ib.gaps, 1);
  const ib2 = new Inbox();
  ib2.push(m('a', 1), 0);
  ib2.push(m('a', 5), 1000);
  assert.deepEqual(ib2.expire(5000, 10000), []);
  assert.deepEqual(seqs(ib2.expire(12000, 10000)), [5]);
  assert.deepEqual(seqs(ib2.push(m('a', 6))), [6]);
});

test('outbox acks, resends after, and stays bounded', () => {
  const ob = new Outbox(3);
  for (let i = 1; i <= 3; i++) assert.equal(ob.add({ seq: i }), null);
  assert.equal(ob.add({ seq: 4 }).seq, 1, 'oldest dropped when full');
  assert.deepEqual(seqs(ob.after(2)), [3, 4]);
  ob.ack(3);
  assert.deepEqual(seqs(ob.items), [4]);
  ob.ack(NaN);
  assert.equal(ob.size, 1);
});

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

test('backoff grows, is capped and jittered', () => {
  const lo = { random: () => 0 }, hi = { random: () => 0.999999 };
  assert.equal(backoffDelay(0, lo), 125);
  assert.equal(backoffDelay(0, hi), 250);
  assert.equal(backoffDelay(3, hi), 2000);
  assert.equal(backoffDelay(20, hi), 10000);
  assert.equal(backoffDelay(20, lo), 5000);
  assert.equal(backoffDelay(1000, hi), 10000);
  for (let a = 0; a < 12; a++) {
    const d = backoffDelay(a);
    assert.ok(d >= 125 && d <= 10000, `attempt ${a}: ${d}`);
  }
});

test('close codes', () => {
  for (const c of [4100, 4101, 4102, 4103, 4104, 4199]) assert.equal(closeAction(c), 'terminal');
  // every terminal code the server sends (protocol/errors.go) has words of its own
  for (const c of [4100, 4101, 4102, 4103, 4104]) assert.ok(!closeText(c).startsWith('The server closed'), `${c}: ${closeText(c)}`);
  assert.match(closeText(4104), /removed this device.*[Pp]air it again/);
  assert.equal(closeText(4199, 'x'), 'The server closed the connection (code 4199: x).');
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

test('ws url', () => {
  assert.equal(wsURL({ protocol: 'http:', host: '192.168.1.2:8000' }, 'abc', 't.k', 'id1'),
    'ws://192.168.1.2:8000/ws/guitar/abc/?token=t.k&client_id=id1');
  assert.match(wsURL({ protocol: 'https:', host: 'h' }, 's', 't', 'i'), /^wss:\/\/h\//);
});

// ---------------------------------------------------------------- Link over a fake WebSocket

class FakeWS {
  static all = [];
  constructor(url) {
    this.url = url;
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
  assert.match(ws.url, /^ws:\/\/test:8000\/ws\/guitar\/S1\/\?token=T&client_id=pcpcpcpcpcpcpcpc&p2p=0$/, "no WebRTC here: the others are told not to offer");
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

test('Inbox: a data channel message waits for the server\'s baseline', () => {
  const ib = new Inbox();
  const m = (seq) => ({ type: 'chord_change', from: 'x', seq, data: { chord: 'C' } });
  assert.deepEqual(ib.push(m(6), 0, 'p2p'), [], 'held: the count of x is unknown');
  assert.deepEqual(ib.baseline('x', 4), [], 'seq 5 is still missing');
  const out = ib.push(m(5), 1, 'relay');
  assert.deepEqual(out.map((x) => x.seq), [5, 6]);
  assert.equal(ib.pathOf(out[1], 'relay'), 'p2p');
  assert.deepEqual(ib.push(m(6), 2, 'relay'), [], 'duplicate');
});

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
