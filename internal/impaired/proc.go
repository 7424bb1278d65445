package impaired

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"github.com/virtutune/link/internal/netem"
)

const (
	// eventQueue bounds the events of one node waiting for the runner; the
	// node's reader then stops reading its stdout (the node blocks on its
	// writes): nothing is dropped.
	eventQueue = 1 << 16
	// logKeep bounds the tail of a node's stderr kept for a failure report.
	logKeep = 256 << 10
	// stopGrace is how long a node has to end after its stdin closes.
	stopGrace = 5 * time.Second
)

// proc is one node process running in a host.
type proc struct {
	name   string
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	events chan event
	logs   *tailBuffer
	exited chan struct{}
	err    error // of Wait, once exited is closed
	readWG sync.WaitGroup
}

// startProc starts a node in host h: exe with args, EnvNode set.
func startProc(ctx context.Context, h *netem.Host, name, exe string, args []string) (*proc, error) {
	cmd := h.Command(context.WithoutCancel(ctx), exe, args...)
	cmd.Env = append(os.Environ(), EnvNode+"=1")
	cmd.WaitDelay = stopGrace
	p := &proc{name: name, cmd: cmd, events: make(chan event, eventQueue), logs: &tailBuffer{max: logKeep}, exited: make(chan struct{})}
	cmd.Stderr = p.logs
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if p.stdin, err = cmd.StdinPipe(); err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p.readWG.Add(1)
	go func() {
		defer p.readWG.Done()
		defer close(p.events)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			var ev event
			if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
				fmt.Fprintf(p.logs, "runner: bad event line %q: %v\n", sc.Bytes(), err)
				continue
			}
			p.events <- ev
		}
	}()
	go func() {
		p.readWG.Wait() // Wait closes stdout: read it to the end first
		p.err = cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

// send writes one command to the node.
func (p *proc) send(c command) error {
	b, _ := json.Marshal(c)
	_, err := p.stdin.Write(append(b, '\n'))
	return err
}

// next waits for the node's next event of kind ev (others are passed to
// other, which may be nil), until ctx is done or the node ends.
func (p *proc) next(ctx context.Context, ev string, other func(event)) (event, error) {
	for {
		select {
		case <-ctx.Done():
			return event{}, fmt.Errorf("%s: waiting for %q: %w", p.name, ev, ctx.Err())
		case e, ok := <-p.events:
			if !ok {
				<-p.exited
				return event{}, fmt.Errorf("%s ended while waiting for %q: %v", p.name, ev, p.err)
			}
			if e.Ev == "error" {
				return event{}, fmt.Errorf("%s: %s", p.name, e.Err)
			}
			if e.Ev == ev {
				return e, nil
			}
			if other != nil {
				other(e)
			}
		}
	}
}

// stop ends the node: its stdin closes (it closes its client and exits),
// then SIGTERM, then SIGKILL. It drains the node's remaining events into
// other (may be nil) and returns the node's error, if it failed.
func (p *proc) stop(other func(event)) error {
	_ = p.stdin.Close()
	term := time.NewTimer(stopGrace)
	defer term.Stop()
	signals := []os.Signal{syscall.SIGTERM, syscall.SIGKILL}
	events := p.events
	for {
		select {
		case e, ok := <-events:
			if !ok {
				events = nil // the reader ended: exited closes next
				continue
			}
			if other != nil {
				other(e)
			}
		case <-term.C:
			if len(signals) > 0 {
				_ = p.cmd.Process.Signal(signals[0])
				signals = signals[1:]
			}
			term.Reset(stopGrace)
		case <-p.exited:
			if events != nil {
				for e := range events {
					if other != nil {
						other(e)
					}
				}
			}
			if p.err != nil {
				return fmt.Errorf("%s: %v", p.name, p.err)
			}
			return nil
		}
	}
}

// kill ends the node at once (cleanup after a failure).
func (p *proc) kill() {
	_ = p.stdin.Close()
	_ = p.cmd.Process.Kill()
	go func() {
		for range p.events { //nolint:revive // drain so the reader ends
		}
	}()
	<-p.exited
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
	max int
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if over := len(b.buf) - b.max; over > 0 {
		b.buf = append(b.buf[:0], b.buf[over:]...)
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}
