package quic

// quicgate patch: tests for ReceiveStream.NotifyReadable and Readable (QUICGATE.md, "Read readiness").

import (
	"context"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quicgate/quicgate/third_party/quic-go/internal/monotime"
	"github.com/quicgate/quicgate/third_party/quic-go/internal/protocol"
	"github.com/quicgate/quicgate/third_party/quic-go/internal/wire"

	"github.com/stretchr/testify/require"
	"go.uber.org/mock/gomock"
)

// notifyCounter returns a callback for NotifyReadable that counts its calls.
func notifyCounter() (func(), *atomic.Int32) {
	var n atomic.Int32
	return func() { n.Add(1) }, &n
}

func TestReceiveStreamNotifyReadableData(t *testing.T) {
	str := newReceiveStream(42, nil, newTestStreamFlowController(42))
	f, n := notifyCounter()
	str.NotifyReadable(f)
	require.Zero(t, n.Load())
	require.False(t, str.Readable())

	require.NoError(t, str.handleStreamFrame(&wire.StreamFrame{Data: []byte("foo")}, monotime.Now()))
	require.Equal(t, int32(1), n.Load())
	require.True(t, str.Readable())

	// one-shot: more data doesn't call it again
	require.NoError(t, str.handleStreamFrame(&wire.StreamFrame{Offset: 3, Data: []byte("bar")}, monotime.Now()))
	require.Equal(t, int32(1), n.Load())

	// a Read that consumes everything leaves the stream not readable
	b := make([]byte, 10)
	m, err := str.Read(b)
	require.NoError(t, err)
	require.Equal(t, "foobar", string(b[:m]))
	require.False(t, str.Readable())
	f2, n2 := notifyCounter()
	str.NotifyReadable(f2)
	require.Zero(t, n2.Load())

	// a partial Read leaves it readable
	require.NoError(t, str.handleStreamFrame(&wire.StreamFrame{Offset: 6, Data: []byte("baz")}, monotime.Now()))
	require.Equal(t, int32(1), n2.Load())
	m, err = str.Read(b[:1])
	require.NoError(t, err)
	require.Equal(t, 1, m)
	require.True(t, str.Readable())
	f3, n3 := notifyCounter()
	str.NotifyReadable(f3)
	require.Equal(t, int32(1), n3.Load())
	require.Equal(t, int32(1), n.Load())
	require.Equal(t, int32(1), n2.Load())
}

func TestReceiveStreamNotifyReadableOutOfOrder(t *testing.T) {
	mockCtrl := gomock.NewController(t)
	mockSender := NewMockStreamSender(mockCtrl)
	str := newReceiveStream(42, mockSender, newTestStreamFlowController(42))
	f, n := notifyCounter()
	str.NotifyReadable(f)

	// data at a later offset, and a FIN after it: a Read would still block
	require.NoError(t, str.handleStreamFrame(&wire.StreamFrame{Offset: 3, Data: []byte("bar")}, monotime.Now()))
	require.NoError(t, str.handleStreamFrame(&wire.StreamFrame{Offset: 6, Fin: true}, monotime.Now()))
	require.Zero(t, n.Load())
	require.False(t, str.Readable())
	// a retransmission of nothing new, an empty frame
	require.NoError(t, str.handleStreamFrame(&wire.StreamFrame{Offset: 3, Data: []byte("ba")}, monotime.Now()))
	require.NoError(t, str.handleStreamFrame(&wire.StreamFrame{Offset: 0}, monotime.Now()))
	require.Zero(t, n.Load())
	require.False(t, str.Readable())

	// the gap fills
	require.NoError(t, str.handleStreamFrame(&wire.StreamFrame{Data: []byte("foo")}, monotime.Now()))
	require.Equal(t, int32(1), n.Load())
	require.True(t, str.Readable())

	b := make([]byte, 3)
	m, err := str.Read(b)
	require.NoError(t, err)
	require.Equal(t, 3, m)
	require.True(t, str.Readable())
	mockSender.EXPECT().onStreamCompleted(protocol.StreamID(42))
	m, err = str.Read(b)
	require.ErrorIs(t, err, io.EOF)
	require.Equal(t, 3, m)
	require.True(t, str.Readable())
}

func TestReceiveStreamNotifyReadableAlreadyReadable(t *testing.T) {
	str := newReceiveStream(42, nil, newTestStreamFlowController(42))
	require.NoError(t, str.handleStreamFrame(&wire.StreamFrame{Data: []byte("foo")}, monotime.Now()))
	f, n := notifyCounter()
	str.NotifyReadable(f)
	require.Equal(t, int32(1), n.Load()) // before NotifyReadable returned
	require.NoError(t, str.handleStreamFrame(&wire.StreamFrame{Offset: 3, Data: []byte("bar")}, monotime.Now()))
	require.Equal(t, int32(1), n.Load())
}

func TestReceiveStreamNotifyReadableFINWithoutData(t *testing.T) {
	mockCtrl := gomock.NewController(t)
	mockSender := NewMockStreamSender(mockCtrl)
	str := newReceiveStream(42, mockSender, newTestStreamFlowController(42))
	require.NoError(t, str.handleStreamFrame(&wire.StreamFrame{Data: []byte("foo")}, monotime.Now()))
	b := make([]byte, 3)
	m, err := str.Read(b)
	require.NoError(t, err)
	require.Equal(t, 3, m)
	require.False(t, str.Readable())

	f, n := notifyCounter()
	str.NotifyReadable(f)
	require.Zero(t, n.Load())
	require.NoError(t, str.handleStreamFrame(&wire.StreamFrame{Offset: 3, Fin: true}, monotime.Now()))
	require.Equal(t, int32(1), n.Load())
	require.True(t, str.Readable())

	mockSender.EXPECT().onStreamCompleted(protocol.StreamID(42))
	m, err = str.Read(b)
	require.ErrorIs(t, err, io.EOF)
	require.Zero(t, m)
	// after EOF was read, a Read still doesn't block
	require.True(t, str.Readable())
	f2, n2 := notifyCounter()
	str.NotifyReadable(f2)
	require.Equal(t, int32(1), n2.Load())
	require.Equal(t, int32(1), n.Load())
}

func TestReceiveStreamNotifyReadableFINWithData(t *testing.T) {
	str := newReceiveStream(42, nil, newTestStreamFlowController(42))
	f, n := notifyCounter()
	str.NotifyReadable(f)
	require.NoError(t, str.handleStreamFrame(&wire.StreamFrame{Data: []byte("foo"), Fin: true}, monotime.Now()))
	require.Equal(t, int32(1), n.Load())
	require.True(t, str.Readable())
}

func TestReceiveStreamNotifyReadableReset(t *testing.T) {
	mockCtrl := gomock.NewController(t)
	mockSender := NewMockStreamSender(mockCtrl)
	str := newReceiveStream(42, mockSender, newTestStreamFlowController(42))
	f, n := notifyCounter()
	str.NotifyReadable(f)

	mockSender.EXPECT().onStreamCompleted(protocol.StreamID(42))
	require.NoError(t, str.handleResetStreamFrame(&wire.ResetStreamFrame{StreamID: 42, ErrorCode: 1234, FinalSize: 42}, monotime.Now()))
	require.Equal(t, int32(1), n.Load())
	require.True(t, str.Readable())

	// a duplicate RESET_STREAM doesn't call it again
	require.NoError(t, str.handleResetStreamFrame(&wire.ResetStreamFrame{StreamID: 42, ErrorCode: 1234, FinalSize: 42}, monotime.Now()))
	require.Equal(t, int32(1), n.Load())

	_, err := str.Read([]byte{0})
	require.ErrorIs(t, err, &StreamError{StreamID: 42, ErrorCode: 1234, Remote: true})
}

// A RESET_STREAM_AT whose reliable size is beyond the read position: a Read waits for the
// reliable data, so the stream is readable only once that data is there.
func TestReceiveStreamNotifyReadableResetStreamAt(t *testing.T) {
	mockCtrl := gomock.NewController(t)
	mockSender := NewMockStreamSender(mockCtrl)
	str := newReceiveStream(42, mockSender, newTestStreamFlowController(42))
	f, n := notifyCounter()
	str.NotifyReadable(f)

	require.NoError(t, str.handleResetStreamFrame(&wire.ResetStreamFrame{StreamID: 42, ErrorCode: 1337, FinalSize: 10, ReliableSize: 3}, monotime.Now()))
	require.Zero(t, n.Load())
	require.False(t, str.Readable())

	require.NoError(t, str.handleStreamFrame(&wire.StreamFrame{Data: []byte("foo")}, monotime.Now()))
	require.Equal(t, int32(1), n.Load())
	require.True(t, str.Readable())

	b := make([]byte, 10)
	m, err := str.Read(b)
	require.NoError(t, err)
	require.Equal(t, 3, m)
	// all reliable data was read: the next Read returns the error at once
	require.True(t, str.Readable())
	f2, n2 := notifyCounter()
	str.NotifyReadable(f2)
	require.Equal(t, int32(1), n2.Load())
	mockSender.EXPECT().onStreamCompleted(protocol.StreamID(42))
	m, err = str.Read(b)
	require.Zero(t, m)
	require.ErrorIs(t, err, &StreamError{StreamID: 42, ErrorCode: 1337, Remote: true})
	require.True(t, str.Readable())
}

// A second RESET_STREAM_AT lowering the reliable size to the read position ends the wait.
func TestReceiveStreamNotifyReadableResetStreamAtLowered(t *testing.T) {
	mockCtrl := gomock.NewController(t)
	mockSender := NewMockStreamSender(mockCtrl)
	str := newReceiveStream(42, mockSender, newTestStreamFlowController(42))
	require.NoError(t, str.handleResetStreamFrame(&wire.ResetStreamFrame{StreamID: 42, ErrorCode: 1337, FinalSize: 10, ReliableSize: 6}, monotime.Now()))
	require.NoError(t, str.handleStreamFrame(&wire.StreamFrame{Data: []byte("foo")}, monotime.Now()))
	b := make([]byte, 10)
	m, err := str.Read(b)
	require.NoError(t, err)
	require.Equal(t, 3, m)
	require.False(t, str.Readable())

	f, n := notifyCounter()
	str.NotifyReadable(f)
	require.Zero(t, n.Load())
	require.NoError(t, str.handleResetStreamFrame(&wire.ResetStreamFrame{StreamID: 42, ErrorCode: 1337, FinalSize: 10, ReliableSize: 3}, monotime.Now()))
	require.Equal(t, int32(1), n.Load())
	require.True(t, str.Readable())
}

func TestReceiveStreamNotifyReadableCancelRead(t *testing.T) {
	mockCtrl := gomock.NewController(t)
	mockSender := NewMockStreamSender(mockCtrl)
	str := newReceiveStream(42, mockSender, newTestStreamFlowController(42))
	f, n := notifyCounter()
	str.NotifyReadable(f)

	mockSender.EXPECT().onHasStreamControlFrame(protocol.StreamID(42), str)
	str.CancelRead(1234)
	require.Equal(t, int32(1), n.Load())
	require.True(t, str.Readable())
	str.CancelRead(1234)
	require.Equal(t, int32(1), n.Load())

	_, err := str.Read([]byte{0})
	require.ErrorIs(t, err, &StreamError{StreamID: 42, ErrorCode: 1234, Remote: false})
}

func TestReceiveStreamNotifyReadableCloseForShutdown(t *testing.T) {
	str := newReceiveStream(42, nil, newTestStreamFlowController(42))
	f, n := notifyCounter()
	str.NotifyReadable(f)
	str.closeForShutdown(io.ErrClosedPipe)
	require.Equal(t, int32(1), n.Load())
	require.True(t, str.Readable())
	str.closeForShutdown(io.ErrClosedPipe)
	require.Equal(t, int32(1), n.Load())

	_, err := str.Read([]byte{0})
	require.ErrorIs(t, err, io.ErrClosedPipe)
}

func TestReceiveStreamNotifyReadableDeadline(t *testing.T) {
	str := newReceiveStream(42, nil, newTestStreamFlowController(42))
	f, n := notifyCounter()
	str.NotifyReadable(f)
	require.NoError(t, str.SetReadDeadline(time.Now().Add(time.Hour)))
	require.Equal(t, int32(1), n.Load())
	require.True(t, str.Readable()) // while a deadline is set, the reader waits in Read

	// removing the deadline leaves nothing for a Read to return
	require.NoError(t, str.SetReadDeadline(time.Time{}))
	require.False(t, str.Readable())
	f2, n2 := notifyCounter()
	str.NotifyReadable(f2)
	require.Zero(t, n2.Load())

	// a deadline in the past
	require.NoError(t, str.SetReadDeadline(time.Now().Add(-time.Second)))
	require.Equal(t, int32(1), n2.Load())
	_, err := str.Read([]byte{0})
	require.ErrorIs(t, err, errDeadline)
	require.Equal(t, int32(1), n.Load())
}

func TestReceiveStreamNotifyReadableReplaced(t *testing.T) {
	str := newReceiveStream(42, nil, newTestStreamFlowController(42))
	f1, n1 := notifyCounter()
	f2, n2 := notifyCounter()
	str.NotifyReadable(f1)
	str.NotifyReadable(f2)
	require.NoError(t, str.handleStreamFrame(&wire.StreamFrame{Data: []byte("foo")}, monotime.Now()))
	require.Zero(t, n1.Load())
	require.Equal(t, int32(1), n2.Load())
}

// The callback runs without the stream's lock held: it may use the stream (but not block).
func TestReceiveStreamNotifyReadableReentrant(t *testing.T) {
	mockCtrl := gomock.NewController(t)
	mockSender := NewMockStreamSender(mockCtrl)
	mockSender.EXPECT().onHasStreamControlFrame(gomock.Any(), gomock.Any()).AnyTimes()
	mockSender.EXPECT().onStreamCompleted(gomock.Any()).AnyTimes()

	events := []func(*ReceiveStream){
		func(str *ReceiveStream) {
			require.NoError(t, str.handleStreamFrame(&wire.StreamFrame{Data: []byte("foo")}, monotime.Now()))
		},
		func(str *ReceiveStream) {
			require.NoError(t, str.handleResetStreamFrame(&wire.ResetStreamFrame{StreamID: 42, FinalSize: 3}, monotime.Now()))
		},
		func(str *ReceiveStream) { str.CancelRead(1) },
		func(str *ReceiveStream) { str.closeForShutdown(io.ErrClosedPipe) },
		func(str *ReceiveStream) { require.NoError(t, str.SetReadDeadline(time.Now().Add(time.Hour))) },
	}
	for _, event := range events {
		str := newReceiveStream(42, mockSender, newTestStreamFlowController(42))
		var readable []bool
		str.NotifyReadable(func() {
			readable = append(readable, str.Readable())
			str.NotifyReadable(func() { readable = append(readable, true) }) // fires at once
		})
		done := make(chan struct{})
		go func() {
			defer close(done)
			event(str)
		}()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("deadlock: the callback ran with the stream's lock held")
		}
		require.Equal(t, []bool{true, true}, readable)
	}
}

func TestReceiveStreamNotifyReadableStream(t *testing.T) {
	mockCtrl := gomock.NewController(t)
	mockSender := NewMockStreamSender(mockCtrl)
	str := newStream(context.Background(), 42, mockSender, newTestStreamFlowController(42), false)
	f, n := notifyCounter()
	str.NotifyReadable(f)
	require.False(t, str.Readable())
	require.NoError(t, str.handleStreamFrame(&wire.StreamFrame{Data: []byte("foo")}, monotime.Now()))
	require.Equal(t, int32(1), n.Load())
	require.True(t, str.Readable())
}

// NotifyReadable concurrently with the events that make a stream readable: the callback
// runs exactly once.
func TestReceiveStreamNotifyReadableConcurrent(t *testing.T) {
	mockCtrl := gomock.NewController(t)
	mockSender := NewMockStreamSender(mockCtrl)
	mockSender.EXPECT().onHasStreamControlFrame(gomock.Any(), gomock.Any()).AnyTimes()
	mockSender.EXPECT().onStreamCompleted(gomock.Any()).AnyTimes()

	events := map[string]func(*ReceiveStream){
		"in-order data": func(str *ReceiveStream) {
			for i := range 3 {
				_ = str.handleStreamFrame(&wire.StreamFrame{Offset: protocol.ByteCount(i), Data: []byte{byte(i)}}, monotime.Now())
			}
		},
		"gap filled": func(str *ReceiveStream) {
			_ = str.handleStreamFrame(&wire.StreamFrame{Offset: 2, Data: []byte("cd")}, monotime.Now())
			_ = str.handleStreamFrame(&wire.StreamFrame{Data: []byte("ab")}, monotime.Now())
		},
		"FIN": func(str *ReceiveStream) { _ = str.handleStreamFrame(&wire.StreamFrame{Fin: true}, monotime.Now()) },
		"reset": func(str *ReceiveStream) {
			_ = str.handleResetStreamFrame(&wire.ResetStreamFrame{StreamID: 42, FinalSize: 5}, monotime.Now())
		},
		"cancel":   func(str *ReceiveStream) { str.CancelRead(1) },
		"shutdown": func(str *ReceiveStream) { str.closeForShutdown(io.ErrClosedPipe) },
		"deadline": func(str *ReceiveStream) { _ = str.SetReadDeadline(time.Now().Add(time.Hour)) },
	}
	for name, event := range events {
		t.Run(name, func(t *testing.T) {
			for range 2000 {
				str := newReceiveStream(42, mockSender, newTestStreamFlowController(42))
				f, n := notifyCounter()
				var wg sync.WaitGroup
				wg.Add(2)
				go func() { defer wg.Done(); event(str) }()
				go func() { defer wg.Done(); str.NotifyReadable(f) }()
				wg.Wait()
				require.Equal(t, int32(1), n.Load())
			}
		})
	}
}

// A reader that waits with NotifyReadable between Reads, as quicgate's relay does, while
// the run loop delivers data in small, partly reordered frames: it gets all of it and the
// EOF (no missed wake-up), each callback runs once, and every wake-up finds the stream
// readable.
func TestReceiveStreamNotifyReadableReader(t *testing.T) {
	mockCtrl := gomock.NewController(t)
	mockSender := NewMockStreamSender(mockCtrl)
	mockSender.EXPECT().onHasStreamControlFrame(gomock.Any(), gomock.Any()).AnyTimes()
	mockSender.EXPECT().onHasConnectionData().AnyTimes()
	mockSender.EXPECT().onStreamCompleted(gomock.Any()).AnyTimes()

	const size = 3000
	for range 50 {
		str := newReceiveStream(42, mockSender, newTestStreamFlowController(42))
		go func() {
			for off := 0; off < size; off += 20 {
				// the second half of each 20 bytes first
				_ = str.handleStreamFrame(&wire.StreamFrame{Offset: protocol.ByteCount(off + 10), Data: make([]byte, 10), Fin: off+20 == size}, monotime.Now())
				_ = str.handleStreamFrame(&wire.StreamFrame{Offset: protocol.ByteCount(off), Data: make([]byte, 10)}, monotime.Now())
			}
		}()

		var total int
		b := make([]byte, 7)
		for {
			wake := make(chan struct{}, 2)
			var calls atomic.Int32
			str.NotifyReadable(func() {
				calls.Add(1)
				wake <- struct{}{}
			})
			select {
			case <-wake:
			case <-time.After(10 * time.Second):
				t.Fatalf("missed wake-up after %d bytes", total)
			}
			require.True(t, str.Readable())
			m, err := str.Read(b)
			total += m
			require.Equal(t, int32(1), calls.Load())
			if err == io.EOF {
				break
			}
			require.NoError(t, err)
		}
		require.Equal(t, size, total)
	}
}
