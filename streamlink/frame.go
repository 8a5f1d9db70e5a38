package streamlink

import (
	"bufio"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// MaxPacket is the largest packet a frame carries: its length is two bytes.
const MaxPacket = 1<<16 - 1

// QueueBytes bounds the frames waiting to be written on one stream. It is small on purpose:
// the stream's own buffers (the kernel's, which NotSentLowat keeps short too) hold what is in
// flight, and what waits beyond them waits inside QUIC, per QUIC stream, where a small
// request of one flow can pass the bulk of another instead of queueing behind it.
const QueueBytes = 128 << 10

// ErrTooLarge is returned for a packet larger than MaxPacket.
var ErrTooLarge = errors.New("streamlink: packet too large for a frame")

// appendFrame appends p's frame to b.
func appendFrame(b, p []byte) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(p)))
	return append(b, p...)
}

// frameReader reads frames from a stream.
type frameReader struct {
	r   io.Reader
	hdr [2]byte
}

// newFrameReader reads frames from c: through a buffer, unless c buffers already (a TLS
// session holds a decrypted record, and a buffer on top of it would only copy it again).
func newFrameReader(c io.Reader) *frameReader {
	if _, ok := c.(*tls.Conn); ok {
		return &frameReader{r: c}
	}
	return &frameReader{r: bufio.NewReaderSize(c, readBuffer)}
}

// readFrame reads the next frame into p and returns the packet's length. A packet longer
// than p is read and dropped (as a UDP socket truncates a datagram, but whole), and the
// next one is read instead.
func (fr *frameReader) readFrame(p []byte) (int, error) {
	for {
		if n, err := io.ReadFull(fr.r, fr.hdr[:]); err != nil {
			if n > 0 {
				return 0, unexpected(err)
			}
			return 0, err
		}
		n := int(binary.BigEndian.Uint16(fr.hdr[:]))
		if n <= len(p) {
			if _, err := io.ReadFull(fr.r, p[:n]); err != nil {
				return 0, unexpected(err)
			}
			return n, nil
		}
		if _, err := io.CopyN(io.Discard, fr.r, int64(n)); err != nil {
			return 0, unexpected(err)
		}
	}
}

// unexpected turns an EOF inside a frame into io.ErrUnexpectedEOF.
func unexpected(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("streamlink: stream ended inside a frame: %w", io.ErrUnexpectedEOF)
	}
	return err
}
