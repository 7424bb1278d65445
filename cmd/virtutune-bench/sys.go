package main

import (
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// raiseNoFile lifts the open-file limit (soft and, for root, hard) to want,
// so that tens of thousands of sockets fit. It returns the soft limit in force.
func raiseNoFile(want uint64) uint64 {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0
	}
	if l.Cur >= want {
		return l.Cur
	}
	n := l
	n.Cur = want
	if n.Max < want {
		n.Max = want
	}
	if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &n) != nil {
		// Not root: go as far as the hard limit allows.
		n = l
		n.Cur = l.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &n)
	}
	_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l)
	return l.Cur
}

// cpuTime returns this process's user+system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// procCPU returns the user+system CPU time of process pid from /proc/<pid>/stat.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	f := strings.Fields(s[i+1:])
	// Fields after the command: state(0) ... utime(11) stime(12), in clock ticks.
	if len(f) < 13 {
		return 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	const hz = 100 // USER_HZ on Linux
	return time.Duration(ut+st) * time.Second / hz, nil
}

// procRSS returns the resident set size of process pid (0: self) in bytes.
func procRSS(pid int) (int64, error) {
	p := "/proc/self/status"
	if pid > 0 {
		p = fmt.Sprintf("/proc/%d/status", pid)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				kb, _ := strconv.ParseInt(f[0], 10, 64)
				return kb << 10, nil
			}
		}
	}
	return 0, fmt.Errorf("no VmRSS in %s", p)
}

// goMem is the Go runtime's view of live memory after a GC.
type goMem struct {
	HeapInuse  uint64 `json:"heap_inuse"`
	StackInuse uint64 `json:"stack_inuse"`
	Sys        uint64 `json:"sys"`
	RSS        int64  `json:"rss"`
	Goroutines int    `json:"goroutines"`
	// HeapObjects is the number of live heap objects (what a collection marks).
	HeapObjects uint64 `json:"heap_objects"`
}

func (m goMem) live() uint64 { return m.HeapInuse + m.StackInuse }

// readGoMem collects garbage twice (so finalisers run), returns freed memory
// to the operating system (so RSS is what the process holds on to) and reads
// the runtime's counters.
func readGoMem() goMem {
	runtime.GC()
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	rss, _ := procRSS(0)
	return goMem{HeapInuse: ms.HeapInuse, StackInuse: ms.StackInuse, Sys: ms.Sys, RSS: rss, Goroutines: runtime.NumGoroutine(), HeapObjects: ms.HeapObjects}
}

// runQueueWait returns how long the threads of process pid (0: self) have
// waited for a CPU while runnable (the sum of /proc/<pid>/task/*/schedstat).
func runQueueWait(pid int) time.Duration {
	dir := "/proc/self/task"
	if pid > 0 {
		dir = fmt.Sprintf("/proc/%d/task", pid)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0
	}
	var sum int64
	for _, e := range ents {
		b, err := os.ReadFile(dir + "/" + e.Name() + "/schedstat")
		if err != nil {
			continue
		}
		f := strings.Fields(string(b))
		if len(f) >= 2 {
			v, _ := strconv.ParseInt(f[1], 10, 64)
			sum += v
		}
	}
	return time.Duration(sum)
}

// cpuPressure returns the machine's CPU pressure (PSI "some avg10"): the
// share of the last 10 s in which a runnable task waited for a CPU.
func cpuPressure() float64 {
	b, err := os.ReadFile("/proc/pressure/cpu")
	if err != nil {
		return -1
	}
	for _, f := range strings.Fields(string(b)) {
		if v, ok := strings.CutPrefix(f, "avg10="); ok {
			x, _ := strconv.ParseFloat(v, 64)
			return x
		}
	}
	return -1
}
