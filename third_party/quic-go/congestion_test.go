package quic

import (
	"testing"
	"testing/synctest"

	"github.com/quicgate/quicgate/third_party/quic-go/internal/ackhandler"
	mockackhandler "github.com/quicgate/quicgate/third_party/quic-go/internal/mocks/ackhandler"
	"github.com/quicgate/quicgate/third_party/quic-go/internal/monotime"
	"github.com/quicgate/quicgate/third_party/quic-go/internal/protocol"

	"github.com/stretchr/testify/require"
	"go.uber.org/mock/gomock"
)

// quicgate patch: the congestion controller is carried through the config and checked.
func TestConfigCongestion(t *testing.T) {
	require.Equal(t, CongestionBBR, populateConfig(&Config{Congestion: CongestionBBR}).Congestion)
	require.Equal(t, CongestionReno, populateConfig(nil).Congestion)
	require.Equal(t, CongestionNone, populateConfig(&Config{Congestion: CongestionNone}).Congestion)
	require.NoError(t, validateConfig(&Config{Congestion: CongestionNone}))
	require.Error(t, validateConfig(&Config{Congestion: CongestionNone + 1}))
	require.Equal(t, "bbr", CongestionBBR.String())
	require.Equal(t, "none", CongestionNone.String())
}

// appLimitedRecorder is a sent packet handler that counts OnAppLimited calls.
type appLimitedRecorder struct {
	*mockackhandler.MockSentPacketHandler
	calls int
}

func (r *appLimitedRecorder) OnAppLimited() { r.calls++ }

// quicgate patch: when the window and the pacer allow a packet and there is nothing to put
// in it, the connection tells the sent packet handler (BBR must not take such rate samples
// for the path's), with and without GSO; when the window is full it does not.
func TestConnectionTellsAppLimited(t *testing.T) {
	for _, tc := range []struct {
		name    string
		gso     bool
		mode    ackhandler.SendMode
		packets int
		want    int
	}{
		{"nothing more to send", false, ackhandler.SendAny, 1, 1},
		{"nothing more to send, GSO", true, ackhandler.SendAny, 2, 1},
		{"window full", false, ackhandler.SendAck, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				mockCtrl := gomock.NewController(t)
				sph := &appLimitedRecorder{MockSentPacketHandler: mockackhandler.NewMockSentPacketHandler(mockCtrl)}
				c := newServerTestConnection(t, mockCtrl, nil, tc.gso,
					connectionOptHandshakeConfirmed(),
					connectionOptSentPacketHandler(sph),
				)
				sph.EXPECT().SendMode(gomock.Any()).Return(tc.mode).AnyTimes()
				sph.EXPECT().TimeUntilSend().AnyTimes()
				sph.EXPECT().SentPacket(gomock.Any(), gomock.Any(), gomock.Any(), gomock.Any(), gomock.Any(), gomock.Any(), gomock.Any(), gomock.Any(), gomock.Any(), gomock.Any()).AnyTimes()
				sph.EXPECT().GetLossDetectionTimeout().AnyTimes()
				sph.EXPECT().ECNMode(gomock.Any()).Return(protocol.ECNNon).AnyTimes()
				maxPacketSize := c.conn.maxPacketSize()
				for i := range tc.packets {
					c.packer.EXPECT().AppendPacket(gomock.Any(), gomock.Any(), gomock.Any(), gomock.Any()).DoAndReturn(
						func(buffer *packetBuffer, _ protocol.ByteCount, _ monotime.Time, _ protocol.Version) (shortHeaderPacket, error) {
							buffer.Data = append(buffer.Data, make([]byte, maxPacketSize)...)
							return shortHeaderPacket{PacketNumber: protocol.PacketNumber(i)}, nil
						},
					)
				}
				if tc.mode == ackhandler.SendAny {
					c.packer.EXPECT().AppendPacket(gomock.Any(), gomock.Any(), gomock.Any(), gomock.Any()).Return(shortHeaderPacket{}, errNothingToPack)
				} else {
					c.packer.EXPECT().PackAckOnlyPacket(gomock.Any(), gomock.Any(), gomock.Any()).Return(shortHeaderPacket{}, nil, errNothingToPack).AnyTimes()
				}
				c.sendConn.EXPECT().Write(gomock.Any(), gomock.Any(), gomock.Any()).AnyTimes()

				errChan := make(chan error, 1)
				go func() { errChan <- c.conn.run() }()
				c.conn.scheduleSending()
				synctest.Wait()
				require.Equal(t, tc.want, sph.calls)

				c.connRunner.EXPECT().Remove(gomock.Any()).AnyTimes()
				c.conn.destroy(nil)
				synctest.Wait()
				require.NoError(t, <-errChan)
			})
		})
	}
}
