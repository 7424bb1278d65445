package test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/virtutune/link/internal/testkit"
)

// pprof has its own listener, on loopback by default, never the public port
// (its /cmdline would show the process's arguments), and a secret given as
// a flag is flagged in the log as visible to every user of the machine.
func TestPprofOwnListenerAndSecretFlagWarning(t *testing.T) {
	ctx := testkit.Context(t, 30*time.Second)
	pprofAddr := fmt.Sprintf("127.0.0.1:%d", testkit.Port(t))
	const apiKey = "an-api-key-given-as-a-flag"
	// newInstance passes -secret on the command line.
	in := newInstance(t, "P", filepath.Join(t.TempDir(), "server.log"), "-api-key", apiKey, "-pprof", "-pprof-addr", pprofAddr)
	in.start(ctx)
	for _, path := range []string{"/debug/pprof/cmdline", "/debug/pprof/", "/debug/pprof/goroutine?debug=1"} {
		st, body := getStatus(ctx, in.url+path)
		if st == 200 || strings.Contains(body, testSecret) || strings.Contains(body, apiKey) {
			t.Errorf("public port %s: %d %.200q: pprof must not be served there", path, st, body)
		}
	}
	st, body := getStatus(ctx, "http://"+pprofAddr+"/debug/pprof/cmdline")
	if st != 200 || !strings.Contains(body, "-pprof-addr") {
		t.Errorf("pprof listener /debug/pprof/cmdline: %d %.200q", st, body)
	}
	testkit.Eventually(ctx, t, "the warnings about -secret and -api-key", func() bool {
		b, _ := os.ReadFile(in.logPath)
		return bytes.Contains(b, []byte("-secret given on the command line")) && bytes.Contains(b, []byte("-api-key given on the command line"))
	})
	if b, _ := os.ReadFile(in.logPath); bytes.Contains(b, []byte(testSecret)) || bytes.Contains(b, []byte(apiKey)) {
		t.Error("the log holds the secret or the API key")
	}
}
