package streamlink

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"testing"
	"testing/iotest"

	"github.com/quicgate/quicgate/internal/looptest"
)

func frameReaderOf(b []byte) *frameReader {
	return &frameReader{r: bufio.NewReader(bytes.NewReader(b))}
}

// TestFrameHeader checks the framing's bytes: a 2-byte big-endian length, then the packet,
// appended to what the buffer holds.
func TestFrameHeader(t *testing.T) {
	got := appendFrame([]byte("x"), bytes.Repeat([]byte{7}, 300))
	if len(got) != 1+2+300 || got[0] != 'x' || got[1] != 0x01 || got[2] != 0x2c || got[3] != 7 || got[len(got)-1] != 7 {
		t.Fatalf("appendFrame: % x... (%d bytes); want 'x', 01 2c, then 300 bytes of 07", got[:4], len(got))
	}
	if got := appendFrame(nil, nil); !bytes.Equal(got, []byte{0, 0}) {
		t.Fatalf("appendFrame of an empty packet: % x; want 00 00", got)
	}
	if got := appendFrame(nil, make([]byte, MaxPacket)); got[0] != 0xff || got[1] != 0xff {
		t.Fatalf("appendFrame of MaxPacket bytes: header % x; want ff ff", got[:2])
	}
}

// TestFrameRoundTrip reads back frames of every size class, one after the other in one
// stream, and then the stream's end at a frame boundary as io.EOF.
func TestFrameRoundTrip(t *testing.T) {
	sizes := []int{0, 1, 1452, 16383, 65535, 0, 4}
	var b []byte
	var want [][]byte
	for i, n := range sizes {
		p := make([]byte, n)
		for j := range p {
			p[j] = byte(j*13 + i)
		}
		want = append(want, p)
		b = appendFrame(b, p)
	}
	// Read through a reader that returns one byte a call, so that every frame spans reads.
	for _, name := range []string{"whole", "one byte a read"} {
		var r io.Reader = bytes.NewReader(b)
		if name != "whole" {
			r = iotest.OneByteReader(r)
		}
		fr := frameReader{r: bufio.NewReader(r)}
		p := make([]byte, MaxPacket)
		for i, w := range want {
			n, err := fr.readFrame(p)
			if err != nil {
				t.Fatalf("%s: frame %d (%d bytes): %v", name, i, len(w), err)
			}
			if !bytes.Equal(p[:n], w) {
				t.Fatalf("%s: frame %d: read %d bytes, want %d bytes as written", name, i, n, len(w))
			}
		}
		n, err := fr.readFrame(p)
		if err != io.EOF {
			t.Fatalf("%s: after the last frame: %d, %v; want io.EOF", name, n, err)
		}
	}
}

// TestFrameExactFit reads a frame exactly as long as the buffer.
func TestFrameExactFit(t *testing.T) {
	want := bytes.Repeat([]byte{0xa5}, 100)
	fr := frameReaderOf(appendFrame(nil, want))
	p := make([]byte, 100)
	n, err := fr.readFrame(p)
	if err != nil || !bytes.Equal(p[:n], want) {
		t.Fatalf("readFrame into a buffer of its size: %d, %v", n, err)
	}
}

// TestFrameTooLargeSkipped checks that frames longer than the buffer are dropped whole (each
// of several in a row, the largest the framing allows among them) and the next that fits
// is read, intact, and the one after it too.
func TestFrameTooLargeSkipped(t *testing.T) {
	var b []byte
	b = appendFrame(b, bytes.Repeat([]byte{1}, 1000))
	b = appendFrame(b, bytes.Repeat([]byte{2}, MaxPacket))
	b = appendFrame(b, bytes.Repeat([]byte{3}, 101))
	b = appendFrame(b, []byte("fits"))
	b = appendFrame(b, bytes.Repeat([]byte{4}, 100))
	fr := frameReaderOf(b)
	p := make([]byte, 100)
	n, err := fr.readFrame(p)
	if err != nil || string(p[:n]) != "fits" {
		t.Fatalf("readFrame after frames too large for the buffer: %q, %v; want \"fits\"", p[:n], err)
	}
	n, err = fr.readFrame(p)
	if err != nil || !bytes.Equal(p[:n], bytes.Repeat([]byte{4}, 100)) {
		t.Fatalf("readFrame of the frame after: %d bytes, %v; want 100 bytes of 4", n, err)
	}
	if n, err := fr.readFrame(p); err != io.EOF {
		t.Fatalf("readFrame at the end: %d, %v; want io.EOF", n, err)
	}
	// Only frames too large: the end comes as the end, not as a frame.
	fr = frameReaderOf(appendFrame(nil, make([]byte, 200)))
	if n, err := fr.readFrame(p); err != io.EOF {
		t.Fatalf("readFrame of a stream of one frame too large: %d, %v; want io.EOF", n, err)
	}
}

// TestFrameUnexpectedEOF cuts a stream inside a frame at each kind of place: the stream's
// end there is io.ErrUnexpectedEOF, while at a boundary it is io.EOF.
func TestFrameUnexpectedEOF(t *testing.T) {
	whole := appendFrame(appendFrame(nil, []byte("first")), bytes.Repeat([]byte{9}, 50))
	second := len(appendFrame(nil, []byte("first")))
	for _, tc := range []struct {
		name string
		cut  int // bytes of whole kept
		p    int // buffer size
	}{
		{"in the first frame's header", 1, 100},
		{"after the first frame's header", 2, 100},
		{"in the first frame's packet", 4, 100},
		{"in the second frame's header", second + 1, 100},
		{"in the second frame's packet", len(whole) - 1, 100},
		{"in a frame being skipped", len(whole) - 1, 10},
	} {
		fr := frameReaderOf(whole[:tc.cut])
		p := make([]byte, tc.p)
		var err error
		for i := 0; err == nil && i < 3; i++ {
			_, err = fr.readFrame(p)
		}
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("cut %s: %v; want io.ErrUnexpectedEOF", tc.name, err)
		}
	}
	// An empty stream ends at a boundary.
	if _, err := frameReaderOf(nil).readFrame(make([]byte, 10)); err != io.EOF {
		t.Errorf("empty stream: %v; want io.EOF", err)
	}
}

// TestFrameReadError checks that a read error other than the end is returned as it is,
// at a boundary and inside a frame.
func TestFrameReadError(t *testing.T) {
	boom := errors.New("boom")
	for _, prefix := range [][]byte{nil, {0}, {0, 5, 'a'}} {
		fr := frameReader{r: bufio.NewReader(io.MultiReader(bytes.NewReader(prefix), iotest.ErrReader(boom)))}
		_, err := fr.readFrame(make([]byte, 10))
		if !errors.Is(err, boom) || errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("after % x: %v; want the reader's error", prefix, err)
		}
	}
}

// TestSendTooLarge checks that a packet beyond the framing's limit is refused with
// ErrTooLarge, and one at the limit goes through whole.
func TestSendTooLarge(t *testing.T) {
	c, peer := pipeConn(t)
	n, err := c.WriteTo(make([]byte, MaxPacket+1), nil)
	if !errors.Is(err, ErrTooLarge) || n != 0 {
		t.Fatalf("WriteTo(MaxPacket+1 bytes) = %d, %v; want 0, ErrTooLarge", n, err)
	}
	big := packet(1, MaxPacket)
	send(t, c, big, nil)
	got := make(chan []byte, 1)
	go func() {
		fr := frameReader{r: bufio.NewReader(peer)}
		p := make([]byte, MaxPacket)
		n, err := fr.readFrame(p)
		if err != nil {
			got <- nil
			return
		}
		got <- p[:n]
	}()
	if p := looptest.Await(t, got, "the MaxPacket frame"); !bytes.Equal(p, big) {
		t.Fatalf("peer read %d bytes, want the %d sent", len(p), len(big))
	}
	if d := c.Dropped(); d != 0 {
		t.Fatalf("Dropped() = %d, want 0", d)
	}
}
