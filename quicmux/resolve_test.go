package quicmux

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/quicgate/quicgate/flow"
)

// A resolve answers what a flow to the name could reach on some port: the hosts file
// first, then the resolver with the name made absolute; guarded addresses only from the
// hosts file or under an address rule; a name no rule reaches is denied.
func TestResolve(t *testing.T) {
	answers := map[string][]string{
		"public.test.": {"192.0.2.10", "2001:db8::10"},
		"rebind.test.": {"127.0.0.1"},
		"mixed.test.":  {"127.0.0.1", "169.254.169.254", "192.0.2.30"},
		"other.test.":  {"192.0.2.20"},
		"byaddr.test.": {"198.51.100.7", "198.51.101.7"},
	}
	hosts := filepath.Join(t.TempDir(), "hosts")
	if err := os.WriteFile(hosts, []byte("127.0.0.1 myapp.internal\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var asked []string
	tn := newTunnel(t,
		withRules("public.test:443", "tcp:rebind.test", "udp:mixed.test:53", "myapp.internal:8080", "udp:198.51.100.0/24:53"),
		withServerConfig(func(c *ServerConfig) { c.HostsFile = hosts }),
		withResolver(resolverFunc(func(_ context.Context, _, host string) ([]netip.Addr, error) {
			mu.Lock()
			asked = append(asked, host)
			mu.Unlock()
			if host == "broken.test." {
				return nil, &net.DNSError{Err: "server misbehaving", Name: host, IsTemporary: true}
			}
			var addrs []netip.Addr
			for _, a := range answers[host] {
				addrs = append(addrs, netip.MustParseAddr(a))
			}
			if len(addrs) == 0 {
				return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
			}
			return addrs, nil
		})),
	)
	tests := []struct {
		name string
		want string // the addresses, or the error they match
		err  error
	}{
		{name: "public.test", want: "[192.0.2.10 2001:db8::10]"},
		{name: "Public.Test.", want: "[192.0.2.10 2001:db8::10]"},
		{name: "myapp.internal", want: "[127.0.0.1]"}, // the hosts file's, loopback or not
		{name: "mixed.test", want: "[192.0.2.30]"},    // the guarded addresses are left out
		{name: "byaddr.test", want: "[198.51.100.7]"}, // an address rule, no name rule
		{name: "rebind.test", err: ErrDenied},         // only guarded addresses
		{name: "other.test", err: ErrDenied},          // no rule at all
		{name: "nx.test", err: ErrUnreachable},
		{name: "broken.test", err: ErrTimedOut},
		{name: "bad name", err: ErrBadTarget},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addrs, err := tn.client.Resolve(context.Background(), tt.name)
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("%v, %v; want an error matching %v", addrs, err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := fmt.Sprint(addrs); got != tt.want {
				t.Fatalf("%s, want %s", got, tt.want)
			}
		})
	}
	mu.Lock()
	defer mu.Unlock()
	for _, h := range asked {
		if h == "myapp.internal." || h[len(h)-1] != '.' {
			t.Errorf("the resolver was asked for %q", h)
		}
	}
}

// onlyTCP is a Policy that cannot answer for any port: resolves are denied under it.
type onlyTCP struct{}

func (onlyTCP) Allow(flow.Target) bool { return true }

func TestResolveNeedsAnyPortPolicy(t *testing.T) {
	tn := newTunnel(t, withServerConfig(func(c *ServerConfig) {
		c.Policy = onlyTCP{}
		c.HostsFile = filepath.Join(t.TempDir(), "hosts")
		_ = os.WriteFile(c.HostsFile, []byte("192.0.2.1 known.test\n"), 0o644)
	}))
	if _, err := tn.client.Resolve(context.Background(), "known.test"); !errors.Is(err, ErrDenied) {
		t.Fatalf("%v, want ErrDenied", err)
	}
}

func TestResolveDocumentedBytes(t *testing.T) {
	b, err := AppendRequest(nil, Request{Kind: KindResolve, Target: flow.Target{Host: "example.com"}})
	if err != nil {
		t.Fatal(err)
	}
	if want := "01000e0503" + "0b" + hex.EncodeToString([]byte("example.com")); hex.EncodeToString(b) != want {
		t.Errorf("resolve example.com: %x, documented %s", b, want)
	}
	req, err := ReadRequest(bytes.NewReader(b))
	if err != nil || req.Kind != KindResolve || req.Target.Host != "example.com" {
		t.Errorf("read back %+v, %v", req, err)
	}
	for _, bad := range []Request{
		{Kind: KindResolve, Target: flow.Target{Host: "example.com", Port: 53}},
		{Kind: KindResolve, Target: flow.Target{Addr: netip.MustParseAddr("192.0.2.1")}},
	} {
		if _, err := AppendRequest(nil, bad); !errors.Is(err, ErrBadTarget) {
			t.Errorf("%+v: %v, want ErrBadTarget", bad, err)
		}
	}
	for _, bad := range []string{"0100020501", "010010050100000000", "01000e0503" + "0c" + hex.EncodeToString([]byte("example.com"))} {
		in, _ := hex.DecodeString(bad)
		if _, err := ReadRequest(bytes.NewReader(in)); !errors.Is(err, ErrBadRequest) {
			t.Errorf("%s: %v, want ErrBadRequest", bad, err)
		}
	}
	ans := AppendAddrs(AppendStatus(nil, StatusOK), []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1")})
	if want := "0100" + "02" + "01c0000201" + "0420010db8000000000000000000000001"; hex.EncodeToString(ans) != want {
		t.Errorf("answer: %x, documented %s", ans, want)
	}
	r := bytes.NewReader(ans)
	if err := ReadStatus(r); err != nil {
		t.Fatal(err)
	}
	if addrs, err := ReadAddrs(r); err != nil || fmt.Sprint(addrs) != "[192.0.2.1 2001:db8::1]" {
		t.Errorf("read back %v, %v", addrs, err)
	}
	if _, err := ReadAddrs(bytes.NewReader([]byte{2, 1, 192, 0, 2, 1})); !errors.Is(err, ErrProtocol) {
		t.Errorf("truncated answer: %v, want ErrProtocol", err)
	}
}

func TestRulesAllowAnyPort(t *testing.T) {
	rs, err := ParseRules([]string{"udp:10.0.0.0/8:53", "tcp:*.example.com:443", "db.internal:5432-5433"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		t    flow.Target
		want bool
	}{
		{flow.Target{Addr: netip.MustParseAddr("10.1.2.3")}, true},
		{flow.Target{Addr: netip.MustParseAddr("11.1.2.3")}, false},
		{flow.Target{Host: "www.example.com"}, true},
		{flow.Target{Host: "example.com"}, false},
		{flow.Target{Host: "db.internal"}, true},
		{flow.Target{Host: "db.internal", Port: 80}, true}, // the port is ignored
	} {
		if got := rs.AllowAnyPort(tt.t); got != tt.want {
			t.Errorf("%+v: %v, want %v", tt.t, got, tt.want)
		}
	}
}
