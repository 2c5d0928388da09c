package bench

import (
	"fmt"
	"image/color"
	"math"
	"os"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgsvg"
)

// series is one line of a plot.
type series struct {
	name string
	xy   plotter.XYs
}

// percentileSeries turns a latency histogram into latency (ms) against
// percentile, with the percentile axis stretched as -log10(1-q) so that
// 90%, 99%, 99.9% are equally spaced: the tail is what matters.
func percentileSeries(name string, d HistogramData) (series, bool) {
	h := d.Histogram()
	values, fractions := h.CDF(400)
	if len(values) == 0 {
		return series{}, false
	}
	s := series{name: name}
	for i, v := range values {
		q := fractions[i]
		x := 5.0 // 99.999% and beyond
		if q < 1 {
			x = math.Min(5, -math.Log10(1-q))
		}
		y := math.Max(float64(v)/1e6, 1e-3)
		s.xy = append(s.xy, plotter.XY{X: x, Y: y})
	}
	return s, true
}

var percentileTicks = plot.TickerFunc(func(lo, hi float64) []plot.Tick {
	labels := []string{"0%", "90%", "99%", "99.9%", "99.99%", "99.999%"}
	var ticks []plot.Tick
	for i, l := range labels {
		if float64(i) >= lo-1e-9 && float64(i) <= hi+1e-9 {
			ticks = append(ticks, plot.Tick{Value: float64(i), Label: l})
		}
	}
	return ticks
})

// latencySeries collects the latency distributions worth drawing from the
// runs of a report.
func latencySeries(r *Report) (title string, out []series) {
	add := func(name string, d HistogramData) {
		if s, ok := percentileSeries(name, d); ok {
			out = append(out, s)
		}
	}
	for _, run := range r.Runs {
		tag := fmt.Sprintf("%s#%d %s", run.Target, run.Repeat, run.Name)
		switch {
		case run.Density != nil:
			title = "connect latency"
			add(tag, run.Density.Connect.Hist)
		case run.Broadcast != nil:
			title = "delivery latency"
			add(tag, run.Broadcast.LatencyHist)
		case run.Churn != nil:
			title = "reconnect latency per wave"
			for _, w := range run.Churn.Waves {
				add(fmt.Sprintf("%s wave %d", tag, w.Wave), w.Reconnect.Hist)
			}
		case run.Slowloris != nil:
			title = "delivery latency, without and with attackers"
			add(tag+" clean", run.Slowloris.Clean.LatencyHist)
			add(tag+" attacked", run.Slowloris.Attacked.LatencyHist)
		case run.SlowConsumer != nil:
			title = "delivery latency, without and with slow consumers"
			add(tag+" clean", run.SlowConsumer.Clean.LatencyHist)
			add(tag+" with slow", run.SlowConsumer.Loaded.LatencyHist)
		case run.Soak != nil && run.Soak.Honest != nil:
			title = "delivery latency in the honest room during the soak"
			add(tag, run.Soak.Honest.LatencyHist)
		}
	}
	return title, out
}

// newLinePlot draws ss as lines; the legend goes top left, or bottom
// right (legendLow) where rising curves leave room.
func newLinePlot(title, xlabel, ylabel string, ss []series, legendLow bool) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = xlabel
	p.Y.Label.Text = ylabel
	p.Legend.Top = !legendLow
	p.Legend.Left = !legendLow
	p.Add(plotter.NewGrid())
	for i, s := range ss {
		l, err := plotter.NewLine(s.xy)
		if err != nil {
			return nil, err
		}
		l.Color = plotutil.Color(i)
		l.Dashes = plotutil.Dashes(i / len(plotutil.SoftColors))
		l.Width = vg.Points(1.5)
		p.Add(l)
		p.Legend.Add(s.name, l)
	}
	return p, nil
}

// writePlot draws the latency distribution (and, for density, server RSS
// against connections) into an SVG file.
func writePlot(path string, r *Report) error {
	var row []*plot.Plot
	title, lat := latencySeries(r)
	if len(lat) > 0 {
		p, err := newLinePlot(title, "percentile", "latency (ms, log)", lat, true)
		if err != nil {
			return err
		}
		p.X.Tick.Marker = percentileTicks
		p.X.Min = 0
		p.Y.Scale = plot.LogScale{}
		p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
		row = append(row, p)
	}
	var rss []series
	for _, run := range r.Runs {
		if run.Density == nil || len(run.Density.Samples) == 0 {
			continue
		}
		s := series{name: fmt.Sprintf("%s#%d %s", run.Target, run.Repeat, run.Name)}
		for _, x := range run.Density.Samples {
			s.xy = append(s.xy, plotter.XY{X: float64(x.Conns), Y: float64(x.RSS) / mib})
		}
		rss = append(rss, s)
	}
	if len(rss) > 0 {
		title := "server RSS against connections"
		if n := r.Config.Instances; n > 1 {
			title = fmt.Sprintf("server RSS (sum over %d instances) against connections", n)
		}
		p, err := newLinePlot(title, "connections", "RSS (MiB)", rss, false)
		if err != nil {
			return err
		}
		row = append(row, p)
	}
	if len(row) == 0 {
		p := plot.New()
		p.Title.Text = "chatbench " + r.Config.Scenario + ": nothing to draw"
		row = append(row, p)
	}
	const panelW, h = 7 * vg.Inch, 5 * vg.Inch
	c := vgsvg.New(panelW*vg.Length(len(row)), h)
	dc := draw.New(c)
	tiles := draw.Tiles{Rows: 1, Cols: len(row), PadX: vg.Millimeter * 4, PadTop: vg.Millimeter * 2, PadBottom: vg.Millimeter * 2, PadLeft: vg.Millimeter * 2, PadRight: vg.Millimeter * 2}
	canvases := plot.Align([][]*plot.Plot{row}, tiles, dc)
	for i, p := range row {
		p.BackgroundColor = color.White
		p.Draw(canvases[0][i])
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := c.WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
