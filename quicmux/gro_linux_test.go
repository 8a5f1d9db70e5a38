//go:build linux

package quicmux

import (
	"bytes"
	"encoding/binary"
	"net"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"

	"github.com/quicgate/quicgate/flow"
)

// sendGSO sends segs as one UDP GSO train (equal-sized segments, the last may be shorter)
// from a new socket to dst, and returns the sender's address.
func sendGSO(t *testing.T, dst net.Addr, segs [][]byte) net.Addr {
	t.Helper()
	src, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	oob := make([]byte, unix.CmsgSpace(2))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
	h.Level, h.Type = unix.IPPROTO_UDP, unix.UDP_SEGMENT
	h.SetLen(unix.CmsgLen(2))
	binary.NativeEndian.PutUint16(oob[unix.CmsgLen(0):], uint16(len(segs[0])))
	if _, _, err := src.WriteMsgUDP(bytes.Join(segs, nil), oob, dst.(*net.UDPAddr)); err != nil {
		t.Fatalf("GSO send: %v", err)
	}
	return src.LocalAddr()
}

// quicMessages makes messages the way quic-go hands them to ReadBatch: one packet buffer
// and a 128-byte control buffer each.
func quicMessages(n, size int) []ipv4.Message {
	ms := make([]ipv4.Message, n)
	for i := range ms {
		ms[i].Buffers = [][]byte{make([]byte, size)}
		ms[i].OOB = make([]byte, 128)
	}
	return ms
}

func TestGROSplitsTrainsIntoPackets(t *testing.T) {
	pc, err := listenUDP("127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	gc, ok := pc.(*groConn)
	if !ok {
		t.Fatalf("listenUDP returned %T: UDP_GRO was refused on Linux", pc)
	}

	// Two trains from two senders: 10 packets of 1000 bytes and a short last one, then
	// 3 packets of 1452. Every packet's bytes are distinct so that a misplaced cut shows.
	train := func(n, size, last int, tag byte) [][]byte {
		var segs [][]byte
		for i := range n {
			l := size
			if i == n-1 {
				l = last
			}
			s := make([]byte, l)
			for j := range s {
				s[j] = tag + byte(i) + byte(j*7)
			}
			segs = append(segs, s)
		}
		return segs
	}
	a := train(11, 1000, 500, 1)
	b := train(3, 1452, 1452, 100)
	fromA := sendGSO(t, pc.LocalAddr(), a)
	fromB := sendGSO(t, pc.LocalAddr(), b)

	want := append(append([][]byte{}, a...), b...)
	from := make([]net.Addr, 0, len(want))
	for range a {
		from = append(from, fromA)
	}
	for range b {
		from = append(from, fromB)
	}
	_ = gc.SetReadDeadline(time.Now().Add(5 * time.Second))
	var got []ipv4.Message
	var joined bool
	for len(got) < len(want) {
		ms := quicMessages(4, 1452)
		n, err := gc.ReadBatch(ms, 0)
		if err != nil {
			t.Fatalf("after %d packets: %v", len(got), err)
		}
		if n == 0 || n > len(ms) {
			t.Fatalf("ReadBatch returned %d of %d messages", n, len(ms))
		}
		got = append(got, ms[:n]...)
		joined = joined || gc.seg[0] != gc.msgs[0].N
	}
	if !joined {
		t.Error("the kernel never joined packets: GRO is not in effect")
	}
	for i, m := range got {
		if !bytes.Equal(m.Buffers[0][:m.N], want[i]) {
			t.Fatalf("packet %d: %d bytes, want %d, or different bytes", i, m.N, len(want[i]))
		}
		if m.Addr.String() != from[i].String() {
			t.Errorf("packet %d from %v, want %v", i, m.Addr, from[i])
		}
		if m.Flags != 0 {
			t.Errorf("packet %d: flags %#x", i, m.Flags)
		}
		if flow.GROSegmentSize(m.OOB[:m.NN]) <= 0 {
			t.Errorf("packet %d: the control messages were not passed on", i)
		}
	}
}

func TestGROMarksPacketsCutByASmallBuffer(t *testing.T) {
	pc, err := listenUDP("127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	gc := pc.(*groConn)
	sendGSO(t, pc.LocalAddr(), [][]byte{bytes.Repeat([]byte{7}, 3000)})
	_ = gc.SetReadDeadline(time.Now().Add(5 * time.Second))
	ms := quicMessages(1, 1452)
	n, err := gc.ReadBatch(ms, 0)
	if err != nil || n != 1 {
		t.Fatalf("ReadBatch = %d, %v", n, err)
	}
	if ms[0].Flags&unix.MSG_TRUNC == 0 || ms[0].N != 1452 {
		t.Errorf("a 3000-byte packet into 1452 bytes: N %d, flags %#x; want 1452 and MSG_TRUNC", ms[0].N, ms[0].Flags)
	}
}
