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
//	                   speaks protocol/doc.go exactly: client id, seq and
//	                   resend, resume, backoff reconnect, the WebRTC data
//	                   channel with the offerer rule, generations, the
//	                   heartbeat, failure reasons in words, RTT on both paths
//	static/delivery.js the delivery rules as pure types (Inbox: dedupe and
//	                   order; Outbox: confirmation and resend; the link's
//	                   states; the heartbeat's verdict; backoff), run against
//	                   protocol/testdata/delivery.json like package peer
//	static/liveness.js the probe over the relay as pure logic (is another
//	                   member's client running, while no data channel can
//	                   tell), run against protocol/testdata/liveness.json
//	static/chords.js   finger diagrams (inline SVG) and a Karplus-Strong
//	                   plucked-string synth rendered into AudioBuffers
//	static/ui.js       DOM helpers shared by the pages (timer, link state,
//	                   errors) and what the pages say of the link, from its
//	                   status API alone (latencyView, peerView; pure)
//	static/index.html  PC page; pc.js pairs (QR + link + expiry), shows the
//	                   chord, plays strings (click, keys 1-6, space/Enter strums)
//	static/phone.html  phone page (also served at /p/<code>); phone.js pairs
//	                   by the link's code or a typed 6-digit code, chord grid,
//	                   practice start/stop with a timer, Wake Lock
//	static/pairing.js  pairing and devices API calls, credentials in localStorage
//	static/style.css   one stylesheet, mobile first (360 px up)
//	testdata/*.test.mjs  Node unit tests of the pure logic (run by web_test.go
//	                   when node is installed; not embedded)
//	e2e_test.go        browser tests: two headless Chromium processes (PC and
//	                   phone) and Go peers against the real server, inside a
//	                   private network namespace (unshare -n) with one veth
//	                   interface, because Chromium gathers no ICE candidates on
//	                   loopback alone; p2p, relay (?nop2p=1, no RTCPeerConnection),
//	                   and Chromium <-> pion in both offer directions
//	e2e_pairing_test.go  pairing (the QR code, the 6-digit code), pairing that
//	                   lasts, a removed phone, a restart, layout, accessibility
//	e2e_status_test.go  what the pages say of the link: a phone whose page is
//	                   frozen (its JavaScript paused) shown not responding, then
//	                   connected again, over P2P and with P2P off (and the
//	                   PC frozen, as the phone says it); an idle
//	                   phone whose data channel went mute shown connected on
//	                   the relay; the shown path and latency the status API's
//	e2e_helpers_test.go  their harness: the namespace, the server, the tabs
//	impaired_e2e_test.go  both pages on an emulated LAN (internal/impaired)
//	                   while UDP between them dies and returns
//	screenshots/       both pages at phone (390x844 @2x) and desktop (1366x850)
//	                   sizes, the PC at 1366x768 pairing, paired, and with its
//	                   phone not responding, written by the browser tests when
//	                   VT_SCREENSHOTS=1
//
// Elements that browser tests read have fixed ids: on both pages #chord,
// #path (data-path "p2p" or "relay"), #ws-state (data-state "connecting",
// "open" or "closed"), #practice (data-status "started", "ended" or ""),
// #error (data-cause: whose error it is), #latency (data-path, data-ms: the
// path's median round trip, data-chord-ms: its median one-way chord latency;
// "" when unknown); on the PC page #qr, #pairing-url, #link-status, #members
// (each li with data-client-id, data-connected, and for a connected member
// data-link, its link's state, and data-responding); on the phone page
// #practice-toggle and button.chord[data-chord]. On both pages
// window.__vt.link is the page's live Link, a read-only hook for the browser
// tests and for debugging from the console.
//
// # Decisions
//
// No build step and no framework: the client is seven small ES modules that
// browsers load as they are, so what is embedded is what was reviewed, the
// binary needs no Node toolchain, and nothing is fetched from a CDN (the phone
// may be on a LAN without Internet). The pure logic of link.js and chords.js
// touches no DOM at import time, so Node's test runner imports it directly.
//
// Pairing: the PC page shows a QR code of a short link (/p/<code>, a PNG
// with one pixel per module drawn at 6 pixels per module, 5 once folded) and
// a 6-digit code; it asks every 3 s while the pairing is shown whether the
// pairing is still live and shows a fresh one when it was used, expired or
// retired, so the code on screen always works. The phone trades the code at
// POST /api/pair, drops it from the address bar, and keeps its credentials
// (token, client id, the session's expiry) in localStorage under vt.phone;
// the PC keeps its session under vt.pc. So a reload, a closed tab or a
// browser restart reconnects without pairing again. Each page uses its
// token's client id (cid) as its Link's client id. A phone page without
// credentials shows how to pair (scan, or type the code) and no grid. Once a
// phone is connected the PC folds the pairing panel away and lists the paired
// devices (GET /api/sessions/{id}/devices), each with a Remove button.
//
// The screen tells the truth: what the pages say of the link comes from the
// Link's status API (linkState(), the Go peer's Status) and is rendered at
// every onLinkState, which the Link calls whenever the WebSocket's state,
// the path, a link's state or a latency median may have changed. The path
// shown is linkState().path, the one chords take directly (p2p while every
// other member's data channel is up or suspect; the relay carries a copy
// either way); the latency is that path's median round trip and the median
// one-way latency of the chords it delivered (the other path's round trip
// beside it); a chord's line says the path it came by first. The PC lists
// each phone as its link's state says: connected (P2P or relay, "answering
// late" while suspect); while no data channel can tell (the link not up, or
// P2P off) as the probe over the relay says (linkState().liveness, see
// liveness.js and protocol/doc.go "Liveness"): connected on the relay while
// it answers, however dead the direct path, "answering late", and "not
// responding" once a probe went unanswered for two 250 ms intervals (a phone
// asleep, its page frozen in the background, its Wi-Fi gone), with what to
// do; and "not connected" the
// moment it left. Errors are kept one per cause and each is cleared by what
// ends its cause (the WebSocket open again, a pairing code made or shown to
// work, the device list fetched); a refused message, which the link resends
// by itself, is shown for 8 s. Every message says what to do.
//
// Layout: nothing moves under the fingers. The phone's area above the grid
// has a fixed height and errors float over the page, so the grid keeps its
// place; held sideways, the phone shows the chord and practice beside all
// sixteen chords. On the PC, Space always strums (even with a string button
// focused), and the string buttons' accessible names are their visible text
// plus "string".
//
// Delivery: the rules are protocol/doc.go's ("Delivery"), the same as the Go
// client's: every message goes over the WebSocket and every open channel,
// the receiver delivers each (sender, seq) once and in order and holds back
// what comes early (at most 1,024 per sender, released by no timer), where a
// sender's count starts comes from the server (session_state, connected
// notices), and a session_state with recovered:false forgets every count.
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
