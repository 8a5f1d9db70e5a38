package main

import (
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/quicgate/quicgate/internal/privtest"
)

// roamTopology is a client host A and a server host B in namespaces the test makes, joined
// by two links, as a laptop's Wi-Fi (link 1, 10.210.0.0/24, preferred: metric 100) and LTE
// (link 2, 10.211.0.0/24, metric 200). Both of A's default routes lead to B, whose server
// listens on 10.250.0.1 and whose destination is 10.99.0.5 (both on B's loopback). Cleanup
// deletes both namespaces, which removes everything in them.
type roamTopology struct {
	a, b string
}

const (
	roamServer = "10.250.0.1"
	roamDst    = "10.99.0.5"
)

var roamSeq atomic.Int32

func newRoamTopology(t *testing.T) *roamTopology {
	t.Helper()
	id := strconv.Itoa(os.Getpid()) + "r" + strconv.Itoa(int(roamSeq.Add(1)))
	tp := &roamTopology{a: "qgA" + id, b: "qgB" + id}
	addNetns(t, tp.a, tp.b)
	for i, link := range []string{"1", "2"} {
		sh(t, "ip", "link", "add", "qga"+link+id, "netns", tp.a, "type", "veth", "peer", "name", "qgb"+link+id, "netns", tp.b)
		subnet := "10.21" + strconv.Itoa(i) + ".0."
		for _, c := range [][]string{
			{tp.a, "link", "set", "qga" + link + id, "name", "veth" + link},
			{tp.a, "addr", "add", subnet + "1/24", "dev", "veth" + link},
			{tp.a, "link", "set", "veth" + link, "up"},
			{tp.b, "link", "set", "qgb" + link + id, "name", "veth" + link},
			{tp.b, "addr", "add", subnet + "2/24", "dev", "veth" + link},
			{tp.b, "link", "set", "veth" + link, "up"},
		} {
			sh(t, append([]string{"ip", "-n"}, c...)...)
		}
	}
	for _, c := range [][]string{
		{tp.a, "link", "set", "lo", "up"},
		{tp.a, "route", "add", "default", "via", "10.210.0.2", "dev", "veth1", "metric", "100"},
		{tp.a, "route", "add", "default", "via", "10.211.0.2", "dev", "veth2", "metric", "200"},
		{tp.b, "link", "set", "lo", "up"},
		{tp.b, "addr", "add", roamServer + "/32", "dev", "lo"},
		{tp.b, "addr", "add", roamDst + "/32", "dev", "lo"},
	} {
		sh(t, append([]string{"ip", "-n"}, c...)...)
	}
	return tp
}

// captive makes link 1 stop carrying B's packets to A while it stays up on both sides, as a
// Wi-Fi that lost its uplink or wants a captive portal's login: B's neighbour entry for A's
// address gets a MAC address nobody has, so B's frames are sent and silently lost (a
// blackhole route would not do: sendmsg fails on it, and the server would know).
func captive(tp *roamTopology) []string {
	return []string{"ip", "-n", tp.b, "neigh", "replace", "10.210.0.1", "lladdr", "02:00:00:00:00:01", "dev", "veth1", "nud", "permanent"}
}

// TestRoaming: a download runs through the tunnel while A's preferred link fails under it,
// and completes byte for byte on the same QUIC connection, through -L and through a full
// tunnel (--route default). "link down": the Wi-Fi goes away, and its routes with it; the
// host's routes now lead over LTE and the server takes the client's new address as a
// rebinding. "captive": the Wi-Fi stays up but the server's packets on it are lost (captive); the
// client hears nothing, probes the path over LTE, and moves the connection there. Each case
// logs the longest stall the app saw (docs/performance.md, "Roaming").
func TestRoaming(t *testing.T) {
	privtest.Require(t, "ip")
	const size, rate = 16 << 20, 4 << 20 // 4 s of transfer
	want := demoBodySum(size)
	linkDown := func(tp *roamTopology) []string { return []string{"ip", "-n", tp.a, "link", "set", "veth1", "down"} }
	cases := []struct {
		name       string
		fullTunnel bool
		fail       func(tp *roamTopology) []string // the command that breaks link 1
		moved      bool                            // the client moves its path itself
	}{
		{"link down, -L", false, linkDown, false},
		{"link down, full tunnel", true, linkDown, false},
		{"captive, full tunnel", true, captive, true},
		{"captive, -L", false, captive, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tp := newRoamTopology(t)
			dir := t.TempDir()
			p := newPairIn(t, dir)
			startHTTPIn(t, tp.b, roamDst+":80")
			srv := startIn(t, tp.b, "server", "--listen", roamServer+":4433", "--state-dir", filepath.Join(dir, "server"),
				"--authorized-clients", p.auth, "--allow", roamDst)
			srv.waitFor(t, "server ready")
			args := []string{"client", "--server", roamServer + ":4433", "--state-dir", filepath.Join(dir, "client"), "--pin", p.pin}
			url := fmt.Sprintf("http://%s/paced?n=%d&rate=%d", roamDst, size, rate)
			if tc.fullTunnel {
				args = append(args, "--tun", tunDev, "--tun-addr", "10.77.0.1/24", "--route", "default")
			} else {
				args = append(args, "-L", "0:"+roamDst+":80")
			}
			cli := startIn(t, tp.a, args...)
			if tc.fullTunnel {
				cli.waitFor(t, "tun ready")
			} else {
				local := cli.waitFor(t, "forwarding")["listen"].(string)
				url = strings.Replace(url, roamDst, local, 1)
			}

			f := startSelfIn(t, tp.a, "fetch", "QUICGATE_TEST_FETCH="+url)
			// A quarter into the transfer, link 1 fails.
			for {
				if m := f.waitFor(t, "fetch progress"); m["bytes"].(float64) >= size/4 {
					break
				}
			}
			sh(t, tc.fail(tp)...)
			done := f.waitFor(t, "fetched")
			if got := done["sha256"].(string); got != hex.EncodeToString(want[:]) || done["bytes"].(float64) != size {
				t.Fatalf("fetched %v bytes with SHA-256 %s, want %d bytes with %s", done["bytes"], got, size, hex.EncodeToString(want[:]))
			}
			t.Logf("%s: %d MiB at %d MiB/s arrived whole; longest stall %v ms", tc.name, size>>20, rate>>20, done["max_stall_ms"])
			if n := cli.count("connected to server"); n != 1 || cli.count("reconnected to server") != 0 {
				t.Fatalf("the client connected %d times and reconnected %d: the connection did not survive", n, cli.count("reconnected to server"))
			}
			if moved := cli.count("server answers on another path; connection moved to it"); (moved > 0) != tc.moved {
				t.Fatalf("the client moved its path %d times; want moved=%v", moved, tc.moved)
			}
			if tc.moved {
				t.Logf("the client's move: %s", grepLines(strings.Join(cli.logLines(), "\n"), "connection moved"))
			}
			cli.stop(t)
			srv.stop(t)
		})
	}
}
