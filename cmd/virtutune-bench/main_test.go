package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestSmoke runs a tiny bench of every path (relay-redis only where
// redis-server is installed) and checks that it delivered everything.
func TestSmoke(t *testing.T) {
	defer goleak.VerifyNone(t,
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
	)
	stderr = io.Discard
	cases := []struct {
		name string
		args []string
	}{
		{"loopback", []string{"--sessions", "2", "--count", "20", "--floor-count", "20", "--setups", "1"}},
		{"closed-loop by duration, paced", []string{"--sessions", "2", "--rate", "50", "--duration", "300ms", "--floors=false", "--paths", "relay"}},
		{"far", []string{"--sessions", "1", "--count", "5", "--floors=false", "--setups", "1", "--far-rtt", "20ms", "--paths", "p2p,relay"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			var out bytes.Buffer
			args := append([]string{"--json", "--quiet"}, tc.args...)
			if err := run(ctx, args, &out); err != nil {
				t.Fatalf("run: %v\n%s", err, out.String())
			}
			var rep Report
			if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
				t.Fatalf("report: %v\n%s", err, out.String())
			}
			_, haveRedis := exec.LookPath("redis-server")
			for _, e := range rep.Errors {
				if haveRedis != nil && strings.Contains(e, "redis") {
					continue
				}
				t.Errorf("bench error: %s", e)
			}
			if len(rep.Paths) == 0 {
				t.Fatal("no path measured")
			}
			for _, p := range rep.Paths {
				if p.Sent == 0 || p.Lost != 0 || p.Duplicated != 0 || p.Reordered != 0 || p.Latency.N == 0 {
					t.Errorf("%s: sent %d lost %d dup %d reordered %d samples %d", p.Name, p.Sent, p.Lost, p.Duplicated, p.Reordered, p.Latency.N)
				}
				if p.Setup.N == 0 {
					t.Errorf("%s: no setup time", p.Name)
				}
				if strings.HasPrefix(p.Name, "relay") && strings.HasSuffix(p.Name, "far") && p.Latency.P50 < 20000 {
					t.Errorf("%s: p50 %.0fµs does not pay the 20ms round trip", p.Name, p.Latency.P50)
				}
			}
			if tc.name == "loopback" && rep.Floors.WSRelay == nil {
				t.Error("no ws relay floor")
			}
			var table bytes.Buffer
			rep.writeTable(&table)
			if !strings.Contains(table.String(), "p50") {
				t.Errorf("table lacks its header:\n%s", table.String())
			}
		})
	}
}

func TestOnlyLoopbackTargets(t *testing.T) {
	for _, u := range []string{"http://10.0.0.1:8000", "http://example.com", "ftp://127.0.0.1"} {
		if _, err := parseFlags([]string{"--url", u}); err == nil {
			t.Errorf("--url %s accepted", u)
		}
	}
	for _, u := range []string{"http://127.0.0.1:8000", "http://localhost:8000", "http://[::1]:8000"} {
		if _, err := parseFlags([]string{"--url", u}); err != nil {
			t.Errorf("--url %s refused: %v", u, err)
		}
	}
}

func TestDelayProxyKeepsOrderAndDelays(t *testing.T) {
	ln := mustListen(t)
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = io.Copy(c, c) // echo
	}()
	p, err := startProxy(ln.Addr().String(), 20*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c := mustDial(t, p.Addr())
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	t0 := time.Now()
	for i := range 10 {
		if _, err := c.Write([]byte{byte('a' + i)}); err != nil {
			t.Fatal(err)
		}
	}
	got := make([]byte, 0, 10)
	buf := make([]byte, 10)
	for len(got) < 10 {
		n, err := c.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, buf[:n]...)
	}
	if string(got) != "abcdefghij" {
		t.Errorf("order: got %q", got)
	}
	if d := time.Since(t0); d < 20*time.Millisecond {
		t.Errorf("echo through the proxy took %s, want at least the 20ms round trip", d)
	}
}

func mustListen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

func mustDial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
