package netpath

import (
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/quicgate/quicgate/internal/privtest"
)

// hangLimit bounds a wait for an event that must come; it is no measure of speed.
const hangLimit = 60 * time.Second

// In a namespace of its own with two links (veth pairs, whose peers stay in the namespace) that both have a default route, the host's
// choice (the lower metric) is left out and the other one is offered; a link that goes
// down is no longer offered.
func TestOthers(t *testing.T) {
	if !privtest.ReexecInNewNetns(t) {
		return
	}
	for _, c := range [][]string{
		{"link", "add", "wifi", "type", "veth", "peer", "name", "wifi-peer"},
		{"link", "add", "lte", "type", "veth", "peer", "name", "lte-peer"},
		{"link", "set", "wifi", "up"}, {"link", "set", "lte", "up"},
		{"link", "set", "wifi-peer", "up"}, {"link", "set", "lte-peer", "up"},
		{"addr", "add", "192.168.1.2/24", "dev", "wifi"}, {"addr", "add", "10.64.0.2/24", "dev", "lte"},
		{"route", "add", "default", "via", "192.168.1.1", "dev", "wifi", "metric", "100"},
		{"route", "add", "default", "via", "10.64.0.1", "dev", "lte", "metric", "200"},
	} {
		privtest.IP(t, c...)
	}
	server := netip.MustParseAddr("203.0.113.7")
	got, err := Others(server, 0)
	if err != nil || !slices.Equal(got, []string{"lte"}) {
		t.Fatalf("Others = %v, %v; want [lte]", got, err)
	}
	// A marked socket's lookup follows the same routes here (no rules): the same answer.
	if got, _ := Others(server, 0x7167); !slices.Equal(got, []string{"lte"}) {
		t.Fatalf("Others with a mark = %v; want [lte]", got)
	}
	// A server on the LTE subnet: lte's connected route is the host's choice, and wifi's
	// default route covers it too.
	if got, _ := Others(netip.MustParseAddr("10.64.0.1"), 0); !slices.Equal(got, []string{"wifi"}) {
		t.Fatalf("Others(10.64.0.1) = %v; want [wifi]", got)
	}
	privtest.IP(t, "link", "set", "lte", "down")
	if got, _ := Others(server, 0); len(got) != 0 {
		t.Fatalf("Others with lte down = %v; want none", got)
	}
}

// An address added, a route removed and a link going down each reach the watcher.
func TestWatcher(t *testing.T) {
	if !privtest.ReexecInNewNetns(t) {
		return
	}
	privtest.IP(t, "link", "add", "wifi", "type", "veth", "peer", "name", "wifi-peer")
	privtest.IP(t, "link", "set", "wifi-peer", "up")
	privtest.IP(t, "link", "set", "wifi", "up")
	w, err := NewWatcher()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	drain := func() {
		for {
			select {
			case <-w.C:
			case <-time.After(200 * time.Millisecond):
				return
			}
		}
	}
	drain()
	for _, c := range [][]string{
		{"addr", "add", "192.168.1.2/24", "dev", "wifi"},
		{"route", "add", "198.51.100.0/24", "via", "192.168.1.1"},
		{"route", "del", "198.51.100.0/24"},
		{"link", "set", "wifi", "down"},
	} {
		privtest.IP(t, c...)
		select {
		case <-w.C:
		case <-time.After(hangLimit):
			t.Fatalf("ip %v: no signal within %v", c, hangLimit)
		}
		drain()
	}
	w.Close()
	w.Close() // idempotent
}

// Control marks a socket and binds it to an interface.
func TestControl(t *testing.T) {
	if !privtest.ReexecInNewNetns(t) {
		return
	}
	lc := net.ListenConfig{Control: Control(0x7167, "lo")}
	pc, err := lc.ListenPacket(t.Context(), "udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	rc, err := pc.(*net.UDPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var mark int
	var dev string
	var gerr, derr error
	_ = rc.Control(func(fd uintptr) {
		mark, gerr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK)
		dev, derr = unix.GetsockoptString(int(fd), unix.SOL_SOCKET, unix.SO_BINDTODEVICE)
	})
	if gerr != nil || mark != 0x7167 {
		t.Errorf("SO_MARK = %#x, %v; want 0x7167", mark, gerr)
	}
	if derr != nil || dev != "lo" {
		t.Errorf("SO_BINDTODEVICE = %q, %v; want lo", dev, derr)
	}
	if Control(0, "") != nil {
		t.Error("Control(0, \"\") is not nil")
	}
}
