package main

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/virtutune/link/protocol"
	"github.com/virtutune/link/signaling"
)

func TestParseFlags(t *testing.T) {
	for _, c := range []struct {
		args []string
		ok   bool
		role string
	}{
		{[]string{"--create"}, true, "pc"},
		{[]string{"--pair", "http://h/p/ABCDEFGHJKMN"}, true, "phone"},
		{[]string{"--session", "s", "--token", "t"}, true, "pc"},
		{[]string{"--session", "s"}, false, ""},
		{[]string{}, false, ""},
		{[]string{"--create", "--pair", "x"}, false, ""},
		{[]string{"--raw", "--create"}, false, ""},
		{[]string{"--create", "--count", "-1"}, false, ""},
	} {
		o, err := parseFlags(c.args)
		if (err == nil) != c.ok || (c.ok && o.role != c.role) {
			t.Errorf("%v: %+v, %v", c.args, o, err)
		}
	}
}

// --raw is a plain WebSocket client: every line goes out as one frame, every
// frame that arrives is printed as it came.
func TestRawSession(t *testing.T) {
	srv, err := signaling.New(signaling.Config{Secret: []byte("raw-test-secret-raw-test-secret-0123"),
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	t.Cleanup(func() { _ = srv.Close(); hs.Close() })
	resp, err := http.Post(hs.URL+"/api/sessions", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	var s protocol.SessionResponse
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	in := strings.NewReader(`{"type":"ping","data":{"timestamp":"2024-01-01T00:00:00Z"}}` + "\n" + "oops\n")
	var out bytes.Buffer
	o := options{server: hs.URL, session: s.SessionID, token: s.Token, linger: 500 * time.Millisecond}
	if err := rawSession(ctx, o, in, &out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`< {"type":"connection_update","data":{"status":"connected"`,
		`< {"type":"session_state"`,
		`> {"type":"ping"`,
		`< {"type":"pong","data":{"timestamp":"2024-01-01T00:00:00Z"`,
		`< {"type":"error","data":{"message":"Invalid JSON format","code":"invalid_json"}}`,
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	o.token = "bad"
	if err := rawSession(ctx, o, strings.NewReader(""), &out); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("bad token: %v", err)
	}
}
