package importtest

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/quicgate/quicgate/quicmux"
)

const (
	fork     = "github.com/quicgate/quicgate/third_party/quic-go"
	upstream = "github.com/quic-go/quic-go"

	// upstreamMaxUDPPayloadSize is what an unpatched quic-go v0.65.0 client advertises
	// (its protocol.MaxPacketBufferSize).
	upstreamMaxUDPPayloadSize = 1452

	// buildTimeout bounds each go command: with a cold build cache, building quicmux and its
	// dependencies takes about a minute on a 2-core machine.
	buildTimeout = 5 * time.Minute
)

// TestImporterBuildsAgainstPatchedQuicGo builds testdata/importer, a program outside this
// module that imports quicmux, and checks that it gets the patched quic-go: its packages
// include the fork and no package of upstream quic-go, and its QUIC client advertises the
// patched packet size.
func TestImporterBuildsAgainstPatchedQuicGo(t *testing.T) {
	goCmd, err := exec.LookPath("go")
	if err != nil {
		t.Skip("the go command is not on PATH")
	}
	env := goEnv(t, goCmd)
	root := filepath.Dir(env["GOMOD"])
	if env["GOMOD"] == "" || env["GOMOD"] == os.DevNull {
		t.Fatalf("not inside quicgate's module (GOMOD=%q)", env["GOMOD"])
	}
	rootMod, err := os.ReadFile(env["GOMOD"])
	if err != nil {
		t.Fatal(err)
	}
	goVersion := regexp.MustCompile(`(?m)^go (\S+)\s*$`).FindSubmatch(rootMod)
	if goVersion == nil {
		t.Fatalf("%s has no go directive", env["GOMOD"])
	}

	// The throwaway module: quicgate required as a published version would be, replaced by
	// this checkout, with quicgate's go.sum so that no checksum has to be looked up.
	dir := t.TempDir()
	mod := "module quicgate.test/importer\n\n" +
		"go " + string(goVersion[1]) + "\n\n" +
		"require github.com/quicgate/quicgate v0.0.0\n\n" +
		"replace github.com/quicgate/quicgate => " + strconv.Quote(root) + "\n"
	writeFile(t, filepath.Join(dir, "go.mod"), []byte(mod))
	sum, err := os.ReadFile(filepath.Join(root, "go.sum"))
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "go.sum"), sum)
	src, err := os.ReadFile(filepath.Join("testdata", "importer", "main.go"))
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "main.go"), src)

	// The go commands run with the test process's GOPROXY, GOMODCACHE and GOFLAGS, plus
	// -mod=mod so that they may complete the throwaway go.mod; outside any workspace.
	flags := []string{"-mod=mod"}
	for _, f := range strings.Fields(env["GOFLAGS"]) {
		if !strings.HasPrefix(f, "-mod=") && !strings.HasPrefix(f, "--mod=") {
			flags = append(flags, f)
		}
	}
	childEnv := append(os.Environ(),
		"GOPROXY="+env["GOPROXY"],
		"GOMODCACHE="+env["GOMODCACHE"],
		"GOFLAGS="+strings.Join(flags, " "),
		"GOWORK=off",
	)

	bin := filepath.Join(dir, "importer")
	if runtime.GOOS == "windows" {
		bin += ".exe"
	}
	runGo(t, goCmd, dir, childEnv, "build", "-o", bin, ".")

	deps := runGo(t, goCmd, dir, childEnv, "list", "-deps", "-f", "{{.ImportPath}}\t{{.Dir}}", ".")
	var sawFork bool
	for line := range strings.Lines(deps) {
		path, pkgDir, _ := strings.Cut(strings.TrimSpace(line), "\t")
		if path == upstream || strings.HasPrefix(path, upstream+"/") {
			t.Errorf("the importer builds upstream quic-go: %s (%s)", path, pkgDir)
		}
		if path == fork {
			sawFork = true
			if want := filepath.Join(root, "third_party", "quic-go"); pkgDir != want {
				t.Errorf("the importer builds %s from %s, want %s", fork, pkgDir, want)
			}
		}
	}
	if !sawFork {
		t.Errorf("the importer's dependencies do not include %s:\n%s", fork, deps)
	}

	// Run it: it loads a quicmux identity and reports the size its QUIC client advertises.
	idDir := filepath.Join(dir, "identity")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, idDir)
	cmd.Env = append(os.Environ(), "QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING=true")
	cmd.WaitDelay = 5 * time.Second
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("importer: %v\nstdout:\n%s\nstderr:\n%s", err, out, stderr.Bytes())
	}
	t.Logf("importer:\n%s", out)

	id, err := quicmux.LoadOrCreateIdentity(idDir)
	if err != nil {
		t.Fatalf("the identity the importer created: %v", err)
	}
	if want := "fingerprint " + id.Fingerprint.String() + "\n"; !strings.Contains(string(out), want) {
		t.Errorf("importer printed no %q", want)
	}
	m := regexp.MustCompile(`(?m)^max_udp_payload_size (\d+)$`).FindSubmatch(out)
	if m == nil {
		t.Fatal("importer printed no max_udp_payload_size")
	}
	if n, _ := strconv.Atoi(string(m[1])); n <= upstreamMaxUDPPayloadSize {
		t.Errorf("the importer's QUIC client advertises max_udp_payload_size %d, upstream quic-go's %d or less: the patch is not in effect", n, upstreamMaxUDPPayloadSize)
	}
}

// goEnv returns the go command's settings in the test process's environment.
func goEnv(t *testing.T, goCmd string) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, goCmd, "env", "-json", "GOMOD", "GOPROXY", "GOMODCACHE", "GOFLAGS").Output()
	if err != nil {
		t.Fatalf("go env: %v", err)
	}
	env := map[string]string{}
	if err := json.Unmarshal(out, &env); err != nil {
		t.Fatalf("go env: %v", err)
	}
	return env
}

// runGo runs a go command in dir and returns its standard output.
func runGo(t *testing.T, goCmd, dir string, env []string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, goCmd, args...)
	cmd.Dir = dir
	cmd.Env = env
	cmd.WaitDelay = 5 * time.Second
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, stderr.Bytes())
	}
	return string(out)
}

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}
