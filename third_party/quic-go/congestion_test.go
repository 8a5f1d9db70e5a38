package quic

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// quicgate patch: the congestion controller is carried through the config and checked.
func TestConfigCongestion(t *testing.T) {
	require.Equal(t, CongestionBBR, populateConfig(&Config{Congestion: CongestionBBR}).Congestion)
	require.Equal(t, CongestionReno, populateConfig(nil).Congestion)
	require.Error(t, validateConfig(&Config{Congestion: CongestionBBR + 1}))
	require.Equal(t, "bbr", CongestionBBR.String())
}
