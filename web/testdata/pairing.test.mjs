// Unit tests of pairing.js's pure helpers (node --test).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { codeFromPath, normalizePIN, formatPIN } from '../static/pairing.js';

test('codeFromPath reads /p/<code> in either case and nothing else', () => {
  assert.equal(codeFromPath('/p/K7QX2M9DPA4T'), 'K7QX2M9DPA4T');
  assert.equal(codeFromPath('/P/k7qx2m9dpa4t'), 'K7QX2M9DPA4T');
  assert.equal(codeFromPath('/p/K7QX2M9DPA4T/'), 'K7QX2M9DPA4T');
  for (const p of ['/phone/', '/p/', '/p/AB/CD', '/p/ABC', '/x/K7QX2M9DPA4T', '', undefined]) assert.equal(codeFromPath(p), '', String(p));
});

test('normalizePIN keeps exactly six digits, spaces and dashes allowed', () => {
  assert.equal(normalizePIN('123456'), '123456');
  assert.equal(normalizePIN(' 123 456 '), '123456');
  assert.equal(normalizePIN('123-456'), '123456');
  for (const p of ['12345', '1234567', '12a456', '', null]) assert.equal(normalizePIN(p), '', String(p));
});

test('formatPIN groups by three', () => {
  assert.equal(formatPIN('482913'), '482 913');
  assert.equal(formatPIN(''), '');
});
