package netstack

import (
	"bytes"
	"context"
	"net/netip"
	"testing"

	"golang.zx2c4.com/wireguard/tun"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/quicgate/quicgate/netstack/memtun"
)

// echoRequestPacket builds the echo request src sends dst: echoReply's packet the other
// way, with the request's type.
func echoRequestPacket(src, dst netip.Addr, id, seq uint16, payload []byte) []byte {
	b := echoReply(EchoRequest{Src: dst, Dst: src, ID: id, Seq: seq, Payload: payload})
	if src.Is4() {
		icmp := header.ICMPv4(b[header.IPv4MinimumSize:])
		icmp.SetType(header.ICMPv4Echo)
		icmp.SetChecksum(0)
		icmp.SetChecksum(^checksum.Checksum(icmp, 0))
		return b
	}
	icmp := header.ICMPv6(b[header.IPv6MinimumSize:])
	icmp.SetType(header.ICMPv6EchoRequest)
	icmp.SetChecksum(0)
	icmp.SetChecksum(header.ICMPv6Checksum(header.ICMPv6ChecksumParams{Header: icmp,
		Src: tcpip.AddrFrom16(src.As16()), Dst: tcpip.AddrFrom16(dst.As16())}))
	return b
}

// readEchoReplies reads the device's packets and sends on the channel the echo replies
// among them, after checking their checksums.
func readEchoReplies(t *testing.T, dev tun.Device) <-chan EchoRequest {
	out := make(chan EchoRequest, 16)
	go func() {
		defer close(out)
		bufs, sizes := [][]byte{make([]byte, 65536)}, []int{0}
		for {
			if _, err := dev.Read(bufs, sizes, 0); err != nil {
				return
			}
			pkt := bufs[0][:sizes[0]]
			var r EchoRequest
			switch pkt[0] >> 4 {
			case 4:
				ip := header.IPv4(pkt)
				if ip.TransportProtocol() != header.ICMPv4ProtocolNumber || header.ICMPv4(ip.Payload()).Type() != header.ICMPv4EchoReply {
					continue
				}
				if !ip.IsChecksumValid() || checksum.Checksum(ip.Payload(), 0) != 0xffff {
					t.Errorf("bad checksum in % x", pkt)
				}
				r.Src, r.Dst = netip.AddrFrom4(ip.SourceAddress().As4()), netip.AddrFrom4(ip.DestinationAddress().As4())
			case 6:
				ip := header.IPv6(pkt)
				icmp := header.ICMPv6(ip.Payload())
				if ip.TransportProtocol() != header.ICMPv6ProtocolNumber || icmp.Type() != header.ICMPv6EchoReply {
					continue
				}
				if icmp.Checksum() != header.ICMPv6Checksum(header.ICMPv6ChecksumParams{Header: icmp, Src: ip.SourceAddress(), Dst: ip.DestinationAddress()}) {
					t.Errorf("bad checksum in % x", pkt)
				}
				r.Src, r.Dst = netip.AddrFrom16(ip.SourceAddress().As16()), netip.AddrFrom16(ip.DestinationAddress().As16())
			}
			msg := pkt[headerLen(pkt):]
			r.ID, r.Seq = header.ICMPv4(msg).Ident(), header.ICMPv4(msg).Sequence()
			r.Payload = append([]byte(nil), msg[8:]...)
			out <- r
		}
	}()
	return out
}

func headerLen(pkt []byte) int {
	if pkt[0]>>4 == 4 {
		return int(header.IPv4(pkt).HeaderLength())
	}
	return header.IPv6MinimumSize
}

// Echo requests to other hosts go to the EchoHandler; the app gets a reply (from the
// destination, same identifier, sequence and payload, valid checksums) when it says the
// destination answered, and nothing when not.
func TestEchoHandler(t *testing.T) {
	devGW, devApp := memtun.Pipe(1500, 64, 1024)
	asked := make(chan EchoRequest, 16)
	gw, err := NewTUN(devGW, Config{EchoHandler: EchoHandlerFunc(func(_ context.Context, req EchoRequest) bool {
		asked <- req
		return req.Dst != netip.MustParseAddr("192.0.2.2")
	})})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = gw.Close()
		_ = devApp.Close()
	})
	replies := readEchoReplies(t, devApp)
	tests := []struct {
		src, dst string
		answered bool
	}{
		{"10.99.0.1", "192.0.2.2", false},
		{"10.99.0.1", "192.0.2.1", true},
		{"fd00:99::1", "2001:db8::1", true},
	}
	for i, tt := range tests {
		src, dst := netip.MustParseAddr(tt.src), netip.MustParseAddr(tt.dst)
		payload := bytes.Repeat([]byte{byte(i + 1)}, 56+i)
		pkt := echoRequestPacket(src, dst, 0x1234, uint16(i), payload)
		if _, err := devApp.Write([][]byte{pkt}, 0); err != nil {
			t.Fatal(err)
		}
		want := EchoRequest{Src: src, Dst: dst, ID: 0x1234, Seq: uint16(i), Payload: payload}
		if got := <-asked; got.Src != want.Src || got.Dst != want.Dst || got.ID != want.ID || got.Seq != want.Seq || !bytes.Equal(got.Payload, want.Payload) {
			t.Fatalf("handler got %+v; want %+v", got, want)
		}
		if !tt.answered {
			continue // the next reply read must be the next request's: none came for this one
		}
		r := <-replies
		if r.Src != dst || r.Dst != src || r.ID != 0x1234 || r.Seq != uint16(i) || !bytes.Equal(r.Payload, payload) {
			t.Fatalf("reply %+v; want from %s to %s, seq %d, the request's payload", r, dst, src, i)
		}
	}
}

// Beyond MaxEchoes unanswered requests, new ones are dropped and counted.
func TestEchoBound(t *testing.T) {
	devGW, devApp := memtun.Pipe(1500, 64, 1024)
	started, release := make(chan struct{}, 8), make(chan struct{})
	gw, err := NewTUN(devGW, Config{MaxEchoes: 2, EchoHandler: EchoHandlerFunc(func(ctx context.Context, _ EchoRequest) bool {
		started <- struct{}{}
		select {
		case <-release:
		case <-ctx.Done():
		}
		return false
	})})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		close(release)
		_ = gw.Close()
		_ = devApp.Close()
	})
	for i := range 3 {
		pkt := echoRequestPacket(netip.MustParseAddr("10.99.0.1"), netip.MustParseAddr("192.0.2.1"), 1, uint16(i), nil)
		if _, err := devApp.Write([][]byte{pkt}, 0); err != nil {
			t.Fatal(err)
		}
	}
	<-started
	<-started
	waitFor(t, func() bool { return gw.Stats().DroppedEchoes == 1 }, "one echo dropped")
}

// parseEcho leaves to gVisor what is not an echo request to a far unicast host.
func TestParseEchoIgnores(t *testing.T) {
	src := netip.MustParseAddr("10.99.0.1")
	good := echoRequestPacket(src, netip.MustParseAddr("192.0.2.1"), 1, 1, []byte("x"))
	if _, ok := parseEcho(good); !ok {
		t.Fatal("a plain echo request is not taken")
	}
	frag := bytes.Clone(good)
	header.IPv4(frag).SetFlagsFragmentOffset(header.IPv4FlagMoreFragments, 0)
	reply := echoReply(EchoRequest{Src: src, Dst: netip.MustParseAddr("192.0.2.1")})
	for name, pkt := range map[string][]byte{
		"fragment":  frag,
		"reply":     reply,
		"multicast": echoRequestPacket(netip.MustParseAddr("fd00:99::1"), netip.MustParseAddr("ff02::1"), 1, 1, nil),
		"broadcast": echoRequestPacket(src, netip.MustParseAddr("255.255.255.255"), 1, 1, nil),
		"truncated": good[:len(good)-2],
	} {
		if _, ok := parseEcho(pkt); ok {
			t.Errorf("%s: taken", name)
		}
	}
}
