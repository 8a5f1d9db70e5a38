package httpproxy

import (
	"errors"
	"strings"
	"testing"
)

// env is a getenv over a map.
func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestFromEnvironmentOrder(t *testing.T) {
	all := map[string]string{
		"HTTPS_PROXY": "http://upper-https:1",
		"https_proxy": "http://lower-https:2",
		"ALL_PROXY":   "http://upper-all:3",
		"all_proxy":   "http://lower-all:4",
		"HTTP_PROXY":  "http://upper-http:5",
		"http_proxy":  "http://lower-http:6",
	}
	for _, tc := range []struct {
		name  string
		unset []string
		empty []string
		want  string // "" for no proxy
	}{
		{name: "HTTPS_PROXY first", want: "http://upper-https:1"},
		{name: "then https_proxy", unset: []string{"HTTPS_PROXY"}, want: "http://lower-https:2"},
		{name: "empty values are skipped", empty: []string{"HTTPS_PROXY", "https_proxy"}, want: "http://upper-all:3"},
		{name: "then all_proxy", unset: []string{"HTTPS_PROXY", "https_proxy", "ALL_PROXY"}, want: "http://lower-all:4"},
		{name: "HTTP_PROXY is not read", unset: []string{"HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"}, want: ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := make(map[string]string)
			for k, v := range all {
				m[k] = v
			}
			for _, k := range tc.unset {
				delete(m, k)
			}
			for _, k := range tc.empty {
				m[k] = " "
			}
			u, err := FromEnvironment("example.com:443", env(m))
			if err != nil {
				t.Fatal(err)
			}
			got := ""
			if u != nil {
				got = u.String()
			}
			if got != tc.want {
				t.Errorf("proxy %q, want %q", got, tc.want)
			}
		})
	}
}

func TestFromEnvironmentValues(t *testing.T) {
	u, err := FromEnvironment("example.com:443", env(map[string]string{"ALL_PROXY": "proxy.example:3128"}))
	if err != nil || u == nil || u.String() != "http://proxy.example:3128" {
		t.Errorf("scheme-less ALL_PROXY: %v, %v", u, err)
	}
	u, err = FromEnvironment("example.com:443", env(map[string]string{"HTTPS_PROXY": "none", "ALL_PROXY": "proxy.example:3128"}))
	if err != nil || u != nil {
		t.Errorf("HTTPS_PROXY=none: %v, %v; want no proxy", u, err)
	}
	_, err = FromEnvironment("example.com:443", env(map[string]string{
		"https_proxy": "socks5://alice:" + secret + "@proxy.example:1080",
		"NO_PROXY":    "*",
	}))
	if !errors.Is(err, ErrBadURL) || !strings.Contains(err.Error(), "https_proxy: ") {
		t.Errorf("malformed https_proxy: error %v, want ErrBadURL naming https_proxy", err)
	}
	checkNoSecret(t, err)
}

func TestFromEnvironmentNoProxy(t *testing.T) {
	const proxy = "http://proxy.example:3128"
	for _, tc := range []struct {
		name   string
		m      map[string]string
		target string
		direct bool
	}{
		{"NO_PROXY", map[string]string{"NO_PROXY": "example.com"}, "example.com:443", true},
		{"no_proxy", map[string]string{"no_proxy": "example.com"}, "example.com:443", true},
		{"NO_PROXY before no_proxy", map[string]string{"NO_PROXY": "other.com", "no_proxy": "example.com"}, "example.com:443", false},
		{"no match", map[string]string{"NO_PROXY": "other.com"}, "example.com:443", false},
	} {
		m := map[string]string{"HTTPS_PROXY": proxy}
		for k, v := range tc.m {
			m[k] = v
		}
		u, err := FromEnvironment(tc.target, env(m))
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if direct := u == nil; direct != tc.direct {
			t.Errorf("%s: proxy %v, want direct=%v", tc.name, u, tc.direct)
		}
	}
}

func TestNoProxyMatches(t *testing.T) {
	for _, tc := range []struct {
		list, target string
		want         bool
	}{
		{"", "example.com:443", false},
		{"*", "example.com:443", true},
		{"*", "10.1.2.3:22", true},
		{"other.com, *", "example.com:443", true},

		// Domains: exact, suffix, with or without a leading dot, case and trailing dots aside.
		{"example.com", "example.com:443", true},
		{"example.com", "www.example.com:443", true},
		{"example.com", "a.b.example.com:443", true},
		{".example.com", "example.com:443", true},
		{".example.com", "www.example.com:443", true},
		{"*.example.com", "www.example.com:443", true},
		{"Example.COM", "WWW.example.com.:443", true},
		{"example.com", "notexample.com:443", false},
		{"example.com", "example.com.evil:443", false},
		{"www.example.com", "example.com:443", false},
		{"corp.internal, example.com ,, other", "api.example.com:443", true},

		// IP addresses and CIDR prefixes match IP hosts only.
		{"10.1.2.3", "10.1.2.3:22", true},
		{"10.1.2.3", "10.1.2.4:22", false},
		{"10.0.0.0/8", "10.200.0.1:22", true},
		{"10.0.0.0/8", "11.0.0.1:22", false},
		{"10.0.0.1/8", "10.9.9.9:22", true},
		{"::1", "[::1]:22", true},
		{"[::1]", "[::1]:22", true},
		{"2001:db8::/32", "[2001:db8::42]:443", true},
		{"2001:db8::/32", "[2001:db9::42]:443", false},
		{"10.0.0.0/8", "ten.example:22", false},
		{"10.1.2.3", "::ffff:10.1.2.3", true},

		// Ports.
		{"example.com:443", "example.com:443", true},
		{"example.com:443", "www.example.com:443", true},
		{"example.com:443", "example.com:8443", false},
		{"10.1.2.3:22", "10.1.2.3:22", true},
		{"10.1.2.3:22", "10.1.2.3:23", false},
		{"[::1]:22", "[::1]:22", true},
		{"[::1]:22", "[::1]:80", false},
	} {
		if got := noProxyMatches(tc.list, tc.target); got != tc.want {
			t.Errorf("NO_PROXY=%q, target %q: match=%v, want %v", tc.list, tc.target, got, tc.want)
		}
	}
}
