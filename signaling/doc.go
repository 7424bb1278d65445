// Package signaling is VirtuTune Link's server: HTTP routing (chi), sessions
// and tokens, the WebSocket endpoint with one reader and one writer goroutine
// per connection, the hub that fans a session's messages out to its local
// members, and the Broker behind the hub (MemoryBroker for one instance,
// RedisBroker for several). It never imports pion or the peer package; WebRTC
// signaling is just messages it relays to one member.
//
// # HTTP contract
//
//	POST /api/sessions           create a session (201)
//	POST /api/sessions/{id}/pairing  a fresh pairing link for the session (201; PC token as Bearer)
//	POST /api/pair               trade a single-use pairing token for a phone token (200)
//	GET  /ws/guitar/{session}/   WebSocket (token in Authorization: Bearer or ?token=)
//	GET  /healthz                200 while the process serves
//	GET  /readyz                 200 {"status":"ok"}; 503 {"status":"degraded"} while the broker is unreachable
//	GET  /metrics                Prometheus metrics
//	everything else              Config.Static (the web pages), 404 without it
//
// POST /api/sessions takes an optional JSON body {"user_id": N}. When an API key
// is configured, the caller must present it (Authorization: Bearer KEY or
// X-API-Key: KEY), else 401, and may name user_id; without an API key anyone may
// create a session, always as a fresh random user. The 201 answer:
//
//	{"session_id": "...", "user_id": 123, "role": "pc", "token": "<pc JWT>",
//	 "ws_url": "ws://host/ws/guitar/<id>/", "expires_at": "<RFC 3339>",
//	 "pairing_url": "http://<LAN address>:8000/phone/#s=<id>&p=<pairing JWT>",
//	 "pairing_expires_at": "<RFC 3339>", "pairing_qr": "data:image/png;base64,..."}
//
// The pairing URL carries the pairing token in the fragment, so it never
// reaches a server log. Its host is Config.PublicURL when set; otherwise the
// request's Host, unless that is localhost or a loopback address, in which
// case the server's first non-loopback LAN address is used.
//
// POST /api/pair takes {"pairing_token": "..."}; it answers 200 with
// {"session_id","user_id","role":"phone","token","ws_url","expires_at"}, 401
// for a bad or expired pairing token, 404 for an unknown session and 410 when
// the pairing link was already used (single use).
//
// Tokens are HS256 JWTs signed with Config.Secret: claims sub (user id, decimal
// string), sid, role ("pc" or "phone"), iat, exp, and for pairing tokens typ
// "pairing" and jti. The WebSocket refuses pairing tokens. Refusals before the
// upgrade, like every refusal of the API, have a protocol.APIError body
// {"code": "...", "error": "..."} (the codes are protocol's): 401 no or bad
// token, 403 a token of another session or a disallowed Origin, 404 unknown or
// expired session, 503 when the instance is full or draining. The request and
// answer bodies above are protocol's SessionResponse, PairRequest,
// PairResponse and PairingResponse.
//
// The WebSocket's query may carry client_id (a client's id across reconnects,
// see protocol) and p2p=0 (the client takes no part in data channels, so the
// others are told not to offer it one); nothing else is read.
//
// # Concurrency
//
// Server is safe for concurrent use. Each connection has exactly one reader and
// one writer goroutine; the hub never blocks on a client: a full send queue
// closes that client with 4000 (slow consumer). Close and Shutdown stop every
// goroutine the server started and wait for them.
//
// The server writes its WebSocket frames itself (gorilla/websocket reads
// them and does the handshake). A delivery to a member with nothing queued
// writes the frame at once, from the delivering goroutine, with one
// non-blocking write(2): a socket with room takes it, and whatever it does
// not take (a full socket buffer) is left to the member's writer goroutine,
// so the deliverer never waits for a slow member, even though it writes
// under the room's delivery lock. Frames that find others queued are queued
// (Limits.SendQueue of them) and the writer sends all that are waiting in one
// write. Every frame carries exactly one JSON message; only the syscall is
// shared. Connections with TLS served by the server itself always go through
// the writer goroutine.
package signaling
