package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/quicgate/quicgate/internal/privtest"
)

// UDP through a real kernel TUN: the apps on both ends are this test binary run again as a
// helper, with kernel UDP sockets, so what is checked is what a Linux app sees: the echo's
// source (a connected socket takes packets from its peer only), packets the app's kernel
// fragments over the TUN's MTU and reassembles from the netstack's fragments, and the
// netstack's ICMP port unreachable, which the kernel must match to the app's socket
// (ECONNREFUSED) and report with its type, code and origin (IP_RECVERR).

// udpHelperEnv marks this test binary run as a UDP helper rather than as tests: "echo" serves
// UDP echo on the addresses in udpEchoEnv, "probe" runs the probes in udpProbesEnv and prints
// their results on stdout. The helper starts from init, not from TestMain (cli_test.go's,
// which builds quicgate first): under `quicgate run` it runs as nobody, who could not build.
const (
	udpHelperEnv = "QUICGATE_TEST_UDP"
	udpEchoEnv   = "QUICGATE_TEST_UDP_ECHO"
	udpProbesEnv = "QUICGATE_TEST_UDP_PROBES"
)

func init() {
	switch os.Getenv(udpHelperEnv) {
	case "echo":
		os.Exit(serveUDPEcho(strings.Split(os.Getenv(udpEchoEnv), ",")))
	case "probe":
		os.Exit(runUDPProbes(os.Getenv(udpProbesEnv), os.Stdout))
	}
}

const (
	// udpRetry is how long a probe waits for an answer before it sends its packet again
	// (UDP may lose it, and a flow's first packets wait for the server's answer).
	udpRetry = 250 * time.Millisecond
	// udpProbeLimit bounds one probe's exchange: far above the round trips it needs.
	udpProbeLimit = 20 * time.Second
	// udpEchoPort is where the echo servers listen; the closed port is in the allowed range
	// with nothing behind it, and udpDeniedPort has an echo server the rules keep out of reach.
	udpEchoPort   = "7007"
	udpClosedPort = "7999"
	udpDeniedPort = "8000"
)

// serveUDPEcho is the helper that sends every packet back to its source, from the address
// it came to (each socket is bound to one address).
func serveUDPEcho(addrs []string) int {
	errc := make(chan error, len(addrs))
	for _, a := range addrs {
		ap, err := netip.ParseAddrPort(a)
		if err != nil {
			fmt.Fprintf(os.Stderr, "{\"msg\":\"bad address\",\"error\":%q}\n", err.Error())
			return 1
		}
		c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(ap))
		if err != nil {
			fmt.Fprintf(os.Stderr, "{\"msg\":\"listen failed\",\"error\":%q}\n", err.Error())
			return 1
		}
		fmt.Fprintf(os.Stderr, "{\"msg\":\"udp echo serving\",\"addr\":%q}\n", c.LocalAddr().String())
		go func() {
			buf := make([]byte, 1<<16)
			for {
				n, from, err := c.ReadFromUDPAddrPort(buf)
				if err != nil {
					errc <- err
					return
				}
				if n > 60000 {
					fmt.Fprintf(os.Stderr, "{\"msg\":\"udp echo large packet\",\"size\":%d,\"from\":%q}\n", n, from.String())
				}
				// "ask N ..." asks for an N-byte packet before the echo.
				if f := strings.Fields(string(buf[:min(n, 32)])); len(f) > 1 && f[0] == "ask" {
					if size, err := strconv.Atoi(f[1]); err == nil {
						_, _ = c.WriteToUDPAddrPort(udpPayload("answer", size), from)
					}
				}
				_, _ = c.WriteToUDPAddrPort(buf[:n], from)
			}
		}()
	}
	err := <-errc
	fmt.Fprintf(os.Stderr, "{\"msg\":\"udp echo failed\",\"error\":%q}\n", err.Error())
	return 1
}

// udpProbe is one exchange the probe helper makes from a socket of its own (a 5-tuple of
// its own, so a flow of its own through the TUN).
type udpProbe struct {
	Name string
	Addr string // the destination, ip:port
	Size int    // the packet's size
	// Unconnected sends with sendto and reads with recvfrom, which report any source: the
	// echo's source is then checked, not filtered by the kernel.
	Unconnected bool
	Want        string // "echo" or "refused"
	// RecvErr sets IP_RECVERR (IPV6_RECVERR), and reads the ICMP error's details from the
	// socket's error queue after the refusal.
	RecvErr bool
	// Again sends once more after a refusal, on the same socket: the same 5-tuple's next
	// packet opens a new flow, refused again.
	Again bool
	// Before is the size of a packet sent before each try's, and Ask that of a packet the
	// echo server sends before its echo: either may come back before the echo, whole, or
	// not at all (too large for the tunnel), but never cut. Packets that large go on the
	// flow's stream, in order, as the echo does when Size is too large for a datagram.
	Before, Ask int
}

// udpProbeResult is what the app saw.
type udpProbeResult struct {
	Name  string
	Local string // the probe's socket
	Got   string // "echo", "refused", or what happened instead
	From  string // the echo's source
	Sends int
	ICMP  *icmpReport `json:",omitempty"`
	Again string      `json:",omitempty"` // Got of the second round
	// Extra says whether the Before or Ask packet came back (whole) before the echo.
	Extra bool `json:",omitempty"`
}

// icmpReport is a sock_extended_err from the error queue, and its offender's address.
type icmpReport struct {
	Errno, Origin, Type, Code int
	Offender                  string
}

func runUDPProbes(spec string, out io.Writer) int {
	var probes []udpProbe
	if err := json.Unmarshal([]byte(spec), &probes); err != nil {
		fmt.Fprintf(os.Stderr, "probes: %v\n", err)
		return 1
	}
	results := make([]udpProbeResult, 0, len(probes))
	for _, p := range probes {
		results = append(results, runUDPProbe(p))
	}
	if err := json.NewEncoder(out).Encode(results); err != nil {
		return 1
	}
	return 0
}

func runUDPProbe(p udpProbe) udpProbeResult {
	r := udpProbeResult{Name: p.Name}
	dst, err := netip.ParseAddrPort(p.Addr)
	if err != nil {
		r.Got = err.Error()
		return r
	}
	network := "udp4"
	if dst.Addr().Is6() {
		network = "udp6"
	}
	var c *net.UDPConn
	if p.Unconnected {
		c, err = net.ListenUDP(network, nil)
	} else {
		c, err = net.DialUDP(network, nil, net.UDPAddrFromAddrPort(dst))
	}
	if err != nil {
		r.Got = "socket: " + err.Error()
		return r
	}
	defer c.Close()
	r.Local = c.LocalAddr().String()
	if p.RecvErr {
		if err := setRecvErr(c, dst.Addr().Is6()); err != nil {
			r.Got = "IP_RECVERR: " + err.Error()
			return r
		}
	}
	// A payload of its own per probe: another probe's echo could not pass for this one's.
	msg := udpPayload(p.Name, p.Size)
	var before, extra []byte
	switch {
	case p.Before > 0:
		before = udpPayload("before "+p.Name, p.Before)
		extra = before
	case p.Ask > 0:
		copy(msg, fmt.Sprintf("ask %d ", p.Ask))
		extra = udpPayload("answer", p.Ask)
	}
	var sends int
	r.Got, r.From, sends, r.Extra = udpExchange(c, dst, before, msg, extra, p.Unconnected)
	r.Sends += sends
	if r.Got == "refused" && p.RecvErr {
		r.ICMP, err = readICMPError(c)
		if err != nil {
			r.Got = "refused, but the error queue: " + err.Error()
		}
	}
	if r.Got == "refused" && p.Again {
		r.Again, _, sends, _ = udpExchange(c, dst, nil, msg, nil, p.Unconnected)
		r.Sends += sends
	}
	return r
}

// udpPayload is a packet of size bytes that repeats name.
func udpPayload(name string, size int) []byte {
	return bytes.Repeat([]byte(name+" "), size/(len(name)+1)+1)[:size]
}

// udpExchange sends msg (after before, if any) until an answer comes, again every udpRetry
// for up to udpProbeLimit, and says what the answer was: "echo" (with its source),
// "refused" (ECONNREFUSED from a send or a receive), or what else happened. A packet equal
// to extra may come before the echo (sawExtra); any other is wrong.
func udpExchange(c *net.UDPConn, dst netip.AddrPort, before, msg, extra []byte, unconnected bool) (got, from string, sends int, sawExtra bool) {
	send := func(p []byte) error {
		var err error
		if unconnected {
			_, err = c.WriteToUDPAddrPort(p, dst)
		} else {
			_, err = c.Write(p)
		}
		return err
	}
	buf := make([]byte, 1<<16)
	deadline := time.Now().Add(udpProbeLimit)
	for time.Now().Before(deadline) {
		var err error
		if before != nil {
			err = send(before)
		}
		if err == nil {
			err = send(msg)
		}
		sends++
		if errors.Is(err, syscall.ECONNREFUSED) {
			return "refused", "", sends, sawExtra
		}
		if err != nil {
			return "send: " + err.Error(), "", sends, sawExtra
		}
		_ = c.SetReadDeadline(time.Now().Add(udpRetry))
		for {
			n, src, err := c.ReadFromUDPAddrPort(buf)
			var ne net.Error
			switch {
			case errors.As(err, &ne) && ne.Timeout():
			case errors.Is(err, syscall.ECONNREFUSED):
				return "refused", "", sends, sawExtra
			case err != nil:
				return "receive: " + err.Error(), "", sends, sawExtra
			case extra != nil && bytes.Equal(buf[:n], extra):
				sawExtra = true
				continue
			case !bytes.Equal(buf[:n], msg):
				what := fmt.Sprintf("%d bytes that are not the %d-byte echo", n, len(msg))
				for _, p := range [][]byte{msg, extra} {
					if n < len(p) && bytes.Equal(buf[:n], p[:n]) {
						what = fmt.Sprintf("the first %d bytes of a %d-byte packet", n, len(p))
					}
				}
				return what, src.String(), sends, sawExtra
			default:
				return "echo", netip.AddrPortFrom(src.Addr().Unmap(), src.Port()).String(), sends, sawExtra
			}
			break // the wait is over: send again
		}
	}
	return fmt.Sprintf("no answer within %v", udpProbeLimit), "", sends, sawExtra
}

func setRecvErr(c *net.UDPConn, v6 bool) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		if v6 {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_IPV6, unix.IPV6_RECVERR, 1)
		} else {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_RECVERR, 1)
		}
	})
	return errors.Join(err, serr)
}

// readICMPError takes the first error from the socket's error queue. The kernel queues it
// before it sets the error a receive reports, so after ECONNREFUSED it is there already.
func readICMPError(c *net.UDPConn) (*icmpReport, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	buf, oob := make([]byte, 256), make([]byte, 256)
	var oobn int
	var rerr error
	err = rc.Control(func(fd uintptr) {
		_, oobn, _, _, rerr = unix.Recvmsg(int(fd), buf, oob, unix.MSG_ERRQUEUE|unix.MSG_DONTWAIT)
	})
	if err = errors.Join(err, rerr); err != nil {
		return nil, err
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil {
		return nil, err
	}
	for _, m := range msgs {
		if !(m.Header.Level == unix.SOL_IP && m.Header.Type == unix.IP_RECVERR) &&
			!(m.Header.Level == unix.SOL_IPV6 && m.Header.Type == unix.IPV6_RECVERR) {
			continue
		}
		d := m.Data
		if len(d) < 16+4 {
			return nil, fmt.Errorf("a %d-byte extended error", len(d))
		}
		ne := binary.NativeEndian
		r := &icmpReport{Errno: int(ne.Uint32(d)), Origin: int(d[4]), Type: int(d[5]), Code: int(d[6])}
		// The offender (SO_EE_OFFENDER) follows: a sockaddr_in or sockaddr_in6.
		switch off := d[16:]; ne.Uint16(off) {
		case unix.AF_INET:
			if len(off) >= 8 {
				r.Offender = netip.AddrFrom4([4]byte(off[4:8])).String()
			}
		case unix.AF_INET6:
			if len(off) >= 24 {
				r.Offender = netip.AddrFrom16([16]byte(off[8:24])).String()
			}
		}
		return r, nil
	}
	return nil, fmt.Errorf("no IP_RECVERR message among %d", len(msgs))
}

// startUDPEchoIn runs the echo helper on addrs inside ns.
func startUDPEchoIn(t *testing.T, ns string, addrs ...string) *process {
	t.Helper()
	p := startSelfIn(t, ns, "udp echo", udpHelperEnv+"=echo", udpEchoEnv+"="+strings.Join(addrs, ","))
	for range addrs {
		p.waitFor(t, "udp echo serving")
	}
	return p
}

// probeUDP runs the probe helper as cmd (which runs this test binary) and returns its
// results by probe name.
func probeUDP(t *testing.T, cmd *exec.Cmd, probes ...udpProbe) map[string]udpProbeResult {
	t.Helper()
	spec, err := json.Marshal(probes)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Env = append(os.Environ(), udpHelperEnv+"=probe", udpProbesEnv+"="+string(spec))
	stdout, stderr, code := result(t, cmd)
	if code != 0 {
		t.Fatalf("the probe helper: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	// Under quicgate run, the JSON is the last line of the command's output.
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	var results []udpProbeResult
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &results); err != nil || len(results) != len(probes) {
		t.Fatalf("the probe helper's output (%v):\n%s\nstderr:\n%s", err, stdout, stderr)
	}
	byName := map[string]udpProbeResult{}
	for _, r := range results {
		byName[r.Name] = r
		line, _ := json.Marshal(r)
		t.Logf("%s", line)
	}
	return byName
}

// checkProbe checks what the app saw against the probe's Want: an echo from the very
// address and port it sent to; or a refusal, and with RecvErr an ICMP port unreachable
// from the destination's address.
func checkProbe(t *testing.T, p udpProbe, r udpProbeResult) {
	t.Helper()
	if r.Got != p.Want {
		what := fmt.Sprintf("%d bytes to %s from %s", p.Size, p.Addr, r.Local)
		switch {
		case p.Before > 0:
			what += fmt.Sprintf(", after %d bytes that must come back whole or not at all", p.Before)
		case p.Ask > 0:
			what += fmt.Sprintf(", asking for %d bytes first that must come whole or not at all", p.Ask)
		}
		t.Errorf("%s (%s): got %q, want %q", p.Name, what, r.Got, p.Want)
		return
	}
	dst := netip.MustParseAddrPort(p.Addr)
	switch p.Want {
	case "echo":
		if from, err := netip.ParseAddrPort(r.From); err != nil || from != dst {
			t.Errorf("%s: the echo came from %q, want %s", p.Name, r.From, dst)
		}
	case "refused":
		if p.Again && r.Again != "refused" {
			t.Errorf("%s: the same 5-tuple's next packet got %q, want refused again", p.Name, r.Again)
		}
		if !p.RecvErr {
			return
		}
		want := icmpReport{Errno: int(unix.ECONNREFUSED), Origin: unix.SO_EE_ORIGIN_ICMP, Type: 3, Code: 3, Offender: dst.Addr().String()}
		if dst.Addr().Is6() {
			want.Origin, want.Type, want.Code = unix.SO_EE_ORIGIN_ICMP6, 1, 4
		}
		if r.ICMP == nil || *r.ICMP != want {
			t.Errorf("%s: the error queue holds %+v, want %+v (port unreachable from the destination)", p.Name, r.ICMP, want)
		}
	}
}

// echoProbes are exchanges with the echo servers on dst4 and dst6: small packets on a
// connected and an unconnected socket, and the sizes given.
func echoProbes(sizes ...int) []udpProbe {
	var ps []udpProbe
	for _, dst := range []string{dst4 + ":" + udpEchoPort, "[" + dst6 + "]:" + udpEchoPort} {
		fam := "v4"
		if strings.HasPrefix(dst, "[") {
			fam = "v6"
		}
		ps = append(ps,
			udpProbe{Name: "echo-" + fam, Addr: dst, Size: 32, Want: "echo"},
			udpProbe{Name: "echo-unconnected-" + fam, Addr: dst, Size: 32, Unconnected: true, Want: "echo"})
		for _, size := range sizes {
			ps = append(ps, udpProbe{Name: fmt.Sprintf("echo-%d-%s", size, fam), Addr: dst, Size: size, Want: "echo"})
		}
	}
	return ps
}

// oversizeProbes send IPv6 packets of 65,527 bytes (IPv6's largest UDP payload without
// jumbograms), beyond the 65,507 a flow carries, one way and the other: each must reach the
// other end whole or not at all, and the echo sent after it (on the flow's stream, in
// order behind it) must come back.
func oversizeProbes() []udpProbe {
	dst := "[" + dst6 + "]:" + udpEchoPort
	return []udpProbe{
		{Name: "oversize-to-target-v6", Addr: dst, Size: 20000, Before: 65527, Want: "echo"},
		{Name: "oversize-from-target-v6", Addr: dst, Size: 20000, Ask: 65527, Want: "echo"},
	}
}

// refusedProbes go to port on dst4 and dst6: refused, on a plain connected socket (twice),
// and with the ICMP's details read from IP_RECVERR's error queue.
func refusedProbes(what, port string) []udpProbe {
	var ps []udpProbe
	for _, dst := range []string{dst4 + ":" + port, "[" + dst6 + "]:" + port} {
		fam := "v4"
		if strings.HasPrefix(dst, "[") {
			fam = "v6"
		}
		ps = append(ps,
			udpProbe{Name: what + "-" + fam, Addr: dst, Size: 32, Want: "refused", Again: true},
			udpProbe{Name: what + "-recverr-" + fam, Addr: dst, Size: 32, Want: "refused", RecvErr: true})
	}
	return ps
}

// TestTUNUDPEndToEnd: Linux UDP apps on host A reach UDP servers on host B through the TUN,
// the netstack and the tunnel (TUN MTU 1500, so that large packets are fragmented on the
// device both ways); a target the server's rules deny and a closed port reach the app as
// ICMP port unreachable that its kernel accepts.
func TestTUNUDPEndToEnd(t *testing.T) {
	privtest.Require(t, "ip")
	tp := newTopology(t)
	dir := t.TempDir()
	p := newPairIn(t, dir)

	// Host B: echo servers, also behind the port the rules deny (so that silence or a
	// refusal there is the rules' doing), and the server, which may reach UDP ports
	// 7000-7999 only.
	startUDPEchoIn(t, tp.b, dst4+":"+udpEchoPort, "["+dst6+"]:"+udpEchoPort, dst4+":"+udpDeniedPort, "["+dst6+"]:"+udpDeniedPort)
	srv := startIn(t, tp.b, "server", "--listen", addrB+":4433", "--state-dir", filepath.Join(dir, "server"),
		"--authorized-clients", p.auth, "--allow", "udp:10.99.0.0/16:7000-7999", "--allow", "udp:fd00:99::/64:7000-7999")
	srv.waitFor(t, "server ready")

	// Host A: the client and its TUN. A has no other route to 10.99/16 or fd00:99::/64.
	cli := startIn(t, tp.a, "client", "--server", addrB+":4433", "--state-dir", filepath.Join(dir, "client"), "--pin", p.pin,
		"--tun", tunDev, "--tun-mtu", "1500", "--tun-addr", "10.77.0.1/24", "--tun-addr", "fd00:77::1/64",
		"--route", "10.99.0.0/16", "--route", "fd00:99::/64", "--drain-timeout", "1s", "--log-level", "debug")
	cli.waitFor(t, "tun ready")
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}

	t.Run("echo", func(t *testing.T) {
		// 20,000 bytes: fragments over MTU 1500 both ways, and too large for a QUIC
		// datagram (it crosses on the flow's stream); 65,507 bytes, the largest a flow
		// carries (and IPv4's largest UDP payload).
		probes := echoProbes(20000, 65507)
		got := probeUDP(t, in(tp.a, self), probes...)
		for _, p := range probes {
			checkProbe(t, p, got[p.Name])
		}
	})
	t.Run("IPv6 packets over 65,507 bytes", func(t *testing.T) {
		probes := oversizeProbes()
		got := probeUDP(t, in(tp.a, self), probes...)
		for _, p := range probes {
			checkProbe(t, p, got[p.Name])
		}
	})
	t.Run("closed port", func(t *testing.T) {
		probes := refusedProbes("closed", udpClosedPort)
		got := probeUDP(t, in(tp.a, self), probes...)
		for _, p := range probes {
			checkProbe(t, p, got[p.Name])
		}
	})
	t.Run("denied", func(t *testing.T) {
		probes := refusedProbes("denied", udpDeniedPort)
		got := probeUDP(t, in(tp.a, self), probes...)
		for _, p := range probes {
			checkProbe(t, p, got[p.Name])
		}
		// Both sides say why.
		if m := cli.waitFor(t, "udp flow failed"); !strings.HasSuffix(fmt.Sprint(m["target"]), ":"+udpDeniedPort) {
			t.Errorf("the client logged %v, want the denied target", m)
		}
		if m := srv.waitFor(t, "flow rejected"); m["result"] != "denied" || m["proto"] != "udp" {
			t.Errorf("the server logged %v", m)
		}
	})
	t.Run("echo after refusals", func(t *testing.T) {
		// The refusals ended their flows only: new 5-tuples to the echo still work.
		probes := echoProbes()
		got := probeUDP(t, in(tp.a, self), probes...)
		for _, p := range probes {
			checkProbe(t, p, got[p.Name])
		}
	})

	// The client ends with its UDP flows open (they would idle for minutes): --drain-timeout
	// bounds the wait, and the device and its routes go with the client.
	took := cli.stop(t)
	t.Logf("the client exited %v after SIGTERM with its UDP flows open", took.Round(time.Millisecond))
	if out, err := in(tp.a, "ip", "link", "show", tunDev).CombinedOutput(); err == nil {
		t.Fatalf("%s still exists after the client exited:\n%s", tunDev, out)
	}
	srv.stop(t)
}

// TestRunUDP: under `quicgate run` as nobody, an unmodified Linux UDP app gets its echo
// from the address it sent to (at the run's default TUN MTU, the largest packets too, and
// IPv6 packets beyond what a flow carries never arrive cut), and
// ECONNREFUSED with the ICMP's details for a closed port and for a target the server denies.
func TestRunUDP(t *testing.T) {
	privtest.Require(t, "ip", "setpriv")
	rs := newRunSetup(t) // the server allows 10.99.0.0/16 and fd00:99::/64, both protocols
	startUDPEchoIn(t, rs.tp.b, dst4+":"+udpEchoPort, "["+dst6+"]:"+udpEchoPort)
	openTUNDevice(t)

	// The probe helper is this test binary, copied where nobody may run it.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(rs.dir, "udpprobe")
	src, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, src, 0o755); err != nil {
		t.Fatal(err)
	}

	probes := append(append(echoProbes(65507), oversizeProbes()...), refusedProbes("closed", udpClosedPort)...)
	// Outside every --allow rule: TEST-NET-1 and the documentation prefix, through run's
	// default routes.
	for _, dst := range []string{"192.0.2.1:9", "[2001:db8::1]:9"} {
		probes = append(probes, udpProbe{Name: "denied " + dst, Addr: dst, Size: 32, Want: "refused", RecvErr: true})
	}
	got := probeUDP(t, rs.command(false, nil, bin), probes...)
	for _, p := range probes {
		checkProbe(t, p, got[p.Name])
	}
}
