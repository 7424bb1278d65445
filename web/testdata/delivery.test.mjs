// The shared delivery vectors (protocol/testdata/delivery.json) against
// delivery.js: the same cases peer/vectors_test.go runs against the Go client.
// Run: node --test web/testdata/  (web_test.go runs it with the vectors
// copied beside it).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import * as d from '../static/delivery.js';

const beside = fileURLToPath(new URL('./delivery.json', import.meta.url));
const file = existsSync(beside) ? beside : fileURLToPath(new URL('../../protocol/testdata/delivery.json', import.meta.url));
const v = JSON.parse(readFileSync(file, 'utf8'));

test('the constants are delivery.js\'s', () => {
  const c = v.constants;
  assert.equal(d.REORDER_WINDOW, c.reorder_window);
  assert.equal(d.MAX_DEPARTED, c.max_departed);
  assert.equal(d.MAX_SEEN, c.max_seen);
  assert.equal(d.OUTBOX_MAX, c.outbox_max);
  assert.equal(d.RESEND_AFTER_MS, c.resend_after_ms);
  assert.equal(d.RESEND_BATCH, c.resend_batch);
  assert.equal(d.HEARTBEAT_MS, c.heartbeat_ms);
  assert.equal(d.HEARTBEAT_IDLE_MS, c.heartbeat_idle_ms);
  assert.equal(d.IDLE_AFTER_MS, c.idle_after_ms);
  assert.equal(d.QUIET_AFTER, c.quiet_after);
  assert.equal(d.SILENT_AFTER, c.silent_after);
  assert.deepEqual({ ...d.WS_RETRY }, c.backoff.ws);
  assert.deepEqual({ ...d.P2P_RETRY_KNOWN }, c.backoff.p2p_known);
  assert.deepEqual({ ...d.P2P_RETRY_NEW }, c.backoff.p2p_new);
});

for (const tc of v.inbox) {
  test(`inbox: ${tc.name}`, () => {
    const ib = new d.Inbox({ window: tc.window });
    tc.steps.forEach((st, i) => {
      let got;
      switch (st.op) {
        case 'arrive': got = ib.push({ type: 'chord_change', from: st.from, seq: st.seq, ...(st.gap ? { gap: st.gap } : {}), data: { chord: 'C' } }, st.t, st.path); break;
        case 'baseline': got = ib.baseline(st.from, st.last); break;
        case 'leave': ib.leave(st.from); got = []; break;
        case 'rebase': ib.rebase(); return;
        default: assert.fail(`step ${i}: unknown op ${st.op}`);
      }
      assert.deepEqual(got.map((x) => [x.msg.from, x.msg.seq, x.path]), st.deliver, `step ${i} (${st.op} ${st.from || ''} ${st.seq || ''} ${st.path || ''} t=${st.t})`);
    });
    assert.deepEqual([ib.dropped, ib.overrun, ib.held()], [tc.dropped, tc.overrun, tc.held], 'dropped, overrun, held');
  });
}

for (const tc of v.seen) {
  test(`seen: ${tc.name}`, () => {
    const ib = new d.Inbox();
    for (const [id, last] of Object.entries(tc.delivered)) ib.baseline(id, last);
    assert.deepEqual(ib.seen(tc.present, d.MAX_SEEN), tc.want);
  });
}

for (const tc of v.outbox) {
  test(`outbox: ${tc.name}`, () => {
    const ob = new d.Outbox(tc.max);
    const seqs = (items) => items.map((x) => x.seq);
    // [seq, gap] of the items with a gap; every other item must have none
    const gaps = (items) => items.filter((x) => x.gap).map((x) => [x.seq, x.gap]);
    tc.steps.forEach((st, i) => {
      const at = `step ${i} (${st.op})`;
      switch (st.op) {
        case 'add': assert.equal(ob.add(st.seq, 'x', st.t, st.direct), st.dropped, at); break;
        case 'add_range': for (let s = st.from; s <= st.to; s++) ob.add(s, 'x', st.t, st.direct); break;
        case 'ack_server': ob.ackServer(st.last); break;
        case 'track': ob.track(st.peer, st.ack); break;
        case 'ack_peer': ob.ackPeer(st.peer, st.last); break;
        case 'forget': ob.forget(st.peer); break;
        case 'size': assert.equal(ob.size, st.want, at); break;
        case 'unconfirmed': {
          const items = ob.unconfirmed();
          assert.deepEqual(seqs(items), st.want, at);
          assert.deepEqual(gaps(items), st.gaps || [], at + ' gaps');
          break;
        }
        case 'resend': {
          const items = ob.resend(st.peer, st.t);
          assert.deepEqual(seqs(items), st.want, at);
          assert.deepEqual(gaps(items), st.gaps || [], at + ' gaps');
          break;
        }
        case 'resend_count': {
          const got = seqs(ob.resend(st.peer, st.t));
          assert.deepEqual([got.length, got[0], got.at(-1)], [st.want, st.first, st.final], at);
          break;
        }
        default: assert.fail(`step ${i}: unknown op ${st.op}`);
      }
    });
  });
}

for (const tc of v.count) {
  test(`count: ${tc.name}`, () => {
    const c = new d.Counter();
    tc.steps.forEach((st, i) => {
      switch (st.op) {
        case 'next': { const { seq, gap } = c.next(); assert.deepEqual([seq, gap], st.want, `step ${i}`); break; }
        case 'server': c.server(st.last); break;
        case 'peer': c.peer(st.ack); break;
        default: assert.fail(`step ${i}: unknown op ${st.op}`);
      }
    });
  });
}

test('backoff', () => {
  for (const tc of v.backoff) {
    assert.equal(d.backoffDelay(tc.attempt, { min: tc.min, max: tc.max, random: () => tc.random }), tc.want, JSON.stringify(tc));
  }
});

test('heartbeat verdict', () => {
  for (const tc of v.heartbeat) assert.equal(d.heartbeatVerdict(tc.silent_ms, tc.interval_ms), tc.want, JSON.stringify(tc));
});

test('link state machine: every transition, allowed and refused', () => {
  const ls = v.link_state;
  assert.deepEqual([...d.LINK_STATES], ls.states);
  assert.deepEqual([...d.LINK_EVENTS], ls.events);
  for (const s of ls.states) {
    for (const e of ls.events) assert.equal(d.nextLinkState(s, e), ls.table[s][e], `${s} + ${e}`);
  }
  assert.equal(d.nextLinkState('unknown', 'attempt'), null);
  assert.equal(d.nextLinkState('up', 'nonsense'), null);
});

test('wire: an outbox item with a gap goes out with it; gapOf reads only a valid gap', () => {
  const msg = { type: 'chord_change', data: { chord: 'Am' }, from: 'phone123', seq: 90, at: 1.5 };
  assert.equal(d.wire({ seq: 90, data: msg }), msg);
  assert.deepEqual(d.wire({ seq: 90, data: msg, gap: 84 }), { ...msg, gap: 84 });
  assert.equal(msg.gap, undefined, 'the kept message is unchanged');
  assert.equal(d.gapOf({ seq: 90, gap: 84 }), 84);
  assert.equal(d.gapOf({ seq: 90, gap: 89 }), 89);
  for (const bad of [{ seq: 90, gap: 90 }, { seq: 90, gap: '1' }, { seq: 90, gap: -1 }, { seq: 90, gap: 1.5 }, { seq: 90 }]) {
    assert.equal(d.gapOf(bad), 0, JSON.stringify(bad));
  }
});
