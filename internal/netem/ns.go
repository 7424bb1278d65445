package netem

import (
	"errors"
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// newNamespace creates an anonymous network namespace and returns a file that
// refers to it (the namespace lives while this file, a process inside or an
// interface's file descriptor holds it), with tap, a TAP interface named
// ifName created inside it, as a non-blocking file.
//
// It runs on a goroutine of its own locked to its OS thread: unshare
// (CLONE_NEWNET) moves only that thread into the new namespace, and the thread
// is never unlocked, so the Go runtime ends it with the goroutine instead of
// reusing it for other goroutines.
func newNamespace(ifName string) (ns, tap *os.File, err error) {
	type result struct {
		ns, tap *os.File
		err     error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with this goroutine
		var r result
		defer func() { ch <- r }()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			r.err = fmt.Errorf("unshare(CLONE_NEWNET): %w", err)
			return
		}
		f, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		if err != nil {
			r.err = fmt.Errorf("opening the new namespace: %w", err)
			return
		}
		t, err := openTAP(ifName)
		if err != nil {
			_ = f.Close()
			r.err = err
			return
		}
		r.ns, r.tap = f, t
	}()
	r := <-ch
	return r.ns, r.tap, r.err
}

// errThreadLost is returned when a thread could not be moved back to the
// process's namespace; the thread is then retired (it stays locked).
var errThreadLost = errors.New("netem: could not return a thread to its namespace")

// inNamespace runs f on an OS thread that is inside the network namespace ns,
// then moves the thread back. Sockets created by f belong to ns for their
// whole life, whatever thread later uses them; f must not start goroutines
// that create sockets (they may run on other threads).
func inNamespace(ns *os.File, f func() error) error {
	ch := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		if err != nil {
			runtime.UnlockOSThread()
			ch <- fmt.Errorf("netem: opening this thread's namespace: %w", err)
			return
		}
		defer orig.Close()
		if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			ch <- fmt.Errorf("netem: setns: %w", err)
			return
		}
		ferr := f()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			// Leave the thread locked: it ends with this goroutine.
			ch <- errors.Join(ferr, fmt.Errorf("%w: %v", errThreadLost, err))
			return
		}
		runtime.UnlockOSThread()
		ch <- ferr
	}()
	return <-ch
}
