// The error codes the browser client compares with exist: every code that
// static/*.js tests a server answer against is one of protocol's Code
// constants, listed in protocol/testdata/api_codes.json (generated and kept
// current by protocol's TestAPICodesFile).
// Run: node --test web/testdata/  (web_test.go runs it with the JSON beside it).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync, existsSync } from 'node:fs';

const here = new URL('.', import.meta.url);
// In the repository the JSON is protocol's; web_test.go copies it next to
// the tests.
const codesURL = [new URL('api_codes.json', here), new URL('../../protocol/testdata/api_codes.json', here)]
  .find((u) => existsSync(u));

const known = () => new Set(Object.keys(JSON.parse(readFileSync(codesURL, 'utf8')).codes));

// usedCodes returns the string codes a JavaScript source compares a `code`
// (d.code, err.code, code) with: `x.code === 'c'` (or !==, ==, !=, either
// side), `case 'c':` inside `switch (x.code)`, and `['a', 'b'].includes(x.code)`.
export function usedCodes(src) {
  const out = new Set();
  const lit = `(['"\`])([a-z][a-z0-9_]*)\\1`;
  const ref = String.raw`(?<![\w$.])(?:[\w$]+\.)*code\b`;
  for (const re of [new RegExp(`${ref}\\s*[!=]==?\\s*${lit}`, 'g'), new RegExp(`${lit}\\s*[!=]==?\\s*${ref}`, 'g')]) {
    for (const m of src.matchAll(re)) out.add(m[2]);
  }
  for (const m of src.matchAll(new RegExp(String.raw`\[([^\]]*)\]\s*\.includes\(\s*${ref}\s*\)`, 'g'))) {
    for (const s of m[1].matchAll(new RegExp(lit, 'g'))) out.add(s[2]);
  }
  for (const m of src.matchAll(new RegExp(String.raw`switch\s*\(\s*${ref}\s*\)\s*\{`, 'g'))) {
    let depth = 1;
    let i = m.index + m[0].length;
    const start = i;
    for (; i < src.length && depth > 0; i++) {
      if (src[i] === '{') depth++;
      if (src[i] === '}') depth--;
    }
    for (const c of src.slice(start, i).matchAll(new RegExp(String.raw`case\s+${lit}\s*:`, 'g'))) out.add(c[2]);
  }
  return out;
}

test('the code list is there and holds both kinds of code', () => {
  assert.ok(codesURL, 'protocol/testdata/api_codes.json not found');
  const codes = known();
  for (const c of ['invalid_json', 'invalid_target', 'session_not_found', 'pairing_used']) assert.ok(codes.has(c), c);
});

test('usedCodes finds every form of comparison, and an unknown code is caught', () => {
  const src = `
    if (d.code === 'invalid_target') {}
    if ('rate_limited' !== err.code) {}
    if (code == "unavailable") {}
    if (['pairing_used', 'invalid_token'].includes(data.code)) {}
    switch (res.code) { case 'draining': { break; } case 'no_such_code': break; }
    switch (kind) { case 'not_a_code': break; }
    if (ev.code === 'Space' || ev.code === 4001 || decode === 'x') {}
  `;
  const used = usedCodes(src);
  assert.deepEqual([...used].sort(),
    ['draining', 'invalid_target', 'invalid_token', 'no_such_code', 'pairing_used', 'rate_limited', 'unavailable']);
  const codes = known();
  assert.deepEqual([...used].filter((c) => !codes.has(c)), ['no_such_code']);
});

test('static/*.js compares error codes only with codes that exist', () => {
  const codes = known();
  const dir = new URL('../static/', here);
  const files = readdirSync(dir).filter((f) => f.endsWith('.js'));
  assert.ok(files.includes('link.js'), 'static/link.js not found');
  for (const f of files) {
    const unknown = [...usedCodes(readFileSync(new URL(f, dir), 'utf8'))].filter((c) => !codes.has(c));
    assert.deepEqual(unknown, [], `static/${f} compares with codes that do not exist`);
  }
});
