// liveness.js: is another member's client running? The pure logic of the
// probe over the relay (protocol/doc.go, "Liveness"), the same as the Go
// client's (peer/liveness.go): protocol/testdata/liveness.json holds it as
// vectors that both run. It touches no DOM, no timer and no socket: Link
// (link.js) sends what it says, when it says.
//
// A member is probed only while no data channel can tell (its link is not
// up, or either side has P2P off): a probe {"n":N} every probeInterval,
// answered at once by the member's client ({"ack":N}). The verdict:
//
//   ''        not probed (the data channel's heartbeat tells)
//   'unknown' never answered and never had a channel up: it may be a client
//             of the original protocol, which does not answer; not judged
//   'live'    no probe outstanding for an interval
//   'late'    a probe outstanding for an interval or more
//   'silent'  a probe outstanding for two intervals or more: not responding

/** Probe interval per member while at most two are probed (ms). */
export const PROBE_MS = 250;
/** Probes per second one client sends in all: with more members probed, each is probed less often. */
export const PROBE_BUDGET = 8;
/** A client answers one member at most once per this many ms (a burst of questions costs it little). */
export const ANSWER_GAP_MS = 50;
/** Probes remembered per member while unanswered (the oldest decides). */
export const MAX_OUTSTANDING = 16;

/** probeInterval is the interval (ms) between probes to each member when probed members are probed. */
export function probeInterval(probed) {
  return Math.max(PROBE_MS, Math.ceil((probed * 1000) / PROBE_BUDGET));
}

/** Liveness is what one client knows of one other member's answers (and owes it). */
export class Liveness {
  constructor() {
    this.next = 1; // the next probe's n
    this.sent = []; // [[n, t]] outstanding, oldest first
    this.lastSent = null; // t of the last probe sent; null while not probing
    this.known = false; // it answered once, or had a channel up: it is a client that answers
    this.highestIn = 0; // highest n asked by it
    this.lastAnswer = -Infinity; // t of our last answer to it
  }

  /** due reports whether a probe is due at t. */
  due(t, interval) { return this.lastSent === null || t - this.lastSent >= interval; }

  /** send records a probe sent at t and returns its n. */
  send(t) {
    const n = this.next++;
    if (this.sent.length < MAX_OUTSTANDING) this.sent.push([n, t]);
    this.lastSent = t;
    return n;
  }

  /** answer takes the member's answer ack (the highest n it got): everything up to it is answered. */
  answer(ack) {
    if (!Number.isInteger(ack) || ack < 1 || ack >= this.next) return false;
    while (this.sent.length && this.sent[0][0] <= ack) this.sent.shift();
    this.known = true;
    return true;
  }

  /** markKnown: it had a data channel up, so it is a client that answers. */
  markKnown() { this.known = true; }

  /** stop ends probing (a data channel tells again); what is outstanding is forgotten. */
  stop() { this.sent = []; this.lastSent = null; }

  /** verdict at t (see the file's comment). */
  verdict(t, interval) {
    if (this.lastSent === null) return '';
    if (!this.known) return 'unknown';
    if (!this.sent.length) return 'live';
    const a = t - this.sent[0][1];
    if (a >= 2 * interval) return 'silent';
    if (a >= interval) return 'late';
    return 'live';
  }

  /**
   * asked takes the member's probe n at t and returns the ack to answer
   * with (the highest n it asked), or 0: at most one answer per
   * ANSWER_GAP_MS (its next probe is answered).
   */
  asked(n, t) {
    if (!Number.isInteger(n) || n < 1) return 0;
    if (n > this.highestIn) this.highestIn = n;
    if (t - this.lastAnswer < ANSWER_GAP_MS) return 0;
    this.lastAnswer = t;
    return this.highestIn;
  }
}
