package wire

import (
	"sync"

	"github.com/quicgate/quicgate/third_party/quic-go/internal/protocol"
)

// quicgate patch: two pools. With a MaxPacketBufferSize of 16 KiB, one pool of
// packet-sized frames would make every frame that waits (sent and not yet acknowledged,
// received and not yet read) hold 16 KiB for what is usually at most 1452 bytes of data.
// Frames for up to smallStreamFrameSize bytes come from a pool of that size.
var pool, smallPool sync.Pool

// smallStreamFrameSize is what one frame carries on an Ethernet-MTU path.
const smallStreamFrameSize = protocol.EthernetPacketSize

func init() {
	pool.New = func() any {
		return &StreamFrame{
			Data:     make([]byte, 0, protocol.MaxPacketBufferSize),
			fromPool: true,
		}
	}
	smallPool.New = func() any {
		return &StreamFrame{
			Data:     make([]byte, 0, smallStreamFrameSize),
			fromPool: true,
		}
	}
}

// GetStreamFrame returns a pooled frame with room for a packet's worth of data. quicgate
// calls GetStreamFrameFor everywhere; this stays for upstream's pool tests.
func GetStreamFrame() *StreamFrame {
	f := pool.Get().(*StreamFrame)
	return f
}

// GetStreamFrameFor returns a pooled frame with room for at least n bytes of data
// (n at most protocol.MaxPacketBufferSize).
func GetStreamFrameFor(n protocol.ByteCount) *StreamFrame {
	if n <= smallStreamFrameSize {
		return smallPool.Get().(*StreamFrame)
	}
	return pool.Get().(*StreamFrame)
}

func putStreamFrame(f *StreamFrame) {
	if !f.fromPool {
		return
	}
	switch protocol.ByteCount(cap(f.Data)) {
	case protocol.MaxPacketBufferSize:
		pool.Put(f)
	case smallStreamFrameSize:
		smallPool.Put(f)
	default:
		panic("wire.PutStreamFrame called with packet of wrong size!")
	}
}

// Shrunk returns f, or, when f's data would fit a frame from the small pool but f holds a
// larger buffer, a copy of f from the small pool (f is put back). quicgate patch: a frame
// about to be sent waits for its ACK in the smallest buffer that holds it.
func (f *StreamFrame) Shrunk() *StreamFrame {
	if len(f.Data) > smallStreamFrameSize || cap(f.Data) <= smallStreamFrameSize {
		return f
	}
	s := smallPool.Get().(*StreamFrame)
	s.StreamID, s.Offset, s.Fin, s.DataLenPresent = f.StreamID, f.Offset, f.Fin, f.DataLenPresent
	s.Data = append(s.Data[:0], f.Data...)
	f.PutBack()
	return s
}
