package wan

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/quicgate/quicgate/bench"
	"github.com/quicgate/quicgate/bench/wanlink"
)

// UDPWay is one way of carrying a UDP flow across the link: 1200-byte packets one way, from
// the client namespace to a sink in the server namespace, at a share of the link's rate.
type UDPWay struct {
	ID   string `json:"id"`   // for -udp: "quicgate"
	Name string `json:"name"` // in the report: "quicgate -U (bbr)"
	kind rowKind
}

// AllUDPWays in report order.
func AllUDPWays() []UDPWay {
	return []UDPWay{
		{ID: "direct", Name: "direct UDP", kind: kindDirect},
		{ID: "quicgate", Name: "quicgate -U (bbr)", kind: kindQuicgateL},
		{ID: "tun", Name: "quicgate TUN (bbr)", kind: kindQuicgateTUN},
	}
}

// FindUDPWay looks a UDP way up by ID or name.
func FindUDPWay(s string) (UDPWay, bool) {
	for _, w := range AllUDPWays() {
		if strings.EqualFold(s, w.ID) || strings.EqualFold(s, w.Name) {
			return w, true
		}
	}
	return UDPWay{}, false
}

// UDPShares are the offered rates, as fractions of the profile's link rate: one that fits
// with room, one near the link's (its queue fills only if a tunnel adds much overhead).
var UDPShares = []float64{0.5, 0.9}

// UDPCell is one UDP way on one profile at one offered rate.
type UDPCell struct {
	Way         string  `json:"way"`
	Profile     string  `json:"profile"`
	Share       float64 `json:"share,omitempty"` // of the link rate
	OfferedMbps float64 `json:"offered_mbps,omitempty"`
	Mbps        float64 `json:"delivered_mbps"`
	LossPct     float64 `json:"loss_pct"`
	Skipped     string  `json:"skipped,omitempty"`
	Error       string  `json:"error,omitempty"`
}

// runUDP measures one UDP way on the profile whose link is up, at each of UDPShares, into
// sink (listening on every address of the server namespace, port sinkPort).
func (h *harness) runUDP(ctx context.Context, way UDPWay, prof Profile, sink *bench.UDPSink, sinkPort string) []UDPCell {
	fail := func(err error) []UDPCell {
		c := UDPCell{Way: way.Name, Profile: prof.Name}
		if errors.Is(err, bench.ErrSkip) {
			c.Skipped = strings.TrimPrefix(err.Error(), bench.ErrSkip.Error()+": ")
			h.say(way.Name, "skipped: %s", c.Skipped)
		} else {
			c.Error = "setting up: " + err.Error()
			h.say(way.Name, "failed to set up: %v", err)
		}
		return []UDPCell{c}
	}
	dest := net.JoinHostPort(ServerIP, sinkPort)
	switch way.kind {
	case kindQuicgateL: // -U to the sink on the server's loopback
		p := &quicgatePath{h: h, row: Row{QUIC: "bbr"}, udpTo: net.JoinHostPort("127.0.0.1", sinkPort)}
		defer p.stop()
		var err error
		if dest, _, err = p.start(ctx); err != nil {
			return fail(err)
		}
	case kindQuicgateTUN: // TargetNet is routed into the TUN; TargetIP is on the server's lo
		p := &quicgatePath{h: h, row: Row{QUIC: "bbr"}, tun: true}
		defer p.stop()
		if _, _, err := p.start(ctx); err != nil {
			return fail(err)
		}
		dest = net.JoinHostPort(TargetIP, sinkPort)
	}
	dial := func() (c net.Conn, err error) {
		err = wanlink.InNetns(h.topo.Client, func() error {
			c, err = net.Dial("udp", dest)
			return err
		})
		return c, err
	}
	window := time.Duration(h.opt.Windows.UDP)
	var out []UDPCell
	for _, share := range UDPShares {
		c := UDPCell{Way: way.Name, Profile: prof.Name, Share: share, OfferedMbps: share * float64(prof.Rate) / 1e6}
		sent, got, err := bench.UDPLoad(ctx, dial, sink, c.OfferedMbps, window, max(200*time.Millisecond, 3*prof.RTT))
		if err != nil {
			c.Error = err.Error()
			h.say(way.Name, "UDP %.0f Mbit/s offered: %v", c.OfferedMbps, err)
		} else {
			c.Mbps, c.LossPct = bench.UDPFigures(sent, got, window)
			h.say(way.Name, "UDP %.0f Mbit/s offered: %.1f delivered, %.2f%% lost", c.OfferedMbps, c.Mbps, c.LossPct)
		}
		out = append(out, c)
	}
	return out
}

// udpMarkdown writes a table per share of the link rate: the ways by the profiles.
func (r *Report) udpMarkdown(w io.Writer) {
	if len(r.UDP) == 0 {
		return
	}
	fmt.Fprintf(w, "### UDP, one flow one way, %d-byte packets paced per ms for %v: delivered Mbit/s (loss %%)\n\n", bench.UDPPacketSize, time.Duration(r.Windows.UDP))
	for _, share := range UDPShares {
		fmt.Fprintf(w, "Offered at %.0f %% of the link rate:\n\n| way |", share*100)
		for _, p := range r.Profiles {
			fmt.Fprintf(w, " %s |", p.Name)
		}
		fmt.Fprintf(w, "\n|---|%s\n", strings.Repeat("---|", len(r.Profiles)))
		for _, way := range r.UDPWays {
			fmt.Fprintf(w, "| %s |", way.Name)
			for _, p := range r.Profiles {
				fmt.Fprintf(w, " %s |", r.udpText(way.Name, p.Name, share))
			}
			fmt.Fprintln(w)
		}
		fmt.Fprintln(w)
	}
}

func (r *Report) udpText(way, profile string, share float64) string {
	for _, c := range r.UDP {
		if c.Way != way || c.Profile != profile {
			continue
		}
		switch {
		case c.Skipped != "":
			return "skipped: " + strings.ReplaceAll(c.Skipped, "|", "/")
		case c.Error != "" && (c.Share == 0 || c.Share == share):
			return "error: " + strings.ReplaceAll(c.Error, "|", "/")
		case c.Share == share:
			return fmt.Sprintf("%s (%.2f%%)", fmtNum(c.Mbps), c.LossPct)
		}
	}
	return "–"
}
