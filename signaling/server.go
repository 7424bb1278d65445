package signaling

import (
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/virtutune/link/protocol"
)

// Server is the signaling server: an http.Handler plus the hub of connected
// clients. Create it with New, serve Handler, stop it with Shutdown or Close.
type Server struct {
	cfg       Config
	log       *slog.Logger
	tokens    *Tokens
	broker    Broker
	ownBroker bool
	reg       *prometheus.Registry
	metrics   *metrics
	upgrader  websocket.Upgrader
	router    chi.Router
	hub       *hub
	proxies   []netip.Prefix // Config.TrustedProxies
	limiter   *addrLimiter
	xffWarn   atomic.Bool // warned once of X-Forwarded-For from an untrusted peer
	connAddrs sync.Map    // net.Conn -> netip.Addr: HTTP connections counted per address
	addrs     *machineAddrs

	mu       sync.Mutex
	draining bool
	conns    sync.WaitGroup // every connection's goroutines

	stop     chan struct{}
	bg       sync.WaitGroup
	stopOnce sync.Once
}

// New validates cfg, fills its defaults and returns a Server ready to serve.
func New(cfg Config) (*Server, error) {
	// Presence names members by the instance whose heartbeat keeps them
	// listed: the broker's, when it has one.
	if ib, ok := cfg.Broker.(interface{ Instance() string }); ok && ib.Instance() != "" {
		cfg.Instance = ib.Instance()
	}
	cfg.fill()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	tokens, err := NewTokens(cfg.Secret)
	if err != nil {
		return nil, err
	}
	proxies, _ := parseProxies(cfg.TrustedProxies) // Validate checked them
	s := &Server{
		cfg:     cfg,
		log:     cfg.Logger.With("component", "signaling", "instance", cfg.Instance),
		tokens:  tokens,
		broker:  cfg.Broker,
		stop:    make(chan struct{}),
		proxies: proxies,
		limiter: newAddrLimiter(cfg.Limits),
		addrs:   newMachineAddrs(),
	}
	if s.broker == nil {
		if s.broker, err = NewMemoryBroker(MemoryConfig{Instance: cfg.Instance}); err != nil {
			return nil, err
		}
		s.ownBroker = true
	}
	s.reg = cfg.Registry
	if s.reg == nil {
		s.reg = prometheus.NewRegistry()
		registerRuntime(s.reg)
	}
	s.metrics = newMetrics(s.reg)
	s.metrics.brokerUp.Set(1)
	s.upgrader = websocket.Upgrader{
		// Memory per connection (virtutune-bench, 20k connections): a chord
		// change is ~150 bytes, so a 1 KiB read buffer holds many (larger
		// frames, SDP, just take more reads). gorilla writes only the
		// handshake's refusals: the server frames and writes the rest
		// itself (outbox.go), from pooled buffers.
		ReadBufferSize:    1024,
		WriteBufferSize:   4096,
		WriteBufferPool:   &writeBufferPool,
		HandshakeTimeout:  cfg.Limits.UpgradeTimeout,
		EnableCompression: false,
		// The Origin was checked before the upgrade (checkOrigin); gorilla's
		// own check would refuse allowed cross-origin pages.
		CheckOrigin: func(*http.Request) bool { return true },
		// The browser's token travels as a second subprotocol; the answer
		// names this one only.
		Subprotocols: []string{wsProtocol},
	}
	s.hub = newHub(s)
	s.router = s.routes()
	s.bg.Add(1)
	go s.watchBroker()
	return s, nil
}

func (s *Server) routes() chi.Router {
	r := chi.NewRouter()
	r.Use(s.limitBody)
	api := r.With(s.checkHost)
	api.With(s.limitSessions).Post("/api/sessions", s.handleCreateSession)
	api.Post("/api/sessions/{session_id}/pairing", s.handleNewPairing)
	api.Get("/api/sessions/{session_id}/pairing", s.handlePairingStatus)
	api.Get("/api/sessions/{session_id}/devices", s.handleDevices)
	api.Delete("/api/sessions/{session_id}/devices/{client_id}", s.handleRemoveDevice)
	api.Post("/api/pair", s.handlePair)
	ws := r.With(s.checkHost, s.limitUpgrades)
	ws.Get("/ws/guitar/{session_id}/", s.handleWS)
	ws.Get("/ws/guitar/{session_id}", s.handleWS)
	r.Get("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	r.Get("/readyz", s.handleReady)
	r.Handle("/metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{}))
	r.NotFound(func(w http.ResponseWriter, r *http.Request) {
		if s.cfg.Static != nil {
			s.cfg.Static.ServeHTTP(w, r)
			return
		}
		httpError(w, http.StatusNotFound, protocol.CodeNotFound, "Not found")
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
		httpError(w, http.StatusMethodNotAllowed, protocol.CodeMethodNotAllowed, "Method not allowed")
	})
	return r
}

// limitBody bounds every request body (Limits.MaxBodyBytes): a handler that
// reads past it gets an error and answers 413.
func (s *Server) limitBody(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > s.cfg.Limits.MaxBodyBytes {
			httpError(w, http.StatusRequestEntityTooLarge, protocol.CodeTooLarge, "Request body too large")
			return
		}
		if r.Body != nil && r.Body != http.NoBody {
			r.Body = http.MaxBytesReader(w, r.Body, s.cfg.Limits.MaxBodyBytes)
		}
		next.ServeHTTP(w, r)
	})
}

// limitSessions applies Limits.SessionsPerMinute to the client address.
func (s *Server) limitSessions(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ok, retry := s.limiter.allowSession(s.clientAddr(r)); !ok {
			s.metrics.addrLimited.WithLabelValues("sessions").Inc()
			tooMany(w, retry, protocol.CodeRateLimited, "Too many sessions created from this address: try again later")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// limitUpgrades applies Limits.UpgradesPerMinute to the client address and
// bounds the pre-upgrade phase and the handshake by Limits.UpgradeTimeout.
func (s *Server) limitUpgrades(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ok, retry := s.limiter.allowUpgrade(s.clientAddr(r)); !ok {
			s.metrics.addrLimited.WithLabelValues("upgrades").Inc()
			s.metrics.refusals.WithLabelValues(http.StatusText(http.StatusTooManyRequests)).Inc()
			tooMany(w, retry, protocol.CodeRateLimited, "Too many connection attempts from this address: try again later")
			return
		}
		// The upgrade's own deadline: whatever the HTTP server's phases
		// allow, the request must turn into a WebSocket within it (the
		// upgrader clears the deadlines once it has).
		rc := http.NewResponseController(w)
		dl := time.Now().Add(s.cfg.Limits.UpgradeTimeout)
		_ = rc.SetReadDeadline(dl)
		_ = rc.SetWriteDeadline(dl)
		next.ServeHTTP(w, r)
	})
}

// HTTPServer returns an http.Server that serves s with every phase bounded
// (Limits: HeaderTimeout, BodyTimeout, ResponseTimeout, IdleTimeout,
// MaxHeaderBytes) and each TCP peer's open connections bounded
// (Limits.MaxConnsPerAddr; trusted proxies are exempt): a connection over
// the bound is closed as it is accepted. The caller sets Addr or calls
// Serve with its listener, and TLS if it wants it.
func (s *Server) HTTPServer() *http.Server {
	l := s.cfg.Limits
	return &http.Server{
		Handler:           s,
		ReadHeaderTimeout: l.HeaderTimeout,
		ReadTimeout:       l.HeaderTimeout + l.BodyTimeout,
		WriteTimeout:      l.BodyTimeout + l.ResponseTimeout, // net/http starts it once the headers are read
		IdleTimeout:       l.IdleTimeout,
		MaxHeaderBytes:    l.MaxHeaderBytes,
		ConnState:         s.connState,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
}

// connState counts each TCP peer's open HTTP connections; a hijacked one (a
// WebSocket) is counted by the WebSocket limits from then on.
func (s *Server) connState(c net.Conn, st http.ConnState) {
	switch st {
	case http.StateNew:
		ip, ok := peerAddr(c.RemoteAddr().String())
		if !ok || s.trusted(ip) {
			return
		}
		if !s.limiter.openConn(ip) {
			s.metrics.addrLimited.WithLabelValues("connections").Inc()
			_ = c.Close()
			return
		}
		s.connAddrs.Store(c, ip)
	case http.StateHijacked, http.StateClosed:
		if v, ok := s.connAddrs.LoadAndDelete(c); ok {
			s.limiter.closeConn(v.(netip.Addr))
		}
	}
}

// Handler returns the server's HTTP handler.
func (s *Server) Handler() http.Handler { return s.router }

// ServeHTTP makes Server an http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.router.ServeHTTP(w, r) }

// durable reports whether the broker keeps sessions across a restart of
// this process (a MemoryBroker with a store).
func (s *Server) durable() bool {
	d, ok := s.broker.(interface{ Durable() bool })
	return ok && d.Durable()
}

// Broker returns the server's broker.
func (s *Server) Broker() Broker { return s.broker }

// Registry returns the registry the server's metrics live in.
func (s *Server) Registry() *prometheus.Registry { return s.reg }

// Tokens returns the server's token signer.
func (s *Server) Tokens() *Tokens { return s.tokens }

// handleReady answers within a second whatever the broker does: the broker
// answers from its health at once while it is degraded, and within its own
// bound otherwise.
func (s *Server) handleReady(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 900*time.Millisecond)
	defer cancel()
	s.mu.Lock()
	draining := s.draining
	s.mu.Unlock()
	if draining {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "draining"})
		return
	}
	if err := s.broker.Ready(ctx); err != nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "degraded", "error": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// watchBroker polls the broker's health for the broker_up gauge (and
// sweeps the per-address limiter).
func (s *Server) watchBroker() {
	defer s.bg.Done()
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for n := 1; ; n++ {
		select {
		case <-s.stop:
			return
		case <-t.C:
			if n%30 == 0 {
				s.limiter.sweep() // once a minute: forget idle addresses
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			err := s.broker.Ready(ctx)
			cancel()
			if err != nil {
				s.metrics.brokerUp.Set(0)
			} else {
				s.metrics.brokerUp.Set(1)
			}
		}
	}
}

// Shutdown stops accepting connections, closes every client with 1001
// (going away, so it reconnects at once elsewhere), and waits for their
// goroutines until ctx is done. It closes the broker if the server created it.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.draining = true
	s.mu.Unlock()
	s.hub.closeAll(1001, "server shutting down")
	done := make(chan struct{})
	go func() { s.conns.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = ctx.Err()
	}
	s.stopOnce.Do(func() { close(s.stop) })
	s.bg.Wait()
	if s.ownBroker {
		if cerr := s.broker.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}
	return err
}

// Close is Shutdown with a 5 s bound.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return s.Shutdown(ctx)
}

// track counts one more connection unless the server is draining; Shutdown
// waits for every tracked connection.
func (s *Server) track() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.draining {
		return false
	}
	s.conns.Add(1)
	return true
}

func (s *Server) isDraining() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.draining
}

// httpError writes the JSON error body every refusal has.
// httpError answers a refusal: status with a protocol.APIError body.
func httpError(w http.ResponseWriter, status int, code protocol.Code, msg string) {
	writeJSON(w, status, protocol.APIError{Code: code, Message: msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// writeBufferPool lends gorilla's write buffers to connections for one write
// at a time (see Upgrader.WriteBufferPool), shared by every Server.
var writeBufferPool sync.Pool
