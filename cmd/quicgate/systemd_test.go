package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The systemd units in dist/systemd pass systemd-analyze verify (where it is installed), and
// their command lines are ones quicgate accepts.
func TestSystemdUnits(t *testing.T) {
	units, err := filepath.Glob("../../dist/systemd/*.service")
	if err != nil || len(units) != 2 {
		t.Fatalf("units: %v, %v; want the server's and the client's", units, err)
	}
	analyze, lookErr := exec.LookPath("systemd-analyze")
	for _, u := range units {
		t.Run(filepath.Base(u), func(t *testing.T) {
			data, err := os.ReadFile(u)
			if err != nil {
				t.Fatal(err)
			}
			var execStart string
			for _, line := range strings.Split(string(data), "\n") {
				if v, ok := strings.CutPrefix(line, "ExecStart=/usr/local/bin/quicgate "); ok {
					execStart = v
				}
			}
			if execStart == "" {
				t.Fatal("no ExecStart=/usr/local/bin/quicgate line")
			}
			// The flags exist: with a config file that is missing, the error is about the file.
			_, stderr, code := runQuick(t, strings.Fields(strings.ReplaceAll(execStart, "/etc/quicgate/", t.TempDir()+"/"))...)
			if code == 0 || !strings.Contains(stderr, "--config") || strings.Contains(stderr, "flag provided but not defined") {
				t.Fatalf("%s: exit %d, %s", execStart, code, stderr)
			}
			if lookErr != nil {
				t.Skip("systemd-analyze is not installed")
			}
			local := filepath.Join(t.TempDir(), filepath.Base(u))
			if err := os.WriteFile(local, []byte(strings.ReplaceAll(string(data), "/usr/local/bin/quicgate", quicgateBin)), 0o644); err != nil {
				t.Fatal(err)
			}
			if out, err := exec.Command(analyze, "verify", local).CombinedOutput(); err != nil || len(strings.TrimSpace(string(out))) > 0 {
				t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
			}
		})
	}
}
