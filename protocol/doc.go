// Package protocol defines VirtuTune Link's messages: the original Django
// Channels protocol, exactly, plus the Go version's extensions; their JSON
// encoding, validation (the chord grammar included), error codes and close
// codes. It does no I/O and imports only the standard library. Everything in it
// is safe for concurrent use; a Message is not (one goroutine owns it).
//
// # Files
//
//	message.go   the message types and their data
//	codec.go     Decode and Encode, with their bounds; scan.go is Decode's one-pass fast path
//	validate.go  Validate: every field of every type; chord.go the chord grammar
//	signal.go    who offers a data channel to whom (Offers)
//	errors.go    error codes and close codes
//	api.go       the HTTP API's request and answer bodies and its refusal codes
//	testdata/    fuzz corpora, api_codes.json (every code, for the browser's tests),
//	             delivery.json and liveness.json (the clients' shared vectors)
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
//	gap     how many of the sender's seqs right before seq it gave up (see Delivery)
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
//	probe           client  {"n":N} (a question) or {"ack":N} (its        member ID only
//	                         answer), to=ID
//
// # Joining: HTTP and the WebSocket URL
//
// (Served by package signaling, whose doc has the whole HTTP contract and
// the pairing rules; stated here so that a client can be written from this
// file and the README alone. The bodies are api.go's types.)
//
//	POST /api/sessions      201 {"session_id", "user_id", "role":"pc", "client_id", "token", "ws_url",
//	                        "expires_at", "pairing_url", "pairing_code", "pairing_pin",
//	                        "pairing_expires_at", "pairing_qr", "pairing_qr_modules"}
//	POST /api/pair          body {"code": C} or {"pin": "123456"}, optionally "previous_token", "name"
//	                        200 {"session_id", "user_id", "role":"phone", "client_id", "token", "ws_url", "expires_at"}
//	                        400 no code, 401 pairing_invalid or pairing_expired, 404 session_not_found,
//	                        409 too_many_devices, 410 pairing_used or pairing_burned, 429 too_many_attempts
//
// Times are RFC 3339; a refusal's body is {"code": "...", "error": "..."}
// (APIError). pairing_url is BASE/p/CODE, CODE the 12-character pairing
// code (Crockford's base32; pairing_code), single use together with the
// 6-digit pairing_pin, until pairing_expires_at; a new pairing of the session
// (POST /api/sessions/{id}/pairing, the PC's token) ends the one before it.
// BASE is the configured public URL, else the request's scheme and host with
// this machine's LAN address in place of a loopback name: localhost,
// *.localhost, 127.0.0.0/8, ::1 and the unspecified addresses are all
// replaced alike. pairing_qr is a data: URL of a PNG of pairing_url's QR
// code, one pixel per module (pairing_qr_modules of them across, the quiet
// zone included).
//
// The WebSocket is ws_url (ws(s)://host/ws/guitar/SESSION/). The token goes
// in an Authorization: Bearer header, or (a browser, which cannot set
// headers) as the subprotocol "virtutune.token.<token>" offered beside
// "virtutune.v1", or, for old clients, as the query parameter token. The
// query may also carry client_id (optional: it may only repeat the id the
// token is bound to, see below) and p2p=0 (optional: this client takes no
// part in data channels).
//
// A member, in session_state's members and as connection_update describes
// one: {"client_id", "user_id", "role": "pc"|"phone", "since": RFC 3339
// time it joined, "instance": the server instance it is on (absent with one
// instance), "last_seq": its last accepted seq as of the snapshot's offset,
// "no_p2p": true when it joined with p2p=0 (absent otherwise)}.
//
// # Identity, dedupe and resume
//
// A client id names one device of a session (a paired phone, the PC, a Go
// peer) across its reconnects. It is bound to the token: the tokens the
// server mints carry it (the cid claim: the PC's, and each phone's, minted
// at pairing), and a token without one gets an id derived from the token; the
// first connection_update tells the client which it is. A client_id in the
// query that differs is refused before the upgrade (403 client_id_mismatch).
// A second connection with the same client id (the same holder, back from
// a network change) replaces the first (close 4100).
//
// Application messages (chord_change, practice_start, practice_end) carry seq,
// counted per client id from 1. A client that omits seq gets the next one from
// the server (the original's clients do). A seq at or below the last one the
// server accepted from that client id is a resend: ignored without error. A seq
// that skips ahead is invalid_sequence, unless it carries a gap that reaches
// back to the last one accepted (seq-1-gap <= last: the sender gave up the
// seqs between, see Delivery); gap must be below seq, on an application
// message (else invalid_data). from is always the sender's own client
// id (anything else is invalid_sequence). The server stamps from, seq and
// off on what it relays; a receiver delivers each (from, seq) once and in
// seq order, whichever path brought it first, and drops the other copy (see
// Delivery).
//
// The count belongs to the client id, not to one run of the client (a page
// load, a process): a client restarted with the id of an earlier run (the
// stored token binds the id) must count on after that run's seqs, which
// the server would otherwise ignore as resends, and the receivers drop.
// The connected notice a client gets first on every connection carries the
// last seq the server holds from its id (last_seq): the client's next seq
// is the higher of its own next and last_seq+1, and what it numbered
// before its first connection (sent nowhere yet) is numbered again after
// last_seq. The earlier run's last messages may have gone over a data
// channel only (the server out of its reach): a peer's heartbeat
// acknowledgement (below) above what this run sent says so, and the client
// counts on after it, its next message carrying the gap (the seqs between
// are no message of this run). A message sent before that heartbeat came
// is taken by the server but dropped by that peer as a resend (its first
// heartbeat comes within 100 ms of the channel's opening). The "count"
// vectors of protocol/testdata/delivery.json hold these rules.
//
// Every message that enters a session's history (application messages,
// practice_update, connection_update) gets the next session offset, off. A
// client reconnecting sends resume with the highest off it saw; the server
// replays every later message (and, for each peer in seen, that peer's
// application messages after the given seq), then sends resumed. When history
// no longer reaches back that far, the server sends session_state with
// recovered:false instead, then resumed with recovered:false. seen lists
// only members still present (a sender that left sends no more, and what it
// sent is replayed by offset anyway), those with a count above 0, at most
// MaxSeen (32) of them, the smallest client ids first: a session holds at
// most 8 members, so the cap never bites, and a resume is never too_large.
//
// # Delivery: both paths race
//
// A sender sends each application message over every data channel that is
// up and, always, over the WebSocket: the server relays every message (the
// obsolete direct field no longer holds a copy back). A receiver delivers,
// per sender:
//
//   - seq == last+1 at once, with whatever held messages follow it;
//   - seq <= last, or a seq it already holds: a duplicate, dropped;
//   - seq > last+1 held back, at most 1024 per sender; an arrival beyond
//     that is dropped, to be delivered when the other path or a resend brings
//     it again (every message travels both paths, and the sender resends what
//     is not acknowledged);
//   - unless it carries a gap that reaches back to last (seq-1-gap <= last):
//     the sender gave up the seqs between, so what is held of them is
//     delivered, in order, then it (even when the 1024 are full); a held
//     message with such a gap is released alike once last reaches
//     seq-1-gap. Copies of given-up seqs that come later are duplicates;
//   - a gap waits however long it takes: nothing is released by a timer.
//     Every message of a sender arrives in the end (both paths carry it, the
//     sender resends what is not confirmed, a reconnect resumes), however
//     late (a Redis outage delays relayed copies by many seconds), and
//     skipping the gap would turn that delay into a loss;
//   - a sender that leaves (connection_update disconnected) keeps its count
//     and what is held of it: announced gone after the server's grace, it
//     may still come back with the same client id and resend what the
//     server had not confirmed. The counts of at most 32 senders that left
//     are kept; beyond that the one that left first is forgotten.
//
// Where a sender's count starts comes from the server: each member's
// last_seq in session_state and in a newcomer's connected notice. A relayed
// message of a sender whose count is unknown starts it (the server orders
// it after that word); a data channel message with seq > 1 waits for the
// word or for a relayed copy (which always comes: the paths race). A
// snapshot with recovered:false forgets every count.
//
// A sender keeps each application message until the server confirmed it (the
// last_seq of a pong, or of its own connected notice) and every peer with a
// data channel acknowledged it (the last_seq of the peer's heartbeat, below),
// at most 4096 (the server out of reach for minutes while the guitarist
// plays on). When full, the oldest is dropped: a chord is state, and the
// newest matters most. A destination that lacked a dropped message never
// gets it; instead the first message the sender sends it after its
// confirmation (the server: its last_seq; a peer: its heartbeat's) carries
// gap, the number of seqs between the two, given up. The server accepts it
// (its sequence check reaches back over the gap) and relays it with its
// gap, and the receivers deliver it at once: what reaches them stays once
// each and in order, and the sender never gets stuck on a seq that no
// longer exists. A live copy carries no gap for the outbox's drops: one
// that skips ahead of what the server holds is answered invalid_sequence,
// and the resend the next pong asks for carries it. It resends the server what
// the server has not confirmed after a reconnect, and when a pong's last_seq
// shows the server processed messages it did not take (at once while such
// resends make progress, else at most once a second: while its broker is
// down the server delivers each copy on its own instance). It resends a
// peer, over the channel, what the peer's heartbeat shows it lacks and last
// went there 500 ms ago or more (at most 256 at a time).
//
// protocol/testdata/delivery.json holds these rules as test vectors; the Go
// client (package peer) and the browser's (web/static/link.js) both run them.
//
// # The data channel link
//
// A data channel copy of an application message must carry from (the
// sender's client id: the channel's peer) and seq, as the WebSocket copy
// does; one without them, or with another from, is refused (counted, not
// delivered): it cannot be matched with the relayed copy, which is
// delivered. practice_start and practice_end over a channel are delivered as
// the practice_update the server would have made.
//
// The channel ("virtutune") is unordered and reliable: a lost packet never
// holds back the ones after it (the receiver orders), and SCTP resends it
// at once. Over it each side sends a heartbeat every 100 ms while the
// session is active (every second after a minute without an application
// message):
//
//	{"type":"ping","from":ID,"data":{"timestamp":T,"last_seq":N}}
//	{"type":"pong","from":ID,"at":MS,"data":{"timestamp":T,"last_seq":N}}
//
// A ping is answered with a pong at once; T is the pinger's clock (echoed),
// at the ponger's (ms since the epoch, for the clock offset that turns a
// message's at into a one-way latency); last_seq on both is the highest seq
// the sender of the ping or pong delivered from the other, by either path
// (its acknowledgement). Whatever arrives over the channel counts as the
// peer heard. Each link is in one state:
//
//	idle        no attempt; the answering side waits for an offer
//	connecting  an attempt (offer, answer, ICE, DTLS, SCTP) is under way
//	up          the channel is open and the peer is heard
//	suspect     open, nothing heard for 2 heartbeat intervals (still p2p)
//	down        open, nothing heard for 4 intervals, or ICE disconnected
//	backoff     the attempt or the channel ended; the next waits for the backoff
//	closed      the peer left (connection_update disconnected: at once), takes
//	            no part (no_p2p), or the client closed
//
// The path is p2p while every other member's link is up or suspect. A link
// down for 500 ms gets a fresh attempt beside the silent channel, which comes
// back by itself if the peer is heard again; whichever works first is kept.
// A failed attempt is retried after backoff (a link that was up before: 250
// ms to 1 s, equal jitter; one that never was: 1 s to 30 s); an attempt
// gives up after 4 s. Each side tells the server p2p_state up or down (with
// the reason) when its path changes, for the metrics.
//
// # Liveness: the probe over the relay
//
// A data channel's heartbeat says whether the member at its other end runs.
// Without one (no link up to that member: none, or suspect, down, on its
// way, backing off; or P2P off on either side) nothing else would: the
// server's WebSocket pings are answered by the member's network stack even
// while its page's JavaScript is frozen. So while its WebSocket is up, a
// client probes each such member through the server:
//
//	{"type":"probe","to":ID,"data":{"n":N}}      N = 1, 2, 3, ... per asker
//	{"type":"probe","to":ASKER,"data":{"ack":N}} the answer: the highest N asked
//
// relayed like signaling (from stamped, to the one member, within the
// sender's signaling rate; data must hold exactly one of n and ack, each at
// most 2^53, else invalid_data). A probe to a member not present, or one
// the server could not pass on, is dropped without an error: the answer
// that does not come says it. Each member is probed every 250 ms while at
// most two are, else each every N/8 s (8 probes per second per client in
// all); a client answers each member at once, at most once per 50 ms (a
// burst of questions costs it little). The verdict on a member:
//
//	""        not probed: its link is up, the heartbeat tells
//	unknown   never answered and never had a channel up (it may be a client
//	          of the original protocol, which does not answer): not judged
//	live      no probe outstanding for an interval
//	late      a probe outstanding for an interval (250 ms) or more
//	silent    a probe outstanding for two intervals or more: not responding
//
// A member whose client stops is thus silent 0.5-0.75 s after the first
// probe it missed (within a second with P2P off; with a channel up, the
// link is suspect after 0.2 s and the probes start then); one that answers
// is live however dead the direct path is. The rule is pure logic, in
// protocol/testdata/liveness.json as vectors that both clients run.
//
// Cost: only while no channel tells. Per pair of members that probe each
// other, 4 probes and 4 answers per second each way: 16 messages per
// second into the server for a two-member session on the relay (each one
// signaling message: a lookup of the target among the room's members and
// one broker Send, with Redis one script call), 0 while P2P is up. A
// client sends at most 8 probes per second in all and answers each member
// that probes it at most 4 times a second: at most 8 + 7 x 4 = 36 messages
// per second from a member of a full session (8 members) on the relay,
// under the 50/s message and signaling rates.
//
// # When the relay ends
//
// A terminal close (4100-4199) or a reconnect refused before the upgrade
// (401, 404: the token or the session is gone) ends the relay for good: no
// reconnect, and the client says why. It does not end the data channels: the
// ones open carry messages both ways until they close (the other side closes
// its link when the server tells it this member left), and sending fails
// only when no channel is left. Except 4100: a newer connection of the same
// client id took over, so the replaced one closes its channels at once.
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
//     channel labelled "virtutune" (unordered, reliable) and sends rtc_offer
//     to the other; each side trickles rtc_candidate as it gathers (an empty
//     candidate ends the list). The answerer never offers, so glare cannot
//     happen; pion needs no rollback.
//  3. The answerer replies rtc_answer. Both apply the remote candidates. A
//     candidate with an "a=" prefix or a ".local" host name is accepted.
//  4. When the channel opens, each side sends p2p_state {peer, up:true} to the
//     server, the heartbeat starts, and application messages race over the
//     channel and the WebSocket (see Delivery). Messages of the original
//     protocol travel over the channel unchanged.
//  5. When a channel goes down or ends, each side sends p2p_state {peer,
//     up:false, last_seq, reason} (for the server's metrics); the relay has
//     been carrying every message all along, so nothing needs replaying.
//  6. Every attempt is a generation, numbered by the offerer (a number unique
//     among its attempts). An offer whose generation is that of the
//     answerer's open channel or of its attempt under way is a duplicate; any
//     other starts a new attempt beside the open channel, which the new one
//     replaces when it opens (restart:true with the open channel's generation
//     is an ICE restart of it). Answers and candidates of any other generation
//     are ignored. The answerer asks for an attempt with rtc_restart (its
//     link is down, its attempt failed, or no offer came within 8 s).
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
// wrong_session, client_id_mismatch, origin_not_allowed, forbidden,
// session_not_found, not_found, method_not_allowed, invalid_client_id,
// pairing_used, pairing_invalid, pairing_expired, pairing_burned,
// too_many_attempts, too_many_devices, revoked, device_not_found, full,
// draining, host_not_allowed) and invalid_json, invalid_data,
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
