// Package peer is VirtuTune Link's Go client: a member of a session (a
// command-line phone or PC, a benchmark, a test) that talks to the server's
// WebSocket and, beside it, to every other member over a WebRTC data channel
// (pion). Callers see one Send/Recv whatever path is live. It imports
// protocol, pion and gorilla/websocket, never signaling.
//
// # Use
//
//	info, _ := peer.CreateSession(ctx, "http://127.0.0.1:8000", "")   // PC side
//	ph, _ := peer.Pair(ctx, info.PairingURL)                          // phone side
//	c, err := peer.Dial(ctx, peer.Config{ServerURL: ..., SessionID: ph.SessionID,
//		Token: ph.Token, Role: "phone"})
//	defer c.Close()
//	c.SendChord(ctx, "Am")
//	d, err := c.Recv(ctx) // d.Msg, d.Path ("p2p" or "relay"), d.At
//
// # Paths, fallback and dedupe
//
// Dial joins the session's WebSocket (/ws/guitar/<session>/, token in the
// Authorization header, the client id in the query). For each other member
// the offering side of the pair (protocol.Offers: the PC offers to a phone)
// creates a peer connection with one ordered, reliable data channel
// "virtutune", and the two trickle candidates over the WebSocket. Every
// attempt is a generation; answers and candidates of an older one are
// ignored. When the channel opens the client tells the server (p2p_state up).
//
// Send gives each application message the next seq of this client (1, 2, 3,
// ...), from and at, writes it to every open data channel and then queues it
// for the WebSocket with direct naming the peers reached directly, so the
// server stores it (state, history) without relaying it a second time to
// them. The message stays in an outbox until the server confirms it (the
// last_seq of a pong or of the client's own connection_update) and is resent
// after a reconnect — without direct, so the server relays the resent copy
// even to a peer whose (newer) data channel is up: the channel that carried
// the first copy may have lost it, and the receiver drops a copy it has. It is also resent, without a reconnect, when a pong
// shows that the server processed it but did not take it: while Redis is
// down (the server delivered it on its own instance only and answered
// unavailable), over the rate limit (rate_limited), or after such a gap
// (invalid_sequence). The server ignores copies it holds; receivers drop
// copies they delivered.
//
// On receipt, each sender's application messages are delivered once and in
// seq order, whichever path brought them first: a message right after the
// last delivered one is delivered (with any held back behind it), a later one
// is held back (up to Config.ReorderWindow per sender), an earlier one is a
// duplicate and dropped. The first message seen from a sender starts its
// count (a client that joins late never gets what came before it).
//
// When a data channel closes or fails, the client tells the server
// (p2p_state down with the last seq delivered from that peer), so the server
// replays what the channel may have lost and relays everything again; the
// dedupe drops what arrives twice. The offering side retries with a fresh
// peer connection after backoff; the answering side asks for that with
// rtc_restart. An attempt that has not opened within Config.ConnectTimeout
// counts as failed.
//
// When the WebSocket drops, the client reconnects with exponential backoff
// and jitter (close codes 4100-4199 and refusals of the token are terminal),
// then sends resume {since: highest off seen, seen: last seq per sender},
// declares its open channels again, and resends its unconfirmed messages.
// Data channels are independent of the WebSocket: while it is down, chord
// changes keep flowing directly.
//
// # Concurrency
//
// A Client is safe for concurrent use. It owns one reader goroutine (which
// also reconnects) and one writer goroutine per WebSocket connection
// (gorilla allows one writer), a pinger for the data channels, and short-lived
// goroutines for data channel retries; pion runs its own. Close stops them
// all and waits. Delivery to Recv is ordered and bounded by Config.RecvQueue:
// when the queue is full the client stops reading both paths until Recv
// catches up (the server may then drop this client as a slow consumer, and it
// resumes) — nothing is dropped. Pion callbacks never run under the client's
// lock, and no pion call is made with it held.
package peer
