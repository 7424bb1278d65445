// Package impaired runs the scenarios of issue 10 — what a guitarist gets on
// a network that is less than perfect — with Go peers on an emulated LAN
// (package netem), and computes their figures. The project's system test
// (test/) and virtutune-bench's impaired-network mode use it; the browser
// test (web/) uses its Run and Result for Chromium's figures.
//
// # The lab
//
// A Lab is three hosts on one emulated switch, each its own network
// namespace: the signaling server (memory broker) on 10.99.0.1:8000, the
// phone on .2 and the PC on .3. Each is a separate process — this same
// executable started again with EnvNode set, which MaybeNode turns into a
// node (NodeMain) — so that every client has its own sockets, pion stack
// and scheduler, as on real devices. The nodes print what happens as JSON
// lines (a chord sent, a chord delivered with its path, a link going up or
// down) stamped with the wall clock, which every namespace of the machine
// shares: send and arrival are on one clock.
//
// # A scenario
//
// Each scenario is a fresh session: the PC node creates it (POST
// /api/sessions), the phone node pairs with its pairing link, both join, and
// once the data channel is up at both ends the phone plays a chord change
// every 250 ms (4 per second) to the PC. The phone's link may be impaired for
// the whole run (the Wi-Fi-like link: 4 ms ± 3 ms and 2 % loss each way), and
// a fault may strike in the middle: UDP between phone and PC dropped
// silently while the WebSocket still flows, or everything to and from the
// phone dropped (a blackout). After the fault the phone plays on until the
// PC gets chords directly again (and 2 s beyond; at most Scenario.MaxAfter),
// then stops, and the run waits (at most 45 s) for the PC to get every chord.
//
// # Figures
//
// For each run (Run.Result): chords sent, lost, duplicated and reordered at
// the PC's application; deliveries by path; p50, p99 and max latency (send to
// delivery); for a fault, the chords sent during it (their largest latency,
// and how long after the return the last of them arrived), the chords sent
// after the return (their latency), how long after the fault a client
// declared its data channel down, and how long after the return the PC first
// got a chord directly again ("p2p again"). Result.Checks compares them with
// the targets of issue 10; Table prints them.
//
// # Files
//
//	lab.go       Lab: the three hosts and their nodes, a scenario's run (Run), the floor (Floor)
//	node.go      the node side (MaybeNode, NodeMain): server, phone or PC, its JSON events
//	proc.go      a node process seen from the lab: commands in, events out
//	scenario.go  the faults and the Scenarios with their timing
//	run.go       Run: what was sent and received, the links' events; result.go its figures
//	             (Result, Checks, Table, Median)
//	stall.go     the stalls each process reports (a process not scheduled for over 20 ms)
package impaired
