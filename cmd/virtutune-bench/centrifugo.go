package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"
)

// The load test can run the same load against Centrifugo (the best-known Go
// relay: JSON over WebSocket, client-side publish), built from the Go module
// proxy into a temporary directory: nothing of it is kept in this repository.

// centrifugoVersion is the Centrifugo release the comparison builds.
const centrifugoVersion = "v6.9.1"

// buildCentrifugo installs Centrifugo `version` into dir with `go install`
// and returns the binary's path.
func buildCentrifugo(ctx context.Context, dir, version string) (string, error) {
	cmd := exec.CommandContext(ctx, "go", "install", "github.com/centrifugal/centrifugo/v6@"+version)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOBIN="+filepath.Join(dir, "bin"), "GOFLAGS=-buildvcs=false", "GOWORK=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go install centrifugo %s: %w\n%s", version, err, out)
	}
	return filepath.Join(dir, "bin", "centrifugo"), nil
}

// startCentrifugo runs one Centrifugo node on a free port of 127.0.0.1 with
// the memory engine, or Redis's when redisURL is set: channels without a
// namespace, any connected client may subscribe and publish; no history
// unless history > 0 (the project keeps one: a session's last
// HistorySize publications, for resume).
func startCentrifugo(bin, dir, name, secret, redisURL string, history int) (*childProc, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	port := ln.Addr().(*net.TCPAddr).Port
	_ = ln.Close()
	channelOpts := map[string]any{"allow_subscribe_for_client": true, "allow_publish_for_client": true}
	if history > 0 {
		channelOpts["history_size"] = history
		channelOpts["history_ttl"] = "300s"
	}
	cfg := map[string]any{
		"http_server": map[string]any{"address": "127.0.0.1", "port": port},
		"log":         map[string]any{"level": "error"},
		"client":      map[string]any{"token": map[string]any{"hmac_secret_key": secret}},
		"channel":     map[string]any{"without_namespace": channelOpts},
		"http_api":    map[string]any{"key": secret},
		"health":      map[string]any{"enabled": true},
		"usage_stats": map[string]any{"disabled": true},
		"node":        map[string]any{"name": name},
	}
	if redisURL != "" {
		cfg["engine"] = map[string]any{"type": "redis", "redis": map[string]any{"address": []string{redisURL}, "prefix": "vtbcf"}}
	}
	b, _ := json.Marshal(cfg)
	file := filepath.Join(dir, name+".json")
	if err := os.WriteFile(file, b, 0o600); err != nil {
		return nil, err
	}
	cp, err := startProc(name, bin, []string{"-c", file}, nil, false)
	if err != nil {
		return nil, err
	}
	base := "http://127.0.0.1:" + strconv.Itoa(port)
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(base + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				cp.URL = base
				return cp, nil
			}
		}
		select {
		case <-cp.done:
			return nil, fmt.Errorf("%s exited at start", name)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			cp.Kill()
			return nil, fmt.Errorf("%s: no health answer within 30s: %v", name, err)
		}
	}
}
