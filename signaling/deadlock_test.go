package signaling_test

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/virtutune/link/internal/testkit"
	"github.com/virtutune/link/protocol"
	"github.com/virtutune/link/signaling"
	"github.com/virtutune/link/signaling/redistest"
)

// The trigger of the deadlock issue 11 found: a member resumes from beyond
// history (the snapshot branch, which reads the broker's state and members)
// while another member's chords flow through the same room. Run many times,
// for both brokers, the server must keep answering every request, and close
// within its bound.
func TestResumeBeyondHistoryWhileChordsFlow(t *testing.T) {
	brokers := map[string]func(t *testing.T) signaling.Broker{
		"memory": func(t *testing.T) signaling.Broker {
			b, err := signaling.NewMemoryBroker(signaling.MemoryConfig{HistorySize: 4})
			if err != nil {
				t.Fatal(err)
			}
			return b
		},
		"redis": func(t *testing.T) signaling.Broker {
			rs := redistest.New(t)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			b, err := signaling.NewRedisBroker(ctx, signaling.RedisConfig{URL: rs.URL(), HistorySize: 4, Logger: testkit.Logger(t, slog.LevelWarn)})
			if err != nil {
				t.Fatal(err)
			}
			return b
		},
	}
	for name, mk := range brokers {
		t.Run(name, func(t *testing.T) {
			b := mk(t)
			// Not newServer: its cleanup would wait forever on a wedged
			// server. A wedged one is left behind (the test has failed).
			srv, err := signaling.New(signaling.Config{Secret: testSecret, Logger: testkit.Logger(t, slog.LevelWarn), Broker: b,
				Limits: signaling.Limits{Rate: 1e6, Burst: 1e6, SendQueue: 4096}})
			if err != nil {
				t.Fatal(err)
			}
			hs := httptest.NewServer(srv)
			ts := &testServer{Server: srv, HTTP: hs, URL: hs.URL}
			sess, pc, phone := pcAndPhone(t, ts)
			if !resumeUnderLoad(t, ts, sess, pc, phone, 12) {
				return
			}
			done := make(chan error, 1)
			go func() { done <- srv.Close() }()
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("Close: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Close did not return within 10 s: the server is wedged")
			}
			hs.Close()
			_ = b.Close()
		})
	}
}

// resumesPerRound resumes are sent on each connection of the PC.
const resumesPerRound = 50

// resumeUnderLoad reports false when it found the server wedged (and said so).
func resumeUnderLoad(t *testing.T, ts *testServer, sess protocol.SessionResponse, pc, phone *wsClient, rounds int) bool {
	t.Helper()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	// The phone plays chords as fast as it can and drains what it gets.
	wg.Add(2)
	go func() {
		defer wg.Done()
		chords := []string{"C", "G", "Am", "F"}
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			msg := protocol.Encode(protocol.MustMarshal(protocol.TypeChordChange, map[string]string{"chord": chords[i%4]}))
			_ = phone.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
			if phone.conn.WriteMessage(websocket.TextMessage, msg) != nil {
				return
			}
		}
	}()
	go func() {
		defer wg.Done()
		for {
			_ = phone.conn.SetReadDeadline(time.Now().Add(30 * time.Second))
			if _, _, err := phone.conn.ReadMessage(); err != nil {
				return
			}
		}
	}()
	// The PC comes back (a new connection of its client id, as after a long
	// sleep), resumes from offset 1, which history no longer holds, reads
	// everything until resumed, and leaves again.
	// It leaves only once it has seen twice as many chords as history
	// holds: before that, offset 1 may still be in history and the resume
	// would rightly recover (a CI run resumed after three chords).
	for seen := 0; seen < 8; {
		m, err := pc.read(5 * time.Second)
		if err != nil {
			t.Fatalf("the PC saw %d chords, then: %v", seen, err)
		}
		if m.Type == protocol.TypeChordChange {
			seen++
		}
	}
	pc.conn.Close()
	hc := &http.Client{Timeout: 3 * time.Second}
	rejoins := 0
	for i := 0; i < rounds; i++ {
		conn, resp, err := ts.dialRaw(t, sess.SessionID, sess.Token, nil, "client_id="+pc.ID)
		if err != nil {
			status := 0
			if resp != nil {
				status = resp.StatusCode
			}
			t.Fatalf("round %d: dial: %v (%d)", i, err, status)
		}
		// Many resumes on this connection: each one goes the snapshot way.
		resume := protocol.Encode(protocol.MustMarshal(protocol.TypeResume, protocol.Resume{Since: 1}))
		for k := 0; k < resumesPerRound; k++ {
			_ = conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
			if err := conn.WriteMessage(websocket.TextMessage, resume); err != nil {
				t.Fatalf("round %d: write resume: %v", i, err)
			}
		}
		deadline := time.Now().Add(5 * time.Second)
		for n := 0; n < resumesPerRound; {
			_ = conn.SetReadDeadline(deadline)
			_, b, err := conn.ReadMessage()
			var ce *websocket.CloseError
			if errors.As(err, &ce) && ce.Code == protocol.CloseSlowConsumer && strings.Contains(ce.Text, "while joining") && rejoins < 10 {
				// The phone's unthrottled chords filled the join's bound
				// (maxPending) before the join finished, as on a loaded
				// machine they may: the server answered, it is not wedged.
				// The PC comes back, as a client does after a 4000.
				rejoins++
				t.Logf("round %d: %v; the PC joins again", i, err)
				conn.Close()
				i--
				break
			}
			if err != nil {
				t.Errorf("round %d: no resumed within 5 s (%v): the room is wedged", i, err)
				return false
			}
			m, perr := protocol.Decode(b)
			if perr != nil || m.Type != protocol.TypeResumed {
				continue
			}
			var r protocol.Resumed
			mustUnmarshal(t, m.Data, &r)
			if r.Recovered {
				t.Fatalf("round %d: resume from offset 1 with a history of 4 recovered: %+v", i, r)
			}
			n++
		}
		conn.Close()
		// The server still answers: /readyz, and every tenth round a new session.
		type check struct {
			method, path string
			want         int
		}
		checks := []check{{http.MethodGet, "/readyz", http.StatusOK}}
		if i%10 == 0 {
			checks = append(checks, check{http.MethodPost, "/api/sessions", http.StatusCreated})
		}
		for _, c := range checks {
			req, _ := http.NewRequest(c.method, ts.URL+c.path, nil)
			req.Header.Set("Content-Type", "application/json")
			resp, err := hc.Do(req)
			if err != nil {
				t.Errorf("round %d: %s %s: %v", i, c.method, c.path, err)
				return false
			}
			resp.Body.Close()
			if resp.StatusCode != c.want {
				t.Fatalf("round %d: %s %s %d", i, c.method, c.path, resp.StatusCode)
			}
		}
	}
	close(stop)
	phone.conn.Close()
	wg.Wait()
	return true
}
