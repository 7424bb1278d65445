package main

import (
	"context"
	"fmt"
	"math"
	"sync"
	"time"
)

// The steps of a load run: a command to every worker at once (all), a
// fixed offered rate (rateStep, step), and the sustained-rate search.

type workerAnswer struct {
	res workerResult
	err error
}

// all runs f on every worker at once and collects the answers.
func (lr *loadRun) all(workers []*workerProc, f func(i int, w *workerProc) (workerResult, error)) []workerAnswer {
	out := make([]workerAnswer, len(workers))
	var wg sync.WaitGroup
	for i, w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := f(i, w)
			out[i] = workerAnswer{r, err}
		}()
	}
	wg.Wait()
	return out
}

// split gives worker i of n its share of sessions: [first, first+count).
func split(sessions, n, i int) (first, count int) {
	per := sessions / n
	extra := sessions % n
	first = i*per + min(i, extra)
	count = per
	if i < extra {
		count++
	}
	return first, count
}

// rateStep offers rate messages per second, spread over every session.
func (lr *loadRun) rateStep(ctx context.Context, srv *loadServer, workers []*workerProc, rate float64, sessions int) *StepResult {
	start := time.Now().Add(200 * time.Millisecond).UnixNano()
	cmd := workerCmd{Op: "step", Rate: rate / float64(sessions), Duration: lr.opt.Step, Start: start, Drain: lr.opt.Drain}
	r := lr.step(ctx, srv, workers, cmd, rate)
	// Pass: nothing lost, no connection ended, p99 within the limit, and the
	// clients offered (almost) what was asked.
	want := rate * lr.opt.Step.Seconds()
	switch {
	case r.Lost > 0:
		r.Why = fmt.Sprintf("%d lost", r.Lost)
	case r.Disconnects > 0:
		r.Why = fmt.Sprintf("%d connections ended", r.Disconnects)
	case r.Dup > 0 || r.Reord > 0:
		r.Why = fmt.Sprintf("%d duplicated, %d reordered", r.Dup, r.Reord)
	case r.Latency.P99 > us(lr.opt.P99Limit):
		r.Why = fmt.Sprintf("p99 %s > %s", fmtUS(r.Latency.P99), lr.opt.P99Limit)
	case float64(r.Sent) < 0.97*want:
		r.Why = fmt.Sprintf("the clients offered only %.0f of %.0f", float64(r.Sent), want)
	default:
		r.Pass = true
	}
	return r
}

// step sends cmd to workers and measures the server's CPU around it.
func (lr *loadRun) step(ctx context.Context, srv *loadServer, workers []*workerProc, cmd workerCmd, offered float64) *StepResult {
	pids := srv.pids()
	var rpid []int
	var scripts0 map[string]cmdStat // Redis's own time in scripts before the step
	if srv.redis != nil {
		rpid = []int{srv.redis.Pid()}
		scripts0, _ = redisInfoCommands(ctx, srv.redis.URL(), false)
	}
	c0, r0, t0 := cpuOf(pids), cpuOf(rpid), time.Now()
	ans := lr.all(workers, func(_ int, w *workerProc) (workerResult, error) { return w.do(cmd) })
	c1, r1, el := cpuOf(pids), cpuOf(rpid), time.Since(t0)
	res := &StepResult{Offered: offered, PSI: cpuPressure(), Load1: loadAvg1()}
	if scripts0 != nil {
		if scripts1, err := redisInfoCommands(ctx, srv.redis.URL(), false); err == nil {
			before, after := scripts0["evalsha"], scripts1["evalsha"]
			if after.calls > before.calls {
				res.RedisScript = float64(after.usec-before.usec) / float64(after.calls-before.calls)
			}
		}
	}
	var parts [][][2]uint64
	var sendSec float64
	for _, a := range ans {
		if a.err != nil {
			res.Why = a.err.Error()
			continue
		}
		r := a.res
		res.Sent += r.Sent
		res.Delivered += r.Delivered
		res.Dup += r.Dup
		res.Reord += r.Reord
		res.Resent += r.Resent
		res.Disconnects += r.Disconnects
		parts = append(parts, r.Hist)
		sendSec = max(sendSec, r.SendSeconds)
	}
	if res.Sent > res.Delivered {
		res.Lost = res.Sent - res.Delivered
	}
	res.Latency = histSummary(parts...)
	res.Seconds = sendSec
	if sendSec > 0 {
		res.PerSecond = float64(res.Delivered) / sendSec
	}
	if res.Delivered > 0 {
		res.ServerCPU = us(c1-c0) / float64(res.Delivered)
		if rpid != nil {
			res.RedisCPU = us(r1-r0) / float64(res.Delivered)
		}
	}
	res.ServerCore = (c1 - c0).Seconds() / el.Seconds()
	return res
}

// search steps the offered rate up by the factor while steps pass, then
// bisects between the last passing and the first failing rate.
func (lr *loadRun) search(ctx context.Context, srv *loadServer, workers []*workerProc, sessions int, prefix string) ([]*StepResult, *StepResult) {
	opt := lr.opt
	var steps []*StepResult
	var best *StepResult
	run := func(rate float64) *StepResult {
		lr.status(prefix + fmt.Sprintf("search: %.0f msg/s offered", rate))
		r := lr.rateStep(ctx, srv, workers, rate, sessions)
		for try := 0; !r.Pass && try < opt.Retry && ctx.Err() == nil; try++ {
			steps = append(steps, r)
			time.Sleep(2 * time.Second)
			lr.status(prefix + fmt.Sprintf("search: %.0f msg/s offered (again)", rate))
			r = lr.rateStep(ctx, srv, workers, rate, sessions)
		}
		steps = append(steps, r)
		if r.Pass && (best == nil || r.Offered > best.Offered) {
			best = r
		}
		if !r.Pass {
			// Let the server drain its backlog before the next step.
			time.Sleep(2 * time.Second)
		}
		return r
	}
	pass, fail := 0.0, 0.0
	for rate := opt.SearchStart; rate <= opt.SearchMax && ctx.Err() == nil; rate *= opt.Factor {
		if run(rate).Pass {
			pass = rate
			continue
		}
		fail = rate
		break
	}
	if pass == 0 && fail > 0 { // the first step failed: go down
		for rate := fail / opt.Factor; rate >= opt.SearchStart/8 && ctx.Err() == nil; rate /= opt.Factor {
			if run(rate).Pass {
				pass = rate
				break
			}
			fail = rate
		}
	}
	for range opt.Refine {
		if pass == 0 || fail == 0 || ctx.Err() != nil || (fail-pass)/pass < 0.03 {
			break
		}
		mid := math.Round((pass + fail) / 2)
		if run(mid).Pass {
			pass = mid
		} else {
			fail = mid
		}
	}
	return steps, best
}
