// Package peertest is the test harness for Go peers (package peer), shared
// by the peer package's tests and the system tests (test/), so that each
// piece is written once: a peer's configuration for tests (Config), a
// recorder of what a client receives (Recorder) and of its link events
// (EventLog), a sender of numbered chords (StartSender, and Play for a
// player's stream with its send times), and the check that the chords
// arrived exactly once and in order (CheckChords).
//
// It is an ordinary package (not a _test.go file) because test packages
// cannot see one another's test files. Only tests import it.
package peertest

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/virtutune/link/peer"
	"github.com/virtutune/link/protocol"
)

// Chords are the chords a test sends, in turn.
var Chords = []string{"C", "G", "Am", "F", "D", "E", "Em", "A", "Dm7", "G/B", "Cmaj7", "Bb"}

// ChordFor is the chord a test sends as its i-th chord (from 1): a sender's
// message seq i carries ChordFor(i).
func ChordFor(i int) string { return Chords[(i-1)%len(Chords)] }

// Config is a Go peer's configuration for tests: loopback ICE candidates
// only, quick reconnects and pings, ICE timeouts short enough for a test.
// The caller adds the server URL, the session and the token.
func Config(log *slog.Logger, role string) peer.Config {
	return peer.Config{
		Role:           role,
		LoopbackOnly:   true,
		Logger:         log.With("side", role),
		BackoffMin:     20 * time.Millisecond,
		BackoffMax:     200 * time.Millisecond,
		PingInterval:   200 * time.Millisecond,
		ConnectTimeout: 5 * time.Second,
		SettingEngine: func(se *webrtc.SettingEngine) {
			se.SetICETimeouts(2*time.Second, 3*time.Second, 200*time.Millisecond)
		},
	}
}

// tail keeps, from a goroutine, what next returns until next fails or ctx
// ends; add, when given, also sees each item, under the lock.
type tail[T any] struct {
	mu   sync.Mutex
	all  []T
	done chan struct{}
	stop context.CancelFunc
}

func (l *tail[T]) start(ctx context.Context, next func(context.Context) (T, error), add func(T)) {
	ctx, l.stop = context.WithCancel(ctx)
	l.done = make(chan struct{})
	go func() {
		defer close(l.done)
		for {
			v, err := next(ctx)
			if err != nil {
				return
			}
			l.mu.Lock()
			l.all = append(l.all, v)
			if add != nil {
				add(v)
			}
			l.mu.Unlock()
		}
	}()
}

// Stop stops the goroutine and waits until it has ended.
func (l *tail[T]) Stop() { l.stop(); <-l.done }

// Done is closed when the goroutine has ended.
func (l *tail[T]) Done() <-chan struct{} { return l.done }

// Matching returns what was kept so far for which f holds.
func (l *tail[T]) Matching(f func(T) bool) []T {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []T
	for _, v := range l.all {
		if f(v) {
			out = append(out, v)
		}
	}
	return out
}

// Recorder reads every delivery of a client in a goroutine and keeps them,
// with the chord changes by sender. Its methods are safe for concurrent use.
type Recorder struct {
	tail[peer.Delivery]
	byID map[string][]peer.Delivery // chord_change by sender, under mu
}

// Record records c's deliveries until ctx ends or c is closed.
func Record(ctx context.Context, c *peer.Client) *Recorder {
	r := &Recorder{byID: map[string][]peer.Delivery{}}
	r.start(ctx, c.Recv, func(d peer.Delivery) {
		if d.Msg.Type == protocol.TypeChordChange {
			r.byID[d.Msg.From] = append(r.byID[d.Msg.From], d)
		}
	})
	return r
}

// RecordT is Record until t's cleanup, which stops the recorder and waits
// for its goroutine.
func RecordT(t testing.TB, c *peer.Client) *Recorder {
	r := Record(context.Background(), c)
	t.Cleanup(r.Stop)
	return r
}

// ChordsFrom returns the chord changes received from client id from.
func (r *Recorder) ChordsFrom(from string) []peer.Delivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]peer.Delivery(nil), r.byID[from]...)
}

// CountFrom returns how many chord changes came from client id from.
func (r *Recorder) CountFrom(from string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.byID[from])
}

// CountFromIf returns how many chord changes from client id from satisfy f.
func (r *Recorder) CountFromIf(from string, f func(peer.Delivery) bool) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, d := range r.byID[from] {
		if f(d) {
			n++
		}
	}
	return n
}

// PerSender says, for each sender, how many chord changes came and the last
// one's seq: "N (last seq S)".
func (r *Recorder) PerSender() map[string]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]string{}
	for from, ds := range r.byID {
		var last uint64
		if len(ds) > 0 {
			last = ds[len(ds)-1].Msg.Seq
		}
		out[from] = fmt.Sprintf("%d (last seq %d)", len(ds), last)
	}
	return out
}

// OfType returns the deliveries of type typ.
func (r *Recorder) OfType(typ protocol.Type) []peer.Delivery {
	return r.Matching(func(d peer.Delivery) bool { return d.Msg.Type == typ })
}

// ErrorCodes counts the error deliveries by code.
func (r *Recorder) ErrorCodes() map[string]int {
	out := map[string]int{}
	for _, d := range r.OfType(protocol.TypeError) {
		var e struct {
			Code string `json:"code"`
		}
		_ = json.Unmarshal(d.Msg.Data, &e)
		out[e.Code]++
	}
	return out
}

// ConnUpdates returns the connection_update data received about client id.
func (r *Recorder) ConnUpdates(id string) []protocol.ConnectionUpdate {
	var out []protocol.ConnectionUpdate
	for _, d := range r.OfType(protocol.TypeConnectionUpdate) {
		var cu protocol.ConnectionUpdate
		if json.Unmarshal(d.Msg.Data, &cu) == nil && cu.ClientID == id {
			out = append(out, cu)
		}
	}
	return out
}

// CheckChords fails t unless ds are exactly the chords ChordFor(1..n) sent
// with the consecutive seqs first, first+1, ...: none lost, duplicated or
// reordered. It returns how many came by each path.
func CheckChords(t testing.TB, name string, ds []peer.Delivery, first uint64, n int) map[string]int {
	t.Helper()
	if len(ds) != n {
		t.Fatalf("%s: %d chord changes received, want %d", name, len(ds), n)
	}
	paths := map[string]int{}
	for i, d := range ds {
		if want := first + uint64(i); d.Msg.Seq != want {
			t.Fatalf("%s: chord change #%d has seq %d, want %d (lost, duplicated or reordered)", name, i+1, d.Msg.Seq, want)
		}
		var cc protocol.ChordChange
		if err := json.Unmarshal(d.Msg.Data, &cc); err != nil || cc.Chord != ChordFor(i+1) {
			t.Fatalf("%s: chord change #%d carries %q, want %q", name, i+1, cc.Chord, ChordFor(i+1))
		}
		paths[d.Path]++
	}
	return paths
}

// Sender sends the chords ChordFor(1, 2, ...) from a goroutine, one every
// pace (0: as fast as Send returns), until it sent n or is stopped, and
// counts them and notes when each was sent.
type Sender struct {
	mu       sync.Mutex
	sent     int
	at       []time.Time // at[i-1]: when chord i was handed to Send
	err      error
	done     chan struct{}
	stopCh   chan struct{}
	stopOnce sync.Once
}

// StartSender starts sending n chords from c, the first after one pace.
func StartSender(ctx context.Context, c *peer.Client, n int, pace time.Duration) *Sender {
	return startSender(ctx, c, n, pace, false)
}

// Play is a player's stream: a chord from c at once and then one every
// interval, until stopped.
func Play(ctx context.Context, c *peer.Client, interval time.Duration) *Sender {
	return startSender(ctx, c, math.MaxInt, interval, true)
}

func startSender(ctx context.Context, c *peer.Client, n int, pace time.Duration, atOnce bool) *Sender {
	s := &Sender{done: make(chan struct{}), stopCh: make(chan struct{})}
	go func() {
		defer close(s.done)
		var tick <-chan time.Time
		if pace > 0 {
			tk := time.NewTicker(pace)
			defer tk.Stop()
			tick = tk.C
		}
		for i := 1; i <= n; i++ {
			select {
			case <-s.stopCh:
				return
			default:
			}
			if tick != nil && (i > 1 || !atOnce) {
				select {
				case <-tick:
				case <-s.stopCh:
					return
				case <-ctx.Done():
					s.setErr(ctx.Err())
					return
				}
			}
			at := time.Now()
			if err := c.SendChord(ctx, ChordFor(i)); err != nil {
				s.setErr(err)
				return
			}
			s.mu.Lock()
			s.sent++
			s.at = append(s.at, at)
			s.mu.Unlock()
		}
	}()
	return s
}

// SentAt is when chord seq (from 1) was handed to Send; zero if it was not.
func (s *Sender) SentAt(seq int) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	if seq < 1 || seq > len(s.at) {
		return time.Time{}
	}
	return s.at[seq-1]
}

func (s *Sender) setErr(err error) {
	s.mu.Lock()
	s.err = err
	s.mu.Unlock()
}

// Stop makes the sender stop after the chord it is sending.
func (s *Sender) Stop() { s.stopOnce.Do(func() { close(s.stopCh) }) }

// Done is closed when the sender has ended.
func (s *Sender) Done() <-chan struct{} { return s.done }

// Count is how many chords it sent so far.
func (s *Sender) Count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sent
}

// Err is what ended the sender early (nil when it sent all or was stopped).
func (s *Sender) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Wait waits for the sender to end and fails t on its error.
func (s *Sender) Wait(ctx context.Context, t testing.TB, name string) {
	t.Helper()
	select {
	case <-s.done:
	case <-ctx.Done():
		t.Fatalf("%s: sender did not finish", name)
	}
	if err := s.Err(); err != nil {
		t.Fatalf("%s: send: %v", name, err)
	}
}

// EventLog keeps a client's link events (Client.Events) as they come. Its
// methods are safe for concurrent use.
type EventLog struct {
	tail[peer.Event]
}

// LogEvents keeps c's events until ctx ends.
func LogEvents(ctx context.Context, c *peer.Client) *EventLog {
	l := &EventLog{}
	l.start(ctx, func(ctx context.Context) (peer.Event, error) {
		select {
		case <-ctx.Done():
			return peer.Event{}, ctx.Err()
		case e := <-c.Events():
			return e, nil
		}
	}, nil)
	return l
}

// LogEventsT is LogEvents until t's cleanup, which stops the log and waits
// for its goroutine.
func LogEventsT(t testing.TB, c *peer.Client) *EventLog {
	l := LogEvents(context.Background(), c)
	t.Cleanup(l.Stop)
	return l
}

// First returns the first event at or after after for which f holds.
func (l *EventLog) First(after time.Time, f func(peer.Event) bool) (peer.Event, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, e := range l.all {
		if !e.At.Before(after) && f(e) {
			return e, true
		}
	}
	return peer.Event{}, false
}

// StopPair stops senders a and b (named an and bn in a failure), waits for
// both, failing t on an error of either, and returns how many each sent.
func StopPair(ctx context.Context, t testing.TB, a *Sender, an string, b *Sender, bn string) (int, int) {
	t.Helper()
	a.Stop()
	b.Stop()
	a.Wait(ctx, t, an)
	b.Wait(ctx, t, bn)
	return a.Count(), b.Count()
}
