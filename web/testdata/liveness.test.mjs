// The shared liveness vectors (protocol/testdata/liveness.json) against
// liveness.js: the same cases peer/vectors_test.go runs against the Go client.
// Run: node --test web/testdata/  (web_test.go runs it with the vectors
// copied beside it).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import * as l from '../static/liveness.js';

const beside = fileURLToPath(new URL('./liveness.json', import.meta.url));
const file = existsSync(beside) ? beside : fileURLToPath(new URL('../../protocol/testdata/liveness.json', import.meta.url));
const v = JSON.parse(readFileSync(file, 'utf8'));

test('the constants are liveness.js\'s', () => {
  assert.equal(l.PROBE_MS, v.constants.probe_ms);
  assert.equal(l.PROBE_BUDGET, v.constants.probe_budget);
  assert.equal(l.ANSWER_GAP_MS, v.constants.answer_gap_ms);
  assert.equal(l.MAX_OUTSTANDING, v.constants.max_outstanding);
});

test('the interval per member', () => {
  for (const c of v.interval) assert.equal(l.probeInterval(c.probed), c.want, `${c.probed} probed`);
});

for (const c of v.cases) {
  test('liveness: ' + c.name, () => {
    const x = new l.Liveness();
    c.steps.forEach((s, i) => {
      const at = `step ${i} (${s.op})`;
      switch (s.op) {
        case 'send': assert.equal(x.send(s.t), s.want, at); break;
        case 'answer': assert.equal(x.answer(s.ack), s.want, at); break;
        case 'due': assert.equal(x.due(s.t, c.interval), s.want, at); break;
        case 'verdict': assert.equal(x.verdict(s.t, c.interval), s.want, at); break;
        case 'asked': assert.equal(x.asked(s.n, s.t), s.want, at); break;
        case 'known': x.markKnown(); break;
        case 'stop': x.stop(); break;
        default: assert.fail('unknown op ' + s.op);
      }
    });
  });
}
