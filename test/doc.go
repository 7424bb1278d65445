// Package test holds VirtuTune Link's multi-process system tests: the
// virtutune-server binary run as child processes, sharing a real
// redis-server, behind a real nginx, with Go peers and raw WebSocket clients
// talking to them. Run them alone with
//
//	go test -race ./test/
//
// (make test runs them after the other packages, so that they do not compete
// with them for the CPUs). They need redis-server and nginx (the impaired
// network's, /dev/net/tun and network namespaces); a missing one skips its
// tests, or fails them under CI=true.
//
// The files:
//
//	testenv_test.go      the harness: the server binary built once, child processes
//	                     (proc), server instances (instance), Redis (signaling/redistest),
//	                     Go peers (dialPeer; recorders and senders: internal/peertest)
//	rawclient_test.go    a plain WebSocket client speaking the original protocol
//	integration_test.go  two instances sharing Redis: the original flows and a data
//	                     channel across instances
//	faults_test.go       Redis killed and restarted, an instance killed, a SIGTERM drain
//	nginx_test.go        nginx in front of two instances, with the configuration of
//	                     cmd/virtutune-server/nginx.conf.example (generated from it)
//	tls_test.go          TLS served by the server itself
//	soak_test.go         a soak test: traffic over many sessions with random faults
//	impaired_test.go     issue 10's scenarios with Go peers on an emulated LAN
//	                     (internal/netem, internal/impaired)
//
// The polling and tool helpers are internal/testkit's, shared with every
// other test package; the Go peers' harness (configuration, recorder,
// sender, the exactly-once check) is internal/peertest's, shared with
// package peer's tests.
package test
