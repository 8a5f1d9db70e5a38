package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/quicgate/quicgate/quicmux"
)

// runStatus asks a running server or client for its state through its --metrics listener
// and prints it for a person: connections, RTT, congestion control, flows open and how the
// others ended, dial results and failed handshakes.
func runStatus(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("status", stderr)
	addr := fs.String("metrics", "", "the --metrics address of the running quicgate, e.g. 127.0.0.1:9090 (required)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *addr == "" {
		return usageErr("--metrics is required: the address the running quicgate serves its metrics on (its own --metrics)")
	}
	url := *addr
	if !strings.HasPrefix(url, "http://") && !strings.HasPrefix(url, "https://") {
		url = "http://" + url
	}
	hc := &http.Client{Timeout: 5 * time.Second}
	resp, err := hc.Get(strings.TrimSuffix(url, "/") + "/metrics")
	if err != nil {
		return fmt.Errorf("no quicgate metrics at %s: %w (is it running with --metrics %s?)", *addr, err, *addr)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s answered %s, not quicgate's metrics", *addr, resp.Status)
	}
	m, err := parseMetrics(resp.Body)
	if err != nil {
		return err
	}
	if len(m.byName) == 0 || m.side == "" {
		return fmt.Errorf("%s serves no quicgate metrics", *addr)
	}
	// The recent failures are JSON beside the metrics; a quicgate too old to serve them
	// still gets the rest of its status printed.
	var failures []quicmux.Failure
	if resp, err := hc.Get(strings.TrimSuffix(url, "/") + "/failures"); err == nil {
		if resp.StatusCode == http.StatusOK {
			if err := json.NewDecoder(resp.Body).Decode(&failures); err != nil {
				failures = nil
			}
		}
		resp.Body.Close()
	}
	printStatus(stdout, *addr, m, failures)
	return nil
}

// metricSet is a Prometheus text exposition, as much of it as status reads.
type metricSet struct {
	side   string
	byName map[string][]sample
}

type sample struct {
	labels map[string]string
	value  float64
}

// parseMetrics reads the quicgate_ metrics of a Prometheus text exposition.
func parseMetrics(r io.Reader) (*metricSet, error) {
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(r)
	if err != nil {
		return nil, fmt.Errorf("not Prometheus metrics: %w", err)
	}
	m := &metricSet{byName: map[string][]sample{}}
	for name, f := range families {
		if !strings.HasPrefix(name, "quicgate_") {
			continue
		}
		for _, metric := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range metric.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if side := labels["side"]; side != "" {
				m.side = side
			}
			// A family is a counter, a gauge or untyped; the others' getters give 0.
			v := metric.GetCounter().GetValue() + metric.GetGauge().GetValue() + metric.GetUntyped().GetValue()
			m.byName[name] = append(m.byName[name], sample{labels, v})
		}
	}
	return m, nil
}

// total sums a metric's samples.
func (m *metricSet) total(name string) float64 {
	var t float64
	for _, s := range m.byName[name] {
		t += s.value
	}
	return t
}

// byLabel lists a metric's non-zero samples as "label n" pairs, sorted.
func (m *metricSet) byLabel(name, label string) string {
	var parts []string
	for _, s := range m.byName[name] {
		if s.value != 0 {
			parts = append(parts, fmt.Sprintf("%s %.0f", s.labels[label], s.value))
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}

// sorted returns a metric's samples ordered by one label's value.
func (m *metricSet) sorted(name, label string) []sample {
	out := append([]sample(nil), m.byName[name]...)
	sort.Slice(out, func(i, j int) bool { return out[i].labels[label] < out[j].labels[label] })
	return out
}

func printStatus(w io.Writer, addr string, m *metricSet, failures []quicmux.Failure) {
	cc := "?"
	for _, s := range m.byName["quicgate_congestion_control_info"] {
		cc = s.labels["algorithm"]
	}
	conns := m.total("quicgate_connections_active")
	fmt.Fprintf(w, "quicgate %s (metrics at %s)\n", m.side, addr)
	if conns == 0 {
		fmt.Fprintf(w, "connections:        none open")
		if m.side == "client" {
			fmt.Fprintf(w, " (not connected to the server)")
		}
		fmt.Fprintln(w)
	} else {
		fmt.Fprintf(w, "connections:        %.0f open, RTT %s (min %s), congestion control %s\n", conns,
			seconds(m.total("quicgate_quic_rtt_seconds")), seconds(m.total("quicgate_quic_min_rtt_seconds")), cc)
		fmt.Fprintf(w, "transport:          %s\n", m.byLabel("quicgate_connections_active", "transport"))
	}
	if m.side == "client" {
		fmt.Fprintf(w, "reconnects:         %.0f\n", m.total("quicgate_reconnects_total"))
	}
	fmt.Fprintf(w, "flows open:         %.0f\n", m.total("quicgate_flows_active"))
	if m.side == "client" {
		for _, s := range m.sorted("quicgate_flows_active", "ingress") {
			fmt.Fprintf(w, "  %-17s %.0f\n", s.labels["ingress"]+":", s.value)
		}
	}
	fmt.Fprintf(w, "flows ended:        %s\n", m.byLabel("quicgate_flows_total", "result"))
	if m.side == "server" {
		fmt.Fprintf(w, "dial results:       %s\n", m.byLabel("quicgate_dial_results_total", "status"))
	}
	fmt.Fprintf(w, "handshake failures: %s\n", m.byLabel("quicgate_handshake_failures_total", "reason"))
	fmt.Fprintf(w, "bytes:              %s\n", m.byLabel("quicgate_bytes_total", "direction"))
	printFailures(w, failures)
}

// shownFailures is how many of the recent failures status prints.
const shownFailures = 10

// printFailures lists the newest failures, one line each: when, where the flow came in
// (with its app or client), where it went, and why.
func printFailures(w io.Writer, failures []quicmux.Failure) {
	if len(failures) == 0 {
		fmt.Fprintln(w, "recent failures:    none")
		return
	}
	fmt.Fprintln(w, "recent failures (newest first):")
	for _, f := range failures[:min(len(failures), shownFailures)] {
		line := "  " + f.Time.Local().Format("2006-01-02 15:04:05") + "  " + f.Ingress
		if f.Peer != "" {
			line += " from " + f.Peer
		}
		if f.Target != "" {
			line += " to " + f.Target
		}
		line += ": " + f.Reason
		if f.Count > 1 {
			line += fmt.Sprintf(" (%d times)", f.Count)
		}
		fmt.Fprintln(w, line)
	}
	if len(failures) > shownFailures {
		fmt.Fprintf(w, "  … and %d older\n", len(failures)-shownFailures)
	}
}

func seconds(s float64) string {
	return time.Duration(s * float64(time.Second)).Round(10 * time.Microsecond).String()
}
