package main

import (
	"context"
	"log/slog"

	"github.com/virtutune/link/signaling"
)

// newRedisBroker connects the Redis broker that lets several instances share
// sessions, state, presence, history and fan-out.
func newRedisBroker(ctx context.Context, url, prefix, instance string, log *slog.Logger) (*signaling.RedisBroker, error) {
	cfg := signaling.RedisConfig{URL: url, Prefix: prefix, Instance: instance, Logger: log}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return signaling.NewRedisBroker(ctx, cfg)
}
