// Package web is VirtuTune Link's browser client: the PC page, the phone page
// and the JavaScript link library they share, embedded into the server binary
// with go:embed and served by Handler. It imports only the standard library
// and nothing else of this module; signaling mounts Handler as its static
// fallback (signaling.Config.Static).
//
// # Routes
//
//	GET /              static/index.html, the PC page
//	GET /phone/        static/phone.html, the phone page (/phone redirects here)
//	GET /static/NAME   the files below; anything else is 404
//
// HTML is sent with Cache-Control: no-cache, scripts and styles with a short
// max-age (5 minutes) and an ETag, so a deploy is picked up quickly and a
// revalidation is a 304. Every answer carries X-Content-Type-Options: nosniff,
// ContentSecurityPolicy (scripts only from this origin, inline styles for the
// SVG diagrams, data: images for the pairing QR code, ws:/wss: connections),
// Referrer-Policy: no-referrer and X-Frame-Options: DENY.
//
// # Files
//
//	static/link.js     the link library: createSession, pair, and Link, which
//	                   speaks protocol/doc.go exactly: client id, seq/outbox and
//	                   resend, dedupe and reorder per sender, resume, backoff
//	                   reconnect, the WebRTC data channel with the offerer rule,
//	                   generations, failure reasons in words, RTT on both paths
//	static/chords.js   finger diagrams (inline SVG) and a Karplus-Strong
//	                   plucked-string synth rendered into AudioBuffers
//	static/ui.js       DOM helpers shared by the pages (timer, link state)
//	static/index.html  PC page; pc.js pairs (QR + link + expiry), shows the
//	                   chord, plays strings (click, keys 1-6, space/Enter strums)
//	static/phone.html  phone page; phone.js pairs from #s=..&p=.., chord grid,
//	                   practice start/stop with a timer, Wake Lock
//	static/style.css   one stylesheet, mobile first (360 px up)
//	testdata/*.test.mjs  Node unit tests of the pure logic (run by web_test.go
//	                   when node is installed; not embedded)
//	e2e_test.go        browser tests: two headless Chromium processes (PC and
//	                   phone) and Go peers against the real server, inside a
//	                   private network namespace (unshare -n) with one veth
//	                   interface, because Chromium gathers no ICE candidates on
//	                   loopback alone; p2p, relay (?nop2p=1, no RTCPeerConnection),
//	                   and Chromium <-> pion in both offer directions
//	screenshots/       both pages at phone (390x844 @2x) and desktop (1366x850)
//	                   sizes, written by the browser tests when VT_SCREENSHOTS=1
//
// Elements that browser tests read have fixed ids: on both pages #chord,
// #path (data-path "p2p" or "relay"), #ws-state (data-state "connecting",
// "open" or "closed"), #practice (data-status "started", "ended" or ""),
// #error, #latency; on the PC page #qr, #pairing-url, #members; on the phone
// page #practice-toggle and button.chord[data-chord]. On both pages
// window.__vt.link is the page's live Link, a read-only hook for the browser
// tests and for debugging from the console.
//
// # Decisions
//
// No build step and no framework: the client is five small ES modules that
// browsers load as they are, so what is embedded is what was reviewed, the
// binary needs no Node toolchain, and nothing is fetched from a CDN (the phone
// may be on a LAN without Internet). The pure logic of link.js and chords.js
// touches no DOM at import time, so Node's test runner imports it directly.
//
// Pairing: the phone stores its token in sessionStorage after POST /api/pair,
// and removes the single-use pairing token from the address bar, so a reload
// reconnects without pairing again. The PC keeps its session in
// sessionStorage too, so reloading the PC page keeps the phone paired. A
// pairing link works once, so the PC page asks for a fresh one of the same
// session (POST /api/sessions/{id}/pairing) whenever a phone joins, after a
// reload, and when "New QR code" is pressed after the link expired: the QR
// code on screen is always one that a next device can use, and the phone
// already paired stays paired. Only when the session itself is gone does the
// page start a new session.
//
// Dedupe: a receiver takes the first message it sees from an unknown sender
// as that sender's baseline (a member who joins late cannot know earlier
// seqs); after that it delivers seq last+1, buffers later ones (at most 256
// per sender, a gap older than 10 s is skipped) and drops the rest. A
// session_state with recovered:false rebases every sender.
//
// # Plain http://
//
// On a LAN the pages are usually served over plain http://, not a secure
// context. Nothing essential depends on one: client ids come from
// crypto.getRandomValues (crypto.subtle is never used), there is no service
// worker, and copying the pairing link falls back to a selection copy. The
// Screen Wake Lock API is missing there: the phone page says the screen may
// sleep, and on waking the link checks its socket at once, reconnects and
// resumes. WebRTC works on http:// in current browsers (host candidates are
// hidden behind .local mDNS names, which most LANs resolve); where it is
// missing or fails, the link stays on the relay and says why. ?nop2p=1 turns
// the direct path off on purpose.
package web
