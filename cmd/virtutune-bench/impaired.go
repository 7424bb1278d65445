package main

// The impaired-network mode (issue 10): server, phone and PC as three hosts
// of an emulated LAN (package netem: TAP devices in anonymous network
// namespaces, a switch in this process), Go peers playing 4 chord changes per
// second phone → PC, on a clean LAN, a Wi-Fi-like link, a direct path that
// dies silently and returns, and blackouts of the phone's network. The nodes
// are this binary started again (impaired.MaybeNode in main).
//
//	virtutune-bench --impaired [--runs 3] [--scenarios clean,wifi,udp-death,blackout]
//	                [--clean 20s] [--wifi 60s] [--udp-dead 10s] [--blackouts 3s,15s]
//	                [--after 5s] [--max-after 30s] [--json] [--dump DIR] [--v]

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/virtutune/link/internal/impaired"
)

// impairedFlag selects the impaired-network mode (the first argument).
const impairedFlag = "--impaired"

type impairedOptions struct {
	runs      int
	scenarios []string
	timing    impaired.Timing
	json      bool
	dump      string
	verbose   bool
	nodeDebug bool
}

var impairedKinds = []string{"clean", "wifi", "udp-death", "blackout"}

func parseImpairedFlags(args []string) (*impairedOptions, error) {
	o := &impairedOptions{timing: impaired.Timing{Lead: 3 * time.Second}}
	fs := flag.NewFlagSet("virtutune-bench --impaired", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&o.runs, "runs", 3, "runs of every scenario (figures are medians over them)")
	kinds := fs.String("scenarios", strings.Join(impairedKinds, ","), "scenarios: clean, wifi, udp-death, blackout")
	fs.DurationVar(&o.timing.Clean, "clean", 20*time.Second, "how long the phone plays on the clean LAN")
	fs.DurationVar(&o.timing.WiFi, "wifi", 60*time.Second, "how long the phone plays on the Wi-Fi-like link")
	fs.DurationVar(&o.timing.UDPDead, "udp-dead", 10*time.Second, "how long UDP between phone and PC stays dead")
	blackouts := fs.String("blackouts", "3s,15s", "lengths of the phone's blackouts, comma-separated")
	fs.DurationVar(&o.timing.After, "after", 5*time.Second, "playing after a fault, at least")
	fs.DurationVar(&o.timing.MaxAfter, "max-after", 30*time.Second, "playing after a fault, at most, while waiting for p2p again")
	fs.BoolVar(&o.json, "json", false, "print the results as JSON")
	fs.StringVar(&o.dump, "dump", "", "write every run's record (each chord's send and arrival times and path, the links' events) as JSON files into this directory")
	fs.BoolVar(&o.verbose, "v", false, "progress logs on stderr")
	fs.BoolVar(&o.nodeDebug, "node-debug", false, "the nodes log at debug level (printed for a failed scenario)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if o.runs < 1 {
		return nil, fmt.Errorf("--runs must be at least 1")
	}
	for _, k := range strings.Split(*kinds, ",") {
		if k = strings.TrimSpace(k); k == "" {
			continue
		}
		if !slices.Contains(impairedKinds, k) {
			return nil, fmt.Errorf("unknown scenario %q (want %s)", k, strings.Join(impairedKinds, ", "))
		}
		o.scenarios = append(o.scenarios, k)
	}
	t := &o.timing
	t.SkipClean = !slices.Contains(o.scenarios, "clean")
	t.SkipWiFi = !slices.Contains(o.scenarios, "wifi")
	t.SkipUDPDeath = !slices.Contains(o.scenarios, "udp-death")
	t.SkipBlackouts = !slices.Contains(o.scenarios, "blackout")
	for _, s := range strings.Split(*blackouts, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			return nil, fmt.Errorf("--blackouts: %q is not a duration", s)
		}
		t.Blackouts = append(t.Blackouts, d)
	}
	for name, d := range map[string]time.Duration{"clean": t.Clean, "wifi": t.WiFi, "udp-dead": t.UDPDead, "after": t.After, "max-after": t.MaxAfter} {
		if d <= 0 {
			return nil, fmt.Errorf("--%s must be positive", name)
		}
	}
	return o, nil
}

// runImpaired runs the impaired-network mode and prints its report to out.
func runImpaired(ctx context.Context, args []string, out io.Writer) error {
	o, err := parseImpairedFlags(args)
	if err != nil {
		return err
	}
	log := slog.New(slog.DiscardHandler)
	if o.verbose {
		log = slog.New(slog.NewTextHandler(stderr, nil))
	}
	lab, err := impaired.NewLab(ctx, impaired.Config{Logger: log, NodeDebug: o.nodeDebug})
	if err != nil {
		return err
	}
	defer lab.Close()
	floor50, floor99, err := lab.Floor(ctx, 1000)
	if err != nil {
		return err
	}
	if !o.json {
		fmt.Fprintf(out, "floor: the emulated LAN itself, one way (UDP echo phone<->PC, round trip halved): p50 %s, p99 %s\n\n",
			impaired.FormatDuration(floor50), impaired.FormatDuration(floor99))
	}
	scenarios := impaired.Scenarios(o.timing)
	byName := make(map[string][]impaired.Result)
	for run := 1; run <= o.runs; run++ {
		var results []impaired.Result
		for _, sc := range scenarios {
			fmt.Fprintf(stderr, "run %d/%d: %s ...\n", run, o.runs, sc.Title)
			r, err := lab.Run(ctx, sc)
			if err != nil {
				return err
			}
			res := r.Result()
			results = append(results, res)
			if o.dump != "" {
				if err := dumpRun(o.dump, run, r); err != nil {
					return err
				}
			}
			byName[sc.Name] = append(byName[sc.Name], res)
		}
		if !o.json {
			fmt.Fprintf(out, "run %d of %d\n%s\n", run, o.runs, impaired.Table(results))
		}
	}
	var medians []impaired.Result
	for _, sc := range scenarios {
		medians = append(medians, impaired.Median(byName[sc.Name]))
	}
	if o.json {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(map[string]any{"floor_p50_ns": floor50, "floor_p99_ns": floor99, "runs": byName, "medians": medians})
	}
	if o.runs > 1 {
		fmt.Fprintf(out, "medians over %d runs (counts summed)\n%s", o.runs, impaired.Table(medians))
	}
	return nil
}

// dumpRun writes one run's record to dir/<scenario>-<run>.json.
func dumpRun(dir string, n int, r *impaired.Run) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(r, "", " ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, fmt.Sprintf("%s-%d.json", r.Scenario.Name, n)), b, 0o644)
}
