package wan

import (
	"fmt"
	"image/color"
	"math"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"

	"github.com/quicgate/quicgate/bench"
)

var palette = []color.Color{
	color.RGBA{0x9c, 0x75, 0x5f, 0xff}, color.RGBA{0xed, 0xc9, 0x48, 0xff}, color.RGBA{0xba, 0xb0, 0xac, 0xff},
	color.RGBA{0x76, 0xb7, 0xb2, 0xff}, color.RGBA{0xe1, 0x57, 0x59, 0xff}, color.RGBA{0xf2, 0x8e, 0x2b, 0xff},
	color.RGBA{0x4e, 0x79, 0xa7, 0xff}, color.RGBA{0x59, 0xa1, 0x4f, 0xff}, color.RGBA{0xb0, 0x7a, 0xa1, 0xff},
}

// Chart draws the run as a PNG of four grouped bar charts (a group per profile, a bar per
// row): one-flow and 8-flow goodput, the interactive p99 during a bulk flow and the new
// flow's first reply byte (both on a log scale).
func (r *Report) Chart(path string) error {
	if len(r.Profiles) == 0 || len(r.Rows) == 0 {
		return fmt.Errorf("nothing to draw")
	}
	// Goodput as a share of the link rate, so that a 20 Mbit/s and a 1 Gbit/s profile share
	// one axis.
	panels := []struct {
		title string
		get   func(*Cell, Profile) float64
		log   bool
	}{
		{"one flow, goodput as % of the link rate (higher is better)", func(c *Cell, p Profile) float64 { return 100 * c.Mbps1 / p.Mbps() }, false},
		{"8 flows, goodput as % of the link rate", func(c *Cell, p Profile) float64 { return 100 * c.Mbps8 / p.Mbps() }, false},
		{"interactive p99 during a bulk flow, ms (log; lower is better)", func(c *Cell, _ Profile) float64 { return c.Loaded.P99 }, true},
		{"new flow: first reply byte, median ms (log)", func(c *Cell, _ Profile) float64 { return c.TTFBMs }, true},
	}
	img := vgimg.New(vg.Points(1400), vg.Points(1000))
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: 2, Cols: 2, PadX: vg.Points(20), PadY: vg.Points(20), PadTop: vg.Points(30),
		PadBottom: vg.Points(10), PadLeft: vg.Points(10), PadRight: vg.Points(10)}
	var names []string
	for _, p := range r.Profiles {
		names = append(names, p.Name)
	}
	width := vg.Points(math.Min(14, 560/float64(len(r.Rows)*len(r.Profiles))))
	for i, pnl := range panels {
		p := plot.New()
		p.Title.Text = pnl.title
		top := 0.0
		for j, row := range r.Rows {
			vals := make(plotter.Values, len(r.Profiles))
			for k, prof := range r.Profiles {
				if c := r.cell(row.Name, prof.Name); c != nil {
					vals[k] = pnl.get(c, prof)
					if pnl.log {
						vals[k] = math.Max(0, math.Log10(vals[k])) // 1 ms at the axis
					}
					top = math.Max(top, vals[k])
				}
			}
			bars, err := plotter.NewBarChart(vals, width)
			if err != nil {
				return err
			}
			bars.LineStyle.Width = 0
			bars.Color = palette[j%len(palette)]
			bars.Offset = width * vg.Length(float64(j)-float64(len(r.Rows)-1)/2)
			p.Add(bars)
			if i == 0 {
				p.Legend.Add(row.Name, bars)
			}
		}
		p.NominalX(names...)
		p.Y.Min = 0
		if i == 0 {
			p.Y.Max = math.Max(top, 100) * 1.35 // room for the legend above the bars
		}
		if pnl.log {
			var ticks []plot.Tick
			for e := 0; float64(e) <= top+1; e++ {
				ticks = append(ticks, plot.Tick{Value: float64(e), Label: fmt.Sprintf("%g", math.Pow(10, float64(e)))})
			}
			p.Y.Tick.Marker = plot.ConstantTicks(ticks)
		}
		p.Legend.Top = true
		p.Legend.Left = true
		p.Draw(tiles.At(dc, i%2, i/2))
	}
	return bench.SaveChart(path, img, "quicgate bench-wan: "+Direction, r.Quick, r.When, 14)
}
