package ingress

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/quicgate/quicgate/flow"
	"github.com/quicgate/quicgate/internal/quicmuxtest"
	"github.com/quicgate/quicgate/netstack"
	"github.com/quicgate/quicgate/netstack/memtun"
	"github.com/quicgate/quicgate/quicmux"
)

// icmpEcho4 builds an ICMP echo message (typ 8: request, 0: reply) from src to dst in an
// IPv4 packet.
func icmpEcho4(src, dst netip.Addr, typ uint8, id, seq uint16, payload []byte) []byte {
	total := header.IPv4MinimumSize + 8 + len(payload)
	b := make([]byte, total)
	icmp := header.ICMPv4(b[header.IPv4MinimumSize:])
	icmp.SetType(header.ICMPv4Type(typ))
	icmp.SetIdent(id)
	icmp.SetSequence(seq)
	copy(icmp[8:], payload)
	icmp.SetChecksum(^checksum.Checksum(icmp, 0))
	ip := header.IPv4(b)
	ip.Encode(&header.IPv4Fields{TotalLength: uint16(total), TTL: 64, Protocol: uint8(header.ICMPv4ProtocolNumber),
		SrcAddr: tcpip.AddrFrom4(src.As4()), DstAddr: tcpip.AddrFrom4(dst.As4())})
	ip.SetChecksum(^ip.CalculateChecksum())
	return b
}

// A ping written to the TUN is answered when the server's own echo to the address is
// (127.0.0.1, which an address rule allows); the reply is the request turned around. A
// ping the server's policy denies goes unanswered.
func TestTUNEcho(t *testing.T) {
	rules := quicmuxtest.Rules(t, "127.0.0.1:22")
	_, client := startTunnel(t, quicmux.ServerConfig{Policy: rules}, quicmux.ClientConfig{DialTimeout: 5 * time.Second}, nil)
	if _, err := client.Echo(context.Background(), netip.MustParseAddr("127.0.0.1"), nil); errors.Is(err, quicmux.ErrUnreachable) {
		t.Skip("this host allows no ICMP socket (net.ipv4.ping_group_range, CAP_NET_RAW)")
	}
	log := testLogger(t).WithField("side", "ingress")
	ing := &TUN{name: "tun test", tun: client, log: log, flows: flow.NewGroup(context.Background()),
		dnsFlows: flow.NewGroup(context.Background())}
	devIngress, devApp := memtun.Pipe(9000, 64, 1024)
	gw, err := netstack.NewTUN(devIngress, netstack.Config{EchoHandler: ing, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ing.flows.Close()
		_ = gw.Close()
		_ = devApp.Close()
	})

	app, far := appPrefix.Addr(), netip.MustParseAddr("127.0.0.1")
	denied := netstack.EchoRequest{Src: app, Dst: netip.MustParseAddr("127.0.0.2"), ID: 7, Seq: 1}
	if ing.HandleEcho(context.Background(), denied) {
		t.Fatal("an echo to a denied address was answered")
	}
	payload := []byte("abcdefghijklmnopqrstuvwxyz0123456789")
	if _, err := devApp.Write([][]byte{icmpEcho4(app, far, 8, 7, 2, payload)}, 0); err != nil {
		t.Fatal(err)
	}
	want := icmpEcho4(far, app, 0, 7, 2, payload)
	bufs, sizes := [][]byte{make([]byte, 65536)}, []int{0}
	done := make(chan []byte, 1)
	go func() {
		for {
			if _, err := devApp.Read(bufs, sizes, 0); err != nil {
				close(done)
				return
			}
			if pkt := bufs[0][:sizes[0]]; pkt[0]>>4 == 4 && header.IPv4(pkt).TransportProtocol() == header.ICMPv4ProtocolNumber {
				done <- bytes.Clone(pkt)
				return
			}
		}
	}()
	select {
	case got := <-done:
		// Both are built with IP ID 0 and TTL 64: byte for byte equal.
		if !bytes.Equal(got, want) {
			t.Fatalf("reply\n% x\nwant\n% x", got, want)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no echo reply within 30 s")
	}
}
