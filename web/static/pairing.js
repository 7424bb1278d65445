// pairing.js: the pages' side of pairing (signaling/doc.go has the HTTP
// contract): trading a pairing code or the 6-digit code for the phone's
// token, the PC's view of its pairing and of its paired devices, and the
// credentials each page keeps in localStorage so that pairing lasts across a
// reload, a closed tab and a browser restart. No DOM at import time.

/** PairError is a failed call; message is meant for the user; status 0 means the network. */
export class PairError extends Error {
  constructor(message, status = 0, code = '') {
    super(message);
    this.name = 'PairError';
    this.status = status;
    this.code = code;
  }
}

async function call(method, url, { body, token } = {}) {
  const headers = {};
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (token) headers.Authorization = 'Bearer ' + token;
  let res;
  try {
    res = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: 'no-store' });
  } catch {
    throw new PairError('Cannot reach the VirtuTune server — check that this device is on the same Wi-Fi as the PC, then try again.', 0);
  }
  let data = {};
  if (res.status !== 204) { try { data = (await res.json()) || {}; } catch { /* not JSON */ } }
  return { res, data };
}

/** codeFromPath returns the pairing code of a /p/<code> address, or ''. */
export function codeFromPath(pathname) {
  const m = /^\/p\/([0-9A-Za-z]{4,32})\/?$/i.exec(pathname || '');
  return m ? m[1].toUpperCase() : '';
}

/** normalizePIN keeps the digits of a typed code; '' unless there are exactly 6. */
export function normalizePIN(s) {
  const d = String(s || '').replace(/[\s\-\u00a0]/g, '');
  return /^[0-9]{6}$/.test(d) ? d : '';
}

/** formatPIN shows a 6-digit code as "123 456". */
export function formatPIN(pin) {
  return pin && pin.length === 6 ? pin.slice(0, 3) + ' ' + pin.slice(3) : pin || '';
}

/**
 * pair trades {code} (the QR link's) or {pin} (the 6-digit code) for the
 * phone's credentials: {session_id, user_id, role, client_id, token, ws_url,
 * expires_at}. previousToken keeps the client id of a phone pairing again.
 */
export async function pair({ code = '', pin = '', previousToken = '' } = {}) {
  const body = code ? { code } : { pin };
  if (previousToken) body.previous_token = previousToken;
  const { res, data } = await call('POST', '/api/pair', { body });
  if (res.ok) return data;
  const why = data.code || '';
  switch (res.status) {
    case 410:
      if (data.code === 'pairing_burned') throw new PairError('This code was retired after too many wrong tries — type the new code shown on the PC.', 410, why);
      throw new PairError('This code was already used — the PC shows a new one: scan it, or type its 6-digit code.', 410, why);
    case 401:
      if (data.code === 'pairing_expired') throw new PairError('This code has expired — press “New code” on the PC, then scan it or type its 6-digit code.', 401, why);
      throw new PairError(pin ? 'That code is not right — check the 6 digits on the PC and try again.'
        : 'This pairing link is not valid — scan the QR code on the PC again, or type its 6-digit code.', 401, why);
    case 429: throw new PairError('Too many wrong codes — wait a few minutes, or scan the QR code on the PC.', 429, why);
    case 404: throw new PairError('This session has ended — open VirtuTune Link on the PC again and scan its new code.', 404, why);
    case 409: throw new PairError('Too many phones are paired with this PC — remove one on the PC, then try again.', 409, why);
    default: throw new PairError(`Pairing failed (${data.error || 'HTTP ' + res.status}) — try again.`, res.status, why);
  }
}

function sessionPath(sid, rest) { return `/api/sessions/${encodeURIComponent(sid)}/${rest}`; }

/** sessionGone reports whether an API error means the PC's session is over. */
export function sessionGone(e) { return e && (e.status === 401 || e.status === 403 || e.status === 404); }

async function pcCall(method, sid, rest, token, okStatus) {
  const { res, data } = await call(method, sessionPath(sid, rest), { token, body: method === 'POST' ? {} : undefined });
  if (res.status === okStatus || (okStatus === 200 && res.ok)) return data;
  throw new PairError(data.error || `HTTP ${res.status}`, res.status, data.code || '');
}

/** newPairing asks for a fresh pairing of the PC's session (ending the older): {pairing_url, pairing_code, pairing_pin, pairing_qr, pairing_qr_modules, pairing_expires_at}. */
export function newPairing(sid, token) { return pcCall('POST', sid, 'pairing', token, 201); }

/** pairingStatus tells whether the PC's pairing is still live: {live, pin_live, pairing_expires_at}. */
export function pairingStatus(sid, token) { return pcCall('GET', sid, 'pairing', token, 200); }

/** devices lists the devices paired with the PC's session: [{client_id, role, name, paired_at}]. */
export async function devices(sid, token) { return (await pcCall('GET', sid, 'devices', token, 200)).devices || []; }

/** removeDevice removes a paired device: its tokens stop working and its connections close (4104). */
export async function removeDevice(sid, token, clientId) {
  try {
    await pcCall('DELETE', sid, 'devices/' + encodeURIComponent(clientId), token, 204);
  } catch (e) {
    if (e.status !== 404) throw e; // already gone
  }
}

/**
 * store keeps a page's credentials in localStorage (private modes may refuse
 * or forget: then pairing lasts as long as the tab). Entries carry their
 * session's expiry and are dropped once it passed.
 */
export const store = {
  get(key) {
    try {
      const v = JSON.parse(localStorage.getItem(key) || 'null');
      if (!v || !(Date.parse(v.expires_at) > Date.now() + 5000)) { localStorage.removeItem(key); return null; }
      return v;
    } catch { return null; }
  },
  set(key, v) { try { localStorage.setItem(key, JSON.stringify(v)); } catch { /* not kept */ } },
  del(key) { try { localStorage.removeItem(key); } catch { /* ignore */ } },
};
