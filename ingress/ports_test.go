package ingress

import (
	"errors"
	"testing"
)

func TestParseLocalForward(t *testing.T) {
	tests := []struct {
		in, want string // want "" means a parse error
	}{
		{"8080:127.0.0.1:80", "127.0.0.1:8080:127.0.0.1:80"},
		{"0:example.com:443", "127.0.0.1:0:example.com:443"},
		{"127.0.0.2:8080:10.0.0.1:80", "127.0.0.2:8080:10.0.0.1:80"},
		{"localhost:8080:10.0.0.1:80", "127.0.0.1:8080:10.0.0.1:80"},
		{"*:8080:10.0.0.1:80", "0.0.0.0:8080:10.0.0.1:80"},
		{":8080:10.0.0.1:80", "0.0.0.0:8080:10.0.0.1:80"},
		{"[::1]:8080:[fd00::5]:80", "[::1]:8080:[fd00::5]:80"},
		{"8080:[::1]:22", "127.0.0.1:8080:[::1]:22"},
		{"8080:127.0.0.1", ""},
		{"8080:127.0.0.1:0", ""},
		{"70000:127.0.0.1:80", ""},
		{"x:8080:127.0.0.1:80", ""},
		{"a:b:8080:127.0.0.1:80", ""},
		{"[::1:8080:h:80", ""},
		{"8080:[::1]x:80", ""},
		{"8080:h[x]:80", ""},
		{"8080:bad_host-:80", ""},
		{"", ""},
	}
	for _, tt := range tests {
		f, err := ParseLocalForward(tt.in)
		if tt.want == "" {
			if !errors.Is(err, ErrBadForward) {
				t.Errorf("ParseLocalForward(%q) = %v, %v; want ErrBadForward", tt.in, f, err)
			}
			continue
		}
		if err != nil || f.String() != tt.want {
			t.Errorf("ParseLocalForward(%q) = %q, %v; want %q", tt.in, f, err, tt.want)
		}
	}
}

// FuzzParseLocalForward: a forward that parses prints back to a spec that parses the same.
func FuzzParseLocalForward(f *testing.F) {
	for _, s := range []string{"8080:127.0.0.1:80", "127.0.0.1:0:example.com:443", "[::1]:8080:[fd00::5]:80", "*:1:h:2"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		fw, err := ParseLocalForward(s)
		if err != nil {
			if !errors.Is(err, ErrBadForward) {
				t.Fatalf("error %v does not wrap ErrBadForward", err)
			}
			return
		}
		if !fw.Bind.IsValid() || !fw.Target.IsValid() {
			t.Fatalf("ParseLocalForward(%q) = %+v: invalid result", s, fw)
		}
		again, err := ParseLocalForward(fw.String())
		if err != nil || again != fw {
			t.Fatalf("ParseLocalForward(%q) = %v, but %q parses to %v, %v", s, fw, fw.String(), again, err)
		}
	})
}
