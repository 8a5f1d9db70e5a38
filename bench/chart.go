package bench

import (
	"fmt"
	"image/color"
	"os"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// Chart draws the run as a PNG of six bar charts, one per figure, a bar per path.
func (r *Report) Chart(path string) error {
	var ran []Result
	for _, x := range r.Results {
		if x.Skipped == "" && x.Error == "" {
			ran = append(ran, x)
		}
	}
	if len(ran) == 0 {
		return fmt.Errorf("no path ran")
	}
	panels := []struct {
		title string
		get   func(Result) float64
	}{
		{"one flow, Gbit/s (higher is better)", func(x Result) float64 { return x.Gbps1 }},
		{"8 flows, Gbit/s", func(x Result) float64 { return x.Gbps8 }},
		{"64 flows, Gbit/s", func(x Result) float64 { return x.Gbps64 }},
		{"new flows per second", func(x Result) float64 { return x.FlowsPerS }},
		{"round trip p99, µs (lower is better)", func(x Result) float64 { return x.P99us }},
		{"RSS growth per 1,000 idle flows, MiB", func(x Result) float64 {
			if x.IdleFlows == 0 {
				return 0
			}
			return x.IdleRSSMiB * 1000 / float64(x.IdleFlows)
		}},
	}
	const cols, rows = 2, 3
	img := vgimg.New(vg.Points(1100), vg.Points(1100))
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: rows, Cols: cols, PadX: vg.Points(20), PadY: vg.Points(20), PadTop: vg.Points(30), PadBottom: vg.Points(10), PadLeft: vg.Points(10), PadRight: vg.Points(10)}
	palette := []color.Color{
		color.RGBA{0x4e, 0x79, 0xa7, 0xff}, color.RGBA{0xf2, 0x8e, 0x2b, 0xff}, color.RGBA{0xe1, 0x57, 0x59, 0xff},
		color.RGBA{0x76, 0xb7, 0xb2, 0xff}, color.RGBA{0x59, 0xa1, 0x4f, 0xff}, color.RGBA{0xed, 0xc9, 0x48, 0xff}, color.RGBA{0xb0, 0x7a, 0xa1, 0xff},
	}
	names := make([]string, len(ran))
	for i, x := range ran {
		names[i] = x.Path
	}
	for i, pnl := range panels {
		p := plot.New()
		p.Title.Text = pnl.title
		vals := make(plotter.Values, len(ran))
		for j, x := range ran {
			vals[j] = pnl.get(x)
		}
		bars, err := plotter.NewBarChart(vals, vg.Points(28))
		if err != nil {
			return err
		}
		bars.LineStyle.Width = 0
		bars.Color = palette[i%len(palette)]
		p.Add(bars)
		p.NominalX(names...)
		p.X.Tick.Label.Rotation = 0.5
		p.X.Tick.Label.XAlign = draw.XRight
		p.X.Tick.Label.YAlign = draw.YCenter
		p.Y.Min = 0
		p.Draw(tiles.At(dc, i%cols, i/cols))
	}
	return SaveChart(path, img, "quicgate bench", r.Quick, r.When, 16)
}

// SaveChart writes a title (marked quick for a -quick run, with the run's time) across the
// top of img and the whole as a PNG file at path.
func SaveChart(path string, img *vgimg.Canvas, title string, quick bool, when time.Time, size float64) error {
	if quick {
		title += " (quick)"
	}
	font := plot.DefaultFont
	font.Size = vg.Points(size)
	_, h := img.Size()
	dc := draw.New(img)
	dc.FillText(draw.TextStyle{Color: color.Black, Font: font, Handler: plot.DefaultTextHandler},
		vg.Point{X: vg.Points(20), Y: h - vg.Points(size+4)}, title+", "+when.UTC().Format("2006-01-02 15:04 UTC"))
	w, err := os.Create(path)
	if err != nil {
		return err
	}
	defer w.Close()
	_, err = vgimg.PngCanvas{Canvas: img}.WriteTo(w)
	return err
}
