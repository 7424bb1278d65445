// Command virtutune-server is VirtuTune Link's main job: the signaling server
// that serves the PC page at /, the phone page at /phone/, the API, and the
// WebSocket /ws/guitar/{session_id}/ that carries the original message
// protocol plus WebRTC signaling.
//
// Every flag has an environment variable; a flag given on the command line
// wins. With no configuration it serves on :8000 with the in-memory broker,
// keeps its sessions, pairings and a generated token secret in a bbolt file
// under the data directory (so a restart needs no rescan), and prints the URL
// to open on the PC.
//
//	virtutune-server [-addr :8000] [-allowed-origins O1,O2]
//	                 [-public-url URL] [-data-dir DIR] [-redis-url URL] [-redis-prefix P]
//	                 [-tls-cert F -tls-key F] [-log-level info]
//	                 [-pprof [-pprof-addr 127.0.0.1:6060]]
//	                 [-rate 50] [-burst 100] [-trusted-proxies 127.0.0.1]
//	                 [-sessions-per-minute 20] [-upgrades-per-minute 120]
//	                 [-ws-per-addr 64] [-conns-per-addr 128]
//
// The token secret and the API key belong in the environment
// (VIRTUTUNE_SECRET, VIRTUTUNE_API_KEY): given as -secret or -api-key they
// are visible to every user of the machine (ps, /proc/PID/cmdline), and the
// server says so in its log.
//
// main.go reads the flags and the environment into a signaling.Config, opens
// the data directory's store (or the Redis broker: redis.go) and serves until
// SIGTERM or SIGINT, then drains; nginx.conf.example is a site for nginx in
// front of one or more instances. The server itself is package signaling.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/virtutune/link/internal/gcpolicy"
	"github.com/virtutune/link/signaling"
	"github.com/virtutune/link/web"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "virtutune-server:", err)
		os.Exit(1)
	}
}

// env returns the environment variable name's value, or def.
func env(name, def string) string {
	if v, ok := os.LookupEnv(name); ok {
		return v
	}
	return def
}

func envBool(name string) bool {
	b, _ := strconv.ParseBool(os.Getenv(name))
	return b
}

// envFloat returns the environment variable name as a number, or 0 when it
// is unset or not a number (0 means the signaling default).
func envFloat(name string) float64 {
	f, _ := strconv.ParseFloat(os.Getenv(name), 64)
	return f
}

func run(args []string) error {
	fs := flag.NewFlagSet("virtutune-server", flag.ContinueOnError)
	addr := fs.String("addr", env("VIRTUTUNE_ADDR", ":8000"), "listen address (VIRTUTUNE_ADDR)")
	secret := fs.String("secret", env("VIRTUTUNE_SECRET", ""), "token secret shared by all instances, at least 32 bytes (VIRTUTUNE_SECRET); generated when empty")
	apiKey := fs.String("api-key", env("VIRTUTUNE_API_KEY", ""), "when set, only holders may create sessions (VIRTUTUNE_API_KEY)")
	origins := fs.String("allowed-origins", env("VIRTUTUNE_ALLOWED_ORIGINS", ""), "extra allowed Origins, comma-separated (VIRTUTUNE_ALLOWED_ORIGINS)")
	publicURL := fs.String("public-url", env("VIRTUTUNE_PUBLIC_URL", ""), "base URL phones use, e.g. https://link.example.com (VIRTUTUNE_PUBLIC_URL); default: this machine's LAN address")
	redisURL := fs.String("redis-url", env("REDIS_URL", ""), "Redis URL for several instances, e.g. redis://host:6379/0 (REDIS_URL); empty: in-memory")
	dataDir := fs.String("data-dir", env("VIRTUTUNE_DATA_DIR", defaultDataDir()), "directory of the single instance's store: sessions, pairings and the generated secret survive a restart (VIRTUTUNE_DATA_DIR); empty: nothing kept; unused with Redis")
	redisPrefix := fs.String("redis-prefix", env("VIRTUTUNE_REDIS_PREFIX", "vt:"), "prefix of every Redis key (VIRTUTUNE_REDIS_PREFIX)")
	tlsCert := fs.String("tls-cert", env("VIRTUTUNE_TLS_CERT", ""), "TLS certificate file; with -tls-key serves HTTPS/WSS directly (VIRTUTUNE_TLS_CERT)")
	tlsKey := fs.String("tls-key", env("VIRTUTUNE_TLS_KEY", ""), "TLS key file (VIRTUTUNE_TLS_KEY)")
	logLevel := fs.String("log-level", env("VIRTUTUNE_LOG_LEVEL", "info"), "debug, info, warn or error (VIRTUTUNE_LOG_LEVEL)")
	logJSON := fs.Bool("log-json", envBool("VIRTUTUNE_LOG_JSON"), "log as JSON lines (VIRTUTUNE_LOG_JSON)")
	pprofOn := fs.Bool("pprof", envBool("VIRTUTUNE_PPROF"), "serve net/http/pprof under /debug/pprof/ on -pprof-addr (VIRTUTUNE_PPROF)")
	pprofAddr := fs.String("pprof-addr", env("VIRTUTUNE_PPROF_ADDR", "127.0.0.1:6060"), "listen address of pprof, its own listener, loopback by default (VIRTUTUNE_PPROF_ADDR)")
	proxies := fs.String("trusted-proxies", env("VIRTUTUNE_TRUSTED_PROXIES", ""), "proxies whose X-Forwarded-For names the client, IPs or CIDRs comma-separated (VIRTUTUNE_TRUSTED_PROXIES); empty: the header is ignored")
	sessPerMin := fs.Float64("sessions-per-minute", envFloat("VIRTUTUNE_SESSIONS_PER_MINUTE"), "sessions one client address may create per minute (VIRTUTUNE_SESSIONS_PER_MINUTE); 0: the default, 20")
	upgPerMin := fs.Float64("upgrades-per-minute", envFloat("VIRTUTUNE_UPGRADES_PER_MINUTE"), "WebSocket attempts per client address per minute (VIRTUTUNE_UPGRADES_PER_MINUTE); 0: the default, 120")
	wsPerAddr := fs.Int("ws-per-addr", int(envFloat("VIRTUTUNE_WS_PER_ADDR")), "WebSockets one client address may hold open (VIRTUTUNE_WS_PER_ADDR); 0: the default, 64")
	connsPerAddr := fs.Int("conns-per-addr", int(envFloat("VIRTUTUNE_CONNS_PER_ADDR")), "HTTP connections one TCP peer may hold open, trusted proxies exempt (VIRTUTUNE_CONNS_PER_ADDR); 0: the default, 128")
	instance := fs.String("instance", env("VIRTUTUNE_INSTANCE", ""), "name of this instance in presence and logs (VIRTUTUNE_INSTANCE); default random")
	rate := fs.Float64("rate", envFloat("VIRTUTUNE_RATE"), "sustained messages per second per connection (VIRTUTUNE_RATE); 0: the default, 50")
	burst := fs.Int("burst", int(envFloat("VIRTUTUNE_BURST")), "messages a connection may send at once above the rate (VIRTUTUNE_BURST); 0: the default, 100")
	if err := fs.Parse(args); err != nil {
		return err
	}
	gcPercent := gcpolicy.Apply() // GOGC=400 unless GOGC or GOMEMLIMIT is set: see internal/gcpolicy
	var onCommandLine []string
	fs.Visit(func(f *flag.Flag) {
		if (f.Name == "secret" || f.Name == "api-key") && f.Value.String() != "" {
			onCommandLine = append(onCommandLine, "-"+f.Name)
		}
	})

	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("log level %q: want debug, info, warn or error", *logLevel)
	}
	hopts := &slog.HandlerOptions{Level: level}
	var log *slog.Logger
	if *logJSON {
		log = slog.New(slog.NewJSONHandler(os.Stderr, hopts))
	} else {
		log = slog.New(slog.NewTextHandler(os.Stderr, hopts))
	}

	for _, f := range onCommandLine {
		log.Warn(f+" given on the command line: every user of this machine can read it (ps, /proc/PID/cmdline); use its environment variable instead",
			"flag", f, "env", map[string]string{"-secret": "VIRTUTUNE_SECRET", "-api-key": "VIRTUTUNE_API_KEY"}[f])
	}
	if *rate < 0 || *burst < 0 {
		return errors.New("-rate and -burst must not be negative")
	}
	if (*tlsCert == "") != (*tlsKey == "") {
		return errors.New("-tls-cert and -tls-key go together")
	}
	// The single instance keeps what a restart must not lose in its data
	// directory; with Redis, Redis does.
	var store *signaling.BoltStore
	if *redisURL == "" && *dataDir != "" {
		st, err := signaling.OpenBoltStore(*dataDir)
		if err != nil {
			return fmt.Errorf("%w (give each instance its own -data-dir, or share Redis)", err)
		}
		defer st.Close()
		store = st
		log.Info("keeping sessions across restarts", "store", st.Path())
	}
	sec := []byte(*secret)
	switch {
	case len(sec) > 0:
	case store != nil:
		s, generated, err := store.Secret()
		if err != nil {
			return fmt.Errorf("token secret in %s: %w", store.Path(), err)
		}
		sec = s
		if generated {
			log.Info("no VIRTUTUNE_SECRET given: generated a token secret and stored it (mode 0600)", "store", store.Path())
		}
	default:
		b := make([]byte, 32)
		if _, err := rand.Read(b); err != nil {
			return err
		}
		sec = []byte(hex.EncodeToString(b))
		log.Warn("no VIRTUTUNE_SECRET given: generated a random token secret; tokens will not survive a restart and other instances cannot verify them")
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	cfg := signaling.Config{
		Secret:    sec,
		APIKey:    *apiKey,
		PublicURL: *publicURL,
		Logger:    log,
		Static:    web.Handler(),
		Instance:  *instance,
		Limits: signaling.Limits{Rate: *rate, Burst: *burst,
			SessionsPerMinute: *sessPerMin, UpgradesPerMinute: *upgPerMin,
			MaxWSPerAddr: *wsPerAddr, MaxConnsPerAddr: *connsPerAddr},
	}
	for _, p := range strings.Split(*proxies, ",") {
		if p = strings.TrimSpace(p); p != "" {
			cfg.TrustedProxies = append(cfg.TrustedProxies, p)
		}
	}
	for _, o := range strings.Split(*origins, ",") {
		if o = strings.TrimSpace(o); o != "" {
			cfg.AllowedOrigins = append(cfg.AllowedOrigins, o)
		}
	}
	switch {
	case *redisURL != "":
		b, err := newRedisBroker(ctx, *redisURL, *redisPrefix, *instance, log)
		if err != nil {
			return err
		}
		defer b.Close()
		cfg.Broker = b
	case store != nil:
		b, err := signaling.OpenMemoryBroker(signaling.MemoryConfig{Instance: *instance}, store)
		if err != nil {
			return err
		}
		// Deferred after the store's Close, so it runs first: it writes the
		// final checkpoint.
		defer b.Close()
		cfg.Broker = b
	}
	srv, err := signaling.New(cfg)
	if err != nil {
		return err
	}

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	hs := srv.HTTPServer()
	if *pprofOn {
		// pprof's /cmdline shows the process's arguments, and its profiles
		// the server's memory: never on the public port.
		pln, err := net.Listen("tcp", *pprofAddr)
		if err != nil {
			ln.Close()
			return fmt.Errorf("-pprof-addr: %w", err)
		}
		if ap, err := netip.ParseAddrPort(pln.Addr().String()); err != nil || !ap.Addr().IsLoopback() {
			log.Warn("pprof listens on a non-loopback address: anyone who reaches it can read the process's command line and memory", "addr", pln.Addr().String())
		}
		pmux := http.NewServeMux()
		pmux.HandleFunc("/debug/pprof/", pprof.Index)
		pmux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		pmux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		pmux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		pmux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		ps := &http.Server{Handler: pmux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 120 * time.Second}
		go func() { _ = ps.Serve(pln) }()
		defer ps.Close()
		log.Info("pprof is serving", "addr", pln.Addr().String())
	}
	scheme := "http"
	if *tlsCert != "" {
		scheme = "https"
	}
	log.Info("VirtuTune Link is serving", "addr", ln.Addr().String(), "broker", brokerName(*redisURL), "gogc", gcPercent)
	fmt.Fprintf(os.Stderr, "\n  Open %s on your PC, then scan the QR code with your phone.\n\n", openURL(scheme, ln.Addr()))

	errc := make(chan error, 1)
	go func() {
		if *tlsCert != "" {
			errc <- hs.ServeTLS(ln, *tlsCert, *tlsKey)
		} else {
			errc <- hs.Serve(ln)
		}
	}()
	select {
	case err := <-errc:
		if !errors.Is(err, http.ErrServerClosed) {
			return err
		}
	case <-ctx.Done():
	}
	log.Info("shutting down: closing clients with 1001")
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = hs.Shutdown(sctx) // stops new requests; hijacked WebSockets are the signaling server's
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("shutdown", "err", err)
	}
	return nil
}

// defaultDataDir is $XDG_STATE_HOME/virtutune-link, else
// ~/.local/state/virtutune-link, else ./virtutune-data.
func defaultDataDir() string {
	if d := os.Getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "virtutune-link")
	}
	if h, err := os.UserHomeDir(); err == nil && h != "" {
		return filepath.Join(h, ".local", "state", "virtutune-link")
	}
	return "virtutune-data"
}

func brokerName(redisURL string) string {
	if redisURL == "" {
		return "memory"
	}
	return "redis"
}

// openURL is the URL to print: localhost for a wildcard listener.
func openURL(scheme string, a net.Addr) string {
	host, port, err := net.SplitHostPort(a.String())
	if err != nil {
		return scheme + "://" + a.String() + "/"
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "localhost"
	}
	return scheme + "://" + net.JoinHostPort(host, port) + "/"
}
