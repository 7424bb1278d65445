package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestMain lets the test binary be the bench's child processes (servers and
// client workers), which the load test starts by re-executing itself.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 {
		if handled, err := subcommand(os.Args[1], os.Args[2:]); handled {
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
			os.Exit(0)
		}
	}
	os.Exit(m.Run())
}

// TestLoadSmoke runs a tiny load test of the project (memory and, where
// redis-server is installed, Redis) and the bare hub, each in its own
// process, and checks that every step delivered everything exactly once and
// that server CPU and memory were measured.
func TestLoadSmoke(t *testing.T) {
	stderr = io.Discard
	targets := "project,hub"
	if _, err := exec.LookPath("redis-server"); err == nil {
		targets = "project,project-redis,hub"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var out bytes.Buffer
	args := []string{"--json", "--quiet", "--targets", targets, "--sessions", "60", "--rounds", "1", "--client-procs", "2",
		"--loop-count", "30", "--fixed-rate", "300", "--step", "500ms", "--drain", "5s",
		"--search-start", "300", "--search-max", "700", "--search-factor", "2", "--search-refine", "1"}
	if err := runLoad(ctx, args, &out); err != nil {
		t.Fatalf("load: %v\n%s", err, out.String())
	}
	var rep LoadReport
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("report: %v\n%s", err, out.String())
	}
	if len(rep.Errors) > 0 {
		t.Errorf("errors: %v", rep.Errors)
	}
	if len(rep.Rounds) != len(strings.Split(targets, ",")) {
		t.Fatalf("%d target rounds, want one per target (%s)", len(rep.Rounds), targets)
	}
	for _, r := range rep.Rounds {
		if r.Sessions != 60 || r.Loop == nil || r.Fixed == nil || len(r.Search) == 0 {
			t.Errorf("%s: sessions %d, loop %v, fixed %v, %d search steps", r.Target, r.Sessions, r.Loop != nil, r.Fixed != nil, len(r.Search))
			continue
		}
		steps := append([]*StepResult{r.Loop, r.Fixed}, r.Search...)
		for i, s := range steps {
			if s.Sent == 0 || s.Lost != 0 || s.Dup != 0 || s.Reord != 0 || s.Latency.N != int(s.Delivered) {
				t.Errorf("%s step %d: sent %d delivered %d lost %d dup %d reordered %d samples %d", r.Target, i, s.Sent, s.Delivered, s.Lost, s.Dup, s.Reord, s.Latency.N)
			}
		}
		// /proc counts CPU time in clock ticks (10 ms): the light hub's short
		// fixed step (150 messages, ~5 ms) may measure none, and so may
		// Redis's share of it (150 publishes, 5-10 ms); the round's steps
		// together must.
		var serverCPU, redisCPU float64
		for _, s := range steps {
			serverCPU += s.ServerCPU * float64(s.Delivered)
			redisCPU += s.RedisCPU * float64(s.Delivered)
		}
		if serverCPU <= 0 || r.Fixed.ServerCPU < 0 {
			t.Errorf("%s: no server CPU per message (fixed step %.1f µs)", r.Target, r.Fixed.ServerCPU)
		}
		if r.Target == "project-redis" && (redisCPU <= 0 || r.Fixed.RedisCPU < 0) {
			t.Errorf("%s: no Redis CPU per message (fixed step %.1f µs)", r.Target, r.Fixed.RedisCPU)
		}
		// Every step publishes through the script: Redis's own time per call
		// is measured in each (microseconds, not clock ticks).
		if r.Target == "project-redis" && (r.Fixed.RedisScript <= 0 || r.Search[0].RedisScript <= 0) {
			t.Errorf("%s: no Redis time per script call (fixed %.1f µs, first search step %.1f)", r.Target, r.Fixed.RedisScript, r.Search[0].RedisScript)
		}
		if r.Target != "project-redis" && r.Fixed.RedisScript != 0 {
			t.Errorf("%s: Redis time per script call %.1f µs without a Redis", r.Target, r.Fixed.RedisScript)
		}
		if r.MemPerConn == 0 || r.RSSPerConn == 0 || r.ObjPerConn <= 0 {
			t.Errorf("%s: memory per connection not measured (heap %.0f, RSS %.0f, %.1f objects)", r.Target, r.MemPerConn, r.RSSPerConn, r.ObjPerConn)
		}
	}
	var table bytes.Buffer
	rep.writeTable(&table, &loadOptions{Sessions: 60, FixedRate: 300, P99Limit: 50 * time.Millisecond})
	if !strings.Contains(table.String(), "sustained msg/s") {
		t.Errorf("table lacks its summary:\n%s", table.String())
	}
}

func TestSplitAndHistogram(t *testing.T) {
	total := 0
	for i := range 3 {
		first, n := split(10, 3, i)
		if first != total {
			t.Errorf("worker %d starts at %d, want %d", i, first, total)
		}
		total += n
	}
	if total != 10 {
		t.Errorf("split covers %d sessions, want 10", total)
	}
	var h hist
	for i := 1; i <= 1000; i++ {
		h.add(time.Duration(i) * time.Microsecond)
	}
	l := histSummary(h.take())
	if l.N != 1000 || l.P50 < 495 || l.P50 > 505 || l.P99 < 985 || l.P99 > 995 || l.Max < 995 || l.Max > 1006 {
		t.Errorf("histogram summary %+v, want n 1000, p50 ~500µs, p99 ~990µs, max ~1000µs", l)
	}
	if again := histSummary(h.take()); again.N != 0 {
		t.Errorf("take did not reset: %+v", again)
	}
}

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
