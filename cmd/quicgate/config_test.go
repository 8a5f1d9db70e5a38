package main

import (
	"errors"
	"flag"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/quicgate/quicgate/tun"
)

// testFlags is a flag set shaped like the client's: a string, a duration, a bool, and
// repeatable flags.
func testFlags() (*flag.FlagSet, *string, *time.Duration, *bool, *multiFlag) {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	server := fs.String("server", "", "")
	timeout := fs.Duration("dial-timeout", time.Second, "")
	retry := fs.Bool("retry", false, "")
	var fwd multiFlag
	fs.Var(&fwd, "L", "")
	fs.String("config", "", "")
	return fs, server, timeout, retry, &fwd
}

func TestApplyConfig(t *testing.T) {
	tests := []struct {
		name    string
		yaml    string
		wantErr string // "" means success
	}{
		{"all kinds", "server: 127.0.0.1:4433\ndial-timeout: 3s\nretry: true\nforward:\n  - 8080:127.0.0.1:80\n  - 0:example.com:443\n", ""},
		{"empty", "", ""},
		{"comment only", "# nothing\n", ""},
		{"unknown key", "server: x:1\nlisen: y\n", `cfg.yaml:2: unknown setting "lisen"`},
		{"config in config", "config: other.yaml\n", `cfg.yaml:1: unknown setting "config"`},
		{"bad duration", "server: x:1\n\ndial-timeout: soon\n", `cfg.yaml:3: dial-timeout: "soon": want a duration such as 10s, 1m30s or 2h`},
		{"bad bool", "retry: maybe\n", "cfg.yaml:1: retry"},
		{"duplicate", "server: a:1\nserver: b:2\n", `cfg.yaml:2: "server" is set again (first on line 1)`},
		{"not a mapping", "- a\n- b\n", "cfg.yaml:1: want a mapping"},
		{"nested value", "server:\n  host: x\n", "cfg.yaml:2: server: want a value or a list"},
		{"nested list item", "L:\n  - [a, b]\n", "cfg.yaml:2: L: want a plain value"},
		{"bad yaml", "server: [unclosed\n", "cfg.yaml"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs, server, timeout, retry, fwd := testFlags()
			err := applyConfigData(fs, "cfg.yaml", []byte(tt.yaml), nil)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, errUsage) {
					t.Fatalf("error %v, want a usage error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.name == "all kinds" {
				if *server != "127.0.0.1:4433" || *timeout != 3*time.Second || !*retry || len(*fwd) != 2 || (*fwd)[1] != "0:example.com:443" {
					t.Fatalf("got server=%q timeout=%v retry=%v L=%v", *server, *timeout, *retry, *fwd)
				}
			}
		})
	}
}

// What the command line sets wins over the file; a repeatable flag takes the items of both
// (-L on the command line adds to the file's forward list).
func TestConfigCommandLineWins(t *testing.T) {
	fs, server, timeout, _, fwd := testFlags()
	if err := fs.Parse([]string{"--server", "cli:1", "-L", "1:h:2"}); err != nil {
		t.Fatal(err)
	}
	onCLI := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { onCLI[f.Name] = true })
	err := applyConfigData(fs, "c", []byte("server: file:1\ndial-timeout: 7s\nL: [3:h:4]\n"), onCLI)
	if err != nil {
		t.Fatal(err)
	}
	if *server != "cli:1" || *timeout != 7*time.Second || len(*fwd) != 2 || (*fwd)[0] != "1:h:2" || (*fwd)[1] != "3:h:4" {
		t.Fatalf("server=%q timeout=%v L=%v", *server, *timeout, *fwd)
	}
}

// FuzzConfig: any file either applies or fails with a usage error naming the file.
func FuzzConfig(f *testing.F) {
	for _, s := range []string{"server: a:1\n", "L:\n  - 1:h:2\n", "retry: true\ndial-timeout: 1s\n", "x: [1, {a: b}]\n", ": :\n", "- 1\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data string) {
		fs, _, _, _, _ := testFlags()
		err := applyConfigData(fs, "fuzz.yaml", []byte(data), nil)
		if err != nil && (!errors.Is(err, errUsage) || !strings.Contains(err.Error(), "fuzz.yaml")) {
			t.Fatalf("error %v is not a usage error naming the file", err)
		}
	})
}

// The client's sockets carry the mark its TUN device's rule skips: the table's number,
// DefaultTable's for --route-table 0, and none for the main table.
func TestClientMark(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want uint32
	}{
		{nil, 0},
		{[]string{"--tun", "qg0", "--route", "10.99.0.0/16"}, tun.DefaultTable},
		{[]string{"--tun", "qg0", "--route", "10.99.0.0/16", "--route-table", "0"}, tun.DefaultTable},
		{[]string{"--tun", "qg0", "--route", "10.99.0.0/16", "--route-table", "100"}, 100},
		{[]string{"--tun", "qg0", "--route", "10.99.0.0/16", "--route-table", "254"}, 0},
	} {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		var tf tunFlags
		tf.register(fs)
		if err := fs.Parse(tt.args); err != nil {
			t.Fatal(err)
		}
		c, err := tf.config()
		if err != nil {
			t.Fatalf("%q: %v", tt.args, err)
		}
		if got := (&clientSpec{tunCfg: c}).mark(); got != tt.want {
			t.Errorf("%q: mark %d, want %d", tt.args, got, tt.want)
		}
	}
}
