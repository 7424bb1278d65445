// Command virtutune-bench measures VirtuTune Link's chord latency, throughput,
// loss and cost per path, and this machine's floors for comparison.
//
// It drives N sessions (a phone and a PC each) against a signaling server it
// starts itself on 127.0.0.1 (in this process, or with --child in a child
// process so that server memory and CPU are the server's alone), or against
// one given by --url (loopback only). Per path it reports one-way latency
// p50/p90/p99/max, messages delivered per second, lost, duplicated and
// reordered messages, session setup time, CPU, RSS and memory per connection:
//
//	p2p          Go peers (package peer): chord changes over the data channel
//	relay        light WebSocket clients through one instance
//	relay-redis  phone on instance A, PC on instance B, sharing a redis-server
//	             the bench starts on a free port of 127.0.0.1 (never 6379)
//
// In the same run it measures the floors: a bare gorilla WebSocket relay hop, a
// bare pion data channel round trip (halved) and a bare go-redis PUBLISH →
// subscriber hop, each one closed-loop stream, and for a run of one
// closed-loop session (the default) prints each product figure as a ratio to
// its floor, against the targets of issue 6.
// With --far-rtt a delay proxy on loopback adds a round trip to every
// WebSocket byte (the data channel between the peers is not delayed).
//
//	virtutune-bench [--sessions 1] [--rate 0 (closed loop) | --rate 1] [--duration 5s | --count N]
//	                [--paths p2p,relay,relay-redis] [--far-rtt 40ms] [--child] [--url http://127.0.0.1:8000]
//	                [--json] [--svg latency.svg] [--cpuprofile f] [--memprofile f]
//
// With --impaired as its first argument it runs the impaired-network scenarios
// of issue 10 instead (impaired.go).
//
// `virtutune-bench load` (load.go) is the load test: many sessions against
// servers in processes of their own (the project, the project with Redis, the
// bare gorilla hub as the floor, optionally Centrifugo built from the module
// proxy), clients in worker processes, servers alternated, medians of
// rounds: one session's closed loop, server CPU per relayed message, the
// sustained-rate search and memory per connection.
//
//	virtutune-bench load [--targets project,project-redis,hub] [--sessions 1000] [--rounds 3]
//	                     [--tests loop,fixed,search] [--fixed-rate 5000] [--compare-bin OLD] [--json]
//
// See RESULTS.md beside this file for the figures on the reference machine.
//
// # Files
//
//	doc.go           this map; main.go the flags, run, runPath (each path against the
//	                 bench's own servers or --url)
//	servers.go       the servers it starts: in process (startInstance), redis-server (through
//	                 signaling/redistest), the --serve child; Redis's own time per command
//	run.go           driving the sessions of a path (closed loop or a rate), draining, collecting
//	relay.go, lite.go  the relay path's light WebSocket clients and the HTTP API calls they make
//	p2p.go           the p2p path's Go peers (package peer)
//	floors.go        the floors: bare WebSocket relay, bare pion round trip, bare Redis hop
//	stats.go, hist.go  latencies and their summaries; report.go the report, ratios and table
//	proxy.go         the delay proxy of --far-rtt; sys.go /proc readings, open-file limit
//	impaired.go      --impaired (the scenarios of internal/impaired)
//	load.go          `load`: options, the servers under test, one round (measure)
//	load_steps.go    its steps and the sustained-rate search; load_report.go its results and table
//	loadproc.go      the child processes (childProc), their --serve and --serve-hub servers
//	loadworker.go    the --load-clients worker; loadsession.go its sessions; loadconn.go their
//	                 WebSockets (the project's protocol, Centrifugo's); centrifugo.go builds and runs it
package main
