package quicmux

import (
	"errors"
	"testing"

	"github.com/quicgate/quicgate/flow"
)

func TestParseRule(t *testing.T) {
	tests := []struct {
		in, want string // want "" means a parse error
	}{
		{"127.0.0.1/32", "127.0.0.1/32"},
		{"10.0.0.0/8:443", "10.0.0.0/8:443"},
		{"10.0.0.0/8:8000-8999", "10.0.0.0/8:8000-8999"},
		{"127.0.0.1", "127.0.0.1/32"},
		{"127.0.0.1:80", "127.0.0.1/32:80"},
		{"::1", "::1/128"},
		{"[::1]:80", "::1/128:80"},
		{"fd00::/64", "fd00::/64"},
		{"fd00::/64:443", "fd00::/64:443"},
		{"[fd00::/64]:1-1024", "fd00::/64:1-1024"},
		{"Example.com", "example.com"},
		{"example.com:443", "example.com:443"},
		{"*.example.com:1-65535", "*.example.com"},
		{"0.0.0.0/0", "0.0.0.0/0"},
		{"10.0.0.1/8", ""},
		{"10.0.0.0/33", ""},
		{"10.0.0.0/8:0", ""},
		{"10.0.0.0/8:99999", ""},
		{"10.0.0.0/8:90-80", ""},
		{"10.0.0.0/8:a", ""},
		{"*", ""},
		{"a.*.com", ""},
		{"", ""},
		{"[::1", ""},
		{"[::1]x", ""},
		{"fe80::1%eth0", ""},
		{"exa mple.com", ""},
	}
	for _, tt := range tests {
		r, err := ParseRule(tt.in)
		if tt.want == "" {
			if !errors.Is(err, ErrBadRule) {
				t.Errorf("ParseRule(%q) = %v, %v; want ErrBadRule", tt.in, r, err)
			}
			continue
		}
		if err != nil || r.String() != tt.want {
			t.Errorf("ParseRule(%q) = %q, %v; want %q", tt.in, r, err, tt.want)
		}
	}
}

func TestRulesAllow(t *testing.T) {
	rules, err := ParseRules([]string{"127.0.0.1/32:8000-8999", "fd00:99::/64:443", "example.com:80", "*.corp.example:22", "10.0.0.0/8"})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		target string
		want   bool
	}{
		{"127.0.0.1:8000", true},
		{"127.0.0.1:8999", true},
		{"127.0.0.1:9000", false},
		{"127.0.0.2:8000", false},
		{"[fd00:99::5]:443", true},
		{"[fd00:99::5]:80", false},
		{"[::ffff:127.0.0.1]:8000", true},
		{"example.com:80", true},
		{"www.example.com:80", false},
		{"example.com:81", false},
		{"git.corp.example:22", true},
		{"corp.example:22", false},
		{"evilcorp.example:22", false},
		{"10.200.0.1:1", true},
		{"11.0.0.1:80", false},
	}
	for _, tt := range tests {
		target, err := flow.ParseTarget(tt.target)
		if err != nil {
			t.Fatal(err)
		}
		if got := rules.Allow(target); got != tt.want {
			t.Errorf("Allow(%s) = %v, want %v", tt.target, got, tt.want)
		}
	}
	if (Rules{}).Allow(flow.Target{Host: "x", Port: 1}) {
		t.Error("empty rules allowed a target")
	}
}

// FuzzParseRule: a rule that parses prints back to a form that parses to the same rule.
func FuzzParseRule(f *testing.F) {
	for _, s := range []string{"127.0.0.1/32", "10.0.0.0/8:443", "fd00::/64:1-1024", "[::1]:80", "*.example.com:22", "example.com", "1.2.3.4:5"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRule(s)
		if err != nil {
			if !errors.Is(err, ErrBadRule) {
				t.Fatalf("error %v does not wrap ErrBadRule", err)
			}
			return
		}
		if r.PortLo == 0 || r.PortLo > r.PortHi || r.Prefix.IsValid() == (r.Host != "") {
			t.Fatalf("ParseRule(%q) = %+v: inconsistent rule", s, r)
		}
		again, err := ParseRule(r.String())
		if err != nil || again != r {
			t.Fatalf("ParseRule(%q) = %+v, but its String %q parses to %+v, %v", s, r, r.String(), again, err)
		}
	})
}
