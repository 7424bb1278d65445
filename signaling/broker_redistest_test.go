package signaling

import (
	"context"
	"testing"
	"time"

	"github.com/virtutune/link/signaling/redistest"
)

// testRedisServer is the real redis-server a broker test runs against
// (package redistest): a free port of 127.0.0.1, never the Redis on 6379.
type testRedisServer struct{ *redistest.Server }

// startTestRedis starts a redis-server for t and kills it at cleanup; see
// redistest.New for what happens without redis-server.
func startTestRedis(t *testing.T, extra ...string) *testRedisServer {
	t.Helper()
	return &testRedisServer{redistest.New(t, extra...)}
}

func (r *testRedisServer) url() string { return r.URL() }

// start runs redis-server again on the same port and directory.
func (r *testRedisServer) start(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := r.Restart(ctx); err != nil {
		t.Fatal(err)
	}
}

// kill stops redis-server at once (SIGKILL, as a crash).
func (r *testRedisServer) kill(t *testing.T) {
	t.Helper()
	if err := r.Kill(); err != nil {
		t.Error(err)
	}
}
