package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"strings"
	"text/tabwriter"
	"time"
)

// PathResult is what the bench measured on one path.
type PathResult struct {
	Name     string `json:"name"`
	Sessions int    `json:"sessions"`
	// Scope says whose CPU and memory the figures are: "server" (a child
	// process), "process" (server and clients in this process) or "" (not measured).
	Scope    string `json:"scope,omitempty"`
	Sent     uint64 `json:"sent"`
	Received uint64 `json:"delivered"`
	Lost     uint64 `json:"lost"`
	// LossySessions counts the sessions that lost anything.
	LossySessions int               `json:"lossy_sessions,omitempty"`
	Duplicated    uint64            `json:"duplicated"`
	Reordered     uint64            `json:"reordered"`
	ByPath        map[string]uint64 `json:"by_path,omitempty"`
	Latency       Latency           `json:"latency"`
	PerSecond     float64           `json:"delivered_per_second"`
	Seconds       float64           `json:"seconds"`
	// Setup is the time from session creation to both members joined (and,
	// on the p2p path, the data channel open), in µs.
	Setup         Latency `json:"setup"`
	SetupSeconds  float64 `json:"setup_total_seconds"`
	SetupFailures int     `json:"setup_failures,omitempty"`
	CPUPercent    float64 `json:"cpu_percent,omitempty"` // 100 = one core
	RSS           int64   `json:"rss_bytes,omitempty"`
	Connections   int     `json:"connections,omitempty"`
	// MemPerConn is the Go heap+stack in use (after GC) per WebSocket
	// connection; RSSPerConn the resident set growth per connection.
	MemPerConn float64 `json:"mem_per_conn_bytes,omitempty"`
	RSSPerConn float64 `json:"rss_per_conn_bytes,omitempty"`
	Err        string  `json:"error,omitempty"`
	// Disconnects counts connections the server (or the network) ended
	// during the run; DisconnectErr is the first one's error.
	// RunQueueWait is how long the server's threads waited for a CPU while
	// runnable during the traffic, per second of traffic (0.5 = half a
	// thread-second each second); CPUPressure is the machine's PSI "some
	// avg10" at the end: both say how much the machine was shared.
	RunQueueWait  float64 `json:"runqueue_wait_per_second,omitempty"`
	CPUPressure   float64 `json:"cpu_pressure_avg10,omitempty"`
	Disconnects   int     `json:"disconnects,omitempty"`
	DisconnectErr string  `json:"disconnect_error,omitempty"`
	// Notes say more about the path (e.g. Redis\'s time per command).
	Notes []string `json:"notes,omitempty"`

	lat []time.Duration
}

func (r *PathResult) noteContention(pid int, w0 time.Duration, elapsed time.Duration) {
	if pid >= 0 {
		r.RunQueueWait = (runQueueWait(pid) - w0).Seconds() / elapsed.Seconds()
	}
	r.CPUPressure = cpuPressure()
}

// Ratio is a product figure divided by its floor, against a target.
type Ratio struct {
	Name   string  `json:"name"`
	Value  float64 `json:"value"`
	Target float64 `json:"target"`
	Unit   string  `json:"unit,omitempty"`
	// AtLeast: the target is a floor (value >= target), not a ceiling.
	AtLeast bool   `json:"at_least,omitempty"`
	OK      bool   `json:"ok"`
	Note    string `json:"note,omitempty"`
}

// printRatios writes the figures against their targets, one line each.
func printRatios(w io.Writer, ratios []Ratio) {
	if len(ratios) == 0 {
		return
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "figure\tvalue\ttarget\t\t")
	for _, r := range ratios {
		ok, cmp := "MISS", "<="
		if r.OK {
			ok = "ok"
		}
		if r.AtLeast {
			cmp = ">="
		}
		fmt.Fprintf(tw, "%s\t%.2f %s\t%s %g %s\t%s\t%s\n", r.Name, r.Value, r.Unit, cmp, r.Target, r.Unit, ok, r.Note)
	}
	tw.Flush()
}

// Report is the whole run.
type Report struct {
	CPUs       int           `json:"cpus"`
	GOMAXPROCS int           `json:"gomaxprocs"`
	Go         string        `json:"go"`
	Options    string        `json:"options"`
	Started    time.Time     `json:"started"`
	Floors     Floors        `json:"floors"`
	Paths      []*PathResult `json:"paths"`
	Ratios     []Ratio       `json:"ratios"`
	Errors     []string      `json:"errors,omitempty"`
}

func (rep *Report) path(name string) *PathResult {
	for _, p := range rep.Paths {
		if p.Name == name && p.Latency.N > 0 {
			return p
		}
	}
	return nil
}

// computeRatios compares the product paths with the floors and the targets.
// The floors are one closed-loop stream, so the latency ratios are computed
// only for a run like that (one session, --rate 0).
func (rep *Report) computeRatios(farRTT time.Duration, oneStream bool) {
	add := func(name string, v, target float64, unit, note string) {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return
		}
		rep.Ratios = append(rep.Ratios, Ratio{Name: name, Value: v, Target: target, Unit: unit, OK: v <= target, Note: note})
	}
	f := rep.Floors
	if !oneStream {
		f = Floors{}
	}
	if r := rep.path("relay"); r != nil && f.WSRelay != nil {
		add("relay p50 / ws-relay floor p50", r.Latency.P50/f.WSRelay.P50, 1.5, "x", "")
		add("relay p99 / ws-relay floor p99", r.Latency.P99/f.WSRelay.P99, 2, "x", "")
	}
	if r := rep.path("p2p"); r != nil && f.PionHalfRTT != nil {
		add("p2p p50 / pion rtt/2 floor p50", r.Latency.P50/f.PionHalfRTT.P50, 1.3, "x", "")
	}
	if r := rep.path("relay-redis"); r != nil && f.WSRelay != nil && f.RedisHop != nil {
		add("relay-redis p50 / (ws-relay + redis hop) p50", r.Latency.P50/(f.WSRelay.P50+f.RedisHop.P50), 1.5, "x", "")
	}
	if farRTT > 0 {
		if far, near := rep.path("p2p far"), rep.path("p2p"); far != nil && near != nil {
			add("p2p far p99 / p2p loopback p99", far.Latency.P99/near.Latency.P99, 1.5, "x", "")
		}
		for _, name := range []string{"relay far", "relay-redis far"} {
			if far := rep.path(name); far != nil {
				rep.Ratios = append(rep.Ratios, Ratio{Name: name + " p50 / far RTT", Value: far.Latency.P50 / us(farRTT),
					Target: 1, Unit: "x", OK: far.Latency.P50 >= us(farRTT),
					Note: "relay pays the round trip (expected >= 1)"})
			}
		}
	}
	for _, p := range rep.Paths {
		if p.Setup.N > 0 && strings.HasPrefix(p.Name, "p2p") && !strings.Contains(p.Name, "far") {
			add(p.Name+" setup median (create → joined → channel open)", p.Setup.P50/1000, 50, "ms", "")
		}
		if p.Connections >= 1000 && p.Latency.N > 0 {
			add(p.Name+" p99 at scale", p.Latency.P99/1000, 20, "ms", fmt.Sprintf("%d connections", p.Connections))
			add(p.Name+" lost at scale", float64(p.Lost), 0, "msgs", "")
			if p.Scope == "server" {
				add(p.Name+" server RSS per connection", p.RSSPerConn/1024, 32, "KiB", "")
				add(p.Name+" server Go heap+stack per connection", p.MemPerConn/1024, 32, "KiB", "")
			}
		}
	}
}

func fmtUS(v float64) string {
	switch {
	case v == 0:
		return "-"
	case v >= 10000:
		return fmt.Sprintf("%.1fms", v/1000)
	}
	return fmt.Sprintf("%.0fµs", v)
}

// writeTable prints the human report.
func (rep *Report) writeTable(w io.Writer) {
	fmt.Fprintf(w, "VirtuTune Link bench — %d CPUs, GOMAXPROCS %d, %s\n%s\n\n", rep.CPUs, rep.GOMAXPROCS, rep.Go, rep.Options)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "floor (one-way)\tn\tp50\tp90\tp99\tmax\t")
	for _, x := range []struct {
		name string
		l    *Latency
	}{{"bare ws relay", rep.Floors.WSRelay}, {"bare pion rtt/2", rep.Floors.PionHalfRTT}, {"bare redis hop", rep.Floors.RedisHop}} {
		if x.l == nil {
			continue
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t\n", x.name, x.l.N, fmtUS(x.l.P50), fmtUS(x.l.P90), fmtUS(x.l.P99), fmtUS(x.l.Max))
	}
	tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "path\tsess\tsent\tdeliv/s\tp50\tp90\tp99\tmax\tlost\tdup\treord\tsetup p50\tsetup max\tcpu%\tRSS MiB\tB/conn heap\tB/conn RSS\tscope\trunq wait\tPSI\t")
	for _, p := range rep.Paths {
		mem, rss := "-", "-"
		if p.Connections > 0 {
			mem, rss = fmt.Sprintf("%.0f", p.MemPerConn), fmt.Sprintf("%.0f", p.RSSPerConn)
		}
		cpu := "-"
		if p.CPUPercent > 0 {
			cpu = fmt.Sprintf("%.0f", p.CPUPercent)
		}
		rssMiB := "-"
		if p.RSS > 0 {
			rssMiB = fmt.Sprintf("%.0f", float64(p.RSS)/(1<<20))
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.0f\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%.2f\t%.0f%%\t\n",
			p.Name, p.Sessions, p.Sent, p.PerSecond, fmtUS(p.Latency.P50), fmtUS(p.Latency.P90), fmtUS(p.Latency.P99),
			fmtUS(p.Latency.Max), p.Lost, p.Duplicated, p.Reordered, fmtUS(p.Setup.P50), fmtUS(p.Setup.Max), cpu, rssMiB, mem, rss, p.Scope,
			p.RunQueueWait, p.CPUPressure)
	}
	tw.Flush()
	for _, p := range rep.Paths {
		if len(p.ByPath) > 1 {
			fmt.Fprintf(w, "  %s: delivered first by path %v\n", p.Name, p.ByPath)
		}
		for _, n := range p.Notes {
			fmt.Fprintf(w, "  %s: %s\n", p.Name, n)
		}
		if p.Disconnects > 0 {
			fmt.Fprintf(w, "  %s: %d connections ended during the run; first: %s\n", p.Name, p.Disconnects, p.DisconnectErr)
		}
		if p.Err != "" {
			fmt.Fprintf(w, "  %s: %d setup failures; first: %s\n", p.Name, p.SetupFailures, p.Err)
		}
	}
	printRatios(w, rep.Ratios)
	for _, e := range append(rep.Floors.Errors, rep.Errors...) {
		fmt.Fprintln(w, "error:", e)
	}
}

func (rep *Report) writeJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(rep)
}

// writeSVG draws each path's latency distribution (share of messages per
// log-spaced bucket) as a line.
func (rep *Report) writeSVG(file string, floors map[string][]time.Duration) error {
	const (
		W, H        = 900, 420
		left, right = 60, 180
		top, bottom = 30, 50
		lo, hi      = 1.0, 6.0 // log10 µs: 10 µs .. 1 s
		bins        = 100
	)
	series := []struct {
		name string
		lat  []time.Duration
	}{}
	for _, name := range []string{"ws-relay floor", "pion rtt/2 floor", "redis hop floor"} {
		if l := floors[name]; len(l) > 0 {
			series = append(series, struct {
				name string
				lat  []time.Duration
			}{name, l})
		}
	}
	for _, p := range rep.Paths {
		if len(p.lat) > 0 {
			series = append(series, struct {
				name string
				lat  []time.Duration
			}{p.Name, p.lat})
		}
	}
	colors := []string{"#999", "#bbb", "#ddd", "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2"}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", W, H)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", W, H)
	fmt.Fprintf(&b, `<text x="%d" y="18">one-way latency distribution (share of messages per bucket, log scale)</text>`+"\n", left)
	pw, ph := float64(W-left-right), float64(H-top-bottom)
	x := func(l float64) float64 { return float64(left) + (l-lo)/(hi-lo)*pw }
	for d := lo; d <= hi; d++ {
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#eee"/>`, x(d), top, x(d), H-bottom)
		lab := []string{"", "10µs", "100µs", "1ms", "10ms", "100ms", "1s"}[int(d)]
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", x(d), H-bottom+18, lab)
	}
	hists := make([][]float64, len(series))
	peak := 0.0
	for i, s := range series {
		h := make([]float64, bins)
		for _, d := range s.lat {
			v := math.Log10(math.Max(us(d), 1))
			k := int((v - lo) / (hi - lo) * bins)
			k = max(0, min(k, bins-1))
			h[k]++
		}
		for k := range h {
			h[k] /= float64(len(s.lat))
			peak = math.Max(peak, h[k])
		}
		hists[i] = h
	}
	for i, s := range series {
		var pts []string
		for k, v := range hists[i] {
			px := float64(left) + (float64(k)+0.5)/bins*pw
			py := float64(top) + ph - v/peak*ph
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", px, py))
		}
		c := colors[i%len(colors)]
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="1.5" points="%s"/>`+"\n", c, strings.Join(pts, " "))
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="12" height="12" fill="%s"/><text x="%d" y="%d">%s (n=%d)</text>`+"\n",
			W-right+10, top+i*18, c, W-right+28, top+i*18+10, s.name, len(s.lat))
	}
	fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>`+"\n", left, H-bottom, W-right, H-bottom)
	b.WriteString("</svg>\n")
	return os.WriteFile(file, []byte(b.String()), 0o644)
}
