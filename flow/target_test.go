package flow

import "testing"

func TestParseTarget(t *testing.T) {
	tests := []struct {
		in, want string
		ok       bool
	}{
		{"127.0.0.1:80", "127.0.0.1:80", true},
		{"[::1]:443", "[::1]:443", true},
		{"[::ffff:10.0.0.1]:22", "10.0.0.1:22", true},
		{"Example.COM:8080", "example.com:8080", true},
		{"host:0", "", false},
		{"host:65536", "", false},
		{"host:+1", "", false},
		{"::1:80", "", false},
		{"host", "", false},
		{"[::1]80", "", false},
		{"[fe80::1%eth0]:80", "", false},
		{"bad_host-:80", "", false},
		{":80", "", false},
	}
	for _, tt := range tests {
		got, err := ParseTarget(tt.in)
		if (err == nil) != tt.ok {
			t.Errorf("ParseTarget(%q) error = %v, want ok=%v", tt.in, err, tt.ok)
			continue
		}
		if tt.ok && got.String() != tt.want {
			t.Errorf("ParseTarget(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
