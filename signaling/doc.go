// Package signaling is VirtuTune Link's server: HTTP routing (chi), sessions,
// pairing and tokens, the WebSocket endpoint, the hub that fans a session's
// messages out to its local members, and the Broker behind the hub
// (MemoryBroker for one instance, RedisBroker for several). It never imports
// pion or the peer package; WebRTC signaling is just messages it relays to
// one member. The HTTP API's bodies and codes are protocol's (protocol/api.go).
//
// # Files
//
//	server.go            Server, New, routing, health, Shutdown
//	config.go            Config and Limits: zero means the default, Validate refuses the rest
//	errors.go            the sentinel errors (ErrInvalidConfig, ErrSessionNotFound, ...)
//	api.go               POST /api/sessions
//	pairing_codes.go     a pairing's codes: the short code, the 6-digit code, their keyed hashes
//	pairing.go           issuing a pairing, its status, POST /api/pair and its guessing limits
//	devices.go           the PC's paired devices: the list, removal (revocation on every instance)
//	token.go, lan.go     the JWTs; the LAN address of pairing links
//	origin.go            the Host and Origin checks (421, 403 origin_not_allowed)
//	addrlimit.go         per-address limits (the client address, X-Forwarded-For from trusted proxies)
//	conn.go              a connection's transport: the upgrade and its checks, the reader, timers, close
//	outbox.go            a connection's outgoing frames: direct writes and the flusher
//	membership.go        join, leave and the disconnect grace, the snapshot, delivery to one member
//	handlers.go          the protocol's messages, a handler each
//	hub.go               this instance's rooms (a session's local members), heartbeat, token buckets
//	metrics.go           the Prometheus metrics
//	broker.go            the Broker and Store interfaces and their delivery contract
//	broker_memory*.go    MemoryBroker: its config, locks, janitor and Close; _store (sessions,
//	                     once-keys, presence), _publish (Publish, Send, Subscribe, State, the
//	                     delivery to handlers), _history (the history ring), _pairing,
//	                     _durable (what store_bolt.go keeps across a restart)
//	broker_redis*.go     RedisBroker: _config (URL forms), _health (degraded mode, heartbeat),
//	                     _store (sessions, once-keys, presence), _publish (Publish, Send, History,
//	                     State), _batch (pipelined publishes), _subscribe (the pub/sub dispatcher,
//	                     gap repair), _order (offset ordering, a pure type), _pairing,
//	                     _scripts (the Lua scripts, lua/*.lua, each naming its keys and arguments)
//	store_bolt.go        BoltStore, the embedded store of the single-instance mode
//	redistest/           a real redis-server, Sentinel and Cluster for tests
//
// # HTTP contract
//
//	POST   /api/sessions                       create a session (201)
//	POST   /api/sessions/{id}/pairing          a fresh pairing, ending the older (201; PC token as Bearer)
//	GET    /api/sessions/{id}/pairing          is the pairing still live? (200; PC token)
//	GET    /api/sessions/{id}/devices          the paired devices (200; PC token)
//	DELETE /api/sessions/{id}/devices/{cid}    remove a paired device (204; PC token)
//	POST   /api/pair                           trade a pairing code for a phone token (200)
//	GET    /ws/guitar/{session}/               WebSocket (token in Authorization: Bearer, a subprotocol, or ?token=)
//	GET    /healthz                            200 while the process serves
//	GET    /readyz                             200 {"status":"ok"}; 503 {"status":"degraded"} while the broker is unreachable
//	GET    /metrics                            Prometheus metrics
//	everything else                            Config.Static (the web pages, /p/<code> included), 404 without it
//
// POST /api/sessions takes an optional JSON body {"user_id": N}. When an API key
// is configured, the caller must present it (Authorization: Bearer KEY or
// X-API-Key: KEY), else 401, and may name user_id; without an API key anyone may
// create a session, always as a fresh random user. The 201 answer:
//
//	{"session_id": "...", "user_id": 123, "role": "pc", "client_id": "<the PC's cid>",
//	 "token": "<pc JWT>", "ws_url": "ws://host/ws/guitar/<id>/", "expires_at": "<RFC 3339>",
//	 "pairing_url": "http://<LAN address>:8000/p/K7QX2M9DPA4T", "pairing_code": "K7QX2M9DPA4T",
//	 "pairing_pin": "482913", "pairing_expires_at": "<RFC 3339>",
//	 "pairing_qr": "data:image/png;base64,...", "pairing_qr_modules": 41}
//
// # Pairing
//
// A pairing is one offer to pair one device: a short code of CodeLen (12)
// characters of Crockford's base32 (60 bits) in the QR code's link
// /p/<code>, and a 6-digit code to type on a phone without a camera. The two
// are single use together (whichever is used first ends both), expire exactly
// at pairing_expires_at (Config.PairingTTL, 300 s; no clock leeway), and a
// new pairing of the session ends the one before it. The link is short (about
// 45 characters with a LAN address), so its QR code is version 3 or 4 at
// level M; pairing_qr is that code as a PNG with one pixel per module (the
// 4-module quiet zone included), which costs a few microseconds to render:
// the page scales it by a whole number of pixels. The link's host is
// Config.PublicURL when set; otherwise the request's Host, unless that is
// localhost or a loopback address, in which case the server's first
// non-loopback LAN address is used. The code is in the link's path, so a
// proxy's access log may see it: it is worthless once used (seconds later)
// or expired.
//
// The store holds only keyed hashes of the codes (HMAC-SHA256 with the token
// secret): a code is looked up by its hash, so neither the store's contents
// nor the lookup's timing reveal a code, and the record found is compared
// with the hash computed in constant time. Guessing is bounded by
// Limits: a client address (an IPv6 one by its /64; the address of every
// per-address limit, so behind a trusted proxy the forwarded client's, see
// Config.TrustedProxies) gets 429 with Retry-After after PairFailures wrong
// codes within PairFailWindow (10 in 10 minutes), whatever it sends next. A wrong 6-digit guess names no
// session, so it counts against every live 6-digit code: a live code is
// retired (410 pairing_burned; the PC page shows a new one) once PINGuesses
// (10) wrong 6-digit codes were tried anywhere after it was issued, so a
// given code is guessed with probability at most 10 in a million, and past
// PINGuessesPerMinute (30) wrong ones in a minute, store-wide, 6-digit
// attempts answer 429 until the minute ends (the QR link still works).
//
// POST /api/pair takes {"code": "..."} (either case; I, L, O read as 1, 1, 0)
// or {"pin": "123456"} (spaces allowed), and optionally "previous_token" (a
// phone token of the same session, not revoked: the phone keeps its client
// id) and "name". It answers 200 with {"session_id", "user_id", "role":
// "phone", "client_id", "token", "ws_url", "expires_at"}; 400 without a code;
// 401 pairing_invalid (wrong, replaced) or pairing_expired; 404 for a session
// that ended; 409 too_many_devices (Limits.MaxDevices, 8); 410 pairing_used
// or pairing_burned; 429 too_many_attempts. The format before short codes
// ({"pairing_token"}) answers 401.
//
// # Security model
//
// Tokens are HS256 JWTs signed with Config.Secret: claims sub (user id,
// decimal string), sid, role ("pc" or "phone"), iat, exp, and cid, the
// device's client id, in every token this server mints: the PC's at POST
// /api/sessions, a phone's at POST /api/pair (a per-device random id). A
// token proves: this user, this session, this role, and (with cid) this
// device. Tokens without cid, as the main VirtuTune application may mint
// them (sub/sid/role/iat/exp only), keep working; they cannot be revoked one
// by one (they die with the session or their exp). Pairing tokens of the
// format before short codes (typ "pairing") are refused everywhere.
//
// The session's PC (a PC token of the session whose cid is not revoked) may
// list the paired devices and remove one; nobody else may (403), and the PC
// cannot remove itself. Removing a device revokes its cid for the session:
// the revocation is kept in the Store (memory or the data file of a single
// instance, Redis for several) for the session's lifetime, checked on every
// WebSocket upgrade (401 revoked) and by the PC's endpoints, and checked
// again once a joining client is in its room (closing the race with a
// removal in between); the device's live connections on every instance are
// closed at once with close code 4104 (terminal), through an internal
// publication every instance's room acts on and no client receives. The
// client id a connection has is bound to its token (below).
//
// Refusals before the upgrade, like every refusal of the API, have a
// protocol.APIError body {"code": "...", "error": "..."} (the codes are
// protocol's Code constants): 401 no or bad token (or revoked), 403 a token of
// another session or a disallowed Origin, 404 unknown or expired session, 503
// when the instance is full or draining. The request and answer bodies of
// this comment are protocol's (api.go): SessionResponse, PairRequest,
// PairResponse, PairingResponse, PairingStatus, DevicesResponse and Device.
//
// # A restart nobody notices
//
// A single instance (no Redis) keeps what a restart must not lose in a
// BoltStore (a bbolt file under the data directory): sessions, their
// pairing, devices and revocations written before the answer; the
// generated token secret; the message path's state checkpointed every
// CheckpointInterval (2 s) and, on a clean shutdown, written whole with the
// history. Members closed by the shutdown (1001) are not announced as gone:
// they reconnect to the restarted process, resume, and resend what it had
// not confirmed, which it accepts (see OpenMemoryBroker).
//
// The WebSocket's token comes as Authorization: Bearer (the Go peer), as a
// subprotocol "virtutune.token.<token>" offered beside "virtutune.v1" (a
// browser, which cannot set headers; the answer names virtutune.v1 only, so
// the token is in no URL and no proxy log), or, for old clients, as ?token=.
// The query may carry client_id (it may only repeat the id the token is
// bound to, see below) and p2p=0 (the client takes no part in data channels,
// so the others are told not to offer it one); nothing else is read.
//
// # What a token proves, what a client id is, who can remove whom
//
// What a token proves: that the server (or the main VirtuTune application,
// which shares the secret) let its holder into one session (sid), as one
// user (sub), in one role (pc or phone), until exp. Nothing else: a token
// of one session reads and writes nothing of another, a phone token cannot
// issue pairing codes, and a pairing code buys one phone token, once.
// A token has one spelling (strict base64url), so it can be compared.
//
// What a client id is: the identity of one device in a session, the "from"
// of its messages and the key of its sequence numbers, its presence and its
// connection. It is bound to the token: the tokens this server mints carry
// it as their cid claim (the PC's at POST /api/sessions, each phone's at
// pairing), and a token without one (minted by the main application with
// only sub, sid, role, iat and exp) gets an id derived from the token, an
// HMAC under the secret of those claims. So every connection of one token
// is the same client, and no other token, of the same session or not, can
// take its id: a client_id query that differs is refused before the upgrade
// (403 client_id_mismatch), and a "from" that is not the connection's own is
// refused per message. A connection is only ever replaced (4100) by a newer
// connection of the same holder.
//
// Who can remove whom: a newer connection of a client id closes the older
// one (the same holder, back from a network change). The session's PC (its
// token, its cid not revoked) issues pairing codes and removes paired
// devices (their cid revoked, their connections closed 4104, see above);
// nobody else. Nobody can remove another member's
// connection, take its member slot (slots are per role, Limits.PCSlots
// reserved for the PC, the cap atomic across instances, a member's own ghost
// never counted against it) or reset its sequence numbers (a sender's count
// is forgotten only when it is not present and sent nothing for the
// retention, see ErrTooManySenders). What an address or a token can take of
// an instance is bounded: see Limits (per address: sessions per minute,
// WebSocket attempts per minute, WebSockets and HTTP connections open at
// once; per member: messages, signaling and latency reports per second).
//
// The Host a pairing link or a ws_url is built from is Config.PublicURL or
// one of this machine's own names and addresses (Server.baseURL), never a
// name only the request says; the API and the WebSocket refuse such a Host
// (421), and the WebSocket's Origin must match scheme, host and port of the
// server's own origin, the public URL or Config.AllowedOrigins.
//
// # Concurrency
//
// The rule: no lock is held across a call into the broker (or any other
// component: a handler, pion, the network), and no broker holds a broad lock
// while it waits for a narrow one. The hub takes a room's lock to look at or
// change its members' delivery state, and releases it before it calls the
// broker; the broker calls the hub's handler with none of its own locks held
// but its per-session delivery serialisation (MemoryBroker: one goroutine at
// a time hands a session's publications out; RedisBroker: the session's
// delivery lock, taken after every broader one is released), and the handler
// only takes the room's lock and queues. So a room's lock is always the last
// one taken, and no cycle can form.
//
// Server is safe for concurrent use. Each connection has exactly one reader
// goroutine; its frames are written by whoever delivers them, or by a flusher
// goroutine that runs only while frames wait (below). The hub never blocks on
// a client: a full send queue closes that client with 4000 (slow consumer).
// Close and Shutdown stop every goroutine the server started and wait for
// them.
//
// The server writes its WebSocket frames itself (gorilla/websocket reads
// them and does the handshake). A delivery to a member with nothing queued
// writes the frame at once, from the delivering goroutine, with one
// non-blocking write(2): a socket with room takes it, and whatever it does
// not take (a full socket buffer) is left to the member's flusher, so the
// deliverer never waits for a slow member, even though it writes under the
// room's delivery lock. Frames that find others queued are queued
// (Limits.SendQueue of them) and the flusher sends all that are waiting in
// one write. Every frame carries exactly one JSON message; only the syscall
// is shared. Connections with TLS served by the server itself always go
// through the flusher.
package signaling
