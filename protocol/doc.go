// Package protocol defines VirtuTune Link's messages: the original Django
// Channels protocol, exactly, plus the Go version's extensions; their JSON
// encoding, validation (the chord grammar included), error codes and close
// codes. It does no I/O and imports only the standard library. Everything in it
// is safe for concurrent use; a Message is not (one goroutine owns it).
//
// # Envelope
//
// Every message is one JSON object in one WebSocket text frame (or one data
// channel message):
//
//	{"type": "chord_change", "data": {"chord": "C"}, "from": "k3v9x2", "seq": 7, "off": 42}
//
// type and data are the seed's. The other fields are extensions, all optional,
// ignored by the original's clients:
//
//	from    sender's client id; stamped by the server on everything it relays
//	seq     per-sender sequence number of an application message: 1, 2, 3, ...
//	off     session offset given by the server when the message entered history
//	to      the one member a signaling message is for
//	direct  obsolete: client ids the sender also reached over a data channel
//	at      sender's wall clock, ms since the epoch (for latency on one machine)
//
// Unknown fields, at the top level or in data, are ignored (forward
// compatibility). Decode refuses invalid UTF-8, nesting deeper than MaxDepth,
// and anything that is not an object. The server reads at most MaxMessageSize
// bytes per frame (configurable; larger frames close with 1009).
//
// # Messages of the original protocol
//
//	type               sender  data                                     delivered to
//	chord_change       client  {"chord":"C"}                            every OTHER member
//	practice_start     client  {"timestamp":T}                          (becomes practice_update)
//	practice_end       client  {"timestamp":T}                          (becomes practice_update)
//	ping               client  {"timestamp":T}                          (answered with pong)
//	pong               server  {"timestamp":T, "last_seq":N}            the pinging client only
//	connection_update  server  {"status":"connected"|"disconnected",    every member; a newcomer
//	                            "user_id":N, "client_id", "role",        gets its own first
//	                            "last_seq", "reason"}
//	practice_update    server  {"status":"started"|"ended","timestamp":T} every member, sender included
//	error              server  {"message":"...", "code":"..."}          the offending client only
//
// A timestamp T is an RFC 3339 string (as the seed shows) or a number of
// milliseconds since the epoch (as Date.now() gives); either is echoed
// unchanged. Anything else is invalid_timestamp. A missing timestamp is not an
// error: practice_update then carries the server's time (RFC 3339, UTC) and
// pong the server's time too.
//
// A chord follows ValidChord's grammar: root A-G, optional # or b, up to four
// quality tokens (m, min, maj, M7, maj7, m7, 6, 7, 9, 11, 13, sus, sus2, sus4,
// dim, dim7, aug, +, add9, add11, b5, #5, b9, #9, #11, b13, 69, ...), an
// optional /bass note; at most MaxChordLen bytes. "H", "C<script>" are refused.
//
// # Extension messages
//
//	type            sender  data                                         delivered to
//	session_state   server  SessionState: chord, practice, members,       the newcomer, right after
//	                        offset, recovered                             its own connection_update
//	resume          client  {"since":OFF, "seen":{client_id:SEQ}}         (server replays history)
//	resumed         server  {"recovered":bool,"count":N,"offset":OFF}     the resuming client
//	rtc_offer       client  {"sdp", "restart", "generation"}, to=ID       member ID only
//	rtc_answer      client  {"sdp", "generation"}, to=ID                  member ID only
//	rtc_candidate   client  {"candidate","sdpMid","sdpMLineIndex",        member ID only
//	                         "usernameFragment","generation"}, to=ID
//	rtc_restart     client  {"reason"}, to=ID                             member ID only
//	p2p_state       client  {"peer":ID,"up":bool,"last_seq":N,"reason"}   (server only)
//	latency_report  client  {"path":"p2p"|"relay","us":F}                 (server only: metrics)
//
// # Identity, dedupe and resume
//
// A client id names one client (one page load, one Go peer) across its
// reconnects. A client may bring its own (query parameter client_id, 4-64 bytes
// of [A-Za-z0-9_-]) or let the server pick one; the first connection_update
// tells it which. A second connection with the same client id replaces the
// first (close 4100).
//
// Application messages (chord_change, practice_start, practice_end) carry seq,
// counted per client id from 1. A client that omits seq gets the next one from
// the server (the original's clients do). A seq at or below the last one the
// server accepted from that client id is a resend: ignored without error. A seq
// that skips ahead is invalid_sequence. from is always the sender's own client
// id (anything else is invalid_sequence). The server stamps from, seq and off on
// what it relays; a receiver delivers each (from, seq) once and in seq order,
// whichever path brought it first, and drops the other copy.
//
// Every message that enters a session's history (application messages,
// practice_update, connection_update) gets the next session offset, off. A
// client reconnecting sends resume with the highest off it saw; the server
// replays every later message (and, for each peer in seen, that peer's
// application messages after the given seq), then sends resumed. When history
// no longer reaches back that far, the server sends session_state with
// recovered:false instead, then resumed with recovered:false.
//
// # Peer-to-peer flow (sequence in words)
//
//  1. Phone and PC each join /ws/guitar/{session}/ and learn each other's client
//     id and role from connection_update and session_state.
//     A member that joined with p2p=0 (no WebRTC, or turned off) is marked
//     no_p2p in its connection_update and in session_state: nobody offers it
//     a channel, and the others can say why the path is the relay.
//  2. The offerer of the pair (Offers: the PC offers to a phone; between equal
//     roles the smaller client id) creates a peer connection with one data
//     channel labelled "virtutune" (ordered, reliable) and sends rtc_offer to
//     the other; each side trickles rtc_candidate as it gathers (an empty
//     candidate ends the list). The answerer never offers, so glare cannot
//     happen; pion needs no rollback.
//  3. The answerer replies rtc_answer. Both apply the remote candidates. A
//     candidate with an "a=" prefix or a ".local" host name is accepted.
//  4. When the channel opens, each side sends p2p_state {peer, up:true} to the
//     server, then sends each application message over the channel AND over
//     the WebSocket: both paths race, and the receiver delivers whichever
//     copy comes first and drops the other. (direct is obsolete: it is still
//     accepted and validated, and ignored.) Messages of the original protocol travel over the
//     channel unchanged (ping is answered with pong by the peer, which gives
//     the direct round-trip time).
//  5. When a channel closes or fails, the receiver sends p2p_state {peer,
//     up:false, last_seq, reason} (for the server's metrics); the relay has
//     been carrying every message all along, so nothing needs replaying.
//  6. To bring the direct path back, the offerer sends a new rtc_offer (restart:
//     true for an ICE restart, or a higher generation for a new connection);
//     the answerer asks for it with rtc_restart. Answers and candidates of an
//     older generation are ignored.
//
// # Error codes
//
// Every error carries message (the seed's texts kept exactly for the seed's
// three cases) and code: invalid_json, unknown_type, chord_required,
// invalid_chord, invalid_data, invalid_timestamp, server_only, invalid_target,
// invalid_signal, invalid_sequence, rate_limited, too_large, binary_frame,
// unavailable, internal. An error never closes the connection by itself.
// unavailable and invalid_sequence report a transient state that can repeat
// for every message (the session store unreachable, a gap in the sender's
// seq); past a burst of 20 the server sends at most 5 of them per second. A
// client learns what the server took from the last_seq of its pong and
// resends the rest.
//
// # HTTP API
//
// The server's HTTP API shares these types with its clients (api.go):
// CreateSessionRequest and SessionResponse, a SessionToken and a PairingOffer
// (POST /api/sessions), PairRequest and PairResponse, a SessionToken (POST
// /api/pair), PairingResponse (POST /api/sessions/{id}/pairing),
// PairingStatus (GET /api/sessions/{id}/pairing), DevicesResponse of Device
// (GET /api/sessions/{id}/devices; DELETE .../devices/{client_id} answers
// 204). Every refusal, of the API and of the WebSocket's upgrade, has an
// APIError body {"code", "error"}; its codes are the Code constants of api.go
// (token_required, invalid_token, pairing_token, api_key_required,
// wrong_session, origin_not_allowed, forbidden, session_not_found, not_found,
// method_not_allowed, invalid_client_id, pairing_used, pairing_invalid,
// pairing_expired, pairing_burned, too_many_attempts, too_many_devices,
// revoked, device_not_found, full, draining) and invalid_json, invalid_data,
// too_large, unavailable and internal. testdata/api_codes.json lists every
// code of the package; TestAPICodesFile keeps it current and the browser
// client's tests check against it.
//
// # Close codes
//
//	1000 normal            1001 server going away (reconnect elsewhere at once)
//	1008 kept flooding     1009 frame too large     1011 internal error
//	4000 slow consumer: send queue overflowed (reconnect and resume)
//	4001 server asks for a reconnect
//	4100 replaced by a newer connection of the same client id (terminal)
//	4101 session ended or expired (terminal)
//	4102 token expired (terminal)
//	4103 session full (terminal)
//	4104 device removed by the PC: the token's client id is revoked for the session (terminal; pair again)
//
// 4000-4099 mean reconnect with backoff and resume; 4100-4199 are terminal.
package protocol
