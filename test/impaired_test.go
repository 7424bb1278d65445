package test

// The scenarios of issue 10 with Go peers on an emulated LAN (internal/netem,
// internal/impaired): server, phone and PC as three processes in three
// network namespaces on one userspace switch; the phone plays 4 chord
// changes per second to the PC on a clean LAN, on a Wi-Fi-like link, while
// UDP between phone and PC dies silently and returns, and through blackouts
// of the phone's network of 3 s and 15 s. Nothing may be lost, duplicated
// or reordered; the latency figures are reported with t.Logf (the machine is
// shared: timing is measured by `virtutune-bench --impaired`, and only bounds
// far above the targets are checked here).

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/virtutune/link/internal/impaired"
	"github.com/virtutune/link/internal/netem"
	"github.com/virtutune/link/internal/testkit"
)

// The nodes of the lab are this test binary, started again with
// impaired.EnvNode set: it then runs the node instead of the tests.
func init() { impaired.MaybeNode() }

// bounds are far above issue 10's targets (a shared, loaded 2-core machine,
// race-instrumented nodes) and far below what the main before issue 10 gave
// (SCTP backoff, relay copies suppressed, ICE "failed" awaited: 4 to 15 s).
// The Wi-Fi-like link's p99 (target 60 ms) has no bound here: on a loaded
// machine one stalled process moves it; virtutune-bench measures it.
var bounds = map[string]func(impaired.Result) (string, time.Duration, time.Duration){
	"udp-death": func(r impaired.Result) (string, time.Duration, time.Duration) {
		return "latest chord sent while UDP was dead", r.DuringMax, 3 * time.Second
	},
	"udp-death/p2p": func(r impaired.Result) (string, time.Duration, time.Duration) {
		return "p2p again after UDP returned", r.P2PAgain, 5 * time.Second
	},
	"blackout-3s": func(r impaired.Result) (string, time.Duration, time.Duration) {
		return "last chord sent during it, after the return", r.DuringAfterReturn, 3 * time.Second
	},
	"blackout-15s": func(r impaired.Result) (string, time.Duration, time.Duration) {
		return "chords played after the return, latest", r.AfterMax, 3 * time.Second
	},
}

func TestImpairedNetwork(t *testing.T) {
	if testing.Short() {
		t.Skip("impaired-network scenarios skipped in -short mode")
	}
	if err := netem.Check(); err != nil {
		if !errors.Is(err, netem.ErrUnavailable) {
			t.Fatal(err)
		}
		testkit.SkipOrFail(t, "the impaired-network scenarios need the network emulator: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	lab, err := impaired.NewLab(ctx, impaired.Config{Logger: slog.New(slog.NewTextHandler(t.Output(), nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := lab.Close(); err != nil {
			t.Errorf("closing the lab: %v", err)
		}
	}()
	var results []impaired.Result
	for _, sc := range impaired.Scenarios(impaired.TestTiming) {
		run, err := lab.Run(ctx, sc)
		if err != nil {
			t.Fatal(err)
		}
		r := run.Result()
		results = append(results, r)
		failed := false
		if !r.Clean() || r.Sent == 0 || r.Delivered != r.Sent {
			t.Errorf("%s: %d sent, %d delivered, %d lost, %d duplicated, %d reordered", sc.Name,
				r.Sent, r.Delivered, r.Lost, r.Duplicated, r.Reordered)
			failed = true
		}
		for _, key := range []string{sc.Name, sc.Name + "/p2p"} {
			if b, ok := bounds[key]; ok {
				fig, v, limit := b(r)
				if v == impaired.None || v > limit {
					t.Errorf("%s: %s %s, bound %s", sc.Name, fig, impaired.FormatDuration(v), impaired.FormatDuration(limit))
					failed = true
				}
			}
		}
		if failed {
			t.Logf("%s: the nodes' logs:\n%s", sc.Name, run.Logs)
		}
	}
	t.Logf("figures (targets are checked by virtutune-bench --impaired, not here):\n%s", impaired.Table(results))
}
