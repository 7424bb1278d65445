package main

import (
	"math"
	"sync/atomic"
	"time"
)

// hist is a latency histogram with log-spaced buckets 1 % apart, from 100 ns
// to about 40 minutes: percentiles within 1 %, merged across processes by
// adding counts. Safe for concurrent add.
type hist struct {
	b [histBuckets]atomic.Uint64
}

const (
	histBuckets = 2400
	histMin     = 100 // ns
)

var histLogBase = math.Log(1.01)

func histBucket(d time.Duration) int {
	if d < histMin {
		return 0
	}
	i := 1 + int(math.Log(float64(d)/histMin)/histLogBase)
	return min(i, histBuckets-1)
}

// histValue is the middle of bucket i.
func histValue(i int) time.Duration {
	if i == 0 {
		return histMin / 2
	}
	return time.Duration(histMin * math.Pow(1.01, float64(i)-0.5))
}

func (h *hist) add(d time.Duration) { h.b[histBucket(d)].Add(1) }

// snapshot returns the non-empty buckets (index, count) and resets h.
func (h *hist) take() [][2]uint64 {
	var out [][2]uint64
	for i := range h.b {
		if n := h.b[i].Swap(0); n > 0 {
			out = append(out, [2]uint64{uint64(i), n})
		}
	}
	return out
}

// histSummary turns merged sparse buckets into a Latency.
func histSummary(parts ...[][2]uint64) Latency {
	var counts [histBuckets]uint64
	var n uint64
	var sum float64
	maxI := -1
	for _, p := range parts {
		for _, kv := range p {
			i := int(kv[0])
			if i < 0 || i >= histBuckets {
				continue
			}
			counts[i] += kv[1]
			n += kv[1]
			sum += float64(kv[1]) * us(histValue(i))
			maxI = max(maxI, i)
		}
	}
	if n == 0 {
		return Latency{}
	}
	q := func(p float64) float64 {
		rank := uint64(math.Ceil(p * float64(n)))
		var c uint64
		for i, k := range counts {
			c += k
			if c >= rank {
				return us(histValue(i))
			}
		}
		return us(histValue(maxI))
	}
	return Latency{N: int(n), P50: q(0.5), P90: q(0.9), P99: q(0.99), Max: us(histValue(maxI)), Mean: sum / float64(n)}
}
