package ingress

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/quicgate/quicgate/flow"
	"github.com/quicgate/quicgate/internal/looptest"
	"github.com/quicgate/quicgate/internal/quicmuxtest"
	"github.com/quicgate/quicgate/netstack"
	"github.com/quicgate/quicgate/netstack/memtun"
	"github.com/quicgate/quicgate/quicmux"
)

var tunDNS = netip.MustParseAddr("10.99.0.53")

// countingResolver counts the resolves the responder asks the tunnel for.
type countingResolver struct {
	NameResolver
	n atomic.Int32
}

func (c *countingResolver) Resolve(ctx context.Context, name string) ([]netip.Addr, error) {
	c.n.Add(1)
	return c.NameResolver.Resolve(ctx, name)
}

// newTUNDNSRig: an app netstack → in-memory device → a TUN ingress answering DNS at
// tunDNS, whose resolves go to a real server. The server's hosts file knows
// far.internal (allowed) and secret.internal (no rule); its resolver knows nothing else.
func newTUNDNSRig(t *testing.T) (*netstack.Stack, *countingResolver, *TUN) {
	t.Helper()
	hosts := filepath.Join(t.TempDir(), "hosts")
	if err := os.WriteFile(hosts, []byte("192.0.2.7 far.internal\n2001:db8::7 far.internal\n192.0.2.8 secret.internal\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	rules := quicmuxtest.Rules(t, "far.internal:80")
	nx := resolverFunc(func(_ context.Context, _, host string) ([]netip.Addr, error) {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	})
	_, client := startTunnel(t, quicmux.ServerConfig{Policy: rules, HostsFile: hosts, Resolver: nx}, quicmux.ClientConfig{DialTimeout: 5 * time.Second}, nil)
	res := &countingResolver{NameResolver: client}
	log := testLogger(t).WithField("side", "ingress")
	ing := &TUN{name: "tun test", tun: client, log: log, flows: flow.NewGroup(context.Background()),
		dnsFlows: flow.NewGroup(context.Background()), dns: newDNSResponder(tunDNS, res, log)}
	devIngress, devApp := memtun.Pipe(9000, 64, 1024)
	gw, err := netstack.NewTUN(devIngress, netstack.Config{Handler: ing, UDPHandler: ing, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	app, err := netstack.NewTUN(devApp, netstack.Config{Addrs: []netip.Prefix{appPrefix}})
	if err != nil {
		_ = gw.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ing.dnsFlows.Close()
		ing.flows.Close()
		_ = gw.Close()
		_ = app.Close()
	})
	return app, res, ing
}

// resolverFunc adapts a function to quicmux.Resolver.
type resolverFunc = looptest.ResolverFunc

func dnsQuery(t *testing.T, id uint16, name string, typ dnsmessage.Type) []byte {
	t.Helper()
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: id, RecursionDesired: true})
	_ = b.StartQuestions()
	if err := b.Question(dnsmessage.Question{Name: dnsmessage.MustNewName(name), Type: typ, Class: dnsmessage.ClassINET}); err != nil {
		t.Fatal(err)
	}
	q, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	return q
}

// dnsResult is an answer in short: "RCode [addresses]".
func dnsResult(t *testing.T, id uint16, resp []byte) string {
	t.Helper()
	var m dnsmessage.Message
	if err := m.Unpack(resp); err != nil {
		t.Fatalf("answer does not parse: %v", err)
	}
	if m.ID != id || !m.Response {
		t.Fatalf("answer id %d response %v, want id %d", m.ID, m.Response, id)
	}
	var addrs []netip.Addr
	for _, a := range m.Answers {
		switch r := a.Body.(type) {
		case *dnsmessage.AResource:
			addrs = append(addrs, netip.AddrFrom4(r.A))
		case *dnsmessage.AAAAResource:
			addrs = append(addrs, netip.AddrFrom16(r.AAAA))
		}
		if a.Header.TTL != 60 {
			t.Errorf("TTL %d, want 60", a.Header.TTL)
		}
	}
	return fmt.Sprintf("%s %v", m.RCode, addrs)
}

// askUDP sends q to the DNS address until an answer comes (UDP may lose a packet).
func askUDP(t *testing.T, app *netstack.Stack, q []byte) []byte {
	t.Helper()
	c, err := app.DialUDP(netip.AddrPortFrom(tunDNS, 53))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 2048)
	for deadline := time.Now().Add(tunUDPWait); time.Now().Before(deadline); {
		if _, err := c.Write(q); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(time.Second))
		n, err := c.Read(buf)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		return buf[:n]
	}
	t.Fatalf("no answer within %v", tunUDPWait)
	return nil
}

// A query to the TUN's DNS address is answered with what the server resolves under its
// policy: the address family asked for, REFUSED for a name the policy does not reach,
// NXDOMAIN for one that does not resolve, no data for other types; over UDP and TCP.
func TestTUNDNS(t *testing.T) {
	app, res, ing := newTUNDNSRig(t)
	tests := []struct {
		name string
		typ  dnsmessage.Type
		want string
	}{
		{"far.internal.", dnsmessage.TypeA, "RCodeSuccess [192.0.2.7]"},
		{"FAR.internal.", dnsmessage.TypeAAAA, "RCodeSuccess [2001:db8::7]"},
		{"far.internal.", dnsmessage.TypeMX, "RCodeSuccess []"},
		{"secret.internal.", dnsmessage.TypeA, "RCodeRefused []"},
		{"nowhere.internal.", dnsmessage.TypeAAAA, "RCodeNameError []"},
	}
	for i, tt := range tests {
		id := uint16(100 + i)
		if got := dnsResult(t, id, askUDP(t, app, dnsQuery(t, id, tt.name, tt.typ))); got != tt.want {
			t.Errorf("udp %s %s: %s, want %s", tt.name, tt.typ, got, tt.want)
		}
	}
	// far.internal was resolved once, for A and AAAA both: the cache answered the second.
	if n := res.n.Load(); n != 3 {
		t.Errorf("%d resolves at the server, want 3", n)
	}

	// Flows to an address answered for a name go as flows to the name, which the server
	// judges by its name rules; others keep their address.
	for dst, want := range map[string]string{"192.0.2.7:80": "far.internal:80", "[2001:db8::7]:443": "far.internal:443", "192.0.2.9:80": "192.0.2.9:80"} {
		if got := ing.target(netip.MustParseAddrPort(dst)).String(); got != want {
			t.Errorf("a flow to %s goes to %s, want %s", dst, got, want)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), tunUDPWait)
	defer cancel()
	c, err := app.DialTCP(ctx, netip.AddrPortFrom(tunDNS, 53))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(tunUDPWait))
	for i, tt := range tests {
		id := uint16(200 + i)
		q := dnsQuery(t, id, tt.name, tt.typ)
		if _, err := c.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(q))), q...)); err != nil {
			t.Fatal(err)
		}
		var pre [2]byte
		if _, err := io.ReadFull(c, pre[:]); err != nil {
			t.Fatal(err)
		}
		resp := make([]byte, binary.BigEndian.Uint16(pre[:]))
		if _, err := io.ReadFull(c, resp); err != nil {
			t.Fatal(err)
		}
		if got := dnsResult(t, id, resp); got != tt.want {
			t.Errorf("tcp %s %s: %s, want %s", tt.name, tt.typ, got, tt.want)
		}
	}

	// Other ports of the DNS address are closed.
	if _, err := app.DialTCP(ctx, netip.AddrPortFrom(tunDNS, 80)); err == nil {
		t.Error("a TCP connection to the DNS address's port 80 was accepted")
	}
}

// Garbage gets no answer or FORMERR, never a crash; a query with EDNS gets EDNS back.
func TestDNSAnswerEdges(t *testing.T) {
	d := newDNSResponder(tunDNS, nil, testLogger(t))
	if out := d.answer(context.Background(), []byte{1, 2, 3}, dnsUDPMax); out != nil {
		t.Errorf("3 bytes answered: %x", out)
	}
	two := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: 7})
	_ = two.StartQuestions()
	for range 2 {
		_ = two.Question(dnsmessage.Question{Name: dnsmessage.MustNewName("a.test."), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET})
	}
	q, _ := two.Finish()
	var m dnsmessage.Message
	if err := m.Unpack(d.answer(context.Background(), q, dnsUDPMax)); err != nil || m.RCode != dnsmessage.RCodeFormatError {
		t.Errorf("two questions: %v %v, want FORMERR", m.RCode, err)
	}
	// Many addresses: cut to 512 bytes and marked truncated.
	var many []netip.Addr
	for i := range 32 {
		many = append(many, netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: byte(i)}))
	}
	out := buildAnswer(dnsmessage.Header{ID: 1, Response: true},
		dnsmessage.Question{Name: dnsmessage.MustNewName("many.test."), Type: dnsmessage.TypeAAAA, Class: dnsmessage.ClassINET}, many, nil, dnsUDPMax)
	if err := m.Unpack(out); err != nil || !m.Truncated || len(out) > dnsUDPMax || len(m.Answers) == 0 {
		t.Errorf("32 AAAA in %d bytes: truncated %v, %d answers, %v", len(out), m.Truncated, len(m.Answers), err)
	}
}
