package quicmux

import (
	"context"
	"errors"
	"io"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"

	"github.com/quicgate/quicgate/third_party/quic-go"
)

// Every kind of request goes through one admission and is counted, listed and logged the
// same way: by kind and status, a refusal as a rejected flow with a failure entry and a
// "flow rejected" line, an admitted request as a flow until it ends.
func TestAdmissionCountsEveryKind(t *testing.T) {
	reg, m := newTestMetrics(t, "server")
	logger, hook := logtest.NewNullLogger()
	tn := newTunnel(t, withRules("127.0.0.1/32"),
		withListenPolicy(func(_ Fingerprint, ap netip.AddrPort) bool { return ap.Addr() == netip.MustParseAddr("127.0.0.1") }),
		withResolver(resolverFunc(func(_ context.Context, _, host string) ([]netip.Addr, error) {
			if host == "near.test." {
				return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
			}
			return []netip.Addr{netip.MustParseAddr("192.0.2.1")}, nil
		})),
		withServerConfig(func(c *ServerConfig) {
			c.Metrics = m
			c.Logger = logrus.NewEntry(logger)
			c.HostsFile = t.TempDir() + "/hosts"
			c.echo = func(context.Context, netip.Addr, []byte) (time.Duration, error) { return time.Millisecond, nil }
		}))
	ctx := context.Background()

	c, err := tn.client.DialContext(ctx, "tcp", destination(t, echo))
	if err != nil {
		t.Fatal(err)
	}
	checkEcho(t, c, "admitted")
	if _, err := tn.client.DialContext(ctx, "tcp", "127.0.0.2:80"); !errors.Is(err, ErrDenied) {
		t.Fatalf("tcp to 127.0.0.2: %v, want denied", err)
	}
	if _, err := tn.client.Resolve(ctx, "near.test"); err != nil {
		t.Fatal(err)
	}
	if _, err := tn.client.Resolve(ctx, "far.test"); !errors.Is(err, ErrDenied) {
		t.Fatalf("resolve far.test: %v, want denied", err)
	}
	if _, err := tn.client.Echo(ctx, netip.MustParseAddr("127.0.0.1"), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := tn.client.Echo(ctx, netip.MustParseAddr("192.0.2.1"), nil); !errors.Is(err, ErrDenied) {
		t.Fatalf("echo 192.0.2.1: %v, want denied", err)
	}
	ln, err := listen(t, tn.client, closedPort(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := listen(t, tn.client, "127.0.0.2:1"); !errors.Is(err, ErrDenied) {
		t.Fatalf("listen on 127.0.0.2: %v, want denied", err)
	}

	for _, kind := range []string{"tcp", "resolve", "echo", "listen"} {
		for _, status := range []string{"ok", "denied"} {
			waitMetric(t, reg, "quicgate_requests_total", map[string]string{"kind": kind, "status": status}, 1)
		}
	}
	waitMetric(t, reg, "quicgate_dial_results_total", map[string]string{"status": "ok"}, 4)
	waitMetric(t, reg, "quicgate_dial_results_total", map[string]string{"status": "denied"}, 4)
	waitMetric(t, reg, "quicgate_flows_total", map[string]string{"result": "rejected"}, 4)
	// Open: the TCP flow and the listen; the resolve and the echo ended once answered.
	waitMetric(t, reg, "quicgate_flows_active", map[string]string{"ingress": "quic"}, 2)
	waitMetric(t, reg, "quicgate_flows_total", map[string]string{"result": "ok"}, 2)
	// Both ends of the TCP flow end cleanly: a FIN each way.
	if err := c.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if rest, err := io.ReadAll(c); err != nil || len(rest) != 0 {
		t.Fatalf("after the FIN: %q, %v; want the echo's own FIN", rest, err)
	}
	_ = c.Close()
	_ = ln.Close()
	waitMetric(t, reg, "quicgate_flows_active", map[string]string{"ingress": "quic"}, 0)
	waitMetric(t, reg, "quicgate_flows_total", map[string]string{"result": "ok"}, 4)

	var listed []string
	for _, f := range m.RecentFailures() {
		if f.Ingress != ingressServer || f.Reason != "denied" || f.Peer != tn.clientID.Fingerprint.String() {
			t.Errorf("failure %+v", f)
		}
		listed = append(listed, f.Target)
	}
	if want := []string{"listen 127.0.0.2:1", "echo 192.0.2.1", "resolve far.test", "127.0.0.2:80"}; !slices.Equal(listed, want) {
		t.Errorf("failures listed %q, want %q", listed, want)
	}
	var lines []string
	for _, e := range hook.AllEntries() {
		if e.Message == "flow rejected" {
			if e.Level != logrus.InfoLevel || e.Data["result"] != "denied" || e.Data["flow"] == nil {
				t.Errorf("line %v %v", e.Level, e.Data)
			}
			lines = append(lines, e.Data["kind"].(string)+" "+e.Data["target"].(string))
		}
	}
	if want := []string{"tcp 127.0.0.2:80", "resolve far.test", "echo 192.0.2.1", "listen 127.0.0.2:1"}; !slices.Equal(lines, want) {
		t.Errorf("flow rejected lines %q, want %q", lines, want)
	}
}

// A resolve waits for a dial slot as a flow's dial does, and holds it while its name is
// looked up: with one slot taken by a lookup that hangs, a flow to a name and another
// resolve time out.
func TestAdmissionSharesDialSlots(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	tn := newTunnel(t, withRules("*.test", "127.0.0.1/32"), withDialTimeout(300*time.Millisecond),
		withServerConfig(func(c *ServerConfig) {
			c.MaxPendingDials = 1
			c.HostsFile = t.TempDir() + "/hosts"
		}),
		withResolver(resolverFunc(func(ctx context.Context, _, host string) ([]netip.Addr, error) {
			if host == "hang.test." {
				close(entered)
				<-release
				return nil, ctx.Err()
			}
			return []netip.Addr{netip.MustParseAddr("192.0.2.1")}, nil
		})))
	ctx := context.Background()
	first := make(chan error, 1)
	go func() {
		_, err := tn.client.Resolve(ctx, "hang.test")
		first <- err
	}()
	await(t, entered, "the first lookup")
	if _, err := tn.client.DialContext(ctx, "tcp", "other.test:80"); !errors.Is(err, ErrTimedOut) {
		t.Errorf("a flow while the only slot is taken: %v, want timed out", err)
	}
	if _, err := tn.client.Resolve(ctx, "other.test"); !errors.Is(err, ErrTimedOut) {
		t.Errorf("a resolve while the only slot is taken: %v, want timed out", err)
	}
	close(release)
	if err := await(t, first, "the first resolve"); !errors.Is(err, ErrTimedOut) {
		t.Errorf("the lookup that outlived the dial timeout: %v, want timed out", err)
	}
	if _, err := tn.client.Resolve(ctx, "other.test"); err != nil {
		t.Errorf("a resolve once the slot is free: %v", err)
	}
}

// A request beyond the client's flows and a malformed one are refused as every request is:
// counted under kind "unknown", rejected, listed.
func TestAdmissionRefusesUnreadRequests(t *testing.T) {
	reg, m := newTestMetrics(t, "server")
	tn := newTunnel(t, withServerConfig(func(c *ServerConfig) { c.Metrics = m; c.MaxFlowsPerClient = 1 }))
	qc, err := quic.DialAddr(context.Background(), tn.serverAddr, clientTLS(tn.clientID, tn.serverID.Fingerprint), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer qc.CloseWithError(0, "")
	open := func() *quic.Stream {
		str, err := qc.OpenStreamSync(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		_ = str.SetDeadline(time.Now().Add(hangLimit))
		return str
	}
	first := open()
	_, _ = first.Write([]byte{protocolVersion}) // a byte of header: the stream holds the slot
	second := open()
	_, _ = second.Write([]byte{protocolVersion, 0, 1, byte(KindPing)})
	if err := ReadStatus(second); !errors.Is(err, ErrTooManyFlows) {
		t.Fatalf("a stream beyond the client's flows: %v, want too many flows", err)
	}
	_, _ = first.Write([]byte{0, 1, 0x77}) // kind 0x77: no such kind
	if err := ReadStatus(first); !errors.Is(err, ErrBadRequest) {
		t.Fatalf("unknown kind: %v, want bad request", err)
	}
	waitMetric(t, reg, "quicgate_requests_total", map[string]string{"kind": "unknown", "status": "too many flows"}, 1)
	waitMetric(t, reg, "quicgate_requests_total", map[string]string{"kind": "unknown", "status": "bad request"}, 1)
	waitMetric(t, reg, "quicgate_flows_total", map[string]string{"result": "rejected"}, 2)
	var reasons []string
	for _, f := range m.RecentFailures() {
		if f.Target != "" {
			t.Errorf("failure %+v names a target it never read", f)
		}
		reasons = append(reasons, f.Reason)
	}
	if want := []string{"bad request", "too many flows"}; !slices.Equal(reasons, want) {
		t.Fatalf("failures %q, want %q", reasons, want)
	}
}
