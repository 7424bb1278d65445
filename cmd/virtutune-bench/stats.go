package main

import (
	"math"
	"slices"
	"sync"
	"time"
)

// track is the receive side of one sender's stream: which seqs arrived, how
// late, and which arrived twice or out of order. One goroutine writes it
// (the receiver's reader); mu makes the final read safe.
type track struct {
	mu      sync.Mutex
	seen    []bool // index = seq
	maxSeq  uint64
	unique  uint64
	dup     uint64
	reorder uint64
	lat     []time.Duration
	paths   map[string]uint64
	// notify, when not nil, gets the seq of each new message (closed-loop senders wait on it).
	notify chan uint64
}

func newTrack(closedLoop bool) *track {
	t := &track{paths: make(map[string]uint64)}
	if closedLoop {
		t.notify = make(chan uint64, 1)
	}
	return t
}

// add records the arrival of seq with one-way latency lat over path.
func (t *track) add(seq uint64, lat time.Duration, path string) {
	t.mu.Lock()
	for uint64(len(t.seen)) <= seq {
		t.seen = append(t.seen, make([]bool, len(t.seen)+64)...)
	}
	if t.seen[seq] {
		t.dup++
		t.mu.Unlock()
		return
	}
	t.seen[seq] = true
	t.unique++
	if seq < t.maxSeq {
		t.reorder++
	} else {
		t.maxSeq = seq
	}
	t.lat = append(t.lat, lat)
	t.paths[path]++
	t.mu.Unlock()
	if t.notify != nil { // keep only the latest seq for the closed-loop sender
		select {
		case <-t.notify:
		default:
		}
		select {
		case t.notify <- seq:
		default:
		}
	}
}

func (t *track) received() uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.unique
}

// Latency summarises a set of one-way latencies, in microseconds.
type Latency struct {
	N    int     `json:"n"`
	P50  float64 `json:"p50_us"`
	P90  float64 `json:"p90_us"`
	P99  float64 `json:"p99_us"`
	Max  float64 `json:"max_us"`
	Mean float64 `json:"mean_us"`
}

func summarize(lat []time.Duration) Latency {
	if len(lat) == 0 {
		return Latency{}
	}
	s := slices.Clone(lat)
	slices.Sort(s)
	q := func(p float64) float64 {
		i := int(math.Ceil(p*float64(len(s)))) - 1
		i = max(0, min(i, len(s)-1))
		return us(s[i])
	}
	var sum time.Duration
	for _, d := range s {
		sum += d
	}
	return Latency{N: len(s), P50: q(0.50), P90: q(0.90), P99: q(0.99), Max: us(s[len(s)-1]),
		Mean: us(sum) / float64(len(s))}
}

func us(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }
