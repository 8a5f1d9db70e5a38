package quic

import (
	"context"
	"testing"

	"github.com/quicgate/quicgate/third_party/quic-go/internal/protocol"
	"github.com/quicgate/quicgate/third_party/quic-go/internal/wire"

	"github.com/stretchr/testify/require"
	"go.uber.org/mock/gomock"
)

// quicgate patch: openBidiStreams counts both sides' bidirectional streams until deleted,
// and no unidirectional ones.
func TestStreamsMapOpenBidiStreams(t *testing.T) {
	mockCtrl := gomock.NewController(t)
	m := newStreamsMap(context.Background(), NewMockStreamSender(mockCtrl), func(wire.Frame) {},
		newTestStreamFlowController, 100, 100, false, protocol.PerspectiveClient)
	m.HandleTransportParameters(&wire.TransportParameters{MaxBidiStreamNum: 10, MaxUniStreamNum: 10})
	require.Zero(t, m.openBidiStreams())

	_, err := m.OpenStream()
	require.NoError(t, err)
	_, err = m.OpenUniStream()
	require.NoError(t, err)
	require.Equal(t, 1, m.openBidiStreams())

	// the server opens a bidirectional stream: a frame on it creates it here
	_, err = m.getReceiveStream(protocol.FirstIncomingBidiStreamClient)
	require.NoError(t, err)
	require.Equal(t, 2, m.openBidiStreams())

	require.NoError(t, m.DeleteStream(protocol.FirstOutgoingBidiStreamClient))
	require.Equal(t, 1, m.openBidiStreams())
}
