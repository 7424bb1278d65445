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
// # Paths, both racing
//
// Dial joins the session's WebSocket (/ws/guitar/<session>/, token in the
// Authorization header, the client id in the query). For each other member
// the offering side of the pair (protocol.Offers: the PC offers to a phone)
// creates a peer connection with one data channel "virtutune", unordered
// and reliable (SCTP's retransmission timeout capped at 500 ms), and the two
// trickle candidates over the WebSocket. Every attempt is a generation.
//
// Send gives each application message the next seq of this client (1, 2, 3,
// ...; a client restarted with the id of an earlier run counts on after
// that run's seqs: the server's last_seq, a peer's heartbeat), from and
// at, writes it to every data channel that is up and — always — to the
// WebSocket: both paths race, the server relays every message, and
// the receiver keeps the first copy. The message stays in the outbox until
// the server confirmed it (the last_seq of a pong or of the client's own
// connection_update) and every peer with a data channel acknowledged it (the
// last_seq of its heartbeat); it is resent to the server after a reconnect,
// or when a pong shows the server processed it but did not take it (Redis
// down, the rate limit), and to a peer over its channel when the peer's
// heartbeat shows it lacks it (a channel that died, a blackout). A full
// outbox (Config.Outbox) drops its oldest message; the first message sent
// after that to a destination that lacked it carries the gap, so that the
// server and the receivers take the newest without waiting for it.
//
// On receipt, each sender's application messages are delivered once and in
// seq order, whichever path brought them first: protocol/doc.go ("Delivery")
// states the rules, protocol/testdata/delivery.json holds them as vectors
// (run by this package's tests and by link.js's).
//
// # The link to a peer
//
// Each link is in one LinkState (idle, connecting, up, suspect, down,
// backoff, closed), changed only by LinkState.next. A heartbeat (ping, pong)
// goes over each open channel every Config.Heartbeat (100 ms; 1 s in a
// session idle for a minute): two intervals without a word from the peer
// make the link suspect, four (or ICE disconnected) down — within half a
// second of the direct path dying. A down link keeps its channel (it is up
// again the moment the peer is heard) and gets a fresh attempt beside it
// after 500 ms; whichever opens first is kept. Attempts are retried after
// backoff (250 ms to 1 s for a link that was up before, 1 s to 30 s for one
// that never was), each bounded by Config.ConnectTimeout (4 s),
// and pion keeps checking candidates for as long, so an attempt started
// during an outage finds the path the moment it returns. The peer leaving
// (connection_update disconnected) closes its link at once. Status, Links
// and Events report the states, why the path is the relay, and the smoothed
// round trips and one-way latencies per path.
//
// While no data channel link to a member is up (or P2P is off on either
// side), the heartbeat cannot say whether that member's client runs, and
// the client probes it over the relay instead (protocol/doc.go,
// "Liveness"): a probe every 250 ms (8 per second in all), answered at once
// by the member; it answers every member's probes likewise.
// Status.Liveness (and Liveness) gives the verdict per member: not probed,
// unknown, live, late, silent (not responding).
//
// When the WebSocket drops, the client reconnects with exponential backoff
// and jitter, then sends resume {since: highest off seen, seen: last seq per
// present member}, declares its open channels again, and resends its
// unconfirmed messages. Data channels are independent of the WebSocket:
// while it is down, chord changes keep flowing directly. Close codes
// 4100-4199 and refusals of the token end the relay for good (Err, State
// closed) but not the open channels, which carry on until they end (Done
// then closes); 4100 (replaced by a newer connection of the same id) closes
// them at once.
//
// # Concurrency
//
// A Client is safe for concurrent use. It owns one reader goroutine (which
// also reconnects) and one writer goroutine per WebSocket connection
// (gorilla allows one writer), one heartbeat goroutine that drives every
// link's timers, one that sends the probes over the relay, and short-lived
// goroutines that make offers and close peer
// connections; pion runs its own. Close stops them
// all and waits. Delivery to Recv is ordered and bounded by Config.RecvQueue:
// when the queue is full the client stops reading both paths until Recv
// catches up (the server may then drop this client as a slow consumer, and it
// resumes) — nothing is dropped. Pion callbacks never run under the client's
// lock, and no pion call is made with it held.
//
// # Files
//
//	client.go          Client: Dial, Send, Recv, Flush, Close, the send queue, its goroutines
//	status.go          what it reports: State, Event, Stats, Status, LinkInfo, paths and latencies
//	config.go          Config: zero means the default, Validate refuses the rest
//	ws.go              the WebSocket: connect, resume, read, write, reconnect
//	link.go            a data channel link to one peer: its attempts, state changes, close, retries
//	link_signal.go     setting one up: offer, answer, candidates, pion's callbacks, the channel opening
//	link_heartbeat.go  over an open channel: the peer's messages, the heartbeat, acks, the timers' loop
//	linkstate.go       a data channel link's states (LinkState)
//	liveness.go        the probe over the relay as pure logic (the verdict on a member)
//	probe.go           sending and answering probes, Status.Liveness
//	outbox.go          the messages kept until the server confirms them, and their resends
//	dedupe.go          delivery once and in order per sender, whichever path came first
//	http.go            CreateSession and Pair (the API's types are protocol's)
//	faults.go          fault injection for tests and benchmarks; logging.go pion's logs to slog
//	errors.go          the sentinel errors
package peer
