// chords.js: finger diagrams (inline SVG) and a plucked-string synth
// (Karplus-Strong rendered into an AudioBuffer, no samples) for both pages.
// diagramSVG, chordShape and chordMidi are pure and importable in Node.

/**
 * SHAPES holds open-position shapes: frets from the low E string to the high
 * e string (-1 muted, 0 open), fingers (0 none), and an optional barre
 * {fret, from, to} in string numbers (6 = low E ... 1 = high e).
 */
export const SHAPES = Object.freeze({
  C: { frets: [-1, 3, 2, 0, 1, 0], fingers: [0, 3, 2, 0, 1, 0] },
  G: { frets: [3, 2, 0, 0, 0, 3], fingers: [2, 1, 0, 0, 0, 3] },
  Am: { frets: [-1, 0, 2, 2, 1, 0], fingers: [0, 0, 2, 3, 1, 0] },
  F: { frets: [1, 3, 3, 2, 1, 1], fingers: [1, 3, 4, 2, 1, 1], barre: { fret: 1, from: 6, to: 1 } },
  D: { frets: [-1, -1, 0, 2, 3, 2], fingers: [0, 0, 0, 1, 3, 2] },
  E: { frets: [0, 2, 2, 1, 0, 0], fingers: [0, 2, 3, 1, 0, 0] },
  Em: { frets: [0, 2, 2, 0, 0, 0], fingers: [0, 2, 3, 0, 0, 0] },
  A: { frets: [-1, 0, 2, 2, 2, 0], fingers: [0, 0, 1, 2, 3, 0] },
  Dm: { frets: [-1, -1, 0, 2, 3, 1], fingers: [0, 0, 0, 2, 3, 1] },
  B7: { frets: [-1, 2, 1, 2, 0, 2], fingers: [0, 2, 1, 3, 0, 4] },
  E7: { frets: [0, 2, 0, 1, 0, 0], fingers: [0, 2, 0, 1, 0, 0] },
  A7: { frets: [-1, 0, 2, 0, 2, 0], fingers: [0, 0, 2, 0, 3, 0] },
  G7: { frets: [3, 2, 0, 0, 0, 1], fingers: [3, 2, 0, 0, 0, 1] },
  C7: { frets: [-1, 3, 2, 3, 1, 0], fingers: [0, 3, 2, 4, 1, 0] },
  D7: { frets: [-1, -1, 0, 2, 1, 2], fingers: [0, 0, 0, 2, 1, 3] },
  Bm: { frets: [-1, 2, 4, 4, 3, 2], fingers: [0, 1, 3, 4, 2, 1], barre: { fret: 2, from: 5, to: 1 } },
  Am7: { frets: [-1, 0, 2, 0, 1, 0], fingers: [0, 0, 2, 0, 1, 0] },
  Em7: { frets: [0, 2, 0, 0, 0, 0], fingers: [0, 2, 0, 0, 0, 0] },
  Dm7: { frets: [-1, -1, 0, 2, 1, 1], fingers: [0, 0, 0, 2, 1, 1] },
  Cmaj7: { frets: [-1, 3, 2, 0, 0, 0], fingers: [0, 3, 2, 0, 0, 0] },
  Fmaj7: { frets: [-1, -1, 3, 2, 1, 0], fingers: [0, 0, 3, 2, 1, 0] },
  Dsus2: { frets: [-1, -1, 0, 2, 3, 0], fingers: [0, 0, 0, 1, 3, 0] },
  Dsus4: { frets: [-1, -1, 0, 2, 3, 3], fingers: [0, 0, 0, 1, 2, 3] },
  Asus2: { frets: [-1, 0, 2, 2, 0, 0], fingers: [0, 0, 1, 2, 0, 0] },
  Asus4: { frets: [-1, 0, 2, 2, 3, 0], fingers: [0, 0, 1, 2, 3, 0] },
});

/** The chords of the phone's grid, in order. */
export const GRID = ['C', 'G', 'Am', 'F', 'D', 'E', 'Em', 'A', 'Dm', 'B7', 'E7', 'A7', 'G7', 'C7', 'D7', 'Bm'];

/** MIDI notes of the open strings, low E to high e (standard tuning). */
export const OPEN_MIDI = Object.freeze([40, 45, 50, 55, 59, 64]);

/** STRING_NAMES labels the strings, low to high. */
export const STRING_NAMES = Object.freeze(['E', 'A', 'D', 'G', 'B', 'e']);

/** chordShape returns the shape of a chord name, or null when unknown. */
export function chordShape(name) {
  return Object.prototype.hasOwnProperty.call(SHAPES, name) ? SHAPES[name] : null;
}

/** chordMidi returns the six MIDI notes a shape sounds (null for a muted string); open strings without a shape. */
export function chordMidi(name) {
  const s = chordShape(name);
  return OPEN_MIDI.map((m, i) => (s ? (s.frets[i] < 0 ? null : m + s.frets[i]) : m));
}

/** midiFreq converts a MIDI note to Hz. */
export function midiFreq(m) { return 440 * 2 ** ((m - 69) / 12); }

function esc(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));
}

/**
 * diagramSVG returns the finger diagram of a chord as SVG markup: six strings,
 * frets, dots with finger numbers, o/x markers above the nut, a barre bar.
 * An unknown chord yields '' (the page shows only its name).
 */
export function diagramSVG(name, { width = 180 } = {}) {
  const s = chordShape(name);
  if (!s) return '';
  const played = s.frets.filter((f) => f > 0);
  const maxF = played.length ? Math.max(...played) : 0;
  const minF = played.length ? Math.min(...played) : 0;
  const frets = 5;
  const base = maxF > frets ? minF : 1; // first fret shown
  const W = 180, H = 234, left = 30, top = 44, gapX = 24, gapY = 32;
  const x = (i) => left + i * gapX; // i: 0 = low E
  const y = (f) => top + (f - base + 0.5) * gapY;
  const out = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${W} ${H}" width="${width}" height="${Math.round(width * H / W)}" role="img" aria-label="${esc(name)} chord diagram" class="diagram">`);
  out.push(`<title>${esc(name)}</title>`);
  // Nut or fret number.
  if (base === 1) out.push(`<rect x="${left - 1}" y="${top - 5}" width="${gapX * 5 + 2}" height="6" fill="currentColor"/>`);
  else out.push(`<text x="${left - 8}" y="${top + gapY * 0.6}" font-size="14" text-anchor="end" fill="currentColor">${base}fr</text>`);
  for (let f = 0; f <= frets; f++) {
    out.push(`<line x1="${left}" y1="${top + f * gapY}" x2="${left + gapX * 5}" y2="${top + f * gapY}" stroke="currentColor" stroke-width="1.5"/>`);
  }
  for (let i = 0; i < 6; i++) {
    out.push(`<line x1="${x(i)}" y1="${top}" x2="${x(i)}" y2="${top + frets * gapY}" stroke="currentColor" stroke-width="${1 + (5 - i) * 0.3}"/>`);
    const f = s.frets[i];
    if (f < 0) out.push(`<text x="${x(i)}" y="${top - 14}" font-size="16" text-anchor="middle" fill="currentColor" class="muted">×</text>`);
    else if (f === 0) out.push(`<circle cx="${x(i)}" cy="${top - 19}" r="6" fill="none" stroke="currentColor" stroke-width="2" class="open"/>`);
    out.push(`<text x="${x(i)}" y="${H - 8}" font-size="12" text-anchor="middle" fill="currentColor" opacity="0.6">${STRING_NAMES[i]}</text>`);
  }
  if (s.barre) {
    const i1 = 6 - s.barre.from, i2 = 6 - s.barre.to;
    out.push(`<rect class="barre" x="${x(i1) - 9}" y="${y(s.barre.fret) - 9}" width="${x(i2) - x(i1) + 18}" height="18" rx="9" fill="var(--dot, #d9480f)"/>`);
  }
  for (let i = 0; i < 6; i++) {
    const f = s.frets[i];
    if (f <= 0) continue;
    if (s.barre && f === s.barre.fret && i >= 6 - s.barre.from && i <= 6 - s.barre.to && s.fingers[i] === 1 && i !== 6 - s.barre.from) continue;
    out.push(`<circle class="dot" cx="${x(i)}" cy="${y(f)}" r="10" fill="var(--dot, #d9480f)"/>`);
    if (s.fingers[i]) out.push(`<text x="${x(i)}" y="${y(f) + 5}" font-size="13" text-anchor="middle" fill="#fff">${s.fingers[i]}</text>`);
  }
  out.push('</svg>');
  return out.join('');
}

// ---------------------------------------------------------------- audio

let ctx = null;
let master = null;
const buffers = new Map(); // midi -> AudioBuffer

/**
 * audio returns the shared AudioContext, creating or resuming it. Call it
 * from a user gesture the first time (browsers keep audio muted until one);
 * it returns null where Web Audio is missing.
 */
export function audio() {
  const AC = globalThis.AudioContext || globalThis.webkitAudioContext;
  if (!AC) return null;
  if (!ctx) {
    ctx = new AC({ latencyHint: 'interactive' });
    master = ctx.createGain();
    master.gain.value = 0.6;
    const comp = ctx.createDynamicsCompressor();
    master.connect(comp).connect(ctx.destination);
  }
  if (ctx.state === 'suspended') ctx.resume().catch(() => {});
  return ctx;
}

/** unlockAudio creates/resumes the AudioContext on the first user gesture. */
export function unlockAudio(target = globalThis.document) {
  if (!target) return;
  const once = () => { audio(); };
  for (const ev of ['pointerdown', 'keydown', 'touchend']) target.addEventListener(ev, once, { passive: true });
}

/** pluckSamples renders a Karplus-Strong plucked string into a Float32Array (pure; testable). */
export function pluckSamples(freq, sampleRate, seconds = 2.2, random = Math.random) {
  const n = Math.max(2, Math.round(sampleRate / freq));
  const len = Math.round(sampleRate * seconds);
  const out = new Float32Array(len);
  const ring = new Float32Array(n);
  for (let i = 0; i < n; i++) ring[i] = random() * 2 - 1;
  // Remove DC from the burst so the string does not thump.
  let mean = 0;
  for (let i = 0; i < n; i++) mean += ring[i];
  mean /= n;
  let peak = 1e-9;
  for (let i = 0; i < n; i++) { ring[i] -= mean; peak = Math.max(peak, Math.abs(ring[i])); }
  for (let i = 0; i < n; i++) ring[i] *= 0.9 / peak;
  const decay = 0.996 - Math.min(0.01, freq / 60000); // higher strings die a little faster
  let idx = 0;
  for (let i = 0; i < len; i++) {
    const cur = ring[idx];
    const next = ring[(idx + 1) % n];
    out[i] = cur;
    ring[idx] = decay * 0.5 * (cur + next);
    idx = (idx + 1) % n;
  }
  // Short fade-out at the end.
  const fade = Math.min(len, Math.round(sampleRate * 0.05));
  for (let i = 0; i < fade; i++) out[len - 1 - i] *= i / fade;
  return out;
}

function bufferFor(ac, midi) {
  let b = buffers.get(midi);
  if (!b) {
    const data = pluckSamples(midiFreq(midi), ac.sampleRate);
    b = ac.createBuffer(1, data.length, ac.sampleRate);
    b.getChannelData(0).set(data);
    buffers.set(midi, b);
  }
  return b;
}

/** playMidi plucks one note after delay seconds. */
export function playMidi(midi, delay = 0, gain = 0.5) {
  const ac = audio();
  if (!ac || midi == null) return;
  const src = ac.createBufferSource();
  src.buffer = bufferFor(ac, midi);
  const g = ac.createGain();
  g.gain.value = gain;
  src.connect(g).connect(master);
  src.start(ac.currentTime + delay);
}

/** playString plucks string i (0 = low E ... 5 = high e) fretted as in chord (open when unknown or muted). */
export function playString(chord, i) {
  const notes = chordMidi(chord);
  playMidi(notes[i] == null ? OPEN_MIDI[i] : notes[i]);
}

/** strum plays the chord's sounding strings low to high (or high to low when up), ~15 ms apart. */
export function strum(chord, { up = false, gap = 0.015 } = {}) {
  const notes = chordMidi(chord).map((m, i) => [m, i]).filter(([m]) => m != null);
  if (up) notes.reverse();
  notes.forEach(([m], k) => playMidi(m, k * gap, 0.35));
}
