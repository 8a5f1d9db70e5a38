package quicmux

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/quicgate/quicgate/flow"
	"github.com/quicgate/quicgate/third_party/quic-go"
)

// Metrics are the Prometheus metrics of a client or a server. Every label has a small fixed
// set of values: there are no per-flow, per-peer or per-target labels. A nil *Metrics is
// valid and records nothing.
type Metrics struct {
	side string

	flowsActive       *prometheus.GaugeVec   // ingress
	flowsTotal        *prometheus.CounterVec // result
	bytes             *prometheus.CounterVec // direction
	dialResults       *prometheus.CounterVec // status
	requests          *prometheus.CounterVec // kind, status (server)
	handshakeFailures *prometheus.CounterVec // reason
	reconnects        prometheus.Counter
	failures          failureLog

	countersOnce       sync.Once
	countUp, countDown func(int) // quicgate_bytes_total's, for every relay (relayOptions)

	mu        sync.Mutex
	conns     map[*quic.Conn]string // the transport each came over
	lostGone  uint64                // packets lost on connections that have closed
	sentGone  uint64
	connsDesc *prometheus.Desc
	rttDesc   *prometheus.Desc
	lostDesc  *prometheus.Desc
	sentDesc  *prometheus.Desc
	// the congestion controllers' models, read from the live connections
	ccDesc     *prometheus.Desc
	minRTTDesc *prometheus.Desc
	bwDesc     *prometheus.Desc
	cwndDesc   *prometheus.Desc
	pacingDesc *prometheus.Desc
	congestion Congestion
}

// NewMetrics registers the metrics of one side ("client" or "server") with reg.
func NewMetrics(reg prometheus.Registerer, side string) (*Metrics, error) {
	constLabels := prometheus.Labels{"side": side}
	m := &Metrics{
		side: side,
		flowsActive: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "quicgate_flows_active", Help: "Flows open now, by the ingress they came in through (the server's: quic).", ConstLabels: constLabels},
			[]string{"ingress"}),
		flowsTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "quicgate_flows_total", Help: "Flows ended, by result (ok, reset, idle, shutdown, error, rejected).", ConstLabels: constLabels},
			[]string{"result"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "quicgate_bytes_total", Help: "Payload bytes relayed: up is toward the destination, down toward the app.", ConstLabels: constLabels},
			[]string{"direction"}),
		dialResults: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "quicgate_dial_results_total", Help: "Flow requests by the status they got.", ConstLabels: constLabels},
			[]string{"status"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "quicgate_requests_total", Help: "Requests a client made of the server, by kind (tcp, udp, resolve, echo, listen, accepted, unknown) and the status they got.", ConstLabels: constLabels},
			[]string{"kind", "status"}),
		handshakeFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "quicgate_handshake_failures_total", Help: "Failed QUIC handshakes by reason.", ConstLabels: constLabels},
			[]string{"reason"}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "quicgate_reconnects_total", Help: "Connections to the server made after the first (client).", ConstLabels: constLabels}),
		conns:     map[*quic.Conn]string{},
		connsDesc: prometheus.NewDesc("quicgate_connections_active", "QUIC connections open now, by the transport they run over (quic: UDP; tcp: the TCP fallback).", []string{"transport"}, constLabels),
		rttDesc:   prometheus.NewDesc("quicgate_quic_rtt_seconds", "Smoothed RTT, averaged over the open QUIC connections.", nil, constLabels),
		lostDesc:  prometheus.NewDesc("quicgate_quic_packets_lost_total", "QUIC packets declared lost.", nil, constLabels),
		sentDesc:  prometheus.NewDesc("quicgate_quic_packets_sent_total", "QUIC packets sent.", nil, constLabels),

		ccDesc:     prometheus.NewDesc("quicgate_congestion_control_info", "The congestion controller of what this end sends (label algorithm), always 1.", []string{"algorithm"}, constLabels),
		minRTTDesc: prometheus.NewDesc("quicgate_quic_min_rtt_seconds", "Minimum RTT, averaged over the open QUIC connections.", nil, constLabels),
		bwDesc:     prometheus.NewDesc("quicgate_quic_bandwidth_estimate_bits_per_second", "The senders' estimates of their paths' bandwidth (BBR: bottleneck bandwidth; Cubic: cwnd/RTT), summed over the open QUIC connections.", nil, constLabels),
		cwndDesc:   prometheus.NewDesc("quicgate_quic_congestion_window_bytes", "Congestion windows, summed over the open QUIC connections.", nil, constLabels),
		pacingDesc: prometheus.NewDesc("quicgate_quic_pacing_rate_bits_per_second", "Pacing rates, summed over the open QUIC connections.", nil, constLabels),
		congestion: CongestionBBR,
	}
	for _, c := range []prometheus.Collector{m.flowsActive, m.flowsTotal, m.bytes, m.dialResults, m.requests, m.handshakeFailures, m.reconnects, connCollector{m}} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// setCongestion names the congestion controller in quicgate_congestion_control_info; the
// Client or Server the metrics are given to calls it.
func (m *Metrics) setCongestion(cc Congestion) {
	if m != nil {
		m.mu.Lock()
		m.congestion = cc
		m.mu.Unlock()
	}
}

// flowStarted counts a flow open in its ingress's gauge, which it returns for flowEnded.
func (m *Metrics) flowStarted(ingress string) prometheus.Gauge {
	if m == nil {
		return nil
	}
	g := m.flowsActive.WithLabelValues(ingress)
	g.Inc()
	return g
}

func (m *Metrics) flowEnded(active prometheus.Gauge, result string) {
	if m != nil {
		active.Dec()
		m.flowsTotal.WithLabelValues(result).Inc()
	}
}

// failed records a failure in the list RecentFailures returns.
func (m *Metrics) failed(f Failure) {
	if m != nil {
		m.failures.add(f)
	}
}

// RecentFailures returns the last failures (flows that could not start or broke, and the
// client's failed connections to the server), newest first.
func (m *Metrics) RecentFailures() []Failure {
	if m == nil {
		return nil
	}
	return m.failures.list()
}

func (m *Metrics) flowRejected() {
	if m != nil {
		m.flowsTotal.WithLabelValues("rejected").Inc()
	}
}

// requested counts a request's verdict on the server, the same way for every kind (see
// admission.go): quicgate_dial_results_total by status, quicgate_requests_total by kind and
// status, and a refused request in quicgate_flows_total as rejected.
func (m *Metrics) requested(kind string, s Status) {
	if m == nil {
		return
	}
	m.dialResults.WithLabelValues(s.String()).Inc()
	m.requests.WithLabelValues(kind, s.String()).Inc()
	if s != StatusOK {
		m.flowsTotal.WithLabelValues("rejected").Inc()
	}
}

func (m *Metrics) handshakeFailed(reason string) {
	if m != nil {
		m.handshakeFailures.WithLabelValues(reason).Inc()
	}
}

func (m *Metrics) reconnected() {
	if m != nil {
		m.reconnects.Inc()
	}
}

// relayOptions returns live byte counters for a relay whose a side is the app's and b side
// the destination's (up is a to b). The counters are made once, at the first flow, and
// shared by every flow's relay.
func (m *Metrics) relayOptions(idle time.Duration) flow.RelayOptions {
	opt := flow.RelayOptions{IdleTimeout: idle}
	if m != nil {
		m.countersOnce.Do(func() {
			up, down := m.bytes.WithLabelValues("up"), m.bytes.WithLabelValues("down")
			m.countUp = func(n int) { up.Add(float64(n)) }
			m.countDown = func(n int) { down.Add(float64(n)) }
		})
		opt.AtoB, opt.BtoA = m.countUp, m.countDown
	}
	return opt
}

// trackConn counts a QUIC connection over transport ("quic" or "tcp") in the connection, RTT
// and loss metrics until it ends.
func (m *Metrics) trackConn(c *quic.Conn, transport string) {
	if m == nil {
		return
	}
	m.mu.Lock()
	m.conns[c] = transport
	m.mu.Unlock()
	context.AfterFunc(c.Context(), func() {
		st := c.ConnectionStats()
		m.mu.Lock()
		delete(m.conns, c)
		m.lostGone += st.PacketsLost
		m.sentGone += st.PacketsSent
		m.mu.Unlock()
	})
}

// connCollector reads the live connections' statistics at scrape time.
type connCollector struct{ m *Metrics }

func (c connCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.m.connsDesc
	ch <- c.m.rttDesc
	ch <- c.m.lostDesc
	ch <- c.m.sentDesc
	ch <- c.m.ccDesc
	ch <- c.m.minRTTDesc
	ch <- c.m.bwDesc
	ch <- c.m.cwndDesc
	ch <- c.m.pacingDesc
}

func (c connCollector) Collect(ch chan<- prometheus.Metric) {
	m := c.m
	m.mu.Lock()
	lost, sent := m.lostGone, m.sentGone
	var rtt, minRTT time.Duration
	var bw, cwnd, pacing uint64
	byTransport := map[string]int{"quic": 0, "tcp": 0}
	for conn, transport := range m.conns {
		byTransport[transport]++
		st := conn.ConnectionStats()
		lost += st.PacketsLost
		sent += st.PacketsSent
		rtt += st.SmoothedRTT
		minRTT += st.MinRTT
		bw += st.BandwidthEstimate
		cwnd += st.CongestionWindow
		pacing += st.PacingRate
	}
	n := len(m.conns)
	cc := m.congestion
	m.mu.Unlock()
	if n > 0 {
		rtt /= time.Duration(n)
		minRTT /= time.Duration(n)
	}
	for transport, k := range byTransport {
		ch <- prometheus.MustNewConstMetric(m.connsDesc, prometheus.GaugeValue, float64(k), transport)
	}
	ch <- prometheus.MustNewConstMetric(m.rttDesc, prometheus.GaugeValue, rtt.Seconds())
	ch <- prometheus.MustNewConstMetric(m.lostDesc, prometheus.CounterValue, float64(lost))
	ch <- prometheus.MustNewConstMetric(m.sentDesc, prometheus.CounterValue, float64(sent))
	ch <- prometheus.MustNewConstMetric(m.ccDesc, prometheus.GaugeValue, 1, string(cc))
	ch <- prometheus.MustNewConstMetric(m.minRTTDesc, prometheus.GaugeValue, minRTT.Seconds())
	ch <- prometheus.MustNewConstMetric(m.bwDesc, prometheus.GaugeValue, float64(bw))
	ch <- prometheus.MustNewConstMetric(m.cwndDesc, prometheus.GaugeValue, float64(cwnd))
	ch <- prometheus.MustNewConstMetric(m.pacingDesc, prometheus.GaugeValue, float64(pacing))
}
