package gcpolicy

import (
	"runtime/debug"
	"testing"
)

func TestApply(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))

	t.Setenv("GOGC", "")
	t.Setenv("GOMEMLIMIT", "")
	debug.SetGCPercent(100)
	if got := Apply(); got != Percent {
		t.Fatalf("Apply() = %d without GOGC, want %d", got, Percent)
	}
	if got := debug.SetGCPercent(Percent); got != Percent {
		t.Fatalf("GC percent %d after Apply, want %d", got, Percent)
	}

	// The operator's GOGC (read by the runtime at start; here set by hand
	// as it would have) is left alone.
	t.Setenv("GOGC", "150")
	debug.SetGCPercent(150)
	if got := Apply(); got != 150 {
		t.Fatalf("Apply() = %d with GOGC=150, want 150 kept", got)
	}
	t.Setenv("GOGC", "")
	t.Setenv("GOMEMLIMIT", "512MiB")
	debug.SetGCPercent(100)
	if got := Apply(); got != 100 {
		t.Fatalf("Apply() = %d with GOMEMLIMIT set, want the runtime's 100 kept", got)
	}
}
