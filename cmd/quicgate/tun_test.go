package main

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"github.com/quicgate/quicgate/internal/privtest"
)

// topology is two hosts in network namespaces the test makes: A (the client, with the TUN)
// and B (the server, and destinations on 10.99.0.5 and fd00:99::5 on its loopback), joined
// by a veth pair. Cleanup deletes both namespaces, which removes everything in them.
type topology struct {
	t    *testing.T
	a, b string // namespace names
}

const (
	addrA  = "10.200.0.1"
	addrB  = "10.200.0.2"
	dst4   = "10.99.0.5"
	dst6   = "fd00:99::5"
	tunDev = "qg0"
)

func sh(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func newTopology(t *testing.T) *topology {
	t.Helper()
	id := strconv.Itoa(os.Getpid())
	tp := &topology{t: t, a: "qgA" + id, b: "qgB" + id}
	addNetns(t, tp.a, tp.b)
	sh(t, "ip", "link", "add", "qgva"+id, "netns", tp.a, "type", "veth", "peer", "name", "qgvb"+id, "netns", tp.b)
	for _, c := range [][]string{
		{tp.a, "ip", "link", "set", "lo", "up"},
		{tp.a, "ip", "link", "set", "qgva" + id, "name", "veth0"},
		{tp.a, "ip", "addr", "add", addrA + "/24", "dev", "veth0"},
		{tp.a, "ip", "addr", "add", "fd00:200::1/64", "dev", "veth0", "nodad"},
		{tp.a, "ip", "link", "set", "veth0", "up"},
		{tp.b, "ip", "link", "set", "lo", "up"},
		{tp.b, "ip", "link", "set", "qgvb" + id, "name", "veth0"},
		{tp.b, "ip", "addr", "add", addrB + "/24", "dev", "veth0"},
		{tp.b, "ip", "addr", "add", "fd00:200::2/64", "dev", "veth0", "nodad"},
		{tp.b, "ip", "link", "set", "veth0", "up"},
		{tp.b, "ip", "addr", "add", dst4 + "/32", "dev", "lo"},
		{tp.b, "ip", "addr", "add", dst6 + "/128", "dev", "lo"},
	} {
		sh(t, append([]string{"ip", "netns", "exec"}, c...)...)
	}
	return tp
}

// addNetns makes the network namespaces names, which the test's cleanup deletes with
// everything in them. The cleanup comes first, so that it deletes those made before a
// failure too.
func addNetns(t *testing.T, names ...string) {
	t.Helper()
	t.Cleanup(func() {
		for _, ns := range names {
			_ = exec.Command("ip", "netns", "del", ns).Run()
		}
	})
	for _, ns := range names {
		sh(t, "ip", "netns", "add", ns)
	}
}

// in runs a command inside namespace ns.
func in(ns string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...)
}

// startSelfIn starts this test binary inside ns as the helper env asks for (see TestMain),
// as the process "name in ns".
func startSelfIn(t *testing.T, ns, name string, env ...string) *process {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := in(ns, self)
	cmd.Env = append(os.Environ(), env...)
	return startProc(t, name+" in "+ns, cmd)
}

// startIn starts a long-running quicgate inside ns, as start does on the host.
func startIn(t *testing.T, ns string, args ...string) *process {
	t.Helper()
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns, quicgateBin}, append(args, "--log-format", "json")...)...)
	return startProc(t, args[0]+" in "+ns, cmd)
}

// startHTTPIn serves the demo's HTTP handler on addrs inside ns, from this test binary.
func startHTTPIn(t *testing.T, ns string, addrs ...string) *process {
	t.Helper()
	p := startSelfIn(t, ns, "http", "QUICGATE_TEST_HTTP="+strings.Join(addrs, ","))
	for range addrs {
		p.waitFor(t, "http serving")
	}
	return p
}

// serveTestHTTP is this test binary run as the destination web server (see TestMain).
func serveTestHTTP(addrs []string) int {
	errc := make(chan error, len(addrs))
	for _, a := range addrs {
		ln, err := net.Listen("tcp", a)
		if err != nil {
			fmt.Fprintf(os.Stderr, "{\"msg\":\"listen failed\",\"error\":%q}\n", err.Error())
			return 1
		}
		fmt.Fprintf(os.Stderr, "{\"msg\":\"http serving\",\"addr\":%q}\n", ln.Addr().String())
		mux := http.NewServeMux()
		mux.Handle("/", demoHandler())
		mux.HandleFunc("/cut", serveCut)
		mux.HandleFunc("/paced", servePaced)
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go func() { errc <- srv.Serve(ln) }()
	}
	<-errc
	return 1
}

// serveCut answers with a body delimited by the end of the connection, and cuts it short
// with a reset after 1 MiB: a client that saw a FIN instead would take the body for complete.
func serveCut(w http.ResponseWriter, _ *http.Request) {
	c, buf, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	defer c.Close()
	_, _ = buf.WriteString("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
	_, _ = io.Copy(buf, io.LimitReader(newDemoBody(), 1<<20))
	_ = buf.Flush()
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
}

// curlIn runs curl with args inside namespace ns and returns its output, or an error that
// has curl's exit status and message.
func curlIn(ns string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns, "curl", "--silent", "--show-error", "--max-time", "50"}, args...)...)
	out, err := cmd.Output()
	if ee, ok := err.(*exec.ExitError); ok {
		return string(out), fmt.Errorf("curl exit %d: %s", ee.ExitCode(), ee.Stderr)
	}
	return string(out), err
}

// TestTUNEndToEnd: an unmodified program (curl) on host A reaches destinations on host B
// through the TUN device, the gVisor netstack and the QUIC tunnel.
func TestTUNEndToEnd(t *testing.T) {
	privtest.Require(t, "ip", "curl")
	tp := newTopology(t)
	dir := t.TempDir()
	p := newPairIn(t, dir)

	// Host B: destinations (the demo's HTTP handler) and the server.
	startHTTPIn(t, tp.b, dst4+":80", "["+dst6+"]:80")
	srv := startIn(t, tp.b, "server", "--listen", addrB+":4433", "--state-dir", filepath.Join(dir, "server"),
		"--authorized-clients", p.auth, "--allow", "10.99.0.0/16", "--allow", "fd00:99::/64")
	srv.waitFor(t, "server ready")

	// Host A: the client with its TUN, and a capture on its veth.
	capture := captureProtocols(t, tp.a, "veth0")
	cli := startIn(t, tp.a, "client", "--server", addrB+":4433", "--state-dir", filepath.Join(dir, "client"), "--pin", p.pin,
		"--tun", tunDev, "--tun-addr", "10.77.0.1/24", "--tun-addr", "fd00:77::1/64", "--route", "10.99.0.0/16", "--route", "fd00:99::/64",
		"-L", "0:"+dst4+":80")
	cli.waitFor(t, "tun ready")
	local := cli.waitFor(t, "forwarding")["listen"].(string)

	curl := func(args ...string) (string, error) { return curlIn(tp.a, args...) }

	t.Run("small page", func(t *testing.T) {
		for _, url := range []string{"http://" + dst4 + "/", "http://[" + dst6 + "]/"} {
			out, err := curl("-g", url)
			if err != nil || !strings.HasPrefix(out, "hello from the far side") {
				t.Fatalf("%s: %q, %v", url, out, err)
			}
		}
	})
	t.Run("-L beside the TUN", func(t *testing.T) {
		out, err := curl("http://" + local + "/")
		if err != nil || !strings.HasPrefix(out, "hello from the far side") {
			t.Fatalf("through -L in the same process: %q, %v", out, err)
		}
		if n := cli.count("connected to server"); n != 1 {
			t.Fatalf("the client connected %d times; TUN and -L should share one connection", n)
		}
	})
	t.Run("large body", func(t *testing.T) {
		const size = 64 << 20
		want := demoBodySum(size)
		for _, url := range []string{"http://" + dst4 + "/bytes?n=", "http://[" + dst6 + "]/bytes?n="} {
			start := time.Now()
			out, err := curl("-g", "-o", "-", url+strconv.Itoa(size))
			if err != nil {
				t.Fatal(err)
			}
			if got := sha256.Sum256([]byte(out)); len(out) != size || got != want {
				t.Fatalf("%s: %d bytes, SHA-256 %s, want %s", url, len(out), hex.EncodeToString(got[:8]), hex.EncodeToString(want[:8]))
			}
			t.Logf("%s: %d MiB in %v (%.2f Gbit/s), SHA-256 matches", url, size>>20, time.Since(start).Round(time.Millisecond), size*8/time.Since(start).Seconds()/1e9)
		}
	})
	t.Run("parallel", func(t *testing.T) {
		args := []string{"--parallel", "--parallel-max", "64", "-w", "%{http_code}\n"}
		for i := range 200 {
			// -o applies to one URL: each needs its own, or bodies land among the codes.
			args = append(args, "-o", "/dev/null", fmt.Sprintf("http://%s/?%d", dst4, i))
		}
		out, err := curl(args...)
		if err != nil {
			t.Fatal(err)
		}
		codes := strings.Fields(out)
		ok := 0
		for _, c := range codes {
			if c == "200" {
				ok++
			}
		}
		if len(codes) != 200 || ok != 200 {
			t.Fatalf("%d codes, %d of them 200; want 200 fetches that all got 200", len(codes), ok)
		}
	})
	t.Run("reset mid-body", func(t *testing.T) {
		// The destination resets the connection: curl must fail (exit 56, "Recv failure:
		// Connection reset by peer"), through the TUN as through -L, never exit 0 with a
		// truncated body.
		for _, url := range []string{"http://" + dst4 + "/cut", "http://" + local + "/cut"} {
			out, err := curl("-o", "-", url)
			if err == nil || !strings.Contains(err.Error(), "exit 56") {
				t.Fatalf("%s: %d bytes, %v; want curl's receive failure (exit 56)", url, len(out), err)
			}
			if !strings.Contains(strings.ToLower(err.Error()), "reset") {
				t.Fatalf("%s: %v; want a connection reset", url, err)
			}
		}
	})
	t.Run("refused", func(t *testing.T) {
		for _, url := range []string{"http://" + dst4 + ":81/", "http://[" + dst6 + "]:81/"} {
			start := time.Now()
			_, err := curl("-g", url)
			if err == nil || !strings.Contains(err.Error(), "exit 7") {
				t.Fatalf("%s: %v, want curl's 'could not connect' (exit 7)", url, err)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Fatalf("%s: refusal took %v", url, d)
			}
		}
	})

	counts := capture.stop()
	t.Logf("frames on A's veth by protocol: %v", counts)
	if counts["tcp"] != 0 {
		t.Fatalf("%d TCP frames crossed the veth: the traffic was not tunnelled", counts["tcp"])
	}
	if counts["udp"] < 1000 {
		t.Fatalf("only %d UDP frames crossed the veth", counts["udp"])
	}

	cli.stop(t)
	if out, err := in(tp.a, "ip", "link", "show", tunDev).CombinedOutput(); err == nil {
		t.Fatalf("%s still exists after the client exited:\n%s", tunDev, out)
	}
	for _, fam := range []string{"-4", "-6"} {
		out := sh(t, "ip", "netns", "exec", tp.a, "ip", fam, "route", "show")
		if strings.Contains(out, "10.99.") || strings.Contains(out, "fd00:99") || strings.Contains(out, tunDev) {
			t.Fatalf("routes left after the client exited:\n%s", out)
		}
	}
	srv.stop(t)
}

// Without the privilege, --tun fails with one line that names what is missing: CAP_NET_ADMIN,
// or access to /dev/net/tun.
func TestTUNWithoutPrivilege(t *testing.T) {
	privtest.Require(t) // root is needed to drop to another user
	p := newPairIn(t, t.TempDir())
	dir, err := os.MkdirTemp("", "quicgate-nobody")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	_ = os.Chmod(dir, 0o777)
	nobody := &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	// The identity exists already, so the one line is about the privilege.
	mk := exec.Command(quicgateBin, "fingerprint", "--state-dir", filepath.Join(dir, "state"))
	mk.SysProcAttr = nobody
	if out, err := mk.CombinedOutput(); err != nil {
		t.Fatalf("fingerprint as nobody: %v\n%s", err, out)
	}
	cmd := exec.Command(quicgateBin, "client", "--server", "127.0.0.1:1", "--state-dir", filepath.Join(dir, "state"), "--pin", p.pin,
		"--tun", "qgpriv0", "--tun-addr", "10.77.0.1/24", "--route", "10.99.0.0/16")
	cmd.SysProcAttr = nobody
	out, err := cmd.CombinedOutput()
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() != 1 {
		t.Fatalf("exit %v, want 1:\n%s", err, out)
	}
	// Where /dev/net/tun is open to everyone (mode 0666, most hosts) the missing capability
	// is what stops nobody; where it is not (0600 on this project's machines), the file mode.
	want := "CAP_NET_ADMIN"
	if fi, err := os.Stat("/dev/net/tun"); err == nil && fi.Mode().Perm()&0o006 != 0o006 {
		want = "/dev/net/tun is not open to this user"
	}
	if !strings.Contains(string(out), want) || strings.Count(strings.TrimSpace(string(out)), "\n") != 0 {
		t.Fatalf("want one line saying %q, got:\n%s", want, out)
	}
}

func newPairIn(t *testing.T, dir string) pair {
	t.Helper()
	p := pair{dir: dir, pin: fingerprint(t, filepath.Join(dir, "server")), clientFP: fingerprint(t, filepath.Join(dir, "client"))}
	p.auth = filepath.Join(dir, "authorized_clients")
	if err := os.WriteFile(p.auth, []byte(p.clientFP+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// protoCapture counts the frames leaving and entering an interface by IP protocol, from an
// AF_PACKET socket opened inside the interface's namespace.
type protoCapture struct {
	fd     int
	mu     sync.Mutex
	counts map[string]int
	done   chan struct{}
}

func captureProtocols(t *testing.T, ns, dev string) *protoCapture {
	t.Helper()
	var fd int
	err := func() error {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		orig, err := netns.Get()
		if err != nil {
			return err
		}
		defer orig.Close()
		target, err := netns.GetFromName(ns)
		if err != nil {
			return err
		}
		defer target.Close()
		if err := netns.Set(target); err != nil {
			return err
		}
		defer netns.Set(orig)
		ifi, err := net.InterfaceByName(dev)
		if err != nil {
			return err
		}
		const ethPAllNetOrder = 0x0300 // htons(ETH_P_ALL)
		proto := ethPAllNetOrder
		fd, err = syscall.Socket(syscall.AF_PACKET, syscall.SOCK_RAW, proto)
		if err != nil {
			return err
		}
		return syscall.Bind(fd, &syscall.SockaddrLinklayer{Protocol: uint16(proto), Ifindex: ifi.Index})
	}()
	if err != nil {
		t.Fatalf("capture on %s in %s: %v", dev, ns, err)
	}
	c := &protoCapture{fd: fd, counts: map[string]int{}, done: make(chan struct{})}
	tv := syscall.Timeval{Usec: 100000}
	_ = syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &tv)
	go c.run()
	t.Cleanup(func() { c.stop() })
	return c
}

func (c *protoCapture) run() {
	defer close(c.done)
	buf := make([]byte, 65536)
	for {
		n, _, err := syscall.Recvfrom(c.fd, buf, 0)
		if err != nil {
			if err == syscall.EAGAIN || err == syscall.EINTR {
				c.mu.Lock()
				stopped := c.counts == nil
				c.mu.Unlock()
				if stopped {
					return
				}
				continue
			}
			return
		}
		name := frameProto(buf[:n])
		c.mu.Lock()
		if c.counts == nil {
			c.mu.Unlock()
			return
		}
		c.counts[name]++
		if name == "udp" && isDNS(buf[:n]) {
			c.counts["udp/53"]++
		}
		c.mu.Unlock()
	}
}

// stop ends the capture and returns the counts.
func (c *protoCapture) stop() map[string]int {
	c.mu.Lock()
	counts := c.counts
	c.counts = nil
	c.mu.Unlock()
	if counts != nil {
		<-c.done
		_ = syscall.Close(c.fd)
	}
	return counts
}

// isDNS reports whether a UDP frame goes to or comes from port 53.
func isDNS(f []byte) bool {
	off := 14 + 40 // IPv6: a fixed header (no extension headers here)
	if binary.BigEndian.Uint16(f[12:14]) == 0x0800 {
		off = 14 + int(f[14]&0x0f)*4
	}
	if len(f) < off+4 {
		return false
	}
	return binary.BigEndian.Uint16(f[off:off+2]) == 53 || binary.BigEndian.Uint16(f[off+2:off+4]) == 53
}

// frameProto names an Ethernet frame's transport protocol.
func frameProto(f []byte) string {
	if len(f) < 14 {
		return "short"
	}
	var proto byte
	switch binary.BigEndian.Uint16(f[12:14]) {
	case 0x0800:
		if len(f) < 14+20 {
			return "short"
		}
		proto = f[14+9]
	case 0x86dd:
		if len(f) < 14+40 {
			return "short"
		}
		proto = f[14+6]
	case 0x0806:
		return "arp"
	default:
		return "other"
	}
	switch proto {
	case 6:
		return "tcp"
	case 17:
		return "udp"
	case 1, 58:
		return "icmp"
	}
	return "ip-" + strconv.Itoa(int(proto))
}
