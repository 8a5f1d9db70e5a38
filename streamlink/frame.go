package streamlink

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// MaxPacket is the largest packet a frame carries: its length is two bytes.
const MaxPacket = 1<<16 - 1

// QueueBytes bounds the frames waiting to be written on one stream; a packet that would go
// beyond it is dropped. 1 MiB is about 80 ms at 100 Mbit/s and 2 ms at 4 Gbit/s: enough
// for a burst of packets, little enough that a flow's round trip does not grow by seconds
// behind a slow stream.
const QueueBytes = 1 << 20

// ErrTooLarge is returned for a packet larger than MaxPacket.
var ErrTooLarge = errors.New("streamlink: packet too large for a frame")

// appendFrame appends p's frame to b.
func appendFrame(b, p []byte) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(p)))
	return append(b, p...)
}

// frameReader reads frames from a buffered stream.
type frameReader struct {
	r interface {
		io.Reader
		io.ByteReader
	}
}

// readFrame reads the next frame into p and returns the packet's length. A packet longer
// than p is read and dropped (as a UDP socket truncates a datagram, but whole), and the
// next one is read instead.
func (fr frameReader) readFrame(p []byte) (int, error) {
	for {
		hi, err := fr.r.ReadByte()
		if err != nil {
			return 0, err
		}
		lo, err := fr.r.ReadByte()
		if err != nil {
			return 0, unexpected(err)
		}
		n := int(hi)<<8 | int(lo)
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
	if errors.Is(err, io.EOF) {
		return fmt.Errorf("streamlink: stream ended inside a frame: %w", io.ErrUnexpectedEOF)
	}
	return err
}
