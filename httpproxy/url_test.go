package httpproxy

import (
	"errors"
	"net/url"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string // the URL's String, "" for no proxy
	}{
		{"none", ""},
		{"NONE", ""},
		{"", ""},
		{"  ", ""},
		{"proxy.example:3128", "http://proxy.example:3128"},
		{"10.0.0.1:8080", "http://10.0.0.1:8080"},
		{"[2001:db8::1]:3128", "http://[2001:db8::1]:3128"},
		{"http://proxy.example", "http://proxy.example:80"},
		{"http://proxy.example/", "http://proxy.example:80"},
		{"HTTP://Proxy.Example:3128", "http://Proxy.Example:3128"},
		{"https://proxy.example", "https://proxy.example:443"},
		{"https://proxy.example:8443", "https://proxy.example:8443"},
		{"http://alice:pa%40ss@proxy.example:3128", "http://alice:pa%40ss@proxy.example:3128"},
		{" http://proxy.example:3128 ", "http://proxy.example:3128"},
	} {
		u, err := Parse(tc.in)
		if err != nil {
			t.Errorf("Parse(%q): %v", tc.in, err)
			continue
		}
		got := ""
		if u != nil {
			got = u.String()
		}
		if got != tc.want {
			t.Errorf("Parse(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestParsePassword(t *testing.T) {
	u, err := Parse("http://alice:pa%40ss@proxy.example")
	if err != nil {
		t.Fatal(err)
	}
	if pass, _ := u.User.Password(); u.User.Username() != "alice" || pass != "pa@ss" {
		t.Errorf("user info %q, %q; want alice, pa@ss", u.User.Username(), pass)
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		in, want string // want: a part of the message
	}{
		{"socks5://proxy.example:1080", `scheme "socks5" is not supported`},
		{"socks5://alice:" + secret + "@proxy.example:1080", `scheme "socks5" is not supported`},
		{"ftp://proxy.example", `scheme "ftp"`},
		{"http://", "no proxy host"},
		{"http://:3128", "no proxy host"},
		{"://proxy.example", "missing protocol scheme"},
		{"http://proxy .example:3128", "invalid character"},
		{"http://proxy.example:http", "invalid port"},
		{"http://proxy.example:99999", `bad port "99999"`},
		{"http://proxy.example:0", `bad port "0"`},
		{"http://alice:" + secret + "@proxy.example:99999", `bad port "99999"`},
		{"http://alice:" + secret + "%zz@proxy.example:3128", "malformed user info"},
		{"http://alice:" + secret + "@proxy.example:3128/path", "no path, query or fragment"},
		{"http://proxy.example:3128?x=1", "no path, query or fragment"},
		{"%%%", "invalid URL escape"},
	} {
		u, err := Parse(tc.in)
		if err == nil {
			t.Errorf("Parse(%q) = %v, want an error", tc.in, u)
			continue
		}
		if !errors.Is(err, ErrBadURL) {
			t.Errorf("Parse(%q): error %v is not ErrBadURL", tc.in, err)
		}
		msg := err.Error()
		if !strings.HasPrefix(msg, "httpproxy: bad proxy URL: ") || !strings.Contains(msg, tc.want) {
			t.Errorf("Parse(%q): error %q, want one saying %q", tc.in, msg, tc.want)
		}
		if strings.Contains(msg, secret) || strings.ContainsAny(msg, "\r\n") {
			t.Errorf("Parse(%q): error %q shows the password or is not one line", tc.in, msg)
		}
	}
}

func TestRedacted(t *testing.T) {
	u, err := Parse("http://alice:" + secret + "@proxy.example:3128")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := Redacted(u), "http://alice:xxxxx@proxy.example:3128"; got != want {
		t.Errorf("Redacted = %q, want %q", got, want)
	}
	if got := Redacted(&url.URL{Scheme: "http", Host: "proxy.example:3128"}); got != "http://proxy.example:3128" {
		t.Errorf("Redacted without user info = %q", got)
	}
	if got := Redacted(nil); got != "" {
		t.Errorf("Redacted(nil) = %q, want \"\"", got)
	}
}
