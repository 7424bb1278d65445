package signaling

import (
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/virtutune/link/protocol"
)

// metrics are the server's Prometheus metrics, registered on its own registry
// so that several servers can live in one process (tests, benchmarks).
type metrics struct {
	conns            prometheus.Gauge
	members          *prometheus.GaugeVec // joined members by role
	sessions         prometheus.Gauge
	connsTotal       prometheus.Counter
	refusals         *prometheus.CounterVec // by HTTP status
	messages         *prometheus.CounterVec // by type, direction
	errors           *prometheus.CounterVec // by code
	closes           *prometheus.CounterVec // by close code
	queueDrops       prometheus.Counter
	publishLatency   prometheus.Histogram
	brokerUp         prometheus.Gauge
	peerLatency      *prometheus.HistogramVec // by path
	p2pStates        *prometheus.CounterVec   // by up, reason
	grace            *prometheus.CounterVec   // by outcome
	errorsSuppressed prometheus.Counter
	addrLimited      *prometheus.CounterVec // by limit
	latencyDropped   prometheus.Counter

	// msgs caches the messages counter of each (type, dir, path) that has
	// been counted: the hot path resolves its handle once, not per message.
	msgs sync.Map // msgKey → prometheus.Counter
}

type msgKey struct {
	t         protocol.Type
	dir, path string
}

// message returns the messages counter of type t, direction dir and path.
func (m *metrics) message(t protocol.Type, dir, path string) prometheus.Counter {
	k := msgKey{t, dir, path}
	if c, ok := m.msgs.Load(k); ok {
		return c.(prometheus.Counter)
	}
	c := m.messages.WithLabelValues(string(t), dir, path)
	m.msgs.Store(k, c)
	return c
}

func newMetrics(reg *prometheus.Registry) *metrics {
	m := &metrics{
		conns: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "virtutune_connections", Help: "WebSocket connections open on this instance."}),
		members: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "virtutune_members", Help: "Members joined on this instance, by role (connections still joining are not counted)."}, []string{"role"}),
		sessions: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "virtutune_sessions_active", Help: "Sessions with at least one member connected to this instance."}),
		connsTotal: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "virtutune_connections_total", Help: "WebSocket connections accepted."}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "virtutune_ws_refusals_total", Help: "WebSocket upgrades refused, by HTTP status."}, []string{"status"}),
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "virtutune_messages_total", Help: "Messages by type, direction (in: from clients; out: to clients) and path (in: ws; out: relay). Every message is relayed, whether or not it also went over a data channel: the receiver keeps the first copy."},
			[]string{"type", "dir", "path"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "virtutune_errors_total", Help: "Error messages sent to clients, by code."}, []string{"code"}),
		closes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "virtutune_closes_total", Help: "Connections closed, by close code."}, []string{"code"}),
		queueDrops: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "virtutune_send_queue_overflows_total", Help: "Clients closed because their send queue was full."}),
		publishLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "virtutune_broker_publish_seconds", Help: "Time the broker took to publish one message.",
			Buckets: prometheus.ExponentialBuckets(10e-6, 2, 16)}),
		brokerUp: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "virtutune_broker_up", Help: "1 while the broker (Redis) is reachable, 0 while degraded."}),
		peerLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "virtutune_chord_latency_seconds", Help: "End-to-end one-way chord latency reported by peers, by path.",
			Buckets: prometheus.ExponentialBuckets(25e-6, 2, 16)}, []string{"path"}),
		p2pStates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "virtutune_p2p_state_total", Help: "Data channel state reports from peers, by state and reason."},
			[]string{"state", "reason"}),
	}
	m.grace = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "virtutune_disconnect_grace_total", Help: "Connections that died and, within the grace period, came back (returned) or not (left)."},
		[]string{"outcome"})
	m.errorsSuppressed = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "virtutune_errors_suppressed_total", Help: "Repeated transient errors (unavailable, invalid_sequence) not sent to a client past their burst."})
	m.addrLimited = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "virtutune_addr_limited_total", Help: "Requests and connections refused by a per-address limit, by limit (sessions, upgrades, websockets, connections)."},
		[]string{"limit"})
	m.latencyDropped = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "virtutune_latency_reports_dropped_total", Help: "latency_report messages over a member's rate (Limits.LatencyRate), not counted in the latency metrics."})
	reg.MustRegister(m.grace, m.errorsSuppressed, m.addrLimited, m.latencyDropped)
	reg.MustRegister(m.conns, m.members, m.sessions, m.connsTotal, m.refusals, m.messages, m.errors, m.closes,
		m.queueDrops, m.publishLatency, m.brokerUp, m.peerLatency, m.p2pStates)
	return m
}

// registerRuntime adds the Go and process collectors to a registry the server created.
func registerRuntime(reg *prometheus.Registry) {
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
}

func (m *metrics) closed(code int) { m.closes.WithLabelValues(strconv.Itoa(code)).Inc() }
