package quicmux

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// A name rule cannot be turned against the server: whatever DNS answers for an allowed name,
// loopback, link-local and the server's own addresses are dialed only if an address rule
// allows them, or if the name comes from the hosts file (the operator's own names, such as
// localhost). Names go to the resolver as absolute names.
func TestNameRulesGuardTheServer(t *testing.T) {
	own := ownNonLoopback(t)
	answers := map[string]string{
		"public.test.":   "192.0.2.10", // TEST-NET-1: neither loopback nor this host's
		"rebind.test.":   "127.0.0.1",
		"metadata.test.": "169.254.169.254",
		"ipv6ll.test.":   "fe80::1",
		"self.test.":     own.String(),
		"pinned.test.":   "127.0.0.1", // an address rule allows this one
	}
	var mu sync.Mutex
	var asked, dialed []string
	hosts := filepath.Join(t.TempDir(), "hosts")
	if err := os.WriteFile(hosts, []byte("# the operator's names\n127.0.0.1 localhost\n127.0.0.1 MyApp.internal  # trusted\nnot-an-address foo\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tn := newTunnel(t,
		withRules("public.test", "rebind.test", "metadata.test", "ipv6ll.test", "self.test", "pinned.test",
			"localhost", "myapp.internal", "127.0.0.1/32:80"),
		withServerConfig(func(c *ServerConfig) { c.HostsFile = hosts }),
		withResolver(resolverFunc(func(_ context.Context, _, host string) ([]netip.Addr, error) {
			mu.Lock()
			asked = append(asked, host)
			mu.Unlock()
			if a, ok := answers[host]; ok {
				return []netip.Addr{netip.MustParseAddr(a)}, nil
			}
			return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
		})),
		withDialer(dialerFunc(func(_ context.Context, _, address string) (net.Conn, error) {
			mu.Lock()
			dialed = append(dialed, address)
			mu.Unlock()
			app, far := halfPipe()
			go memEcho(far)
			return app, nil
		})),
	)
	tests := []struct {
		target string
		want   string // the address dialed, or "" for denied
	}{
		{"public.test:443", "192.0.2.10:443"},
		{"rebind.test:443", ""},
		{"metadata.test:80", ""},
		{"ipv6ll.test:80", ""},
		{"self.test:22", ""},
		{"pinned.test:80", "127.0.0.1:80"},   // the address rule 127.0.0.1/32:80
		{"localhost:8081", "127.0.0.1:8081"}, // from the hosts file
		{"myapp.internal:8080", "127.0.0.1:8080"},
	}
	for _, tt := range tests {
		t.Run(tt.target, func(t *testing.T) {
			mu.Lock()
			dialed = nil
			mu.Unlock()
			c, err := tn.client.DialContext(context.Background(), "tcp", tt.target)
			mu.Lock()
			got := fmt.Sprint(dialed)
			mu.Unlock()
			if tt.want == "" {
				if !errors.Is(err, ErrDenied) {
					t.Fatalf("%s: %v, want ErrDenied", tt.target, err)
				}
				if got != "[]" {
					t.Fatalf("%s: dialed %s", tt.target, got)
				}
				return
			}
			if err != nil {
				t.Fatalf("%s: %v", tt.target, err)
			}
			_ = c.Close()
			if got != "["+tt.want+"]" {
				t.Fatalf("%s: dialed %s, want %s", tt.target, got, tt.want)
			}
		})
	}
	mu.Lock()
	defer mu.Unlock()
	for _, h := range asked {
		if h[len(h)-1] != '.' {
			t.Errorf("the resolver was asked for %q, not an absolute name", h)
		}
		if h == "localhost." || h == "myapp.internal." {
			t.Errorf("the resolver was asked for %q, which the hosts file has", h)
		}
	}
}

// ownNonLoopback is one of this host's own addresses that is not loopback.
func ownNonLoopback(t *testing.T) netip.Addr {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil && !p.Addr().IsLoopback() && !p.Addr().IsLinkLocalUnicast() {
			return p.Addr().Unmap()
		}
	}
	t.Skip("no non-loopback address on this host")
	return netip.Addr{}
}

func TestParseHosts(t *testing.T) {
	got := parseHosts([]byte("127.0.0.1 localhost loopback.\n::1 localhost ip6-localhost # comment\n#10.0.0.1 hidden\nfe80::1%eth0 scoped\n\n10.1.2.3\tDB.Internal\n"))
	want := map[string]string{
		"localhost":     "[127.0.0.1 ::1]",
		"loopback":      "[127.0.0.1]",
		"ip6-localhost": "[::1]",
		"db.internal":   "[10.1.2.3]",
	}
	if len(got) != len(want) {
		t.Fatalf("parsed %v, want %v", got, want)
	}
	for name, w := range want {
		if g := fmt.Sprint(got[name]); g != w {
			t.Errorf("%s: %s, want %s", name, g, w)
		}
	}
}
