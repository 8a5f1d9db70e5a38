package ackhandler

// quicgate patch: the congestion controller is the one asked for.

import (
	"fmt"
	"testing"

	"github.com/quicgate/quicgate/third_party/quic-go/internal/congestion"
	"github.com/quicgate/quicgate/third_party/quic-go/internal/protocol"
	"github.com/quicgate/quicgate/third_party/quic-go/internal/utils"

	"github.com/stretchr/testify/require"
)

func TestWithCongestion(t *testing.T) {
	for alg, want := range map[congestion.Algorithm]string{
		congestion.AlgReno:  "*congestion.cubicSender",
		congestion.AlgCubic: "*congestion.cubicSender",
		congestion.AlgBBR:   "*congestion.bbrSender",
	} {
		var opts []Option
		if alg != congestion.AlgReno {
			opts = append(opts, WithCongestion(alg))
		}
		h := NewSentPacketHandler(0, 1200, utils.NewRTTStats(), &utils.ConnectionStats{}, true, false, nil,
			protocol.PerspectiveClient, nil, utils.DefaultLogger, opts...).(*sentPacketHandler)
		require.Equal(t, want, fmt.Sprintf("%T", h.congestion))
		require.Equal(t, alg, h.congestionAlg, "kept for a path migration's new controller")
		_, appLimitedAware := h.congestion.(congestion.AppLimitedNotifier)
		require.Equal(t, alg == congestion.AlgBBR, appLimitedAware)
	}
}
