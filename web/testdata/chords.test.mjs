// Unit tests of chords.js's pure parts: shapes, diagrams, the synth's samples.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SHAPES, GRID, chordShape, chordMidi, diagramSVG, pluckSamples, midiFreq } from '../static/chords.js';
import { validChord } from '../static/link.js';

test('every shape is six strings and a valid chord name', () => {
  for (const [name, s] of Object.entries(SHAPES)) {
    assert.ok(validChord(name), name);
    assert.equal(s.frets.length, 6, name);
    assert.equal(s.fingers.length, 6, name);
    for (const f of s.frets) assert.ok(Number.isInteger(f) && f >= -1 && f <= 12, name);
  }
  for (const c of ['C', 'G', 'Am', 'F', 'D', 'E', 'Em', 'A']) {
    assert.ok(GRID.includes(c), c);
    assert.ok(chordShape(c), c);
  }
  assert.ok(SHAPES.F.barre && SHAPES.Bm.barre);
});

test('diagrams: strings, frets, markers, barre; unknown chords have none', () => {
  const c = diagramSVG('C');
  assert.match(c, /^<svg /);
  assert.equal((c.match(/class="muted"/g) || []).length, 1, 'C mutes the low E');
  assert.equal((c.match(/class="open"/g) || []).length, 2, 'C has two open strings');
  assert.equal((c.match(/class="dot"/g) || []).length, 3);
  assert.match(diagramSVG('F'), /class="barre"/);
  assert.match(diagramSVG('Bm'), /class="barre"/);
  assert.doesNotMatch(diagramSVG('G'), /class="barre"/);
  assert.equal(diagramSVG('C#m7b5'), '');
  assert.equal(diagramSVG('__proto__'), '');
  assert.equal(diagramSVG('constructor'), '');
});

test('chord notes follow the shape', () => {
  assert.deepEqual(chordMidi('E'), [40, 47, 52, 56, 59, 64]);
  assert.deepEqual(chordMidi('C'), [null, 48, 52, 55, 60, 64]);
  assert.deepEqual(chordMidi('Xyz'), [40, 45, 50, 55, 59, 64]);
  assert.ok(Math.abs(midiFreq(69) - 440) < 1e-9);
});

test('karplus-strong decays and stays bounded', () => {
  let seed = 1;
  const rnd = () => ((seed = (seed * 16807) % 2147483647) / 2147483647);
  const s = pluckSamples(110, 44100, 1, rnd);
  assert.equal(s.length, 44100);
  const rms = (a, b) => Math.sqrt(s.slice(a, b).reduce((x, y) => x + y * y, 0) / (b - a));
  assert.ok(rms(0, 4410) > rms(30000, 34410) * 2, 'decays');
  for (const v of s) assert.ok(Math.abs(v) <= 1 && Number.isFinite(v));
});
