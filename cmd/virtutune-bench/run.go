package main

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// benchSession is one phone and one PC of a path under test.
type benchSession interface {
	// send makes the phone send its next chord change.
	send(ctx context.Context) error
	// sent is how many chord changes the phone sent.
	sent() uint64
	// track is the PC's receive record of the phone's chord changes.
	track() *track
	close()
}

// traffic counts messages for the progress line.
type traffic struct {
	name       string
	sent, recv atomic.Uint64
	start      time.Time
}

// progress prints a progress line on stderr every second until ctx is done.
func progress(ctx context.Context, t *traffic, quiet bool) func() {
	if quiet {
		return func() {}
	}
	return everySecond(ctx, func() string {
		el := time.Since(t.start).Seconds()
		return fmt.Sprintf("[%s] %5.1fs sent %d delivered %d (%.0f/s)", t.name, el,
			t.sent.Load(), t.recv.Load(), float64(t.recv.Load())/el)
	})
}

// everySecond writes line() over the same stderr line every second until
// ctx is done or the returned stop is called (stop waits for the goroutine).
func everySecond(ctx context.Context, line func() string) func() {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				fmt.Fprint(stderr, "\r\033[K")
				return
			case <-tick.C:
				fmt.Fprint(stderr, "\r\033[K"+line())
			}
		}
	}()
	return func() { cancel(); wg.Wait() }
}

// drive makes every session's phone send chord changes: closed-loop (the next
// one once the previous arrived) when opt.Rate is 0, else opt.Rate per second
// per session, evenly spread; for opt.Count messages per session or for
// opt.Duration. It returns how long sending took.
func drive(ctx context.Context, opt *options, sess []benchSession, tr *traffic) time.Duration {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if opt.Count == 0 {
		var c2 context.CancelFunc
		ctx, c2 = context.WithTimeout(ctx, opt.Duration)
		defer c2()
	}
	start := time.Now()
	tr.start = start
	var wg sync.WaitGroup
	if opt.Rate <= 0 {
		for _, s := range sess {
			wg.Add(1)
			go func() {
				defer wg.Done()
				t := s.track()
				for k := uint64(1); opt.Count == 0 || k <= uint64(opt.Count); k++ {
					if ctx.Err() != nil {
						return
					}
					if s.send(ctx) != nil {
						return
					}
					tr.sent.Add(1)
					timeout := time.NewTimer(2*time.Second + 2*opt.FarRTT)
				wait:
					for {
						select {
						case got := <-t.notify:
							if got >= k {
								break wait
							}
						case <-timeout.C:
							break wait // lost or late: counted at the end
						case <-ctx.Done():
							timeout.Stop()
							return
						}
					}
					timeout.Stop()
				}
			}()
		}
		wg.Wait()
		return time.Since(start)
	}
	// Paced: shards walk their sessions round-robin at rate*len(shard) per second.
	shards := min(len(sess), 8)
	for sh := range shards {
		var mine []benchSession
		for i := sh; i < len(sess); i += shards {
			mine = append(mine, sess[i])
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			interval := time.Duration(float64(time.Second) / (opt.Rate * float64(len(mine))))
			// Stagger shards so their sends interleave.
			next := start.Add(interval * time.Duration(sh) / time.Duration(shards))
			total := uint64(opt.Count) * uint64(len(mine))
			timer := time.NewTimer(0)
			defer timer.Stop()
			<-timer.C
			for n := uint64(0); total == 0 || n < total; n++ {
				if d := time.Until(next); d > 50*time.Microsecond {
					timer.Reset(d)
					select {
					case <-timer.C:
					case <-ctx.Done():
						return
					}
				} else if ctx.Err() != nil {
					return
				}
				s := mine[n%uint64(len(mine))]
				if s.send(ctx) == nil {
					tr.sent.Add(1)
				}
				next = next.Add(interval)
			}
		}()
	}
	wg.Wait()
	return time.Since(start)
}

// drain waits until every session received what its phone sent, or timeout.
func drain(sess []benchSession, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		all := true
		for _, s := range sess {
			if s.track().received() < s.sent() {
				all = false
				break
			}
		}
		if all {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// collect merges the sessions' tracks into r.
func collect(r *PathResult, sess []benchSession, wall time.Duration) {
	var lat []time.Duration
	for _, s := range sess {
		t := s.track()
		t.mu.Lock()
		sent := s.sent()
		r.Sent += sent
		r.Received += t.unique
		r.Duplicated += t.dup
		r.Reordered += t.reorder
		if sent > t.unique {
			r.Lost += sent - t.unique
			r.LossySessions++
		}
		lat = append(lat, t.lat...)
		for p, n := range t.paths {
			if r.ByPath == nil {
				r.ByPath = map[string]uint64{}
			}
			r.ByPath[p] += n
		}
		t.mu.Unlock()
	}
	r.Latency = summarize(lat)
	r.lat = lat
	if wall > 0 {
		r.PerSecond = float64(r.Received) / wall.Seconds()
	}
	r.Seconds = wall.Seconds()
}
